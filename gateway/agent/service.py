"""The agent task: alerts in, at most one proposal per attempt out, through the gate.

An *incident* is one alert (by id) or one operator request. For each, the agent builds a
prompt (``gateway.agent.prompt``) from the plant's data, the runbook passages the
knowledge base finds for it and its memory of the incident; lets the model ask the twin
up to ``max_simulations`` what-if questions; and submits the model's final proposal to
the governance service as proposer ``agent:<name>``, exactly as an operator's would go.

What it never does: write, approve, or fall back to a "default" change. A timeout, a
crashed model process, output that does not parse, or a proposal that repeats one already
refused in the incident gives *no proposal*, an audit record saying why, and a retry
after ``retry_after_s`` (at most ``retries`` times); then the incident is given up and
the audit trail says so.

Every step goes to the audit trail before the next acts on it (kinds ``agent_started``,
``agent_reply``, ``agent_simulation``, ``agent_failed``, ``agent_repeat``,
``agent_proposed``, ``agent_no_action``, ``agent_gave_up``), keyed by incident; the
proposal's own story (verdict, approvals, writes) is under its proposal id as usual.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from gateway.agent.llm import Completion
from gateway.agent.memory import Entry, IncidentMemory
from gateway.agent.prompt import PlantContext, Turn, build_messages, untrusted
from gateway.agent.schema import AgentReply, ReplyError, parse_reply, reply_schema
from gateway.api.ports import ControlError
from gateway.config.schema import AgentSection, GatewayConfig
from gateway.errors import GatewayError, StoreError

log = structlog.get_logger("gateway.agent")

#: Alert severities in increasing order: an alert that climbs re-opens its incident.
_SEVERITY = {"low": 0, "medium": 1, "high": 2}


class Model(Protocol):
    """The language model as the agent uses it (``gateway.agent.llm.LlmWorker``)."""

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any],
        max_tokens: int,
        temperature: float,
        timeout_s: float,
    ) -> Completion: ...


class Passages(Protocol):
    """The runbooks (``gateway.agent.knowledge.KnowledgeBase``)."""

    def search(self, text: str, limit: int = 3) -> Sequence[Any]: ...


class Audit(Protocol):
    def append(
        self, kind: str, payload: Mapping[str, Any], *, proposal_id: str | None = None
    ) -> object: ...


Propose = Callable[[str, Mapping[str, float], str], Awaitable[Mapping[str, Any]]]
WhatIf = Callable[[Mapping[str, float]], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class Trigger:
    """Why an incident started: an alert's record or an operator's request."""

    incident: str
    kind: str
    summary: Mapping[str, Any]
    query: str

    def to_record(self) -> dict[str, Any]:
        return {"incident": self.incident, "kind": self.kind, **self.summary}


@dataclass
class IncidentResult:
    """What one incident came to (for the status page, the CLI and the demo)."""

    incident: str
    outcome: str  # proposed | no_action | gave_up
    attempts: int
    reply: AgentReply | None = None
    proposal: Mapping[str, Any] | None = None
    failures: list[str] = field(default_factory=list)

    def to_record(self) -> dict[str, Any]:
        return {
            "incident": self.incident,
            "outcome": self.outcome,
            "attempts": self.attempts,
            "reply": None if self.reply is None else self.reply.to_record(),
            "proposal_id": None if self.proposal is None else self.proposal.get("proposal_id"),
            "decision": None if self.proposal is None else self.proposal.get("decision"),
            "status": None if self.proposal is None else self.proposal.get("status"),
            "failures": list(self.failures),
        }


def alert_trigger(alert: Mapping[str, Any]) -> Trigger:
    """An incident for an active alert (anomaly or forecast), keyed by its id."""
    faults = [h.get("fault", "") for h in alert.get("signature", []) if isinstance(h, Mapping)]
    message = str(alert.get("message", ""))
    summary = {
        "alert_id": alert.get("alert_id"),
        "alert_kind": alert.get("kind"),
        "severity": alert.get("severity"),
        "message": untrusted(message, 240),
        "likely": faults,
    }
    query = " ".join([message, *faults, str(alert.get("output", ""))])
    return Trigger(str(alert.get("alert_id")), "alert", summary, query)


class AgentService:
    """See the module docstring. One per daemon; ``run()`` is its task.

    Args:
        cfg: The config (writable tags).
        section: The ``[agent]`` settings.
        model: The language model.
        propose: The governance service's ``propose``.
        context: The plant's data now.
        whatif: Runs the twin for a set of targets (off the event loop).
        audit: The audit trail (appends are done in a worker thread).
        alerts: The active alerts.
        knowledge: The runbooks (None: no passages).
        proposal_status: A proposal's current status by id (the store), so the memory
            learns what became of a proposal that waited for a human.
        clock: Unix time.
        sleep: Awaited between retries (tests pass a fast one).
    """

    def __init__(
        self,
        cfg: GatewayConfig,
        section: AgentSection,
        model: Model,
        propose: Propose,
        context: Callable[[], PlantContext],
        whatif: WhatIf,
        audit: Audit,
        *,
        alerts: Callable[[], Sequence[Mapping[str, Any]]] = list,
        knowledge: Passages | None = None,
        proposal_status: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.cfg = cfg
        self.section = section
        self.model = model
        self._propose = propose
        self._context = context
        self._whatif = whatif
        self.audit = audit
        self._alerts = alerts
        self.knowledge = knowledge
        self._proposal_status = proposal_status
        self._clock = clock
        self._sleep = sleep
        self.memory = IncidentMemory()
        self.tags = sorted(cfg.writable)
        self.proposer = f"agent:{section.name}"
        self.queue: asyncio.Queue[Trigger] = asyncio.Queue(maxsize=32)
        self.results: deque[IncidentResult] = deque(maxlen=20)
        self.busy: str | None = None
        self._seen: dict[str, tuple[int, float]] = {}
        self.counts = {"incidents": 0, "proposed": 0, "no_action": 0, "gave_up": 0, "failures": 0}
        self.tokens = {"prompt": 0, "completion": 0}
        self.timing = {"prompt_s": 0.0, "gen_s": 0.0}

    # ------------------------------------------------------------------ triggers

    def poll_alerts(self) -> list[Trigger]:
        """Queue an incident for each new alert, or one whose severity climbed.

        An alert already handled is not handled again within ``min_interval_s`` unless
        it became more severe: one incipient fault is one incident, not one per update.
        """
        now = self._clock()
        queued: list[Trigger] = []
        for alert in self._alerts():
            alert_id = alert.get("alert_id")
            if not alert_id:
                continue
            level = _SEVERITY.get(str(alert.get("severity")), 0)
            seen = self._seen.get(str(alert_id))
            if seen is not None:
                last_level, at = seen
                if level <= last_level or now - at < self.section.min_interval_s:
                    continue
            trigger = alert_trigger(alert)
            if self.request(trigger):
                self._seen[str(alert_id)] = (level, now)
                queued.append(trigger)
        return queued

    def request(self, trigger: Trigger) -> bool:
        """Queue an incident; False (and a log line) when the queue is full."""
        try:
            self.queue.put_nowait(trigger)
        except asyncio.QueueFull:
            log.warning("agent_queue_full", incident=trigger.incident)
            return False
        return True

    async def run(self) -> None:
        """Poll alerts once a second and handle queued incidents one at a time."""
        while True:
            self.poll_alerts()
            try:
                async with asyncio.timeout(1.0):
                    trigger = await self.queue.get()
            except TimeoutError:
                continue
            await self.handle(trigger)

    # ------------------------------------------------------------------ one incident

    async def handle(self, trigger: Trigger) -> IncidentResult:
        """Run one incident to a proposal, a diagnosis without action, or giving up."""
        self.busy = trigger.incident
        self.counts["incidents"] += 1
        result = IncidentResult(trigger.incident, "gave_up", 0)
        try:
            await self._record("agent_started", trigger.to_record())
            passages = self._passages(trigger)
            for attempt in range(1, self.section.retries + 2):
                result.attempts = attempt
                if attempt > 1:
                    await self._sleep(self.section.retry_after_s)
                try:
                    done = await self._attempt(trigger, passages, result)
                except _Failed as failed:
                    self.counts["failures"] += 1
                    result.failures.append(failed.reason)
                    await self._record(
                        "agent_failed",
                        {"incident": trigger.incident, "attempt": attempt, **failed.record},
                    )
                    log.warning(
                        "agent_failed", incident=trigger.incident, attempt=attempt, **failed.record
                    )
                    continue
                if done:
                    break
            else:
                result.outcome = "gave_up"
                await self._record(
                    "agent_gave_up",
                    {
                        "incident": trigger.incident,
                        "attempts": result.attempts,
                        "failures": result.failures,
                    },
                )
            self.counts[result.outcome] += 1
            self.results.append(result)
            return result
        finally:
            self.busy = None

    async def _attempt(
        self, trigger: Trigger, passages: list[dict[str, str]], result: IncidentResult
    ) -> bool:
        turns: list[Turn] = []
        # One snapshot of the plant per attempt: the model reasons over one consistent
        # picture, and the unchanged prompt prefix lets llama.cpp reuse its KV cache
        # across the tool loop's turns (the what-if answers come from the live twin).
        context = self._context()
        while True:
            may_simulate = len(turns) < self.section.max_simulations
            reply = await self._ask(trigger, context, passages, turns, may_simulate)
            if reply.action == "simulate":
                try:
                    answer = await self._whatif(reply.setpoints)
                # The twin is not a safety function for the agent's questions: a failure
                # is the answer (the gate will simulate the proposal itself anyway).
                except Exception as err:
                    log.error("agent_whatif_failed", error=f"{type(err).__name__}: {err}")
                    answer = {"ok": False, "error": "the twin could not answer"}
                await self._record(
                    "agent_simulation",
                    {
                        "incident": trigger.incident,
                        "setpoints": reply.setpoints,
                        "answer": dict(answer),
                    },
                )
                turns.append(Turn(reply.setpoints, answer))
                continue
            result.reply = reply
            if reply.action == "none":
                result.outcome = "no_action"
                await self._record(
                    "agent_no_action",
                    {
                        "incident": trigger.incident,
                        "diagnosis": reply.diagnosis,
                        "confidence": reply.confidence,
                        "rationale": reply.rationale,
                    },
                )
                log.info("agent_no_action", incident=trigger.incident, diagnosis=reply.diagnosis)
                return True
            return await self._submit(trigger, reply, result)

    async def _ask(
        self,
        trigger: Trigger,
        context: PlantContext,
        passages: list[dict[str, str]],
        turns: list[Turn],
        may_simulate: bool,
    ) -> AgentReply:
        if self._proposal_status is not None:
            self.follow_up(self._proposal_status)
        messages = build_messages(
            context,
            trigger=trigger.to_record(),
            passages=passages,
            memory=self.memory.to_prompt(trigger.incident),
            turns=turns,
            simulations_left=self.section.max_simulations - len(turns),
        )
        schema = reply_schema(
            self.tags, may_simulate=may_simulate, max_setpoints=self.section.max_setpoints
        )
        try:
            completion = await self.model.complete(
                messages,
                json_schema=schema,
                max_tokens=self.section.max_tokens,
                temperature=self.section.temperature,
                timeout_s=self.section.timeout_s,
            )
        except GatewayError as err:
            kind = getattr(err, "kind", "failed")
            raise _Failed(f"model_{kind}", {"reason": f"model_{kind}", "error": str(err)}) from err
        self.tokens["prompt"] += completion.prompt_tokens
        self.tokens["completion"] += completion.completion_tokens
        self.timing["prompt_s"] += completion.prompt_s
        self.timing["gen_s"] += completion.gen_s
        try:
            reply = parse_reply(
                completion.text,
                self.tags,
                may_simulate=may_simulate,
                max_setpoints=self.section.max_setpoints,
            )
        except ReplyError as err:
            raise _Failed(
                "unparsable",
                {
                    "reason": "unparsable",
                    "error": str(err),
                    "text": untrusted(completion.text, 600),
                },
            ) from err
        await self._record(
            "agent_reply",
            {
                "incident": trigger.incident,
                "reply": reply.to_record(),
                "prompt_tokens": completion.prompt_tokens,
                "completion_tokens": completion.completion_tokens,
                "prompt_s": round(completion.prompt_s, 3),
                "gen_s": round(completion.gen_s, 3),
            },
        )
        return reply

    async def _submit(self, trigger: Trigger, reply: AgentReply, result: IncidentResult) -> bool:
        repeated = self.memory.repeats(trigger.incident, reply.setpoints)
        if repeated is not None:
            raise _Failed(
                "repeat",
                {
                    "reason": "repeat",
                    "setpoints": reply.setpoints,
                    "repeats": repeated.proposal_id,
                    "was": repeated.status,
                },
            )
        reason = (
            f"{reply.diagnosis} (confidence {reply.confidence}). {reply.rationale} "
            f"Expected: {reply.expected_effect} [incident {trigger.incident}]"
        )
        try:
            outcome = await self._propose(self.proposer, reply.setpoints, reason)
        except (GatewayError, ControlError) as err:
            # The request itself failed (not a verdict): no proposal; retried like a fault.
            raise _Failed(
                "propose_failed", {"reason": "propose_failed", "error": str(err)}
            ) from err
        result.proposal = outcome
        result.outcome = "proposed"
        status = str(outcome.get("status"))
        codes = [r.get("code", "") for r in outcome.get("reasons", []) if isinstance(r, Mapping)]
        self.memory.record(
            trigger.incident,
            Entry(self._clock(), dict(reply.setpoints), outcome.get("proposal_id"), status, codes),
        )
        await self._record(
            "agent_proposed",
            {
                "incident": trigger.incident,
                "proposal_id": outcome.get("proposal_id"),
                "decision": outcome.get("decision"),
                "status": status,
                "reasons": codes,
            },
        )
        log.info(
            "agent_proposed",
            incident=trigger.incident,
            proposal_id=outcome.get("proposal_id"),
            setpoints=reply.setpoints,
            decision=outcome.get("decision"),
            status=status,
        )
        return True

    def _passages(self, trigger: Trigger) -> list[dict[str, str]]:
        if self.knowledge is None or self.section.passages == 0:
            return []
        try:
            found = self.knowledge.search(trigger.query, limit=self.section.passages)
        except (GatewayError, OSError) as err:
            log.warning("agent_knowledge_failed", error=str(err))
            return []
        return [{"source": p.source, "heading": p.heading, "text": p.text} for p in found]

    async def _record(self, kind: str, payload: Mapping[str, Any]) -> None:
        try:
            await asyncio.to_thread(self.audit.append, kind, payload)
        except StoreError as err:
            log.error("audit_append_failed", kind=kind, error=str(err))

    # ------------------------------------------------------------------ status

    def follow_up(self, status_of: Callable[[str], str | None]) -> None:
        """Bring the memory's open proposals up to date (approved, rejected, expired)."""
        for proposal_id in self.memory.open_proposals():
            status = status_of(proposal_id)
            if status is not None:
                self.memory.update(proposal_id, status=status)

    def status(self) -> dict[str, Any]:
        return {
            "state": "running",
            "proposer": self.proposer,
            "busy": self.busy,
            "queued": self.queue.qsize(),
            **self.counts,
            "tokens": dict(self.tokens),
            "recent": [r.to_record() for r in list(self.results)[-5:]],
        }


class _Failed(Exception):
    """One attempt ended without a proposal; the record says why."""

    def __init__(self, reason: str, record: Mapping[str, Any]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.record = dict(record)
