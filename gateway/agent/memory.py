"""What the agent remembers of an incident: its proposals and what became of them.

A small model happily proposes the same thing again after the gate said no. The memory
goes into the next prompt (so the model can do better), and :meth:`IncidentMemory.repeats`
stops an unchanged rejected proposal from being submitted again at all (so a model that
does not learn costs a retry, not another trip through the gate and the audit trail).

Bounded on both axes: a few entries per incident, a few dozen incidents (oldest dropped).
The audit trail, not this, is the record; this is working memory and is lost on restart,
together with the incidents (alert ids are unique per boot).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

#: A proposal that ended in one of these must not be submitted again unchanged.
REFUSED = frozenset({"rejected", "declined", "refused", "failed", "aborted", "expired"})


def same_targets(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Equal tags and values equal to 6 significant digits (``1.8`` is ``1.8000001``)."""
    return a.keys() == b.keys() and all(f"{a[k]:.6g}" == f"{b[k]:.6g}" for k in a)


@dataclass(frozen=True)
class Entry:
    """One proposal the agent made in an incident."""

    at: float
    targets: Mapping[str, float]
    proposal_id: str | None
    status: str
    reasons: Sequence[str] = ()
    outcome: str | None = None

    def to_prompt(self) -> dict[str, Any]:
        return {
            "setpoints": dict(self.targets),
            "status": self.status,
            "reasons": list(self.reasons),
            **({"outcome": self.outcome} if self.outcome is not None else {}),
        }


@dataclass
class _Incident:
    entries: list[Entry] = field(default_factory=list)


class IncidentMemory:
    """Per-incident working memory. Not thread-safe: the agent task owns it."""

    def __init__(self, *, per_incident: int = 6, incidents: int = 32) -> None:
        self.per_incident = per_incident
        self.max_incidents = incidents
        self._incidents: OrderedDict[str, _Incident] = OrderedDict()

    def record(self, incident: str, entry: Entry) -> None:
        item = self._incidents.pop(incident, None) or _Incident()
        item.entries = [*item.entries, entry][-self.per_incident :]
        self._incidents[incident] = item
        while len(self._incidents) > self.max_incidents:
            self._incidents.popitem(last=False)

    def update(self, proposal_id: str, *, status: str, outcome: str | None = None) -> bool:
        """Set a later status (approved and written, rejected by a human, expired...)."""
        for item in self._incidents.values():
            for i, entry in enumerate(item.entries):
                if entry.proposal_id == proposal_id:
                    item.entries[i] = replace(
                        entry, status=status, outcome=outcome or entry.outcome
                    )
                    return True
        return False

    def entries(self, incident: str) -> list[Entry]:
        item = self._incidents.get(incident)
        return list(item.entries) if item else []

    def repeats(self, incident: str, targets: Mapping[str, float]) -> Entry | None:
        """The earlier refused entry that ``targets`` repeats unchanged, if any."""
        for entry in self.entries(incident):
            if entry.status in REFUSED and same_targets(entry.targets, targets):
                return entry
        return None

    def open_proposals(self) -> list[str]:
        """Ids whose fate is not known yet (pending approval or executing)."""
        return [
            e.proposal_id
            for item in self._incidents.values()
            for e in item.entries
            if e.proposal_id is not None and e.status in ("pending", "executing")
        ]

    def to_prompt(self, incident: str) -> list[dict[str, Any]]:
        return [e.to_prompt() for e in self.entries(incident)]
