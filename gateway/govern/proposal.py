"""A proposal: who wants which writable tags at which absolute values, why, until when.

Every proposer (the LLM agent, an operator, an external system through the API) builds
the same object and goes through the same gate. Targets are absolute values, never
increments: a Modbus write retried after a timeout may arrive twice, and writing "1.8"
twice is harmless where "+0.3" twice is not.

The content hash binds a verdict to exactly this proposal: a verdict for another value,
another tag or another expiry does not fit it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

MAX_RATIONALE_CHARS: Final = 2000
MAX_TARGETS: Final = 16
_PROPOSER = re.compile(r"^(agent|operator|api|system):[A-Za-z0-9_.@-]{1,64}$")
_TAG = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


class ProposalError(ValueError):
    """A malformed proposal (the message says which field and why)."""


@dataclass(frozen=True)
class Target:
    """One writable tag and the absolute value proposed for it."""

    tag: str
    value: float


@dataclass(frozen=True)
class Proposal:
    """An immutable, validated proposal.

    Attributes:
        id: Unique id (the audit trail's ``proposal_id``).
        proposer: ``kind:name`` with kind agent, operator, api or system.
        targets: One or more targets, sorted by tag, each tag once.
        rationale: Why (shown to approvers; plant text in it is data, not instructions).
        created_at: Unix time it was made.
        expires_at: After this it is void, approved or not.
    """

    id: str
    proposer: str
    targets: tuple[Target, ...]
    rationale: str
    created_at: float
    expires_at: float

    def __post_init__(self) -> None:
        problems = []
        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", self.id):
            problems.append(f"id {self.id!r} must be 1-64 letters, digits, '_', '.', '-'")
        if not _PROPOSER.match(self.proposer):
            problems.append(
                f"proposer {self.proposer!r} must be kind:name with kind agent, operator, api "
                "or system"
            )
        if not 1 <= len(self.targets) <= MAX_TARGETS:
            problems.append(f"a proposal has 1 to {MAX_TARGETS} targets, got {len(self.targets)}")
        tags = [t.tag for t in self.targets]
        if len(set(tags)) != len(tags):
            problems.append(f"each tag at most once per proposal, got {tags}")
        if tags != sorted(tags):
            problems.append("targets must be sorted by tag (use Proposal.create)")
        for t in self.targets:
            if not _TAG.match(t.tag):
                problems.append(f"tag {t.tag!r} is not a tag name")
            if isinstance(t.value, bool) or not isinstance(t.value, int | float):
                problems.append(f"{t.tag}: value must be a number, got {t.value!r}")
            elif not math.isfinite(t.value):
                problems.append(f"{t.tag}: value must be finite, got {t.value!r}")
        if len(self.rationale) > MAX_RATIONALE_CHARS:
            problems.append(
                f"rationale is {len(self.rationale)} chars; at most {MAX_RATIONALE_CHARS}"
            )
        if not (math.isfinite(self.created_at) and math.isfinite(self.expires_at)):
            problems.append("created_at and expires_at must be finite")
        elif self.expires_at <= self.created_at:
            problems.append("expires_at must be after created_at")
        if problems:
            raise ProposalError("; ".join(problems))

    @classmethod
    def create(
        cls,
        *,
        id: str,
        proposer: str,
        targets: Mapping[str, float],
        rationale: str,
        created_at: float,
        expires_in_s: float,
    ) -> Proposal:
        """Build from a ``{tag: value}`` mapping (sorted here).

        Raises:
            ProposalError: Anything malformed.
        """
        if not (isinstance(expires_in_s, int | float) and math.isfinite(expires_in_s)):
            raise ProposalError(f"expires_in_s must be a finite number, got {expires_in_s!r}")
        if expires_in_s <= 0:
            raise ProposalError(f"expires_in_s must be > 0, got {expires_in_s}")
        items = sorted(targets.items())
        for tag, value in items:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ProposalError(f"{tag}: value must be a number, got {value!r}")
        return cls(
            id=id,
            proposer=proposer,
            targets=tuple(Target(tag, float(value)) for tag, value in items),
            rationale=rationale,
            created_at=float(created_at),
            expires_at=float(created_at) + float(expires_in_s),
        )

    def value(self, tag: str) -> float:
        """The target value for ``tag`` (KeyError if it is not a target)."""
        for t in self.targets:
            if t.tag == tag:
                return t.value
        raise KeyError(tag)

    @property
    def tags(self) -> tuple[str, ...]:
        return tuple(t.tag for t in self.targets)

    def to_record(self) -> dict[str, Any]:
        """JSON-able form, as stored and as hashed."""
        return {
            "id": self.id,
            "proposer": self.proposer,
            "targets": {t.tag: t.value for t in self.targets},
            "rationale": self.rationale,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Proposal:
        """The inverse of :meth:`to_record` (e.g. pending proposals after a restart).

        Raises:
            ProposalError: The record is not a valid proposal.
        """
        try:
            targets = record["targets"]
            if not isinstance(targets, Mapping):
                raise ProposalError("targets must be a mapping")
            return cls(
                id=str(record["id"]),
                proposer=str(record["proposer"]),
                targets=tuple(Target(str(k), float(v)) for k, v in sorted(targets.items())),
                rationale=str(record["rationale"]),
                created_at=float(record["created_at"]),
                expires_at=float(record["expires_at"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, ProposalError):
                raise
            raise ProposalError(f"not a proposal record: {err}") from err

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`to_record`: what a verdict is bound to."""
        canonical = json.dumps(self.to_record(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
