"""POST /v1/agent/requests against the real governance service: what it does with and
without the daemon's agent requester, and that it leaves the audit trail to the agent."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.act.setpoints import AutonomyLatch, SetpointExecutor
from gateway.api.client import ApiClient, ApiError
from gateway.api.ports import ControlError
from gateway.config.load import load_config
from gateway.control import GovernanceService
from gateway.govern.gate import settings_for
from gateway.store.audit import SqliteAuditTrail
from gateway.store.proposals import SqliteProposalStore
from tests.api.conftest import ENGINEER, OPERATOR, VIEWER, ServerThread, request, token_table

SKID = Path(__file__).resolve().parents[2] / "config" / "skid.toml"
NOTE = "the pump sounds odd, have a look"


async def _no_write(signal: str, value: float) -> None:
    raise AssertionError(f"asking the agent wrote {signal}={value}")


@dataclass
class Requester:
    """Stands in for the daemon's ``_agent_request``: records each call, answers like it."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    refuse: ControlError | None = None

    def __call__(self, who: str, note: str) -> dict[str, Any]:
        self.calls.append((who, note))
        if self.refuse is not None:
            raise self.refuse
        return {"incident": f"request-b1-{len(self.calls)}", "queued": len(self.calls)}


@dataclass
class Served:
    port: int
    governance: GovernanceService
    audit: SqliteAuditTrail


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """The real GovernanceService for config/skid.toml behind a real server; no agent."""
    cfg = load_config(SKID)
    settings = settings_for(cfg)
    audit = SqliteAuditTrail(tmp_path / "audit.db")
    store = SqliteProposalStore(tmp_path / "proposals.db")
    executor = SetpointExecutor(cfg, settings, _no_write, dict, audit, AutonomyLatch())
    governance = GovernanceService(
        cfg, settings, dict, lambda: None, executor, audit, store, boot_id="b1"
    )
    with capture_logs():
        thread = ServerThread(governance, token_table())
        try:
            yield Served(thread.port, governance, audit)
        finally:
            thread.close()
            store.close()
            audit.close()


def _ask(served: Served, token: str = OPERATOR, note: str = NOTE) -> Any:
    return request(served.port, "POST", "/v1/agent/requests", token=token, body={"note": note})


def test_without_a_requester_the_answer_is_503_agent_unavailable(served: Served) -> None:
    """No agent attached (no [agent], or before the daemon wires it): 503 with a code a
    script can test for, and nothing recorded."""
    assert served.governance.agent_requester is None
    answer = _ask(served)
    assert answer.status == 503
    assert answer.body["error"] == "agent_unavailable"
    assert "[agent]" in answer.body["message"]
    assert list(served.audit.records()) == []


def test_the_requester_gets_the_callers_name_and_note_and_its_answer_is_returned(
    served: Served,
) -> None:
    """202 with the requester's answer as is; the caller is the token's name (never one
    from the body), the note arrives unchanged; an engineer may ask like an operator."""
    requester = Requester()
    served.governance.agent_requester = requester
    answer = _ask(served)
    assert (answer.status, answer.body) == (202, {"incident": "request-b1-1", "queued": 1})
    assert ApiClient(served.port, ENGINEER).ask_agent("and the valve")["incident"] == (
        "request-b1-2"
    )
    assert requester.calls == [("otto", NOTE), ("enid", "and the valve")]


def test_asking_records_nothing_itself(served: Served) -> None:
    """The agent writes agent_started with the caller and the note when it takes the
    request; governance adds no record of its own, so each request is in the trail once."""
    served.governance.agent_requester = Requester()
    assert _ask(served).status == 202
    assert list(served.audit.records()) == []


def test_the_requesters_refusal_passes_through(served: Served) -> None:
    """The daemon's own 503s (agent not started, queue full) reach the client unchanged."""
    served.governance.agent_requester = Requester(
        refuse=ControlError(503, "agent_busy", "the agent's queue is full; ask again later")
    )
    with pytest.raises(ApiError) as caught:
        ApiClient(served.port, OPERATOR).ask_agent(NOTE)
    assert (caught.value.status, caught.value.code) == (503, "agent_busy")
    assert caught.value.message == "the agent's queue is full; ask again later"


def test_a_viewer_may_not_ask_and_the_requester_is_not_called(served: Served) -> None:
    """Asking starts work on the box (and may end in a proposal): operators only."""
    requester = Requester()
    served.governance.agent_requester = requester
    answer = _ask(served, token=VIEWER)
    assert (answer.status, answer.body["error"]) == (403, "forbidden")
    assert requester.calls == []
