"""Register codec: layouts, scaling, bit fields and refusals (pure, table-driven)."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config.addresses import REGISTER_COUNT, DataType
from gateway.io.modbus_codec import (
    Order,
    decode_registers,
    encode_registers,
    with_bit,
)

ORDERS: list[tuple[Order, Order]] = [
    ("big", "big"),
    ("big", "little"),
    ("little", "big"),
    ("little", "little"),
]


@pytest.mark.parametrize(
    ("word_order", "byte_order", "expected"),
    [
        ("big", "big", [0x4049, 0x0FDB]),  # ABCD
        ("big", "little", [0x4940, 0xDB0F]),  # BADC
        ("little", "big", [0x0FDB, 0x4049]),  # CDAB
        ("little", "little", [0xDB0F, 0x4940]),  # DCBA
    ],
)
def test_float32_layouts(word_order: Order, byte_order: Order, expected: list[int]) -> None:
    """float32 pi is laid out as ABCD/BADC/CDAB/DCBA for the four order combinations."""
    regs = encode_registers(math.pi, "float32", word_order=word_order, byte_order=byte_order)
    assert regs == expected
    decoded = decode_registers(regs, "float32", word_order=word_order, byte_order=byte_order)
    assert decoded == struct.unpack(">f", struct.pack(">f", math.pi))[0]


@pytest.mark.parametrize(
    ("value", "type_", "regs"),
    [
        (1234.0, "uint16", [1234]),
        (-2.0, "int16", [0xFFFE]),
        (70000.0, "uint32", [0x0001, 0x1170]),
        (-70000.0, "int32", [0xFFFE, 0xEE90]),
        (1.0, "bool", [1]),
        (0.0, "bool", [0]),
        (1.5, "float64", [0x3FF8, 0, 0, 0]),
    ],
)
def test_known_encodings(value: float, type_: DataType, regs: list[int]) -> None:
    """Each type encodes big-endian by default and decodes back to the same value."""
    assert encode_registers(value, type_) == regs
    assert decode_registers(regs, type_) == value


@pytest.mark.parametrize("type_", ["float32", "float64", "int16", "uint16", "int32", "uint32"])
@pytest.mark.parametrize(("word_order", "byte_order"), ORDERS)
@pytest.mark.parametrize(("scale", "offset"), [(1.0, 0.0), (0.1, 0.0), (0.01, -20.0), (2.0, 5.0)])
def test_round_trip_with_scale_offset(
    type_: DataType, word_order: Order, byte_order: Order, scale: float, offset: float
) -> None:
    """Every numeric type round trips an engineering value under any layout and scaling,
    within half a raw step for integer types."""
    value = 42.37
    regs = encode_registers(
        value, type_, scale=scale, offset=offset, word_order=word_order, byte_order=byte_order
    )
    assert len(regs) == REGISTER_COUNT[type_]
    assert all(0 <= r <= 0xFFFF for r in regs)
    back = decode_registers(
        regs, type_, scale=scale, offset=offset, word_order=word_order, byte_order=byte_order
    )
    tolerance = 1e-5 * abs(value) if type_.startswith("float") else abs(scale) / 2 + 1e-9
    assert back == pytest.approx(value, abs=tolerance)


def test_scaled_integer_is_raw_times_scale_plus_offset() -> None:
    """A uint16 with scale 0.1 and offset -20 stores (value + 20) / 0.1."""
    assert encode_registers(21.5, "uint16", scale=0.1, offset=-20.0) == [415]
    assert decode_registers([415], "uint16", scale=0.1, offset=-20.0) == pytest.approx(21.5)


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        (65536.0, "uint16"),
        (-1.0, "uint16"),
        (40000.0, "int16"),
        (2.0**32, "uint32"),
        (math.nan, "int32"),
        (math.inf, "uint16"),
        (0.5, "bool"),
        (2.0, "bool"),
        (1e39, "float32"),
    ],
)
def test_unrepresentable_values_are_refused(value: float, type_: DataType) -> None:
    """Values a type cannot hold raise ValueError instead of wrapping or clipping."""
    with pytest.raises(ValueError):  # noqa: PT011 - message checked elsewhere
        encode_registers(value, type_)


def test_float_registers_carry_nan() -> None:
    """NaN survives a float32 round trip; the reader's quality rules judge it."""
    assert math.isnan(decode_registers(encode_registers(math.nan, "float32"), "float32"))


def test_wrong_register_count_is_refused() -> None:
    """Decoding a float32 from one register is an error, not a guess."""
    with pytest.raises(ValueError, match="needs 2 register"):
        decode_registers([1], "float32")


def test_register_out_of_16_bits_is_refused() -> None:
    """A register value above 65535 cannot come from a device and is refused."""
    with pytest.raises(ValueError, match="16-bit"):
        decode_registers([70000], "uint16")


def test_bool_word_is_true_for_any_nonzero_register() -> None:
    """A bool held in a whole register reads 1 for any non-zero content."""
    assert decode_registers([0x0100], "bool") == 1.0
    assert decode_registers([0], "bool") == 0.0


@pytest.mark.parametrize("bit", [0, 5, 15])
def test_bit_fields_compose_into_one_register(bit: int) -> None:
    """A bit signal encodes to its own bit only, composes with others by OR and decodes
    from the shared register."""
    other = 3 if bit != 3 else 4
    reg = encode_registers(1.0, "bool", bit=bit)[0] | encode_registers(1.0, "bool", bit=other)[0]
    assert decode_registers([reg], "bool", bit=bit) == 1.0
    assert decode_registers([reg], "bool", bit=other) == 1.0
    cleared = with_bit(reg, bit, on=False)
    assert decode_registers([cleared], "bool", bit=bit) == 0.0
    assert decode_registers([cleared], "bool", bit=other) == 1.0
    assert with_bit(cleared, bit, on=True) == reg


def test_bit_out_of_register_is_refused() -> None:
    """Bit 16 does not exist in a 16-bit register."""
    with pytest.raises(ValueError, match=r"0\.\.15"):
        encode_registers(1.0, "bool", bit=16)


@given(
    value=st.floats(width=32, allow_nan=False),
    orders=st.sampled_from(ORDERS),
)
def test_float32_round_trip_is_exact(value: float, orders: tuple[Order, Order]) -> None:
    """Every float32-representable value (incl. infinities and -0.0) round trips exactly
    under every word/byte order."""
    word_order, byte_order = orders
    regs = encode_registers(value, "float32", word_order=word_order, byte_order=byte_order)
    back = decode_registers(regs, "float32", word_order=word_order, byte_order=byte_order)
    assert back == value
    assert math.copysign(1.0, back) == math.copysign(1.0, value)


@given(raw=st.integers(min_value=-(2**31), max_value=2**31 - 1), orders=st.sampled_from(ORDERS))
def test_int32_round_trip_is_exact(raw: int, orders: tuple[Order, Order]) -> None:
    """Every int32 round trips exactly under every word/byte order."""
    word_order, byte_order = orders
    regs = encode_registers(float(raw), "int32", word_order=word_order, byte_order=byte_order)
    assert decode_registers(regs, "int32", word_order=word_order, byte_order=byte_order) == raw
