"""Values to and from 16-bit Modbus registers: pure functions, no I/O.

The plant simulator encodes with these functions and the gateway's Modbus driver decodes
with them, so a layout written in config (type, word order, byte order, scale, offset,
bit) means exactly one thing on both sides.

Conventions:

* engineering value = raw · ``scale`` + ``offset``; encoding inverts it.
* A multi-register value is packed big-endian ("ABCD") first. ``byte_order="little"``
  swaps the two bytes inside every register ("BADC"); ``word_order="little"`` reverses the
  order of the registers ("CDAB"); both together give "DCBA".
* ``bit`` selects one bit (0 = least significant) of a single register: decoding returns
  0.0 or 1.0, encoding returns the register with only that bit possibly set, so several
  bit signals of one register are composed with ``|`` (or :func:`with_bit`).
* Nothing is clipped or wrapped: a value an integer type cannot hold raises ValueError, so
  an out-of-range setpoint can never be written as a different, valid-looking number.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Final, Literal

from gateway.config.addresses import REGISTER_COUNT, DataType

Order = Literal["big", "little"]

#: struct format (big-endian) of each data type's raw value.
_FORMAT: Final[dict[DataType, str]] = {
    "float32": ">f",
    "float64": ">d",
    "int16": ">h",
    "uint16": ">H",
    "int32": ">i",
    "uint32": ">I",
    "bool": ">H",
}

#: Inclusive raw bounds of the integer types.
_INT_BOUNDS: Final[dict[DataType, tuple[int, int]]] = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "bool": (0, 1),
}

_FLOAT32_MAX: Final = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]


def _check_bit(bit: int) -> None:
    if not 0 <= bit <= 15:
        raise ValueError(f"bit {bit} is not in 0..15")


def _to_registers(data: bytes, word_order: Order, byte_order: Order) -> list[int]:
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    return [int.from_bytes(w, "big") for w in words]


def _from_registers(regs: Sequence[int], word_order: Order, byte_order: Order) -> bytes:
    for reg in regs:
        if not 0 <= reg <= 0xFFFF:
            raise ValueError(f"register value {reg} is not a 16-bit unsigned integer")
    words = [int(r).to_bytes(2, "big") for r in regs]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return b"".join(words)


def to_raw(value: float, type: DataType, *, scale: float = 1.0, offset: float = 0.0) -> float | int:
    """The raw register value for an engineering value (before packing).

    Integer types round to the nearest integer; ValueError if the result does not fit the
    type or the value is not finite. Float types pass NaN/Inf through unchanged (a float
    register can carry them; the reader's quality rules decide what they mean).
    """
    if scale == 0:
        raise ValueError("scale 0 cannot be inverted")
    raw = value if scale == 1.0 and offset == 0.0 else (value - offset) / scale
    if type in ("float32", "float64"):
        if type == "float32" and math.isfinite(raw) and abs(raw) > _FLOAT32_MAX:
            raise ValueError(f"{value} does not fit a float32 register pair (raw {raw})")
        return raw
    if not math.isfinite(raw):
        raise ValueError(f"{value} cannot be encoded as {type}: it is not a finite number")
    if type == "bool":
        if raw not in (0.0, 1.0):
            raise ValueError(f"{value} is not a boolean: it must encode to raw 0 or 1, got {raw}")
        return int(raw)
    rounded = round(raw)
    low, high = _INT_BOUNDS[type]
    if not low <= rounded <= high:
        raise ValueError(f"{value} is raw {rounded}, outside the {type} range {low}..{high}")
    return rounded


def from_raw(raw: float, *, scale: float = 1.0, offset: float = 0.0) -> float:
    """The engineering value of a raw register value."""
    if scale == 1.0 and offset == 0.0:
        return raw  # exact, keeps -0.0
    return raw * scale + offset


def encode_registers(
    value: float,
    type: DataType,
    *,
    scale: float = 1.0,
    offset: float = 0.0,
    word_order: Order = "big",
    byte_order: Order = "big",
    bit: int | None = None,
) -> list[int]:
    """Encode an engineering value into ``REGISTER_COUNT[type]`` registers.

    With ``bit`` the value must be 0 or 1 (after scale/offset) and the single register
    returned has only that bit set or nothing set.

    Raises:
        ValueError: the value cannot be represented (out of an integer type's range, not
            finite for an integer type, not 0/1 for a bit or bool).
    """
    raw = to_raw(value, "bool" if bit is not None else type, scale=scale, offset=offset)
    if bit is not None:
        _check_bit(bit)
        return [int(raw) << bit]
    data = struct.pack(_FORMAT[type], raw)
    return _to_registers(data, word_order, byte_order)


def decode_registers(
    regs: Sequence[int],
    type: DataType,
    *,
    scale: float = 1.0,
    offset: float = 0.0,
    word_order: Order = "big",
    byte_order: Order = "big",
    bit: int | None = None,
) -> float:
    """Decode registers read from a device into an engineering value.

    ``regs`` must hold exactly the registers of one value (one register with ``bit``). A
    bool without ``bit`` is 1.0 for any non-zero register, as PLCs treat a boolean word.

    Raises:
        ValueError: wrong register count or a register outside 0..65535.
    """
    expected = 1 if bit is not None else REGISTER_COUNT[type]
    if len(regs) != expected:
        raise ValueError(f"{type} needs {expected} register(s), got {len(regs)}")
    if bit is not None:
        _check_bit(bit)
        data = _from_registers(regs, "big", "big")
        return from_raw(float((int.from_bytes(data, "big") >> bit) & 1), scale=scale, offset=offset)
    data = _from_registers(regs, word_order, byte_order)
    (raw,) = struct.unpack(_FORMAT[type], data)
    if type == "bool":
        raw = 1 if raw else 0
    return from_raw(float(raw), scale=scale, offset=offset)


def with_bit(register: int, bit: int, on: bool) -> int:
    """``register`` with ``bit`` set (``on``) or cleared; the other bits unchanged."""
    _check_bit(bit)
    return register | (1 << bit) if on else register & ~(1 << bit) & 0xFFFF
