"""The twin as the daemon runs it, fed by the reference plant: fidelity stays trusted in
normal operation, drops below the threshold for each fault the model cannot explain and
recovers once the fault is cleared, and the twin's residuals raise one divergence alert
per fault (none in a fault-free hour); forecasts name the envelope bound a setpoint would
cross."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from gateway.config.schema import GatewayConfig
from gateway.detect.alerts import AlertEvent
from gateway.detect.twin_alerts import TwinAlerts
from gateway.plantsim.plant import Plant
from gateway.twin.build import build_twin
from gateway.twin.runtime import TwinRuntime, record_every
from tests.support import skid_config
from tests.twin.plant_feed import Operator, run_plant

WARM_S = 900
FAULT_S = 600
RECOVER_S = 900


@pytest.fixture(scope="module")
def cfg() -> GatewayConfig:
    return skid_config(4840, 5020)


def runtime(cfg: GatewayConfig) -> TwinRuntime:
    model, simulator = build_twin(cfg.twin, signals=cfg.signal)  # type: ignore[arg-type]
    return TwinRuntime(cfg, model, simulator)


def scores(
    cfg: GatewayConfig,
    seconds: int,
    *,
    seed: int,
    actions: dict[int, Callable[[Plant, float], None]] | None = None,
) -> tuple[list[tuple[float, float | None]], list[AlertEvent]]:
    """(time, fidelity) every second, and the twin divergence alert events on the way
    (as the daemon's twin loop makes them)."""
    twin = runtime(cfg)
    alerts = TwinAlerts()
    out = []
    events: list[AlertEvent] = []
    for t, _plant, table in run_plant(seconds, seed=seed, actions=actions, operator=Operator(seed)):
        tick = twin.step(t, table)
        out.append((t - 1.0, tick.fidelity.score))
        events.extend(alerts.observe(t - 1.0, tick.fidelity, tick.drift))
    return out, events


def test_fault_free_operation_stays_trusted(cfg: GatewayConfig) -> None:
    """An hour of normal operation with valve and level-setpoint moves, drift and noise:
    once the first window has filled, the score never drops below the threshold, and the
    twin raises no divergence alert (the false-alert count of this run is 0)."""
    threshold = cfg.twin.fidelity_threshold  # type: ignore[union-attr]
    history, events = scores(cfg, 3600, seed=21)
    after_fill = [s for t, s in history if t >= 120]
    assert all(s is not None for s in after_fill)
    lowest = min(s for s in after_fill if s is not None)
    assert lowest >= threshold, f"lowest fidelity {lowest:.3f} in a fault-free hour"
    assert events == []


# (fault, severity, the fault the twin's divergence alert names when raised): each changes
# the physics or the instruments in a way the reduced model has no term for. Only an
# estimated parameter that moved names a fault ("unknown" otherwise, with the outputs most
# off: a frozen image makes the valve miss its command as a sticking valve does). Heater
# degradation is not here: the estimator reads a weaker heater as a larger heat-loss
# coefficient and the fidelity stays up for most of 10 minutes (the anomaly model's
# heater-balance signature names it instead).
MODEL_BREAKING = [
    ("leak", 0.1, "unknown"),
    ("valve_stiction", 0.4, "unknown"),
    ("level_sensor_drift", 0.3, "unknown"),
    ("bearing_degradation", 0.15, "bearing_degradation"),
    ("impeller_wear", 0.3, "impeller_wear"),
    ("sensor_freeze", 1.0, "unknown"),
]


@pytest.mark.parametrize(
    ("fault", "severity", "named"), MODEL_BREAKING, ids=[f for f, _, _ in MODEL_BREAKING]
)
def test_fidelity_drops_for_a_model_breaking_fault_and_recovers(
    cfg: GatewayConfig, fault: str, severity: float, named: str
) -> None:
    """The score falls below the threshold within the fault's 600 s and is back above it
    900 s after clearing; the twin raises exactly one divergence alert, after the
    injection, naming what its residuals can name, and clears it after the recovery."""
    threshold = cfg.twin.fidelity_threshold  # type: ignore[union-attr]
    actions = {
        WARM_S: lambda p, t: p.inject_fault(fault, severity),
        WARM_S + FAULT_S: lambda p, t: p.clear_faults(),
    }
    history, events = scores(cfg, WARM_S + FAULT_S + RECOVER_S, seed=22, actions=actions)
    raised = [e for e in events if e.kind == "raised"]
    assert len(raised) == 1, [e.message for e in events]
    assert WARM_S < raised[0].at <= WARM_S + FAULT_S
    assert raised[0].fault == named, raised[0].message
    assert [e.kind for e in events][-1] == "cleared"
    assert all(e.alert_id == raised[0].alert_id for e in events)
    before = [s for t, s in history if 120 <= t < WARM_S]
    during = [s for t, s in history if WARM_S <= t < WARM_S + FAULT_S]
    after = [s for t, s in history if t >= WARM_S + FAULT_S + RECOVER_S - 60]
    assert min(s for s in before if s is not None) >= threshold
    lowest = min(s for s in during if s is not None)
    assert lowest < threshold, f"{fault}: fidelity only fell to {lowest:.3f}"
    first_below = next(t for t, s in history if t >= WARM_S and s is not None and s < threshold)
    assert first_below - WARM_S <= FAULT_S
    assert all(s is not None and s >= threshold for s in after), (
        f"{fault}: fidelity {after[-1]} has not recovered {RECOVER_S} s after clearing"
    )


def test_forecast_names_the_bound_a_setpoint_would_cross(cfg: GatewayConfig) -> None:
    """Level setpoint written to 2.45 m (the envelope's high limit is 2.4 m): the twin
    forecasts the crossing minutes ahead, before the plant gets there."""
    twin = runtime(cfg)
    limit = cfg.envelope["tank_level"].high
    actions = {300: lambda p, t: p.write("level_sp", limit + 0.05)}
    first = None
    for t, plant, table in run_plant(700, seed=23, actions=actions):
        tick = twin.step(t, table)
        if tick.forecasts and first is None:
            crossing = next((c for c in tick.forecasts if c.output == "tank_level"), None)
            if crossing is not None and crossing.side == "high":
                first = (t, crossing, plant.truth()["tank_level"])
    assert first is not None, "no forecast of the level crossing"
    t, crossing, level_then = first
    assert t <= 320
    assert level_then < limit - 0.3
    assert 120 < crossing.earliest_s < 900
    assert "tank_level reaches" in crossing.message()
    status = twin.status()
    assert status["tracking"]
    assert status["fidelity"]["threshold"] == pytest.approx(0.8)


def test_a_setpoint_that_is_not_good_stops_the_twin_rather_than_guess(cfg: GatewayConfig) -> None:
    twin = runtime(cfg)
    from gateway.signals import Quality

    for t, _plant, table in run_plant(20, seed=24):
        stale = dict(table)
        sv = stale["level_sp"]
        stale["level_sp"] = type(sv)(sv.name, sv.value, sv.unit, t, t, t, Quality.STALE)
        tick = twin.step(t, stale)
        assert tick.observer is None
        assert "level_sp" in (tick.skipped or "")
    assert not twin.status()["tracking"]


@pytest.mark.parametrize(
    ("n_steps", "dt", "wanted", "expected"), [(1200, 0.5, 2.0, 4), (7, 1.0, 2.0, 1)]
)
def test_record_every_divides_the_horizon(
    n_steps: int, dt: float, wanted: float, expected: int
) -> None:
    assert record_every(n_steps, dt, wanted) == expected
    assert n_steps % record_every(n_steps, dt, wanted) == 0
    assert not math.isnan(dt)


def test_a_clock_stepped_back_restarts_the_score_and_the_twin_goes_on(
    cfg: GatewayConfig,
) -> None:
    """The gateway's clock steps back 1000 s (NTP on a box without a real-time clock):
    the step does not raise, the fidelity starts afresh (unknown, so not trusted) and is
    scored again once new look-aheads come due."""
    twin = runtime(cfg)
    ticks = []
    for k, (t, _plant, table) in enumerate(run_plant(420, seed=25)):
        now = t + 1000.0 if k < 150 else t
        ticks.append(twin.step(now, table))
    before, right_after, last = ticks[149], ticks[150], ticks[-1]
    assert before.fidelity.score is not None
    assert right_after.fidelity.score is None
    assert not right_after.fidelity.trusted
    assert right_after.observer is not None
    assert last.fidelity.score is not None
    assert last.fidelity.trusted
    assert twin.status()["clock_steps_back"] == 1
