"""Fixtures for the API tests: a real aiohttp server on 127.0.0.1, an in-memory service.

The server runs in its own thread with its own event loop, as it would in the daemon, so
the tests can use the synchronous stdlib client and the CLI (``gateway.cli.main``)
against it exactly as a user would, without blocking the server's loop. One server serves
a whole module; the fake service is reset before each test.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.api.auth import TokenEntry, TokenTable, hash_token
from gateway.api.ports import Caller, ControlError, ControlService, ProposalRequest, Role
from gateway.api.server import ApiServer

#: Role -> (name, token) of the test tokens.
TOKENS: dict[Role, tuple[str, str]] = {
    Role.VIEWER: ("vera", "viewer-token-0123456789abcdefghijklmnopqrstuv"),
    Role.OPERATOR: ("otto", "operator-token-0123456789abcdefghijklmnopqrst"),
    Role.ENGINEER: ("enid", "engineer-token-0123456789abcdefghijklmnopqrst"),
}
VIEWER = TOKENS[Role.VIEWER][1]
OPERATOR = TOKENS[Role.OPERATOR][1]
ENGINEER = TOKENS[Role.ENGINEER][1]

#: The fake gate's upper limit: a target above it is "rejected", as the real gate would.
LIMIT = 2.4


def token_table() -> TokenTable:
    return TokenTable(
        TokenEntry(name, role, hash_token(token)) for role, (name, token) in TOKENS.items()
    )


@dataclass
class FakeControlService:
    """An in-memory ControlService: records every call, answers like the governance layer.

    ``fail``, when set, is raised by the next call of any method (and stays set), so a
    test can make the service refuse (ControlError) or break (any other exception).
    """

    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    fail: BaseException | None = None
    result_override: dict[str, Any] | None = None
    count: int = 0

    def reset(self) -> None:
        self.calls.clear()
        self.store.clear()
        self.fail = None
        self.result_override = None
        self.count = 0

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if self.fail is not None:
            raise self.fail

    def signals(self) -> list[dict[str, Any]]:
        self._call("signals")
        return [{"name": "tank_level", "value": 1.2, "unit": "m", "quality": "good"}]

    def alerts(self) -> list[dict[str, Any]]:
        self._call("alerts")
        return [{"alert_id": "a-1", "severity": "medium", "signature": "bearing"}]

    def proposals(self, status: str | None = None) -> list[dict[str, Any]]:
        self._call("proposals", status)
        found = [p for p in self.store.values() if status is None or p["status"] == status]
        return list(reversed(found))

    def proposal(self, proposal_id: str) -> dict[str, Any]:
        self._call("proposal", proposal_id)
        return dict(self._find(proposal_id))

    async def submit(self, caller: Caller, request: ProposalRequest) -> dict[str, Any]:
        self._call("submit", caller, request)
        self.count += 1
        pid = f"p-{self.count}"
        over = sorted(tag for tag, value in request.targets.items() if value > LIMIT)
        decision = "rejected" if over else "needs_approval"
        reasons = [{"code": "above_limit", "tag": tag, "limit": LIMIT} for tag in over]
        # Stored in the governance layer's shape: the proposal's record nested, the
        # verdict beside it.
        self.store[pid] = {
            "proposal": {
                "id": pid,
                "proposer": f"operator:{caller.name}",
                "targets": dict(request.targets),
                "rationale": request.reason,
            },
            "verdict": {"decision": decision},
            "status": "rejected" if over else "pending",
            "approvals": [],
        }
        if self.result_override is not None:
            return self.result_override
        return {
            "proposal_id": pid,
            "decision": decision,
            "verdict": {"decision": decision, "predicted": {"tank_level": [1.0, 1.4]}},
            "reasons": reasons,
        }

    async def approve(self, caller: Caller, proposal_id: str, note: str) -> dict[str, Any]:
        self._call("approve", caller, proposal_id, note)
        proposal = self._pending(proposal_id)
        proposal["approvals"].append({"by": caller.name, "note": note})
        proposal["status"] = "approved"
        return dict(proposal)

    async def reject(self, caller: Caller, proposal_id: str, reason: str) -> dict[str, Any]:
        self._call("reject", caller, proposal_id, reason)
        proposal = self._pending(proposal_id)
        proposal["status"] = "rejected"
        proposal["rejected_by"] = caller.name
        return dict(proposal)

    async def resume_autonomy(self, caller: Caller, note: str) -> dict[str, Any]:
        self._call("resume_autonomy", caller, note)
        return {"autonomy": "L3", "resumed_by": caller.name, "note": note}

    async def ask_agent(self, caller: Caller, note: str) -> dict[str, Any]:
        self._call("ask_agent", caller, note)
        self.count += 1
        return {"incident": f"request-0-{self.count}", "queued": 1}

    def _find(self, proposal_id: str) -> dict[str, Any]:
        if proposal_id not in self.store:
            raise ControlError(404, "unknown_proposal", f"no proposal {proposal_id!r}")
        return self.store[proposal_id]

    def _pending(self, proposal_id: str) -> dict[str, Any]:
        proposal = self._find(proposal_id)
        if proposal["status"] != "pending":
            raise ControlError(
                409, "already_decided", f"proposal {proposal_id} is {proposal['status']}"
            )
        return proposal

    def submitted(self) -> list[ProposalRequest]:
        return [args[1] for name, args in self.calls if name == "submit"]


def _is_a_control_service(service: FakeControlService) -> ControlService:
    """Type-level check (mypy): the fake satisfies the port it stands in for."""
    return service


class ServerThread:
    """An ApiServer on 127.0.0.1:0, running on an event loop in a background thread."""

    def __init__(self, service: ControlService, tokens: TokenTable | Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="api", daemon=True)
        self.thread.start()
        self.server = ApiServer(service, tokens, 0)
        self._run(self.server.start())
        self.port = self.server.port

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def close(self) -> None:
        self._run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@dataclass
class Api:
    """What a test gets: the running server, its port, and the fake behind it."""

    server: ApiServer
    port: int
    service: FakeControlService

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None = OPERATOR,
        body: bytes | Mapping[str, Any] | Iterable[bytes] | None = None,
        content_type: str | None = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        """One raw HTTP request; the answer's status, JSON body and headers."""
        return request(
            self.port,
            method,
            path,
            token=token,
            body=body,
            content_type=content_type,
            headers=headers,
        )


