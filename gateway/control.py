"""The governance loop: proposals in, verdicts, approvals, writes and outcome checks out.

This is the :class:`gateway.api.ports.ControlService` the local API serves, and the
path every proposer takes (operators and external systems through the API, the agent
directly with :meth:`GovernanceService.propose`). It composes the pure gate
(``gateway.govern``) and the one writer (``gateway.act``) and owns their order:

1. the proposal is recorded in the audit trail, then judged (in a worker thread);
2. the verdict, with its predicted envelope, is recorded;
3. "execute": the writer ramps, interlocks and reads back every write;
   "approval": the proposal waits in the proposal store (it survives a restart) until
   enough distinct people approve, is re-checked on current values, then written;
4. at ``outcome_check_s`` after the last write the plant's measured values are compared
   with what the verdict predicted for that moment (:func:`predicted_band`); a
   divergence suspends autonomy and offers the previous values back as a new proposal,
   through the same gate.

Every step is committed to the audit trail before the next one acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import structlog

from gateway.act.setpoints import AutonomyLatch, ExecutionResult, SetpointExecutor
from gateway.api.ports import Caller, ControlError, ProposalRequest, Role
from gateway.config.schema import GatewayConfig
from gateway.govern.gate import Decision, GovernSettings, PlantView, Verdict, evaluate
from gateway.govern.proposal import Proposal, ProposalError
from gateway.govern.twin_view import twin_view
from gateway.signals import SignalValue
from gateway.store.audit import SqliteAuditTrail
from gateway.store.proposals import SqliteProposalStore
from gateway.twin.runtime import TwinRuntime

log = structlog.get_logger("gateway.control")

OUTCOME_TOLERANCE_FACTOR: Final = 2.0
"""A measured value may lie this many of its output's fidelity tolerances outside the
predicted band before the outcome counts as diverged."""
OUTCOME_WINDOW_S: Final = 15.0
"""The predicted band at the check is taken over this much either side of the time since
the verdict: the writes started a little after it and the ramp's read-backs take time."""


