"""The protocol write path: the only place that turns a value into a PLC write.

Safety invariant 1 (DESIGN.md): only ``gateway.act`` may import this module, and no other
module calls a protocol write; ``tests/test_write_path.py`` enforces both by reading the
source. This module checks nothing about *whether* a value may be written (that is the
gate's and the actuator's job); it only refuses what cannot be written faithfully:
an address not allow-listed by config, a value the data type cannot hold, a bit inside a
shared register (a read-modify-write there is not atomic and could flip a neighbour's bit).

Writes reuse the reader's session (one connection per PLC; many PLCs limit sessions) and,
for Modbus, its lock, so a write never interleaves with a read on the same link.
"""

from __future__ import annotations

from collections.abc import Mapping

from asyncua import ua

from gateway.config.addresses import parse_modbus_address
from gateway.config.schema import GatewayConfig, Signal
from gateway.errors import WriteError
from gateway.io.apart import call_apart
from gateway.io.modbus_codec import encode_registers, to_raw
from gateway.io.modbus_reader import ModbusReader
from gateway.io.opcua_reader import OpcUaReader

_VARIANT = {
    "float64": ua.VariantType.Double,
    "float32": ua.VariantType.Float,
    "int16": ua.VariantType.Int16,
    "uint16": ua.VariantType.UInt16,
    "int32": ua.VariantType.Int32,
    "uint32": ua.VariantType.UInt32,
    "bool": ua.VariantType.Boolean,
}


class PointWriter:
    """Writes allow-listed signals through the reader that owns their source."""

    def __init__(
        self,
        cfg: GatewayConfig,
        readers: Mapping[str, OpcUaReader | ModbusReader],
        allowed: frozenset[str],
        *,
        timeout_s: float = 3.0,
    ) -> None:
        unknown = sorted(allowed - set(cfg.signal))
        if unknown:
            raise WriteError(f"cannot allow writes to undeclared signals: {', '.join(unknown)}")
        self._cfg = cfg
        self._readers = dict(readers)
        self._allowed = allowed
        self._timeout_s = timeout_s

    async def write(self, signal: str, value: float) -> None:
        """Write one engineering value; raise WriteError with the reason on any failure."""
        if signal not in self._allowed:
            raise WriteError(f"{signal}: not on the write allow-list")
        spec = self._cfg.signal[signal]
        reader = self._readers[spec.source]
        try:
            if isinstance(reader, OpcUaReader):
                await self._write_opcua(reader, spec, value)
            else:
                await self._write_modbus(reader, spec, value)
        except TimeoutError as err:
            raise WriteError(f"{signal}: no answer within {self._timeout_s:g} s") from err
        except ValueError as err:
            raise WriteError(f"{signal}: cannot encode {value!r}: {err}") from err
        except (OSError, ua.UaError) as err:
            raise WriteError(f"{signal}: write failed: {err}") from err

    async def _write_opcua(self, reader: OpcUaReader, spec: Signal, value: float) -> None:
        session = reader.session
        if session is None:
            raise WriteError(f"{spec.address}: source {spec.source!r} is not connected")
        raw = to_raw(value, spec.type, scale=spec.scale, offset=spec.offset)
        variant = ua.Variant(bool(raw) if spec.type == "bool" else raw, _VARIANT[spec.type])
        try:
            await call_apart(
                session.node(spec.address).write_value(ua.DataValue(variant)),
                self._timeout_s,
                f"write of {spec.address}",
            )
        except ua.UaStatusCodeError as err:
            raise WriteError(f"{spec.address}: refused by the PLC: {err}") from err

    async def _write_modbus(self, reader: ModbusReader, spec: Signal, value: float) -> None:
        address = parse_modbus_address(spec.address)
        if spec.bit is not None:
            raise WriteError(
                f"{spec.address} bit {spec.bit}: bits in shared registers are read-only"
            )
        unit = spec.unit_id if spec.unit_id is not None else reader.unit
        async with reader.lock:
            client = reader.client
            if client is None:
                raise WriteError(f"{spec.address}: source {spec.source!r} is not connected")
            if address.table == "co":
                raw = to_raw(value, "bool", scale=spec.scale, offset=spec.offset)
                request = client.write_coil(address.offset, bool(raw), device_id=unit)
            elif address.table == "hr":
                registers = encode_registers(
                    value,
                    spec.type,
                    scale=spec.scale,
                    offset=spec.offset,
                    word_order=spec.word_order,
                    byte_order=spec.byte_order,
                )
                request = client.write_registers(address.offset, registers, device_id=unit)
            else:
                raise WriteError(f"{spec.address}: read-only Modbus table")
            response = await call_apart(request, self._timeout_s, f"write of {spec.address}")
        if response.isError():
            code = getattr(response, "exception_code", "?")
            raise WriteError(f"{spec.address}: refused by the PLC (Modbus exception {code})")
