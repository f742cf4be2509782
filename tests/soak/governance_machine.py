"""Property-based attack on the whole write path, judged by the plant's write log.

A hypothesis state machine drives the real daemon against the running plant (real
asyncua/pymodbus servers on loopback) with random sequences of proposals (operators,
external systems, the agent's name), approvals and rejections by random people, plant
states (a hot bearing that trips an interlock, a failed temperature sensor, frozen
measurements, a PLC that ignores setpoint writes, the PLC dropped to local), waits,
daemon restarts and autonomy resumes. At the end of every run the invariants are
checked on what **arrived at the plant** (its write log, with the plant's own readings
captured at the moment of each write), cross-checked with the audit trail:

1. no write outside the tag's limits, max step per proposal, or max rate (value change
   per write and spacing between writes);
2. none while a forbidding interlock held, while a signal the checks need was not good
   or had been frozen longer than its max age (the PLC's measurement image stops
   updating but stays "good": only its timestamps tell), or while the PLC was in local;
3. none of a proposal whose verdict asked for approvals without that many distinct
   approvers first, and no auto-execution while autonomy was suspended;
4. none not preceded by an "execute" verdict (or re-check) in the audit trail.

Each example starts a fresh plant and daemon. CI runs this module in a subprocess with a
time limit (tests/test_governance_property.py), ``EXAMPLES`` examples of up to
``STEPS`` steps (about a minute each); ``make soak`` runs more (EDGETWIN_SOAK_EXAMPLES).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from gateway.api.ports import Caller, ControlError, Role
from gateway.config.schema import GatewayConfig
from gateway.daemon import Daemon
from gateway.govern.gate import needed_signals, settings_for
from gateway.plantsim.points import MEASUREMENTS
from gateway.plantsim.runner import PlantRuntime
from gateway.store.audit import SqliteAuditTrail
from tests.support import eventually, free_port, skid_config

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("EDGETWIN_SOAK_EXAMPLES", "3"))
STEPS = int(os.environ.get("EDGETWIN_SOAK_STEPS", "16"))
INTERVAL_S = 2.0
#: The gateway judges interlocks on values up to a poll old; the plant's reading at the
#: write may have moved on by this much past a threshold without it being a violation.
INTERLOCK_SLACK = 0.5
#: A frozen measurement turns stale at its max age after its last notification (at most
#: a publishing interval before the freeze); a write may reach the plant this much later.
FREEZE_SLACK_S = 1.5
T = TypeVar("T")


class Harness:
    """A plant and a daemon on their own event loop thread (hypothesis rules are sync)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="edgetwin-prop-"))
        self.ports = free_port(), free_port()
        self.cfg: GatewayConfig = skid_config(
            *self.ports,
            edits=(
                ('autonomy = "L0"', 'autonomy = "L3"'),
                ("lookahead_s = [10.0, 60.0]", "lookahead_s = [2.0, 4.0]"),
            ),
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.captured: list[dict[str, Any]] = []
        self.frozen_since: float | None = None
        """Monotonic time the plant's measurement image froze (None: it is live)."""
        self.rt: PlantRuntime | None = None
        self.daemon: Daemon | None = None
        self.task: asyncio.Task[None] | None = None
        self.run(self._start_plant())
        self.run(self._start_daemon())

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start_plant(self) -> None:
        self.rt = PlantRuntime(
            self.cfg,
            opcua_port=self.ports[0],
            modbus_port=self.ports[1],
            write_log=self.dir / "writes.jsonl",
            watchdog_s=30.0,
        )
        await self.rt.__aenter__()
        plant = self.rt.plant
        original = plant.write

        def capture(point: str, value: float) -> Any:
            # What the plant's own instruments said at the moment the write arrived.
            readings = {n: (r.value, r.good) for n, r in plant.read().items()}
            frozen_since = self.frozen_since
            frozen_for = None if frozen_since is None else time.monotonic() - frozen_since
            outcome = original(point, value)
            self.captured.append(
                {"point": point, "value": value, "readings": readings, "frozen_for": frozen_for}
            )
            return outcome

        plant.write = capture  # type: ignore[method-assign]

    async def _start_daemon(self) -> None:
        self.daemon = Daemon(
            self.cfg,
            self.dir / "state",
            govern=settings_for(self.cfg),
            twin_options={"predict_every_s": 1.0, "fidelity_min_samples": 5},
        )
        self.task = asyncio.get_running_loop().create_task(self.daemon.run())
        daemon = self.daemon
        await eventually(
            lambda: (
                daemon.governance is not None
                and daemon.twin is not None
                and daemon.twin.status()["tracking"]
            ),
            timeout_s=40,
            what="twin tracking",
        )

    async def _stop_daemon(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    async def _stop_all(self) -> None:
        await self._stop_daemon()
        if self.rt is not None:
            await self.rt.__aexit__(None, None, None)

    def restart(self) -> None:
        self.run(self._stop_daemon())
        self.run(self._start_daemon())

    def close(self) -> None:
        try:
            self.run(self._stop_all())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


PEOPLE = [Caller("alice", Role.OPERATOR), Caller("bob", Role.OPERATOR)]
ACTIONS = st.one_of(
    st.tuples(
        st.just("propose"),
        st.sampled_from(["level_sp", "temp_sp", "valve_cmd", "level_sp"]),
        # Hypothesis leans on the first choices: the productive ones come first.
        st.sampled_from([0.1, 0.05, 0.3, 1.2]).flatmap(lambda m: st.sampled_from([m, -m])),
        st.sampled_from(["operator:carol", "api:mes", "agent:smol"]),
        st.sampled_from([None] * 6 + [-10.0, 0.55, 2.39, 45.0, 90.0, 200.0]),
        st.sampled_from([(0, 1), (0,), (0, 0, 1), ()]),
    ),
    st.tuples(st.just("approve"), st.booleans(), st.sampled_from([0, 1])),
    st.tuples(st.just("reject")),
    st.tuples(
        st.just("plant_state"),
        st.sampled_from(
            [
                "clear",
                "bearing_degradation",
                "sensor_loss",
                "sensor_freeze",
                "write_ignore",
                "local",
            ]
        ),
    ),
    st.tuples(st.just("wait"), st.sampled_from([2.0, 8.0])),
    st.tuples(st.just("resume")),
)


class GovernanceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.h: Harness | None = None
        self.restarts = 0

    @initialize()
    def start(self) -> None:
        self.h = Harness()
        daemon = self.h.daemon
        assert daemon is not None
        # Let the twin earn its trust, so that low-risk changes can auto-execute at L3.
        self.h.run(
            eventually(
                lambda: (daemon.twin.status().get("fidelity") or {}).get("trusted") is True,  # type: ignore[union-attr]
                timeout_s=60,
                what="twin trusted",
            )
        )

    @property
    def governance(self) -> Any:
        assert self.h is not None
        assert self.h.daemon is not None
        return self.h.daemon.governance

    @rule(actions=st.lists(ACTIONS, min_size=4, max_size=10))
    def act(self, actions: list[tuple[Any, ...]]) -> None:
        """A burst of actions. Drawn as a list so that every example does real work:
        hypothesis starts with the shortest runs, and a run of one or two single steps
        rarely gets a proposal through approval to the plant."""
        for name, *args in actions:
            getattr(self, name)(*args)

    def propose(
        self,
        tag: str,
        move: float,
        proposer: str,
        absolute: float | None,
        approvers: tuple[int, ...],
    ) -> None:
        """A proposal, and at once the approvals of the people drawn (if it waits)."""
        assert self.h is not None
        spec = self.h.cfg.writable[tag]
        assert self.h.daemon is not None
        current = self.h.daemon.acquisition.snapshot()[spec.signal].value
        target = absolute if absolute is not None else round(current + move * spec.max_step, 3)
        with contextlib.suppress(ControlError):  # refused before the gate: nothing to write
            result = self.h.run(self.governance.propose(proposer, {tag: target}, "property"))
            reasons = [r["code"] for r in result["reasons"]]
            event(f"proposal: {tag} {result['status']} {reasons[:1]}")
            for i in approvers if result["status"] == "pending" else ():
                with contextlib.suppress(ControlError):  # twice by one person, expired
                    done = self.h.run(
                        self.governance.approve(PEOPLE[i], result["proposal_id"], "ok")
                    )
                    event(f"approval: {done['status']}")

    def approve(self, everyone: bool, who: int) -> None:
        """``who`` approves the oldest pending proposal, or both approve every one."""
        assert self.h is not None
        pending = self.governance.proposals("pending")
        if not pending:
            return
        chosen = pending if everyone else [pending[-1]]
        people = PEOPLE if everyone else [PEOPLE[who]]
        for doc in chosen:
            for person in people:
                with contextlib.suppress(ControlError):  # approved, expired, not pending
                    self.h.run(self.governance.approve(person, doc["proposal"]["id"], "ok"))

    def reject(self) -> None:
        assert self.h is not None
        pending = self.governance.proposals("pending")
        if pending:
            with contextlib.suppress(ControlError):
                self.h.run(self.governance.reject(PEOPLE[0], pending[0]["proposal"]["id"], "no"))

    def plant_state(self, fault: str) -> None:
        assert self.h is not None
        rt = self.h.rt
        assert rt is not None
        if fault == "clear":
            rt.clear_faults()
            rt.set_remote(True)
            self.h.frozen_since = None
        elif fault == "local":
            rt.set_remote(False)
        else:
            if fault == "sensor_freeze" and self.h.frozen_since is None:
                self.h.frozen_since = time.monotonic()
            rt.inject_fault(fault, 1.0)

    def wait(self, seconds: float) -> None:
        assert self.h is not None
        self.h.run(asyncio.sleep(seconds))

    @precondition(lambda self: self.h is not None and self.restarts < 1)
    @rule()
    def restart(self) -> None:
        assert self.h is not None
        self.restarts += 1
        self.h.restart()

    def resume(self) -> None:
        assert self.h is not None
        self.h.run(self.governance.resume_autonomy(PEOPLE[1], "property test"))

    @invariant()
    def writes_so_far_are_admissible(self) -> None:
        if self.h is not None:
            check_writes(self.h)

    def teardown(self) -> None:
        if self.h is None:
            return
        try:
            self.h.run(self.h._stop_daemon())
            check_writes(self.h)
            check_audit(self.h)
            writes = sum(1 for c in self.h.captured if c["point"] != "heartbeat")
            band = "none" if not writes else "1-5" if writes <= 5 else "6+"
            event(f"setpoint writes at the plant: {band}")
        finally:
            self.h.close()
            self.h.cleanup()


def check_writes(h: Harness) -> None:
    """Invariants 1 and 2 on what arrived at the plant."""
    cfg = h.cfg

    def point_of(signal: str) -> str:
        return cfg.signal[signal].point or signal

    by_signal = {w.signal: (tag, w) for tag, w in cfg.writable.items()}
    last: dict[str, tuple[float, float]] = {}
    log = h.dir / "writes.jsonl"
    lines = [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []
    setpoint_writes = [w for w in lines if w["point"] in by_signal]
    captured = [c for c in h.captured if c["point"] in by_signal]
    assert len(captured) == len(setpoint_writes), "every logged setpoint write was captured"
    initial = {"level_sp": 1.5, "temp_sp": 45.0, "valve_cmd": 50.0}
    for w, c in zip(setpoint_writes, captured, strict=True):
        tag, spec = by_signal[w["point"]]
        value = float(w["value"])
        low, high = spec.limits
        assert low <= value <= high, f"{tag}={value} outside [{low}, {high}]"
        previous_t, previous_v = last.get(tag, (-1e18, initial[tag]))
        assert w["ts"] - previous_t >= INTERVAL_S - 0.05, (
            f"{tag}: writes {w['ts'] - previous_t:.2f} s apart"
        )
        rate = spec.max_rate_up if value > previous_v else spec.max_rate_down
        assert abs(value - previous_v) <= rate * INTERVAL_S + 1e-6, (
            f"{tag}: {previous_v} -> {value} in one write exceeds {rate}/s"
        )
        last[tag] = (w["ts"], value)
        readings = c["readings"]
        remote, remote_good = readings["remote_mode"]
        if w["accepted"]:
            # The gateway sees remote mode up to a poll late; a write that reaches a PLC
            # that has just gone local is refused there (and the gateway drops to L2).
            assert remote_good, f"{tag} written while remote_mode was not good"
            assert remote == 1.0, f"{tag} written with the PLC in local"
        twin_inputs = cfg.twin.inputs.values() if cfg.twin is not None else ()
        needed = needed_signals(cfg, settings_for(cfg), (tag,), twin_inputs)
        for lock in cfg.interlock:
            if not any(f.tag == tag for f in lock.forbid):
                continue
            reading, _good = readings[point_of(lock.signal)]
            margin = INTERLOCK_SLACK if lock.when == "above" else -INTERLOCK_SLACK
            holds = (
                reading > lock.threshold + margin
                if lock.when == "above"
                else (reading < lock.threshold + margin)
            )
            move = value - previous_v
            for rule_ in lock.forbid:
                if rule_.tag == tag and holds and move != 0:
                    direction = "up" if move > 0 else "down"
                    assert rule_.direction not in (direction, "any"), (
                        f"{tag} moved {direction} while interlock {lock.name} held ({reading})"
                    )
        for name in needed:
            point = point_of(name)
            assert readings[point][1], f"{tag} written while {name} was not good at the plant"
            frozen_for = c.get("frozen_for")  # not recorded: never frozen
            if w["accepted"] and frozen_for is not None and point in MEASUREMENTS:
                limit = cfg.signal[name].max_age_s + FREEZE_SLACK_S
                assert frozen_for <= limit, (
                    f"{tag} written with {name} frozen for {frozen_for:.1f} s (max age "
                    f"{cfg.signal[name].max_age_s:g} s)"
                )


def check_audit(h: Harness) -> None:
    """Invariants 3 and 4, and the per-proposal max step, from the audit trail."""
    cfg = h.cfg
    with SqliteAuditTrail(h.dir / "state" / "audit.db") as audit:
        records = list(audit.records())
    suspended = False
    stories: dict[str, list[Any]] = {}
    for r in records:
        if r.kind == "autonomy_suspended":
            suspended = True
        elif r.kind == "autonomy_resumed":
            suspended = False
        if r.kind == "verdict" and r.payload["decision"] == "execute":
            assert not suspended, f"{r.proposal_id} auto-executed while autonomy was suspended"
        if r.proposal_id is not None:
            stories.setdefault(r.proposal_id, []).append(r)
    audit_writes = []
    for pid, story in stories.items():
        kinds = [r.kind for r in story]
        if "write" not in kinds:
            continue
        first_write = kinds.index("write")
        verdict = next(r for r in story if r.kind == "verdict").payload
        allowed = [r for r in story[:first_write] if r.kind in ("verdict", "recheck")]
        assert allowed, f"{pid}: written without a verdict"
        assert allowed[-1].payload["decision"] == "execute", f"{pid}: last verdict not execute"
        if verdict["decision"] == "approval":
            approvers = {r.payload["by"] for r in story[:first_write] if r.kind == "approval"}
            assert len(approvers) >= verdict["approvals_required"], f"{pid}: too few approvers"
        else:
            risks = {cfg.writable[tag].risk for tag in json.loads(json.dumps(verdict["plan"]))}
            assert risks <= set(cfg.risk.auto_execute), f"{pid}: auto-executed {risks}"
        proposal = next(r for r in story if r.kind == "proposal").payload
        done = [r.payload for r in story if r.kind == "write_done"]
        for tag, target in proposal["targets"].items():
            before = done[0]["previous"].get(tag) if done else None
            if before is not None:
                assert abs(target - before) <= cfg.writable[tag].max_step + 1e-9
        audit_writes += [
            (r.payload["tag"], r.payload["value"], r.seq) for r in story if r.kind == "write"
        ]
    logged = (
        [json.loads(x) for x in (h.dir / "writes.jsonl").read_text().splitlines()]
        if (h.dir / "writes.jsonl").exists()
        else []
    )
    by_signal = {w.signal: tag for tag, w in cfg.writable.items()}
    plant_writes = [
        (by_signal[w["point"]], float(w["value"])) for w in logged if w["point"] in by_signal
    ]
    audit_writes.sort(key=lambda item: item[2])
    assert [(t, v) for t, v, _ in audit_writes] == plant_writes, (
        "every write at the plant is one the audit trail recorded, in the same order"
    )


GovernanceMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_governance_never_writes_what_it_must_not = GovernanceMachine.TestCase
