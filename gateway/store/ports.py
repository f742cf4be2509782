"""What the rest of the gateway may ask of the store: two small ports and their records.

The historian (signal samples) and the audit trail (decisions) are different kinds of
record with different durability needs, so each has its own port and its own SQLite file;
see ``historian.py`` and ``audit.py`` for why. Callers depend on these ``Protocol``s, never
on the SQLite classes, so a test or a later backend can stand in (both adapters also take
``":memory:"``). This module imports nothing but the standard library: code that only needs
the record types does not pull in ``sqlite_utils``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

#: The quality words a stored sample may carry (the same words as ``gateway.signals.Quality``).
QUALITIES: frozenset[str] = frozenset({"good", "uncertain", "bad", "stale"})

#: ``prev_hash`` of the first audit record: there is nothing before it.
GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class Sample:
    """One stored value of one signal.

    Attributes:
        signal: configured signal name.
        ts: source timestamp, unix seconds (when the PLC says the value was valid).
        value: engineering-unit value; NaN when there was no usable number (the quality
            says why). NaN is stored as SQL NULL and read back as NaN.
        quality: one of ``QUALITIES``.
        received: gateway clock when the value arrived, unix seconds. Retention is measured
            on this clock, because a PLC with a wrong clock must not empty the historian.
    """

    signal: str
    ts: float
    value: float
    quality: str
    received: float


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One committed, hash-chained audit event.

    ``hash`` is the hex SHA-256 of the canonical JSON of
    ``[seq, ts, kind, proposal_id, payload, prev_hash]``; ``prev_hash`` is the previous
    record's ``hash`` (``GENESIS_HASH`` for record 1). ``payload`` is the JSON object as
    read back from the store; treat it as read-only.
    """

    seq: int
    ts: float
    kind: str
    proposal_id: str | None
    payload: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditVerifyReport:
    """Outcome of recomputing an audit chain.

    Attributes:
        ok: the whole chain (and its stored head) is intact.
        records: number of records read.
        first_bad_seq: the first record found broken (for a deleted tail, the first missing
            sequence number); None when ok, or when the break is not tied to one record.
        reason: what an admin should know, e.g.
            ``"record 5: content does not match its hash (edited)"``; None when ok.
    """

    ok: bool
    records: int
    first_bad_seq: int | None
    reason: str | None


class Historian(Protocol):
    """Time series of signal samples, bounded by age and size."""

    def append(self, samples: Sequence[Sample]) -> None:
        """Store a batch atomically (all or nothing)."""
        ...

    def query(self, signal: str, since: float, until: float | None = None) -> list[Sample]:
        """Samples of one signal with ``since <= ts < until`` (no upper bound if None),
        oldest first."""
        ...

    def latest(self) -> dict[str, Sample]:
        """The newest sample (by source timestamp) of every signal stored."""
        ...

    def enforce_retention(self, now: float) -> int:
        """Delete samples older than the retention age or beyond the size budget, oldest
        first; return how many rows were deleted."""
        ...

    def close(self) -> None:
        """Release the database; further calls fail."""
        ...


class AuditTrail(Protocol):
    """Append-only, hash-chained record of every proposal, verdict, approval, write,
    read-back and outcome (safety invariant 8)."""

    def append(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        proposal_id: str | None = None,
        ts: float | None = None,
    ) -> AuditRecord:
        """Commit one record durably and return it. When this returns, the record survives
        a power cut; when it raises, nothing was recorded and the caller must not act."""
        ...

    def records(
        self, *, proposal_id: str | None = None, kind: str | None = None, since_seq: int = 0
    ) -> Iterator[AuditRecord]:
        """Records with ``seq > since_seq``, in order, optionally filtered."""
        ...

    def verify(self) -> AuditVerifyReport:
        """Recompute the whole chain and report the first broken record."""
        ...

    def close(self) -> None:
        """Release the database; further calls fail."""
        ...
