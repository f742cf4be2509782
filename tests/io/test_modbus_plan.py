"""Batching of Modbus reads: contiguous points share a request, nothing else does."""

from __future__ import annotations

import pytest

from gateway.config.schema import Signal
from gateway.io.modbus_plan import MAX_REGISTERS_PER_READ, plan_reads


def sig(address: str, type: str = "float32", **kw: object) -> Signal:
    return Signal.model_validate(
        {
            "source": "mb",
            "address": address,
            "type": type,
            "unit": "",
            "range": [0, 1],
            "max_age_s": 1.0,
            **kw,
        }
    )


@pytest.mark.parametrize(
    ("signals", "expected"),
    [
        # three contiguous float32 → one request of 6 registers
        ({"a": sig("ir:0"), "b": sig("ir:2"), "c": sig("ir:4")}, [(1, "ir", 0, 6)]),
        # a gap is not bridged
        ({"a": sig("ir:0"), "b": sig("ir:3")}, [(1, "ir", 0, 2), (1, "ir", 3, 2)]),
        # tables and units are separate requests
        (
            {"a": sig("ir:0"), "b": sig("hr:2"), "c": sig("ir:2", unit_id=2)},
            [(1, "hr", 2, 2), (1, "ir", 0, 2), (2, "ir", 2, 2)],
        ),
        # bits of one register share it; a uint16 after it joins the block
        (
            {
                "a": sig("ir:26", "bool", bit=0),
                "b": sig("ir:26", "bool", bit=3),
                "c": sig("ir:27", "uint16"),
            },
            [(1, "ir", 26, 2)],
        ),
        # coils are counted in bits
        ({"a": sig("co:0", "bool"), "b": sig("co:1", "bool")}, [(1, "co", 0, 2)]),
    ],
)
def test_plan_table(signals: dict[str, Signal], expected: list[tuple[int, str, int, int]]) -> None:
    """Each set of signals is read with exactly the requests listed (unit, table, start, count)."""
    blocks = plan_reads(signals, default_unit=1)
    assert [(b.unit, b.table, b.start, b.count) for b in blocks] == expected
    members = sorted(m.signal for b in blocks for m in b.members)
    assert members == sorted(signals)


def test_long_runs_split_at_125_registers() -> None:
    """2,000 contiguous registers take the fewest requests the protocol allows."""
    signals = {f"s{i}": sig(f"hr:{i}", "uint16") for i in range(2000)}
    blocks = plan_reads(signals, default_unit=1)
    assert len(blocks) == -(-2000 // MAX_REGISTERS_PER_READ)
    assert all(b.count <= MAX_REGISTERS_PER_READ for b in blocks)
    assert sum(b.count for b in blocks) == 2000


def test_members_index_into_the_block() -> None:
    """A member's index is its offset from the block start, so decoding slices correctly."""
    (block,) = plan_reads({"a": sig("ir:10"), "b": sig("ir:12", "float64")}, default_unit=1)
    assert [(m.signal, m.index, m.count) for m in block.members] == [("a", 0, 2), ("b", 2, 4)]
