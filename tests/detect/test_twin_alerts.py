"""Twin divergence alerts: the fidelity as an anomaly score (its scale, the clear margin,
unknown fidelity), the signature rules on the twin's residuals, and the alert stream's
invariants under hypothesis. The same alerts on the running twin fed by the plant are
tested in tests/twin/test_runtime.py."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.detect.alerts import HOUR_S
from gateway.detect.signatures import Z_MIN
from gateway.detect.twin_alerts import CLEAR_MARGIN, TwinAlerts, twin_score
from gateway.twin.fidelity import FidelityReport

THRESHOLD = 0.8


def report(per_output: Mapping[str, float | None], threshold: float = THRESHOLD) -> FidelityReport:
    """A fidelity report with these per-output scores (overall = the weakest known one)."""
    known = {k: v for k, v in per_output.items() if v is not None}
    score = min(known.values()) if known else None
    weakest = min(known, key=lambda k: known[k]) if known else None
    return FidelityReport(
        t=0.0,
        score=score,
        threshold=threshold,
        trusted=score is not None and score >= threshold,
        weakest=weakest,
        per_output=dict(per_output),
        per_lookahead={60.0: score},
        nrmse={},
        samples=100,
        unresolved=0,
    )


def healthy() -> FidelityReport:
    return report({"tank_level": 0.97, "vibration_rms": 0.95, "bearing_temp": 0.96})


def test_an_output_at_the_threshold_scores_exactly_the_threshold() -> None:
    """score = 1/fidelity - 1 (the weakest output's nrmse²), so fidelity at its threshold is
    score at the alert threshold, and that output's deviation is exactly the bar."""
    score = twin_score(report({"tank_level": THRESHOLD, "pump_flow": 0.99}), {})
    assert score is not None
    assert score.threshold == pytest.approx(0.25)
    assert score.score == pytest.approx(score.threshold)
    assert score.deviations["twin_misfit_tank_level"] == pytest.approx(Z_MIN)
    assert score.deviations["twin_misfit_pump_flow"] < 1.0
    assert score.clear_threshold == pytest.approx(1 / (THRESHOLD + CLEAR_MARGIN) - 1)


def test_half_the_fidelity_error_ratio_is_four_times_the_threshold() -> None:
    """An output's RMS error twice what the threshold allows: nrmse² four times over."""
    nrmse = 2 * math.sqrt(1 / THRESHOLD - 1)
    score = twin_score(report({"tank_temp": 1 / (1 + nrmse**2)}), {})
    assert score is not None
    assert score.ratio == pytest.approx(4.0)
    assert score.deviations["twin_misfit_tank_temp"] == pytest.approx(2 * Z_MIN)


def test_unknown_fidelity_is_no_score_and_breaks_the_count() -> None:
    assert twin_score(report({"tank_level": None}), {}) is None
    alerts = TwinAlerts()
    low = report({"tank_level": 0.5})
    for t in range(9):
        assert alerts.observe(float(t), low, {}) == ()
    assert alerts.observe(9.0, report({"tank_level": None}), {}) == ()
    for t in range(10, 19):
        assert alerts.observe(float(t), low, {}) == ()
    (event,) = alerts.observe(19.0, low, {})
    assert event.kind == "raised"


def test_drift_is_passed_in_declared_std_and_non_finite_drift_is_left_out() -> None:
    score = twin_score(healthy(), {"bearing_rise": 4.5, "valve_cv": math.nan})
    assert score is not None
    assert score.deviations["twin_drift_bearing_rise"] == 4.5
    assert "twin_drift_valve_cv" not in score.deviations
    assert score.contributions["twin_drift_bearing_rise"] == pytest.approx(
        (4.5 / Z_MIN) ** 2 * score.threshold
    )


@pytest.mark.parametrize(
    ("threshold", "margin"), [(0.0, 0.05), (1.0, 0.05), (0.8, -0.01), (0.8, math.inf)]
)
def test_unusable_thresholds_are_refused(threshold: float, margin: float) -> None:
    with pytest.raises(ValueError, match=r"threshold|margin"):
        twin_score(report({"tank_level": 0.9}, threshold), {}, clear_margin=margin)


def test_a_threshold_close_to_one_still_clears() -> None:
    """Threshold 0.97 (valid in the config) + margin 0.05 would need fidelity 1.02 to
    clear; the clear point is then halfway to 1 (0.985)."""
    score = twin_score(report({"tank_level": 0.99}, 0.97), {})
    assert score is not None
    assert score.clear_threshold == pytest.approx(1 / 0.985 - 1)
    alerts = TwinAlerts()
    low, good = report({"tank_level": 0.9}, 0.97), report({"tank_level": 0.99}, 0.97)
    kinds = [e.kind for t in range(10) for e in alerts.observe(float(t), low, {})]
    kinds += [e.kind for t in range(10, 70) for e in alerts.observe(float(t), good, {})]
    assert kinds == ["raised", "cleared"]


def test_ten_seconds_below_raises_one_alert_that_clears_only_clearly_above() -> None:
    alerts = TwinAlerts()
    low = report({"tank_level": 0.6, "vibration_rms": 0.95})
    events = [e for t in range(10) for e in alerts.observe(float(t), low, {})]
    assert [e.kind for e in events] == ["raised"]
    raised = events[0]
    assert raised.alert_id == "twin-1"
    assert raised.message.startswith("twin divergence raised: cause unknown (most off: ")
    assert "twin_misfit_tank_level" in raised.message
    # Back above the threshold but inside the clear margin: it stays active.
    hovering = report({"tank_level": THRESHOLD + CLEAR_MARGIN / 2})
    assert [e for t in range(10, 200) for e in alerts.observe(float(t), hovering, {})] == []
    assert alerts.active is not None
    clear = [e for t in range(200, 260) for e in alerts.observe(float(t), healthy(), {})]
    assert [e.kind for e in clear] == ["cleared"]
    assert clear[0].alert_id == "twin-1"
    assert alerts.active is None


def test_a_drifted_parameter_names_the_fault() -> None:
    """Bearing rise estimated 5 std high with the vibration off: bearing degradation, with
    the drift as its evidence; a pump head 3 std low: impeller wear."""
    alerts = TwinAlerts()
    low = report({"vibration_rms": 0.6, "bearing_temp": 0.7})
    events = [e for t in range(10) for e in alerts.observe(float(t), low, {"bearing_rise": 5.0})]
    (raised,) = events
    assert raised.fault == "bearing_degradation"
    assert any("twin_drift_bearing_rise z=+5.0" in line for line in raised.signature[0].evidence)
    assert "likely bearing_degradation" in raised.message

    other = TwinAlerts()
    events = [
        e
        for t in range(10)
        for e in other.observe(float(t), low, {"pump_shutoff_head": -3.0, "bearing_rise": 0.2})
    ]
    assert events[0].fault == "impeller_wear"


def test_a_drift_with_a_healthy_twin_raises_nothing() -> None:
    """The estimator following a change is the twin doing its job: no divergence."""
    alerts = TwinAlerts()
    assert [
        e for t in range(600) for e in alerts.observe(float(t), healthy(), {"bearing_rise": 9.0})
    ] == []


fidelity_values = st.one_of(st.none(), st.floats(0.01, 1.0))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(fidelity_values, st.floats(-8, 8)), min_size=1, max_size=800))
def test_alert_stream_is_well_formed(steps: list[tuple[float | None, float]]) -> None:
    """Whatever the fidelity does: at most 6 raised per hour, ids never reused, every
    update and clear belongs to the active alert, and an alert is cleared at most once."""
    alerts = TwinAlerts()
    active: str | None = None
    seen: set[str] = set()
    raised_at: list[float] = []
    for k, (fidelity, drift) in enumerate(steps):
        t = float(k * 5)  # a sparse clock makes many hours out of 800 steps
        for event in alerts.observe(t, report({"tank_level": fidelity}), {"bearing_rise": drift}):
            if event.kind == "raised":
                assert active is None
                assert event.alert_id not in seen
                active = event.alert_id
                seen.add(active)
                raised_at.append(t)
            elif event.kind in ("updated", "cleared"):
                assert event.alert_id == active
                if event.kind == "cleared":
                    active = None
            assert math.isfinite(event.score)
    for i, t in enumerate(raised_at):
        assert sum(1 for u in raised_at[i:] if u < t + HOUR_S) <= 6


def test_a_clock_stepped_back_holds_the_alert_clock() -> None:
    """Wall time going back (NTP) neither raises nor shortens the rate limit's hour."""
    alerts = TwinAlerts()
    low = report({"tank_level": 0.5})
    events = [e for t in range(1000, 1010) for e in alerts.observe(float(t), low, {})]
    assert [e.kind for e in events] == ["raised"]
    later = [e for t in range(400, 470) for e in alerts.observe(float(t), healthy(), {})]
    assert [e.kind for e in later] == ["cleared"]
    assert later[0].at == 1009.0
