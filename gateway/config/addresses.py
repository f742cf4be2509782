"""Parsing of PLC addresses as written in config, shared by config validation, the drivers
and the plant simulator so that all three agree on what an address means.

OPC UA addresses are node identifiers *without* a namespace index (``s=Skid.Tank.Level``,
``i=1001``): the index is looked up from the source's ``namespace_uri`` at connect time,
because a server may renumber its namespaces after a restart.

Modbus addresses are ``<table>:<offset>`` with zero-based protocol offsets (not the
1-based "40001" notation, which hides the table in the number and is a classic source of
off-by-one errors): ``hr`` holding registers, ``ir`` input registers, ``co`` coils,
``di`` discrete inputs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ModbusTable = Literal["hr", "ir", "co", "di"]
DataType = Literal["float32", "float64", "int16", "uint16", "int32", "uint32", "bool"]

DATA_TYPES: tuple[DataType, ...] = (
    "float32",
    "float64",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "bool",
)

#: 16-bit registers each data type occupies in a register table.
REGISTER_COUNT: dict[DataType, int] = {
    "float32": 2,
    "float64": 4,
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "bool": 1,
}

#: Largest valid protocol offset: Modbus addresses are 16-bit.
MODBUS_MAX_OFFSET = 65535

_MODBUS_RE = re.compile(r"^(hr|ir|co|di):(\d{1,5})$")
_OPCUA_RE = re.compile(r"^(i=\d+|s=.+|g=[0-9a-fA-F-]{36}|b=[A-Za-z0-9+/=]+)$")


@dataclass(frozen=True)
class ModbusAddress:
    """A location in one of the four Modbus tables."""

    table: ModbusTable
    offset: int

    @property
    def is_bit_table(self) -> bool:
        return self.table in ("co", "di")

    @property
    def is_writable_table(self) -> bool:
        """Only holding registers and coils can be written by a Modbus client."""
        return self.table in ("hr", "co")

    def __str__(self) -> str:
        return f"{self.table}:{self.offset}"


def parse_modbus_address(text: str) -> ModbusAddress:
    """Parse ``hr:100``; raise ValueError with the accepted forms on anything else."""
    match = _MODBUS_RE.match(text.strip())
    if match is None:
        raise ValueError(
            f"Modbus address {text!r} is not of the form TABLE:OFFSET with TABLE one of "
            "hr, ir, co, di and OFFSET 0..65535 (e.g. 'hr:100')"
        )
    offset = int(match.group(2))
    if offset > MODBUS_MAX_OFFSET:
        raise ValueError(f"Modbus address {text!r}: offset {offset} is above 65535")
    table: ModbusTable = match.group(1)  # type: ignore[assignment]
    return ModbusAddress(table, offset)


def validate_opcua_address(text: str) -> str:
    """Check an OPC UA node identifier without namespace index; return it unchanged."""
    if text.startswith(("ns=", "nsu=")):
        raise ValueError(
            f"OPC UA address {text!r} must not carry a namespace; write only the identifier "
            "(e.g. 's=Skid.Tank.Level') and set the source's namespace_uri"
        )
    if _OPCUA_RE.match(text) is None:
        raise ValueError(
            f"OPC UA address {text!r} is not a node identifier; use i=<number>, s=<string>, "
            "g=<guid> or b=<base64>"
        )
    return text