@dataclass(frozen=True)
class Response:
    status: int
    body: Any
    headers: dict[str, str]
    text: str


def request(
    port: int,
    method: str,
    path: str,
    *,
    token: str | None = OPERATOR,
    body: bytes | Mapping[str, Any] | Iterable[bytes] | None = None,
    content_type: str | None = "application/json",
    headers: Mapping[str, str] | None = None,
) -> Response:
    sent: dict[str, str] = dict(headers or {})
    if token is not None:
        sent.setdefault("Authorization", f"Bearer {token}")
    data = json.dumps(body).encode() if isinstance(body, Mapping) else body
    if data is not None and content_type is not None:
        sent["Content-Type"] = content_type
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=data, headers=sent)
        answer = conn.getresponse()
        text = answer.read().decode("utf-8")
        return Response(
            answer.status,
            json.loads(text) if text else None,
            {k.lower(): v for k, v in answer.getheaders()},
            text,
        )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def _running() -> Iterator[tuple[ServerThread, FakeControlService]]:
    service = FakeControlService()
    thread = ServerThread(service, token_table())
    yield thread, service
    thread.close()


@pytest.fixture
def api(_running: tuple[ServerThread, FakeControlService]) -> Api:
    """The module's server, with a freshly reset fake service."""
    thread, service = _running
    service.reset()
    return Api(thread.server, thread.port, service)
