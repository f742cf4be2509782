"""What the HTTP API serves, as an interface: the daemon's governance side implements it.

The API layer (``gateway.api.server``) knows HTTP, tokens and roles; it knows nothing of
gates or writers. It turns requests into calls on a :class:`ControlService` and the
results (plain JSON-able dicts) into responses. Keeping this seam narrow is what lets the
API be tested against a small in-memory service and the governance be tested without HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol


class Role(StrEnum):
    """What a token may do. Each role includes the ones before it."""

    VIEWER = "viewer"
    """Read signals, alerts, proposals, verdicts."""
    OPERATOR = "operator"
    """Plus: submit proposals, approve and reject them, re-enable autonomy after a trip,
    ask the agent to have a look."""
    ENGINEER = "engineer"
    """Plus: everything an operator may do; reserved for configuration-level actions."""

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


@dataclass(frozen=True)
class Caller:
    """Who is asking: the token's name (recorded as the approver or proposer) and role."""

    name: str
    role: Role


@dataclass(frozen=True)
class ProposalRequest:
    """A proposal as submitted: absolute targets, never increments.

    Attributes:
        targets: Writable tag -> absolute target value.
        reason: Why (shown to approvers, kept in the audit trail).
        expires_in_s: How long the proposal stays valid; None: the configured default.
    """

    targets: Mapping[str, float]
    reason: str
    expires_in_s: float | None = None


class ControlError(Exception):
    """A request the service refuses; the API maps ``status`` to the HTTP status.

    Attributes:
        status: 400 malformed, 403 not allowed, 404 unknown id, 409 conflict (e.g. already
            decided, expired), 422 semantically invalid, 503 not ready (twin warming up).
        code: Machine-readable reason, e.g. "unknown_proposal".
        message: Human-readable explanation with the fix where there is one.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class ControlService(Protocol):
    """The operations the API exposes. Every result is JSON-ready (no NaN, no objects)."""

    def signals(self) -> list[dict[str, Any]]:
        """Every configured signal: name, value, unit, quality, reason, timestamps."""
        ...

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (anomaly and forecast)."""
        ...

    def proposals(self, status: str | None = None) -> list[dict[str, Any]]:
        """Proposals, newest first, each with its verdict; ``status`` filters (e.g.
        "pending")."""
        ...

    def proposal(self, proposal_id: str) -> dict[str, Any]:
        """One proposal with its verdict and its audit story; ControlError 404 if unknown."""
        ...

    async def submit(self, caller: Caller, request: ProposalRequest) -> dict[str, Any]:
        """Run the proposal through the gate; returns ``{"proposal_id", "decision",
        "verdict": {...}, "reasons": [...]}`` whatever the verdict (a rejection is a
        result, not an error). ControlError only when the request itself is invalid."""
        ...

    async def approve(self, caller: Caller, proposal_id: str, note: str) -> dict[str, Any]:
        """Record the caller's approval (and write, once enough approvals are in and the
        re-check passes); returns the proposal's new state."""
        ...

    async def reject(self, caller: Caller, proposal_id: str, reason: str) -> dict[str, Any]:
        """Record the caller's rejection; returns the proposal's new state."""
        ...

    async def resume_autonomy(self, caller: Caller, note: str) -> dict[str, Any]:
        """Re-enable autonomous writes after a read-back or outcome failure dropped the
        gateway to L2; returns the autonomy state."""
        ...

    async def ask_agent(self, caller: Caller, note: str) -> dict[str, Any]:
        """Queue an on-demand look by the diagnosing agent ("the pump sounds odd") and
        return at once with ``{"incident", ...}``. It does not wait for the diagnosis: that
        can take minutes (several model answers, each up to ``[agent].timeout_s``, perhaps
        behind alert incidents), longer than a client should hold a request open; the
        result arrives in the audit trail and as proposals. ControlError 503 when there is
        no agent or it cannot take the request now."""
        ...