class GovernanceService:
    """See the module docstring. One per daemon.

    Args:
        cfg: The config.
        settings: The gate's and writer's knobs.
        snapshot: The live table now.
        twin: Returns the running twin (None while it starts or if it failed).
        executor: The one writer.
        audit: The audit trail.
        store: The proposal store.
        alerts: Returns the active alerts for the API.
        boot_id: Makes proposal ids unique across restarts.
        clock: Unix time.

    Attributes:
        agent_requester: Queues an on-demand look by the agent: ``(who, note)`` -> e.g.
            ``{"incident": "request-...-1", "queued": 1}``, or ControlError 503 when the
            agent cannot take it. Set by the daemon after construction, because the agent
            proposes through this service and so is built after it (and starts only once
            its model loads, if ever); None: no agent here, :meth:`ask_agent` answers 503.
    """

    def __init__(
        self,
        cfg: GatewayConfig,
        settings: GovernSettings,
        snapshot: Callable[[], Mapping[str, SignalValue]],
        twin: Callable[[], TwinRuntime | None],
        executor: SetpointExecutor,
        audit: SqliteAuditTrail,
        store: SqliteProposalStore,
        *,
        alerts: Callable[[], list[dict[str, Any]]] = list,
        boot_id: str = "0",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.settings = settings
        self._snapshot = snapshot
        self._twin = twin
        self.executor = executor
        self.audit = audit
        self.store = store
        self._alerts = alerts
        self._clock = clock
        self._ids = itertools.count(1)
        self.boot_id = boot_id
        self._tasks: set[asyncio.Task[None]] = set()
        self._decide = asyncio.Lock()
        self.agent_requester: Callable[[str, str], dict[str, Any]] | None = None

    @property
    def latch(self) -> AutonomyLatch:
        return self.executor.latch

    # ------------------------------------------------------------------ reading

    def signals(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "value": v.value if math.isfinite(v.value) else None,
                "unit": v.unit,
                "quality": str(v.quality),
                "reason": v.reason,
                "source_ts": v.source_ts,
                "received_ts": v.received_ts,
            }
            for name, v in self._snapshot().items()
        ]

    def alerts(self) -> list[dict[str, Any]]:
        return self._alerts()

    def proposals(self, status: str | None = None) -> list[dict[str, Any]]:
        self._expire_due()
        return self.store.all(status)

    def proposal(self, proposal_id: str) -> dict[str, Any]:
        self._expire_due()
        doc = self.store.get(proposal_id)
        if doc is None:
            raise ControlError(404, "unknown_proposal", f"no proposal {proposal_id!r}")
        story = [
            {"seq": r.seq, "ts": r.ts, "kind": r.kind, "payload": dict(r.payload)}
            for r in self.audit.records(proposal_id=proposal_id)
        ]
        return {**doc, "audit": story}

    # ------------------------------------------------------------------ proposing

    async def submit(self, caller: Caller, request: ProposalRequest) -> dict[str, Any]:
        kind = "operator" if caller.role.allows(Role.OPERATOR) else "api"
        return await self.propose(
            f"{kind}:{caller.name}", request.targets, request.reason, request.expires_in_s
        )

    async def propose(
        self,
        proposer: str,
        targets: Mapping[str, float],
        reason: str,
        expires_in_s: float | None = None,
    ) -> dict[str, Any]:
        """Any proposer's way in. Returns the verdict (a rejection is a result)."""
        now = self._clock()
        try:
            proposal = Proposal.create(
                id=f"p-{self.boot_id}-{next(self._ids)}",
                proposer=proposer,
                targets=targets,
                rationale=reason,
                created_at=now,
                expires_in_s=expires_in_s or self.settings.default_expiry_s,
            )
        except ProposalError as err:
            raise ControlError(422, "invalid_proposal", str(err)) from err
        async with self._decide:
            await self._append("proposal", proposal.to_record(), proposal.id)
            conflict = await self._conflict(proposal)
            if conflict is not None:
                return conflict
            verdict = await asyncio.to_thread(
                evaluate, self.cfg, self.settings, proposal, self._view(now)
            )
            record = verdict.to_record()
            await self._append("verdict", record, proposal.id)
            log.info(
                "verdict",
                proposal_id=proposal.id,
                decision=str(verdict.decision),
                reasons=[c.code for c in verdict.reasons],
            )
            document = {"proposal": proposal.to_record(), "verdict": record, "approvals": []}
            if verdict.decision is Decision.REJECT:
                self.store.put(proposal.id, "rejected", document, now)
                return self._result(proposal, verdict, "rejected")
            if verdict.decision is Decision.APPROVAL:
                self.store.put(proposal.id, "pending", document, now)
                return self._result(proposal, verdict, "pending")
            self.store.put(proposal.id, "executing", document, now)
        execution = await self._execute(proposal, verdict, document)
        return self._result(proposal, verdict, execution.status, execution)

    async def _conflict(self, proposal: Proposal) -> dict[str, Any] | None:
        open_docs = self.store.open_on(set(proposal.tags))
        if not open_docs:
            return None
        holders = [d["proposal"]["id"] for d in open_docs]
        if self.settings.conflict == "replace" and all(d["status"] == "pending" for d in open_docs):
            for doc in open_docs:
                self.store.put(doc["proposal"]["id"], "superseded", doc, self._clock())
                await self._append("superseded", {"by": proposal.id}, doc["proposal"]["id"])
            return None
        message = (
            f"{', '.join(holders)} already holds {', '.join(sorted(proposal.tags))}: one open "
            "proposal per tag (approve, reject or let it expire first)"
        )
        await self._append("conflict", {"holders": holders, "message": message}, proposal.id)
        document: dict[str, Any] = {
            "proposal": proposal.to_record(),
            "verdict": None,
            "approvals": [],
        }
        self.store.put(proposal.id, "rejected", document, self._clock())
        return {
            "proposal_id": proposal.id,
            "decision": "reject",
            "status": "rejected",
            "reasons": [{"step": "policy", "code": "conflict", "message": message}],
            "verdict": None,
        }

    def _view(self, now: float) -> PlantView:
        return PlantView(
            now=now,
            signals=self._snapshot(),
            autonomy=self.latch.effective(self.cfg.gateway.autonomy),
            last_writes=dict(self.executor.last_writes),
            twin=twin_view(self.cfg, self._twin(), now=now),
            in_flight=self.executor.to_come(now),
        )

    # ------------------------------------------------------------------ approving

    async def approve(self, caller: Caller, proposal_id: str, note: str) -> dict[str, Any]:
        async with self._decide:
            doc = self._pending(proposal_id)
            now = self._clock()
            approvers = [a["by"] for a in doc["approvals"]]
            if caller.name in approvers:
                raise ControlError(
                    409, "already_approved", f"{caller.name} has already approved {proposal_id}"
                )
            approval = {"by": caller.name, "role": str(caller.role), "at": now, "note": note}
            # What the approver saw: the change, the reasons, the envelope, the fidelity.
            await self._append(
                "approval",
                {**approval, "saw": doc["verdict"], "proposal": doc["proposal"]},
                proposal_id,
            )
            doc["approvals"].append(approval)
            required = int(doc["verdict"]["approvals_required"])
            if len(doc["approvals"]) < required:
                self.store.put(proposal_id, "pending", doc, now)
                return {
                    **doc,
                    "status": "pending",
                    "approvals_missing": required - len(doc["approvals"]),
                }
            proposal = Proposal.from_record(doc["proposal"])
            verdict = await asyncio.to_thread(
                evaluate,
                self.cfg,
                self.settings,
                proposal,
                self._view(now),
                recheck_of=doc["verdict"],
            )
            await self._append("recheck", verdict.to_record(), proposal_id)
            doc["recheck"] = verdict.to_record()
            if verdict.decision is not Decision.EXECUTE:
                self.store.put(proposal_id, "rejected", doc, now)
                return self._result(proposal, verdict, "rejected")
            self.store.put(proposal_id, "executing", doc, now)
        execution = await self._execute(proposal, verdict, doc)
        return self._result(proposal, verdict, execution.status, execution)

    async def reject(self, caller: Caller, proposal_id: str, reason: str) -> dict[str, Any]:
        async with self._decide:
            doc = self._pending(proposal_id)
            now = self._clock()
            rejection = {"by": caller.name, "role": str(caller.role), "at": now, "reason": reason}
            await self._append("rejection", {**rejection, "saw": doc["verdict"]}, proposal_id)
            doc["rejection"] = rejection
            self.store.put(proposal_id, "declined", doc, now)
            return {**doc, "status": "declined"}

    def _pending(self, proposal_id: str) -> dict[str, Any]:
        self._expire_due()
        doc = self.store.get(proposal_id)
        if doc is None:
            raise ControlError(404, "unknown_proposal", f"no proposal {proposal_id!r}")
        if doc["status"] != "pending":
            raise ControlError(
                409, "not_pending", f"{proposal_id} is {doc['status']}, not waiting for approval"
            )
        return doc

    def _expire_due(self) -> None:
        now = self._clock()
        for doc in self.store.all("pending"):
            if now >= float(doc["proposal"]["expires_at"]):
                pid = doc["proposal"]["id"]
                self.store.put(pid, "expired", doc, now)
                self.audit.append("expired", {"at": now}, proposal_id=pid)

    async def resume_autonomy(self, caller: Caller, note: str) -> dict[str, Any]:
        before = self.latch.to_record()
        self.latch.resume()
        await self._append(
            "autonomy_resumed", {"by": caller.name, "note": note, "was": before}, None
        )
        return {"autonomy": self.cfg.gateway.autonomy, **self.latch.to_record()}

    # ------------------------------------------------------------------ asking the agent

    async def ask_agent(self, caller: Caller, note: str) -> dict[str, Any]:
        """Hand the operator's note to the agent; its diagnosis comes later, not here.

        Nothing is audited here: the agent records ``agent_started`` with the caller and
        the note when it takes the request, so the trail holds one record per request,
        written by whoever acts on it.
        """
        if self.agent_requester is None:
            raise ControlError(
                503,
                "agent_unavailable",
                "no agent is attached to this gateway (is [agent] configured? the gateway "
                "log says why it did not start)",
            )
        return self.agent_requester(caller.name, note)

    # ------------------------------------------------------------------ writing and after

    async def _execute(
        self, proposal: Proposal, verdict: Verdict, document: dict[str, Any]
    ) -> ExecutionResult:
        try:
            execution = await self.executor.execute(proposal, verdict)
        except Exception as err:  # a store failure mid-ramp: fail safe, visibly
            self.latch.suspend(f"{proposal.id}: writer stopped: {err}", self._clock())
            document["execution"] = {"status": "failed", "reason": str(err)}
            self.store.put(proposal.id, "failed", document, self._clock())
            log.error("writer_stopped", proposal_id=proposal.id, error=str(err))
            return ExecutionResult("failed", reason=str(err), finished_at=self._clock())
        document["execution"] = execution.to_record()
        self.store.put(proposal.id, execution.status, document, self._clock())
        if execution.status == "written":
            task = asyncio.create_task(
                self._outcome_check(proposal, verdict, execution), name=f"outcome:{proposal.id}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return execution

    async def _outcome_check(
        self, proposal: Proposal, verdict: Verdict, execution: ExecutionResult
    ) -> None:
        await asyncio.sleep(
            max(0.0, execution.finished_at + self.settings.outcome_check_s - self._clock())
        )
        outcome = self.outcome(verdict)
        await self._append("outcome", outcome, proposal.id)
        if outcome["ok"]:
            log.info("outcome_as_predicted", proposal_id=proposal.id)
            return
        self.latch.suspend(f"{proposal.id}: outcome diverged from the prediction", self._clock())
        await self._append("autonomy_suspended", self.latch.to_record(), proposal.id)
        log.error("outcome_diverged", proposal_id=proposal.id, diverged=outcome["diverged"])
        if execution.previous:
            await self.propose(
                "system:outcome-check",
                execution.previous,
                f"undo {proposal.id}: the plant did not respond as predicted "
                f"({', '.join(outcome['diverged'])})",
            )

    def outcome(self, verdict: Verdict) -> dict[str, Any]:
        """Compare the live values with what the verdict predicted for now: the ensemble's
        band around the time elapsed since the verdict (the whole-horizon envelope for a
        verdict without a recorded band)."""
        runtime = self._twin()
        tolerances: dict[str, float] = {}
        if runtime is not None:
            tolerances = {o.name: o.tolerance or 0.0 for o in runtime.model.outputs}
        assert self.cfg.twin is not None
        signal_of = dict(self.cfg.twin.outputs)
        snapshot = self._snapshot()
        elapsed = self._clock() - verdict.issued_at
        checked, diverged, unknown = {}, [], []
        for output, predicted in verdict.predicted.items():
            low, high = predicted_band(predicted, elapsed, OUTCOME_WINDOW_S)
            signal = signal_of.get(output)
            value = snapshot.get(signal) if signal else None
            if value is None or not value.usable or low is None or high is None:
                unknown.append(output)
                continue
            slack = OUTCOME_TOLERANCE_FACTOR * tolerances.get(output, 0.0)
            ok = low - slack <= value.value <= high + slack
            checked[output] = {
                "measured": value.value,
                "low": low,
                "high": high,
                "slack": slack,
                "at_s": round(elapsed, 1),
                "ok": ok,
            }
            if not ok:
                diverged.append(output)
        # Data the check needs but cannot read is itself a failed outcome check.
        return {
            "ok": not diverged and not unknown,
            "checked": checked,
            "diverged": diverged + [f"{u} (not readable)" for u in unknown],
        }

    def _result(
        self,
        proposal: Proposal,
        verdict: Verdict,
        status: str,
        execution: ExecutionResult | None = None,
    ) -> dict[str, Any]:
        return {
            "proposal_id": proposal.id,
            "decision": str(verdict.decision),
            "status": status,
            "approvals_required": verdict.approvals_required,
            "reasons": [c.to_record() for c in verdict.reasons],
            "verdict": verdict.to_record(),
            "execution": None if execution is None else execution.to_record(),
        }

    async def _append(self, kind: str, payload: Mapping[str, Any], proposal_id: str | None) -> None:
        await asyncio.to_thread(self.audit.append, kind, payload, proposal_id=proposal_id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def predicted_band(
    predicted: Mapping[str, Any], elapsed_s: float, window_s: float
) -> tuple[float | None, float | None]:
    """The low and high a verdict predicted for one output ``elapsed_s`` after it: the
    band's records within ``window_s`` of that time (its last record past the horizon),
    or the whole-horizon envelope when no band was recorded. None where unknown (a
    diverged member's NaN is unknown, not a bound)."""
    band = predicted.get("band")
    if not isinstance(band, Mapping) or not band.get("low") or not band.get("every_s"):
        return predicted.get("low"), predicted.get("high")
    every, lows, highs = float(band["every_s"]), band["low"], band["high"]
    last = len(lows) - 1
    first_i = min(last, max(0, math.floor((elapsed_s - window_s) / every)))
    last_i = min(last, max(0, math.ceil((elapsed_s + window_s) / every)))
    window_lows = lows[first_i : last_i + 1]
    window_highs = highs[first_i : last_i + 1]
    if any(v is None for v in (*window_lows, *window_highs)):
        return None, None
    return min(window_lows), max(window_highs)
