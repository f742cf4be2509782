"""The writer's own checks, with the protocol write replaced by a recorder (the live
tests in tests/test_governance_live.py drive the real one against the plant): only a
fitting, unexpired "execute" verdict writes; interlocks are re-checked before every
write of a ramp, and so is the data the checks need; a failed read-back suspends
autonomy."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.act.setpoints import AutonomyLatch, SetpointExecutor
from gateway.govern.gate import GovernSettings, evaluate
from gateway.govern.proposal import Proposal
from gateway.signals import Quality, SignalValue
from tests.govern.conftest import NOW, TwinFactory, config, view


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def append(
        self, kind: str, payload: Mapping[str, Any], *, proposal_id: str | None = None
    ) -> None:
        self.records.append((kind, dict(payload)))


class Plc:
    """Records writes and echoes them into the live table (like a PLC read back)."""

    def __init__(
        self, table: dict[str, SignalValue], clock: list[float], *, ignore: bool = False
    ) -> None:
        self.table = table
        self.clock = clock
        self.ignore = ignore
        self.writes: list[tuple[str, float, float]] = []
        self.hooks: list[Any] = []

    async def write(self, signal: str, value: float) -> None:
        self.writes.append((signal, value, self.clock[0]))
        old = self.table[signal]
        shown = old.value if self.ignore else value
        t = self.clock[0] + 0.2
        self.table[signal] = SignalValue(signal, shown, old.unit, t, t, t, Quality.GOOD)
        for hook in self.hooks:
            hook(self)


def executor(
    cfg: Any,
    table: dict[str, SignalValue],
    plc: Plc,
    clock: list[float],
    audit: Audit,
    latch: AutonomyLatch,
) -> SetpointExecutor:
    async def sleep(seconds: float) -> None:
        clock[0] += max(seconds, 0.0)

    return SetpointExecutor(
        cfg,
        GovernSettings(),
        plc.write,
        lambda: dict(table),
        audit,
        latch,
        clock=lambda: clock[0],
        sleep=sleep,
    )


def prepared(plant_table: dict[str, SignalValue], twin: TwinFactory, targets: dict[str, float]):  # type: ignore[no-untyped-def]
    cfg = config("L3")
    p = Proposal.create(
        id="p-1",
        proposer="operator:t",
        targets=targets,
        rationale="",
        created_at=NOW,
        expires_in_s=600,
    )
    verdict = evaluate(cfg, GovernSettings(), p, view(cfg, plant_table, twin(cfg)))
    return cfg, p, verdict


async def test_a_fitting_verdict_is_ramped_and_read_back(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    cfg, p, verdict = prepared(plant_table, twin, {"level_sp": 1.7})
    table, clock, audit, latch = dict(plant_table), [NOW], Audit(), AutonomyLatch()
    plc = Plc(table, clock)
    result = await executor(cfg, table, plc, clock, audit, latch).execute(p, verdict)
    assert result.status == "written"
    assert [v for _, v, _ in plc.writes] == [s.value for s in verdict.plan["level_sp"]]
    times = [t for _, _, t in plc.writes]
    assert all(b - a >= 2.0 - 1e-9 for a, b in itertools.pairwise(times))
    kinds = [k for k, _ in audit.records]
    assert kinds.count("write") == kinds.count("readback") == len(plc.writes)
    assert kinds[-1] == "write_done"
    assert not latch.suspended


async def test_an_interlock_that_trips_mid_ramp_stops_it(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    """bearing_hot forbids raising the level; the bearing crosses 80 degC after the third
    write: the fourth is not made."""
    cfg, p, verdict = prepared(plant_table, twin, {"level_sp": 1.7})
    table, clock, audit, latch = dict(plant_table), [NOW], Audit(), AutonomyLatch()
    plc = Plc(table, clock)

    def heat(plc: Plc) -> None:
        if len(plc.writes) == 3:
            table["bearing_temp"] = SignalValue(
                "bearing_temp", 81.0, "degC", NOW, NOW, NOW, Quality.GOOD
            )

    plc.hooks.append(heat)
    result = await executor(cfg, table, plc, clock, audit, latch).execute(p, verdict)
    assert result.status == "aborted"
    assert "bearing_hot" in (result.reason or "")
    assert len(plc.writes) == 3
    assert not latch.suspended  # an interlock is not a fault of the write path


@pytest.mark.parametrize(
    ("signal", "value", "quality", "expected"),
    [
        # An envelope signal (not an interlock's) whose transmitter froze: stale.
        ("tank_temp", 45.0, Quality.STALE, "tank_temp (the safety envelope) is stale"),
        # An input the twin simulated from.
        ("inlet_temp", 20.0, Quality.BAD, "inlet_temp (an input of the twin's simulation)"),
        ("remote_mode", 0.0, Quality.GOOD, "the PLC is not in remote"),
        ("trip_word", 4.0, Quality.GOOD, "interlock tank_high is bypassed"),
    ],
)
async def test_data_that_goes_bad_mid_ramp_stops_it(
    plant_table: dict[str, SignalValue],
    twin: TwinFactory,
    signal: str,
    value: float,
    quality: Quality,
    expected: str,
) -> None:
    """Invariant 5 holds per write, not only per proposal: the gate's data step runs again
    before every write of a ramp, so the third write is not made once a signal the checks
    need is stale or bad, the PLC went local, or an interlock on the tag was bypassed."""
    tank_high = 'name = "tank_high"\n'
    cfg = config("L3", edits=((tank_high, tank_high + 'bypass = "trip_word"\n'),))
    p = Proposal.create(
        id="p-1",
        proposer="operator:t",
        targets={"level_sp": 1.7},
        rationale="",
        created_at=NOW,
        expires_in_s=600,
    )
    verdict = evaluate(cfg, GovernSettings(), p, view(cfg, plant_table, twin(cfg)))
    assert len(verdict.plan["level_sp"]) > 3
    table, clock, audit, latch = dict(plant_table), [NOW], Audit(), AutonomyLatch()
    plc = Plc(table, clock)

    def spoil(plc: Plc) -> None:
        if len(plc.writes) == 2:
            t = clock[0]
            table[signal] = SignalValue(signal, value, table[signal].unit, t, t, t, quality)

    plc.hooks.append(spoil)
    result = await executor(cfg, table, plc, clock, audit, latch).execute(p, verdict)
    assert result.status == "aborted"
    assert expected in (result.reason or "")
    assert len(plc.writes) == 2
    assert [k for k, _ in audit.records].count("write") == 2


async def test_a_write_the_plc_ignores_suspends_autonomy(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    cfg, p, verdict = prepared(plant_table, twin, {"level_sp": 1.7})
    table, clock, audit, latch = dict(plant_table), [NOW], Audit(), AutonomyLatch()
    plc = Plc(table, clock, ignore=True)
    result = await executor(cfg, table, plc, clock, audit, latch).execute(p, verdict)
    assert result.status == "failed"
    assert len(plc.writes) == 1
    assert latch.suspended
    assert latch.effective("L4") == "L2"
    assert "autonomy_suspended" in [k for k, _ in audit.records]


TAMPER = st.sampled_from(["value", "expired", "other_id", "approval", "reject"])


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(tamper=TAMPER, shift=st.floats(min_value=0.001, max_value=0.3))
async def test_no_write_without_a_fitting_execute_verdict(
    plant_table: dict[str, SignalValue], twin: TwinFactory, tamper: str, shift: float
) -> None:
    cfg, p, verdict = prepared(plant_table, twin, {"level_sp": 1.7})
    clock = [NOW]
    if tamper == "value":
        p = dataclasses.replace(p, targets=(dataclasses.replace(p.targets[0], value=1.7 - shift),))
    elif tamper == "expired":
        clock[0] = verdict.expires_at + shift
    elif tamper == "other_id":
        p = dataclasses.replace(p, id="p-2")
    else:
        other = {"approval": {"temp_sp": 46.0}, "reject": {"level_sp": 2.4}}[tamper]
        _, p, verdict = prepared(plant_table, twin, other)
    table, audit, latch = dict(plant_table), Audit(), AutonomyLatch()
    plc = Plc(table, clock)
    result = await executor(cfg, table, plc, clock, audit, latch).execute(p, verdict)
    assert result.status == "refused"
    assert plc.writes == []
    assert [k for k, _ in audit.records] == ["write_refused"]


async def test_the_writes_still_to_come_are_published_while_ramping(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    """What the gate simulates a concurrent proposal with: the remaining steps, shrinking
    as they are written, and nothing once the ramp is done."""
    cfg, p, verdict = prepared(plant_table, twin, {"level_sp": 1.7})
    table, clock, audit, latch = dict(plant_table), [NOW], Audit(), AutonomyLatch()
    plc = Plc(table, clock)
    ex = executor(cfg, table, plc, clock, audit, latch)
    seen: list[int] = []
    plc.hooks.append(lambda _plc: seen.append(len(ex.to_come(clock[0]).get("level_sp", ()))))
    await ex.execute(p, verdict)
    n = len(verdict.plan["level_sp"])
    assert seen == list(range(n, 0, -1))  # each write still counts itself while in flight
    assert ex.to_come(clock[0]) == {}
