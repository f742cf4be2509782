"""The agent's policy around the model: tool loop, retries, repeats, and never a default.

The model here is scripted (a list of texts or errors) because these tests are about what
the agent does with each kind of answer; the real model (llama-cpp-python with a GGUF
file) is exercised in test_agent_live.py and test_llm.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from gateway.agent.llm import Completion
from gateway.agent.prompt import PlantContext
from gateway.agent.service import AgentService, alert_trigger
from gateway.config.schema import AgentSection
from gateway.errors import GatewayError
from tests.agent.test_schema import actions
from tests.support import skid_config

CFG = skid_config(4840, 5020)


class ModelDown(GatewayError):
    def __init__(self, kind: str) -> None:
        super().__init__(f"model {kind}")
        self.kind = kind


def said(text: str) -> Completion:
    return Completion(text, "stop", 100, 20, 0.1, 0.2)


class Scripted:
    """Answers with the next scripted item: a reply text, or an error to raise."""

    def __init__(self, *items: str | GatewayError) -> None:
        self.items = list(items)
        self.calls: list[dict[str, Any]] = []

    async def complete(
        self,
        messages: list[dict[str, str]],
        *,
        json_schema: dict[str, Any],
        max_tokens: int,
        temperature: float,
        timeout_s: float,
    ) -> Completion:
        self.calls.append({"messages": messages, "schema": json_schema})
        item = self.items.pop(0)
        if isinstance(item, GatewayError):
            raise item
        return said(item)


def text(action: str = "propose", **setpoints: float) -> str:
    return json.dumps(
        {
            "action": action,
            "diagnosis": "valve stiction",
            "confidence": "low",
            "setpoints": [{"tag": t, "value": v} for t, v in setpoints.items()],
            "rationale": "r",
            "expected_effect": "e",
        }
    )


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def append(
        self, kind: str, payload: Mapping[str, Any], *, proposal_id: str | None = None
    ) -> None:
        self.records.append((kind, dict(payload)))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.records]


class Gate:
    """Stands in for the governance service: records what reached it, says `decision`."""

    def __init__(self, decision: str = "reject") -> None:
        self.decision = decision
        self.received: list[tuple[str, dict[str, float], str]] = []

    async def __call__(
        self, proposer: str, targets: Mapping[str, float], reason: str
    ) -> dict[str, Any]:
        self.received.append((proposer, dict(targets), reason))
        status = {"reject": "rejected", "approval": "pending"}.get(self.decision, "written")
        return {
            "proposal_id": f"p-{len(self.received)}",
            "decision": self.decision,
            "status": status,
            "reasons": [{"code": "envelope_exit"}] if self.decision == "reject" else [],
        }


def context() -> PlantContext:
    return PlantContext(signals={}, writable={}, envelope={}, twin={}, alerts=[])


async def no_sleep(_: float) -> None:
    return None


def service(model: Scripted, gate: Gate, audit: Audit, **settings: Any) -> AgentService:
    asked: list[Mapping[str, float]] = []

    async def whatif(targets: Mapping[str, float]) -> dict[str, Any]:
        asked.append(dict(targets))
        return {"ok": True, "stays_inside_envelope": True}

    svc = AgentService(
        CFG,
        AgentSection(**{"retries": 2, "max_simulations": 2, **settings}),
        model,
        gate,
        context,
        whatif,
        audit,
        sleep=no_sleep,
    )
    svc.asked = asked  # type: ignore[attr-defined]
    return svc


ALERT = {
    "alert_id": "anomaly-x-1",
    "kind": "anomaly",
    "severity": "medium",
    "message": "valve_position lags valve_cmd",
    "signature": [{"fault": "valve_stiction", "confidence": 0.7, "evidence": []}],
}


async def test_a_proposal_goes_to_the_gate_as_the_agent() -> None:
    gate, audit = Gate("approval"), Audit()
    svc = service(Scripted(text(level_sp=1.4)), gate, audit)
    result = await svc.handle(alert_trigger(ALERT))
    assert result.outcome == "proposed"
    assert gate.received[0][:2] == ("agent:smollm2", {"level_sp": 1.4})
    assert "incident anomaly-x-1" in gate.received[0][2]
    assert audit.kinds() == ["agent_started", "agent_reply", "agent_proposed"]


async def test_the_tool_loop_is_bounded_by_the_grammar() -> None:
    """After max_simulations what-ifs the schema no longer offers `simulate`."""
    model = Scripted(
        text("simulate", level_sp=1.2), text("simulate", level_sp=1.3), text(level_sp=1.3)
    )
    gate, audit = Gate("approval"), Audit()
    svc = service(model, gate, audit)
    await svc.handle(alert_trigger(ALERT))
    offered = [actions(c["schema"]) for c in model.calls]
    assert offered == [["simulate", "propose", "none"]] * 2 + [["propose", "none"]]
    assert svc.asked == [{"level_sp": 1.2}, {"level_sp": 1.3}]  # type: ignore[attr-defined]
    # The answers were fed back as data.
    assert "<simulation_result>" in model.calls[2]["messages"][-1]["content"]
    assert audit.kinds().count("agent_simulation") == 2


@pytest.mark.parametrize(
    "failure",
    [
        ModelDown("timeout"),
        ModelDown("crashed"),
        "not json at all",
        text(pump_speed=1.0),
        text(level_sp=float("inf")).replace("Infinity", "1e999"),
    ],
)
async def test_every_failure_means_no_proposal_then_a_retry(failure: str | GatewayError) -> None:
    gate, audit = Gate("approval"), Audit()
    svc = service(Scripted(failure, failure, failure), gate, audit)
    result = await svc.handle(alert_trigger(ALERT))
    assert result.outcome == "gave_up"
    assert gate.received == []
    assert audit.kinds() == ["agent_started"] + ["agent_failed"] * 3 + ["agent_gave_up"]


async def test_a_retry_after_a_failure_can_still_propose() -> None:
    gate, audit = Gate("approval"), Audit()
    svc = service(Scripted(ModelDown("timeout"), text(temp_sp=55.0)), gate, audit)
    result = await svc.handle(alert_trigger(ALERT))
    assert result.outcome == "proposed"
    assert result.attempts == 2
    assert gate.received[0][1] == {"temp_sp": 55.0}


async def test_a_rejected_proposal_is_not_submitted_again_unchanged() -> None:
    model = Scripted(text(level_sp=2.5), text(level_sp=2.5), text(level_sp=2.5), text(level_sp=2.0))
    gate, audit = Gate("reject"), Audit()
    svc = service(model, gate, audit, retries=3)
    first = await svc.handle(alert_trigger(ALERT))
    assert first.proposal is not None
    assert first.proposal["status"] == "rejected"
    second = await svc.handle(alert_trigger(ALERT))
    # Two unchanged repeats were stopped before the gate; the changed one went through.
    assert [t for _, t, _ in gate.received] == [{"level_sp": 2.5}, {"level_sp": 2.0}]
    assert second.failures == ["repeat", "repeat"]
    # The model was shown what happened to its first proposal.
    assert '"status":"rejected"' in model.calls[-1]["messages"][1]["content"]


async def test_diagnosis_without_action_proposes_nothing() -> None:
    gate, audit = Gate(), Audit()
    svc = service(Scripted(text("none")), gate, audit)
    result = await svc.handle(alert_trigger(ALERT))
    assert result.outcome == "no_action"
    assert gate.received == []
    assert audit.kinds()[-1] == "agent_no_action"


def test_one_alert_is_one_incident_until_it_gets_worse() -> None:
    alerts = [dict(ALERT)]
    svc = AgentService(
        CFG,
        AgentSection(),
        Scripted(),
        Gate(),
        context,
        None,
        Audit(),  # type: ignore[arg-type]
        alerts=lambda: alerts,
    )
    assert len(svc.poll_alerts()) == 1
    assert svc.poll_alerts() == []  # an update of the same alert
    alerts[0] = {**ALERT, "severity": "high"}
    svc.section = AgentSection(min_interval_s=0)
    assert len(svc.poll_alerts()) == 1  # it climbed
    assert svc.queue.qsize() == 2


async def test_a_failing_twin_or_a_refused_request_never_stops_the_agent() -> None:
    """A what-if that raises becomes an answer; a proposal the service refuses as a
    request (ControlError) is a failed attempt, retried: neither escapes the agent task."""
    from gateway.api.ports import ControlError

    async def broken_twin(_: Mapping[str, float]) -> dict[str, Any]:
        raise RuntimeError("numba says no")

    async def refusing(proposer: str, targets: Mapping[str, float], reason: str) -> dict[str, Any]:
        raise ControlError(422, "invalid_proposal", "refused as a request")

    audit = Audit()
    svc = AgentService(
        CFG,
        AgentSection(retries=1, max_simulations=1),
        Scripted(text("simulate", level_sp=1.4), text(level_sp=1.4), text(level_sp=1.3)),
        refusing,
        context,
        broken_twin,
        audit,
        sleep=no_sleep,
    )
    result = await svc.handle(alert_trigger(ALERT))
    assert result.outcome == "gave_up"
    assert result.failures == ["propose_failed", "propose_failed"]
    answers = [p["answer"] for k, p in audit.records if k == "agent_simulation"]
    assert answers == [{"ok": False, "error": "the twin could not answer"}]
