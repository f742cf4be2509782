"""Writing a setpoint: only with a fitting Verdict, ramped, interlocked per write, read back.

The executor is the last door. It trusts nothing that happened before it:

* the verdict must fit the proposal (content hash) and be unexpired, and say "execute";
* before **every** write of a ramp, the gate's data step (every signal the checks need
  good and fresh, the PLC in remote, no interlock bypassed: invariant 5) and its
  interlock step (invariant 2: interlocks are evaluated immediately before the write)
  run again on the live table;
* after every write the value is read back through acquisition (a sample that arrived
  after the write, within tolerance, before a timeout); a mismatch, a refusal or a
  timeout stops the ramp, raises an alarm and suspends autonomy (drop to L2) until an
  operator re-enables it;
* every step is committed to the audit trail before the next one acts on it (invariant 8).

Writes are spaced by at least the ramp interval whatever the event loop does, so a late
step never shortens the next interval (the rate limit holds on the wire, not only in the
plan).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from gateway.config.schema import GatewayConfig
from gateway.errors import StoreError, WriteError
from gateway.govern.gate import (
    Decision,
    GovernSettings,
    Verdict,
    data_problems,
    interlock_violations,
)
from gateway.govern.proposal import Proposal
from gateway.govern.ramp import RampStep
from gateway.signals import SignalValue

log = structlog.get_logger("gateway.act")

READBACK_TIMEOUT_S: Final = 5.0
"""A written setpoint must come back through acquisition within this (two poll cycles
and a subscription notification, with margin)."""


class AuditSink(Protocol):
    def append(
        self, kind: str, payload: Mapping[str, Any], *, proposal_id: str | None = None
    ) -> object: ...


Write = Callable[[str, float], Awaitable[None]]
Snapshot = Callable[[], Mapping[str, SignalValue]]


@dataclass
class AutonomyLatch:
    """Autonomous writes suspended after a failed read-back or outcome check.

    While suspended the gateway runs at most at L2: every write needs a human. Only an
    operator's explicit resume clears it; a restart does not: with ``path`` set, every
    change is saved there at once (and :meth:`load` reads it back at start).
    """

    suspended: bool = False
    reason: str | None = None
    since: float | None = None
    path: Path | None = None

    @classmethod
    def load(cls, path: Path) -> AutonomyLatch:
        """The latch as the last run left it (not suspended if there is no readable file)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls(path=path)
        if isinstance(data, dict) and data.get("suspended") is True:
            return cls(True, str(data.get("reason")), float(data.get("since") or 0.0), path)
        return cls(path=path)

    def suspend(self, reason: str, now: float) -> None:
        if not self.suspended:
            self.suspended, self.reason, self.since = True, reason, now
            self._save()

    def resume(self) -> None:
        self.suspended, self.reason, self.since = False, None, None
        self._save()

    def effective(self, configured: str) -> str:
        """The autonomy level in force: the configured one, capped at L2 while suspended."""
        if self.suspended and configured in ("L3", "L4"):
            return "L2"
        return configured

    def to_record(self) -> dict[str, Any]:
        return {"suspended": self.suspended, "reason": self.reason, "since": self.since}

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.to_record()), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as err:
            # The latch still holds in memory; a restart would lose it, so say so loudly.
            log.error("autonomy_latch_not_saved", path=str(self.path), error=str(err))


@dataclass
class ExecutionResult:
    """What happened to a proposal at the writer.

    Attributes:
        status: "written" (every step written and read back), "refused" (the verdict
            does not allow it: nothing written), "aborted" (a pre-write check failed:
            the ramp stopped, earlier steps stay written), "failed" (a write or read-back
            failed: autonomy suspended).
        writes: ``(tag, value, unix time)`` of every write made.
        reason: Why it is not "written".
        previous: Tag -> its value before the first write (for an outcome fallback).
        finished_at: Unix time of the last write or of the stop.
    """

    status: str
    writes: list[tuple[str, float, float]] = field(default_factory=list)
    reason: str | None = None
    previous: dict[str, float] = field(default_factory=dict)
    finished_at: float = 0.0

    def to_record(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "writes": [[tag, value, round(at, 3)] for tag, value, at in self.writes],
            "reason": self.reason,
            "previous": dict(self.previous),
            "finished_at": self.finished_at,
        }


