"""Planning Modbus reads: contiguous points batched into the fewest requests.

Pure, so the batching is tested as a table without a server. Only *contiguous* (or
overlapping, for bit fields sharing a register) points are merged: bridging a gap would
read registers nobody declared, and many devices answer that with ILLEGAL DATA ADDRESS,
which would take the whole block's good points down with it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.config.addresses import REGISTER_COUNT, ModbusTable, parse_modbus_address
from gateway.config.schema import Signal

#: Protocol maxima per request (Modbus application protocol spec, FC1–FC4).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


@dataclass(frozen=True)
class Member:
    """One signal inside a block: where its registers or bit start, relative to the block."""

    signal: str
    index: int
    count: int


@dataclass(frozen=True)
class ReadBlock:
    unit: int
    table: ModbusTable
    start: int
    count: int
    members: tuple[Member, ...]


def plan_reads(signals: Mapping[str, Signal], default_unit: int) -> list[ReadBlock]:
    """Group one source's signals into read requests, per unit and table, in address order."""
    groups: dict[tuple[int, ModbusTable], list[tuple[int, int, str]]] = defaultdict(list)
    for name, spec in signals.items():
        address = parse_modbus_address(spec.address)
        count = 1 if address.is_bit_table or spec.bit is not None else REGISTER_COUNT[spec.type]
        unit = spec.unit_id if spec.unit_id is not None else default_unit
        groups[(unit, address.table)].append((address.offset, count, name))
    blocks: list[ReadBlock] = []
    for (unit, table), points in sorted(groups.items()):
        limit = MAX_BITS_PER_READ if table in ("co", "di") else MAX_REGISTERS_PER_READ
        points.sort()
        current: list[tuple[int, int, str]] = []
        start = end = 0
        for offset, count, name in points:
            fits = current and offset <= end and max(end, offset + count) - start <= limit
            if not fits:
                if current:
                    blocks.append(_block(unit, table, start, end, current))
                current, start, end = [], offset, offset
            current.append((offset, count, name))
            end = max(end, offset + count)
        if current:
            blocks.append(_block(unit, table, start, end, current))
    return blocks


def _block(
    unit: int, table: ModbusTable, start: int, end: int, points: list[tuple[int, int, str]]
) -> ReadBlock:
    members = tuple(Member(name, offset - start, count) for offset, count, name in points)
    return ReadBlock(unit, table, start, end - start, members)
