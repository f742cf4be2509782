"""The incident memory: what was refused is not submitted again unchanged."""

from __future__ import annotations

from gateway.agent.memory import Entry, IncidentMemory, same_targets


def test_a_refused_proposal_is_a_repeat_only_unchanged_and_only_in_its_incident() -> None:
    memory = IncidentMemory()
    memory.record("a-1", Entry(1.0, {"level_sp": 1.8}, "p-1", "rejected", ["envelope_exit"]))
    assert memory.repeats("a-1", {"level_sp": 1.8000000001}) is not None
    assert memory.repeats("a-1", {"level_sp": 1.7}) is None
    assert memory.repeats("a-1", {"level_sp": 1.8, "temp_sp": 60.0}) is None
    assert memory.repeats("a-2", {"level_sp": 1.8}) is None


def test_a_pending_proposal_learns_its_fate() -> None:
    memory = IncidentMemory()
    memory.record("a-1", Entry(1.0, {"temp_sp": 55.0}, "p-7", "pending"))
    assert memory.open_proposals() == ["p-7"]
    assert memory.repeats("a-1", {"temp_sp": 55.0}) is None  # not refused (yet)
    assert memory.update("p-7", status="rejected")
    assert memory.repeats("a-1", {"temp_sp": 55.0}) is not None
    assert memory.open_proposals() == []
    assert memory.to_prompt("a-1") == [
        {"setpoints": {"temp_sp": 55.0}, "status": "rejected", "reasons": []}
    ]


def test_memory_is_bounded() -> None:
    memory = IncidentMemory(per_incident=3, incidents=2)
    for i in range(5):
        memory.record("a", Entry(i, {"level_sp": float(i)}, f"p-{i}", "rejected"))
    assert [e.proposal_id for e in memory.entries("a")] == ["p-2", "p-3", "p-4"]
    memory.record("b", Entry(0, {}, None, "rejected"))
    memory.record("c", Entry(0, {}, None, "rejected"))
    assert memory.entries("a") == []


def test_same_targets() -> None:
    assert same_targets({"a": 1.0}, {"a": 1.0 + 1e-12})
    assert not same_targets({"a": 1.0}, {"b": 1.0})