def readback_tolerance(cfg: GatewayConfig, tag: str, value: float) -> float:
    """How far a read-back may differ from the written value: a thousandth of the tag's
    range (covers a Modbus register's scaling) or a 1e-4 relative error, whichever is
    larger."""
    low, high = cfg.writable[tag].limits
    return max(1e-3 * (high - low), 1e-4 * abs(value))


class SetpointExecutor:
    """Executes verdicts; see the module docstring.

    Args:
        cfg: The config (writables, interlocks).
        settings: Ramp interval, remote signal.
        write: Writes one signal's engineering value (``Actuator.write_setpoint``).
        snapshot: The live table now.
        audit: The audit trail.
        latch: The autonomy latch this executor suspends on failure.
        clock: Unix time.
        sleep: Awaited between ramp steps and read-back polls.
        readback_timeout_s: See :data:`READBACK_TIMEOUT_S`.
    """

    def __init__(
        self,
        cfg: GatewayConfig,
        settings: GovernSettings,
        write: Write,
        snapshot: Snapshot,
        audit: AuditSink,
        latch: AutonomyLatch,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        readback_timeout_s: float = READBACK_TIMEOUT_S,
    ) -> None:
        self.cfg = cfg
        self.settings = settings
        self._write = write
        self._snapshot = snapshot
        self._audit = audit
        self.latch = latch
        self._clock = clock
        self._sleep = sleep
        self.readback_timeout_s = readback_timeout_s
        self.last_writes: dict[str, float] = {}
        """Tag -> unix time of the gateway's last write of it (the gate's rate input)."""
        self._to_come: dict[str, list[tuple[float, float]]] = {}
        self._lock = asyncio.Lock()

    async def execute(self, proposal: Proposal, verdict: Verdict) -> ExecutionResult:
        """Write ``proposal`` as ``verdict`` planned it. One execution at a time."""
        async with self._lock:
            return await self._execute(proposal, verdict)

    async def _execute(self, proposal: Proposal, verdict: Verdict) -> ExecutionResult:
        now = self._clock()
        refusal = None
        if verdict.decision is not Decision.EXECUTE:
            refusal = f"the verdict says {verdict.decision}, not execute"
        elif not verdict.fits(proposal, now):
            refusal = "the verdict does not fit this proposal or has expired"
        elif set(verdict.plan) != set(proposal.tags):
            refusal = "the verdict's plan does not cover exactly the proposal's tags"
        if refusal is not None:
            result = ExecutionResult("refused", reason=refusal, finished_at=now)
            await self._record("write_refused", proposal, result.to_record())
            log.error("write_refused", proposal_id=proposal.id, reason=refusal)
            return result

        snapshot = self._snapshot()
        result = ExecutionResult("written")
        for tag in proposal.tags:
            current = snapshot.get(self.cfg.writable[tag].signal)
            if current is not None and current.usable:
                result.previous[tag] = current.value
        steps = sorted(
            ((s.offset_s, tag, s.value) for tag, plan in verdict.plan.items() for s in plan),
            key=lambda item: (item[0], item[1]),
        )
        started = self._clock()
        for offset, tag, value in steps:
            self._to_come.setdefault(tag, []).append((started + offset, value))
        try:
            await self._write_steps(proposal, steps, started, result)
        finally:
            for tag in proposal.tags:
                self._to_come.pop(tag, None)
        result.finished_at = self._clock()
        if result.status == "failed":
            assert result.reason is not None
            self.latch.suspend(f"{proposal.id}: {result.reason}", result.finished_at)
            await self._record(
                "autonomy_suspended", proposal, {"reason": result.reason, **self.latch.to_record()}
            )
            log.error(
                "write_failed_autonomy_suspended", proposal_id=proposal.id, reason=result.reason
            )
        elif result.status == "aborted":
            log.warning("write_aborted", proposal_id=proposal.id, reason=result.reason)
        await self._record("write_done", proposal, result.to_record())
        return result

    async def _write_steps(
        self,
        proposal: Proposal,
        steps: list[tuple[float, str, float]],
        started: float,
        result: ExecutionResult,
    ) -> None:
        for k, (offset, tag, value) in enumerate(steps, start=1):
            due = started + offset
            interval_due = self.last_writes.get(tag, -math.inf) + self.settings.ramp_interval_s
            wait = max(due, interval_due) - self._clock()
            if wait > 0:
                await self._sleep(wait)
            problem = self._pre_write_problem(tag, value)
            if problem is not None:
                result.status, result.reason = "aborted", problem
                break
            step = {"tag": tag, "value": value, "step": k, "of": len(steps)}
            await self._record("write", proposal, step)
            try:
                await self._write(self.cfg.writable[tag].signal, value)
            except WriteError as err:
                written_at = self._clock()
                self.last_writes[tag] = written_at  # it may have reached the PLC
                result.status, result.reason = "failed", f"write of {tag} failed: {err}"
                break
            written_at = self._clock()
            self.last_writes[tag] = written_at
            result.writes.append((tag, value, written_at))
            queue = self._to_come.get(tag)
            if queue:
                queue.pop(0)
            readback = await self._read_back(tag, value, written_at)
            await self._record("readback", proposal, {**step, **readback})
            if not readback["ok"]:
                result.status, result.reason = "failed", readback["message"]
                break

    def to_come(self, now: float) -> dict[str, tuple[RampStep, ...]]:
        """Tag -> the writes still to come of the execution in progress (offsets from
        ``now``), for the gate to simulate a new proposal together with them."""
        return {
            tag: tuple(RampStep(max(0.0, at - now), value) for at, value in queue)
            for tag, queue in self._to_come.items()
            if queue
        }

    def _pre_write_problem(self, tag: str, value: float) -> str | None:
        """The gate's data step and interlock step again on live values, before every
        write: every signal the checks need good (a sensor that froze mid-ramp has gone
        stale), the PLC in remote, no bypass, no forbidding interlock."""
        snapshot = self._snapshot()
        twin_inputs = self.cfg.twin.inputs.values() if self.cfg.twin is not None else ()
        failed = data_problems(self.cfg, self.settings, (tag,), snapshot, twin_inputs)
        if failed:
            return f"just before the write: {failed[0].message}"
        current = snapshot[self.cfg.writable[tag].signal]
        failed = interlock_violations(self.cfg, {tag: value - current.value}, snapshot)
        if failed:
            return failed[0].message
        return None

    async def _read_back(self, tag: str, value: float, written_at: float) -> dict[str, Any]:
        signal = self.cfg.writable[tag].signal
        tolerance = readback_tolerance(self.cfg, tag, value)
        deadline = written_at + self.readback_timeout_s
        last: SignalValue | None = None
        while True:
            sample = self._snapshot().get(signal)
            if sample is not None and sample.usable and sample.received_ts >= written_at:
                last = sample
                if abs(sample.value - value) <= tolerance:
                    return {
                        "ok": True,
                        "read": sample.value,
                        "tolerance": tolerance,
                        "after_s": round(sample.received_ts - written_at, 3),
                        "message": "read back",
                    }
            if self._clock() >= deadline:
                break
            await self._sleep(0.1)
        seen = "nothing" if last is None else f"{last.value:g}"
        return {
            "ok": False,
            "read": None if last is None else last.value,
            "tolerance": tolerance,
            "message": (
                f"read-back of {tag}: wrote {value:g}, read {seen} within "
                f"{self.readback_timeout_s:g} s (tolerance {tolerance:g})"
            ),
        }

    async def _record(self, kind: str, proposal: Proposal, payload: Mapping[str, Any]) -> None:
        """Commit to the audit trail before going on; a failing store stops the writer
        (fail safe: no write that is not recorded)."""
        try:
            await asyncio.to_thread(self._audit.append, kind, payload, proposal_id=proposal.id)
        except StoreError as err:
            log.error("audit_failed_writer_stops", kind=kind, error=str(err))
            raise
