"""The simulated PLC's Modbus TCP server (pymodbus), serving the skid at config's addresses.

Every Modbus signal of the config's Modbus source is served at its table and offset, for
its unit id, encoded by :mod:`gateway.io.modbus_codec` (the same code the gateway decodes
with). Addresses no signal declares answer ILLEGAL_DATA_ADDRESS (for reads of coils and
discrete inputs only the first bit requested is checked: pymodbus does not pass the bit
count to its hook).

How writes are judged (pymodbus 3.16): each unit is a ``SimDevice`` with four separate
tables spanning all 65536 addresses and an ``action`` coroutine, which pymodbus calls on
every request before it touches the registers; the action alone decides which addresses
exist, so even a write to an undeclared address reaches the write log. For reads the
action checks the addresses and copies the current image into the requested registers;
for writes (FC5/6/15/16/22/23) it decodes the new value of every signal the
request covers and lets the PLC judge it (:meth:`WriteSink.submit`). Returning an
``ExcCodes`` member makes pymodbus answer with that exception and leave the registers
unchanged:

* a value the PLC refuses: ILLEGAL_DATA_VALUE (3), or ILLEGAL_DATA_ADDRESS (2) when the
  point is read-only;
* a register or coil no signal declares, or a write that covers only part of a
  multi-register value: ILLEGAL_DATA_ADDRESS (2).

A request covering several signals is applied signal by signal in address order; on the
first refusal the rest is not applied and the client gets the exception (the write log
shows which parts were taken). ``SimDevice`` replaces the datastore contexts pymodbus
deprecates for v4 (``ModbusDeviceContext``, the ``ModbusServerContext`` wrappers).

The ``modbus_silent`` fault drops every received request at the PDU trace hook: the TCP
connection stays open and nothing is answered, so clients time out, as with a hung device.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimAction, SimData, SimDevice

from gateway.config.addresses import REGISTER_COUNT, DataType, ModbusTable, parse_modbus_address
from gateway.config.schema import GatewayConfig, ModbusSource
from gateway.errors import ConfigError
from gateway.io.modbus_codec import (
    Order,
    decode_registers,
    encode_registers,
    with_bit,
)
from gateway.logs import get_logger
from gateway.plantsim.plant import Reading
from gateway.plantsim.points import POINTS
from gateway.plantsim.writelog import WriteAttempt, WriteSink

log = get_logger(__name__)

#: The table each function code works on.
_FC_TABLE: Final[Mapping[int, ModbusTable]] = {
    1: "co",
    5: "co",
    15: "co",
    2: "di",
    3: "hr",
    6: "hr",
    16: "hr",
    22: "hr",
    23: "hr",
    4: "ir",
}
_TABLES: Final[tuple[ModbusTable, ...]] = ("co", "di", "hr", "ir")
_ADDRESSES: Final = 65536

#: PLC refusal reasons that mean "nothing writable lives here" rather than "bad value".
_ADDRESS_REFUSALS: Final = frozenset({"unknown point", "read-only"})


@dataclass(frozen=True)
class Slot:
    """Where one signal lives in a unit's register map, and how it is encoded."""

    signal: str
    point: str
    unit: int
    table: ModbusTable
    offset: int
    count: int
    type: DataType
    scale: float
    value_offset: float
    word_order: Order
    byte_order: Order
    bit: int | None

    @property
    def address(self) -> str:
        return f"{self.table}:{self.offset}"

    @property
    def last(self) -> int:
        return self.offset + self.count - 1


def modbus_source(cfg: GatewayConfig, source: str | None = None) -> tuple[str, ModbusSource]:
    """The Modbus TCP source the plant serves: ``source`` or the config's only one."""
    found = [
        (n, s)
        for n, s in cfg.source.items()
        if isinstance(s, ModbusSource) and s.transport == "tcp"
    ]
    if source is not None:
        found = [(n, s) for n, s in found if n == source]
    if len(found) != 1:
        names = ", ".join(n for n, _ in found) or "none"
        raise ConfigError(
            [f"source: the plant serves one Modbus TCP source; found {names} (pass source=)"]
        )
    return found[0]


def build_slots(cfg: GatewayConfig, source: str) -> list[Slot]:
    """Every signal of ``source`` as a :class:`Slot` (config validation ran already)."""
    src = cfg.source[source]
    assert isinstance(src, ModbusSource)
    slots, problems = [], []
    for name, sig in cfg.signal.items():
        if sig.source != source:
            continue
        point = sig.point or name
        if point not in POINTS:
            problems.append(
                f"signal.{name}: the plant has no point {point!r}; set 'point' to one of "
                f"{', '.join(POINTS)}"
            )
            continue
        address = parse_modbus_address(sig.address)
        slots.append(
            Slot(
                signal=name,
                point=point,
                unit=sig.unit_id if sig.unit_id is not None else src.unit,
                table=address.table,
                offset=address.offset,
                count=1
                if address.is_bit_table or sig.bit is not None
                else REGISTER_COUNT[sig.type],
                type=sig.type,
                scale=sig.scale,
                value_offset=sig.offset,
                word_order=sig.word_order,
                byte_order=sig.byte_order,
                bit=sig.bit,
            )
        )
    if problems:
        raise ConfigError(problems)
    return sorted(slots, key=lambda s: (s.unit, s.table, s.offset, s.bit or 0))


class _Unit:
    """One unit id's register map, its current image, and its pymodbus device."""

    def __init__(self, unit: int, slots: Sequence[Slot]) -> None:
        self.unit = unit
        self.slots = list(slots)
        # (table, address) -> slots living in that register/bit (several bit fields share one)
        self.at: dict[tuple[ModbusTable, int], list[Slot]] = defaultdict(list)
        for slot in self.slots:
            for a in range(slot.offset, slot.last + 1):
                self.at[(slot.table, a)].append(slot)
        # The image clients read: register values (hr/ir) or 0/1 (co/di), by address.
        self.image: dict[ModbusTable, dict[int, int]] = {t: {} for t in _TABLES}
        for table, address in self.at:
            self.image[table][address] = 0
        self.published: dict[str, float] = {}

    def device(self, action: SimAction) -> SimDevice:
        """A fresh pymodbus device for this unit (pymodbus mutates what it is given).

        Every table spans the whole 16-bit address range, so pymodbus passes every
        request to ``action``, which alone decides which addresses exist: a write to an
        undeclared address then reaches the write log instead of being refused unseen.
        """

        def bits() -> list[SimData]:
            return [SimData(0, values=[False] * _ADDRESSES, datatype=SimType.BITS)]

        def regs() -> list[SimData]:
            return [SimData(0, count=_ADDRESSES, values=0, datatype=SimType.REGISTERS)]

        return SimDevice(self.unit, simdata=(bits(), bits(), regs(), regs()), action=action)

    def publish(self, readings: Mapping[str, Reading]) -> None:
        for slot in self.slots:
            reading = readings.get(slot.point)
            if reading is None or self.published.get(slot.signal) == reading.value:
                continue
            self.published[slot.signal] = reading.value
            table = self.image[slot.table]
            on = reading.value != 0.0
            if slot.table in ("co", "di"):
                table[slot.offset] = int(on)
            elif slot.bit is not None:
                table[slot.offset] = with_bit(table[slot.offset], slot.bit, on)
            else:
                try:
                    regs = encode_registers(
                        reading.value,
                        slot.type,
                        scale=slot.scale,
                        offset=slot.value_offset,
                        word_order=slot.word_order,
                        byte_order=slot.byte_order,
                    )
                except ValueError as err:
                    # The registers keep their last value; say so once per change.
                    log.warning(
                        "plant_modbus_unencodable",
                        point=slot.point,
                        address=slot.address,
                        reason=str(err),
                    )
                    continue
                for i, reg in enumerate(regs):
                    table[slot.offset + i] = reg


class PlantModbusServer:
    """The plant's Modbus TCP server; :meth:`start`/:meth:`stop` bracket its life.

    Args:
        cfg: The config; its Modbus TCP source gives the unit id and the signals to serve.
        host: Listen address.
        port: Listen port.
        sink: Where client writes go (the PLC's judgement and the write log).
        source: Name of the Modbus source to serve when the config has several.

    Raises:
        ConfigError: No single Modbus TCP source, or a signal whose plant point does not
            exist.
    """

    def __init__(
        self,
        cfg: GatewayConfig,
        *,
        host: str,
        port: int,
        sink: WriteSink,
        source: str | None = None,
    ) -> None:
        self.source_name, self.source = modbus_source(cfg, source)
        self.host = host
        self.port = port
        self._sink = sink
        by_unit: dict[int, list[Slot]] = defaultdict(list)
        for slot in build_slots(cfg, self.source_name):
            by_unit[slot.unit].append(slot)
        if not by_unit:
            by_unit[self.source.unit] = []
        self._units = {unit: _Unit(unit, slots) for unit, slots in by_unit.items()}
        self._server: ModbusTcpServer | None = None
        self.silent = False
        """While True (the ``modbus_silent`` fault) no request is answered."""

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the Modbus server is already running")
        devices = [u.device(partial(self._action, u)) for u in self._units.values()]
        if 0 not in self._units:
            # pymodbus routes unknown unit ids to device 0; answer them as a TCP gateway
            # answers for a device that is not there, instead of failing with a traceback.
            devices.append(
                SimDevice(
                    0,
                    simdata=[SimData(0, count=_ADDRESSES, values=0, datatype=SimType.REGISTERS)],
                    action=_no_such_unit,
                )
            )
        server = ModbusTcpServer(devices, address=(self.host, self.port), trace_pdu=self._trace)
        await server.serve_forever(background=True)
        self._server = server
        log.info("plant_modbus_listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]
            log.info("plant_modbus_stopped", host=self.host, port=self.port)

    def publish(self, readings: Mapping[str, Reading]) -> None:
        """Encode the readings that changed into the register image clients read."""
        for unit in self._units.values():
            unit.publish(readings)

    def registers(self, unit: int, table: ModbusTable) -> dict[int, int]:
        """A copy of one table's current image (register values, or 0/1 for bits)."""
        return dict(self._units[unit].image[table])

    # ------------------------------------------------------------------ pymodbus hooks

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if self.silent and not sending:
            # pymodbus handles a request only if this hook returns it; dropping it here is
            # a device that heard the frame and never answered.
            return None  # type: ignore[return-value]
        return pdu

    async def _action(
        self,
        unit: _Unit,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        table = _FC_TABLE.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if values is None:
            # For bit tables pymodbus passes a register count, not the bit count, so only
            # the first bit of a bit read can be checked.
            span = 1 if table in ("co", "di") else count
            if any((table, a) not in unit.at for a in range(address, address + span)):
                return ExcCodes.ILLEGAL_ADDRESS
            self._fill(unit, table, start_address, registers)
            return None
        if table in ("co", "di"):
            return await self._write_bits(unit, table, address, [bool(v) for v in values])
        return await self._write_registers(unit, table, address, [int(v) for v in values])

    @staticmethod
    def _fill(unit: _Unit, table: ModbusTable, start: int, registers: list[int]) -> None:
        """Copy the image into pymodbus' registers (``registers[0]`` is ``start``)."""
        image = unit.image[table]
        if table in ("co", "di"):
            # Bit tables are packed 16 per register, bit 0 first; ``start`` counts registers.
            for bit_address, on in image.items():
                i = bit_address // 16 - start
                registers[i] = with_bit(registers[i], bit_address % 16, bool(on))
            return
        for a, reg in image.items():
            registers[a - start] = reg

    async def _write_bits(
        self, unit: _Unit, table: ModbusTable, address: int, bits: list[bool]
    ) -> ExcCodes | None:
        plan: list[tuple[Slot, float]] = []
        for i, on in enumerate(bits):
            slots = unit.at.get((table, address + i))
            if not slots:
                where = f"{table}:{address + i}"
                self._sink.refuse(
                    WriteAttempt("modbus", None, f"{table}:{address}", bits),
                    f"no signal declared at {where}",
                )
                return ExcCodes.ILLEGAL_ADDRESS
            plan.append((slots[0], 1.0 if on else 0.0))
        return await self._apply(unit, plan)

    async def _write_registers(
        self, unit: _Unit, table: ModbusTable, address: int, regs: list[int]
    ) -> ExcCodes | None:
        end = address + len(regs) - 1
        touched: list[Slot] = []
        for a in range(address, end + 1):
            slots = unit.at.get((table, a))
            if not slots:
                self._sink.refuse(
                    WriteAttempt("modbus", None, f"{table}:{address}", regs),
                    f"no signal declared at {table}:{a}",
                )
                return ExcCodes.ILLEGAL_ADDRESS
            touched.extend(s for s in slots if s not in touched)
        plan: list[tuple[Slot, float]] = []
        for slot in touched:
            if slot.offset < address or slot.last > end:
                covered = regs[
                    max(slot.offset, address) - address : min(slot.last, end) - address + 1
                ]
                self._sink.refuse(
                    WriteAttempt("modbus", slot.point, slot.address, covered),
                    f"partial write: {slot.type} at {slot.address} spans "
                    f"{slot.table}:{slot.offset}..{slot.last}",
                )
                return ExcCodes.ILLEGAL_ADDRESS
            own = regs[slot.offset - address : slot.last - address + 1]
            value = decode_registers(
                own,
                slot.type,
                scale=slot.scale if slot.bit is None else 1.0,
                offset=slot.value_offset if slot.bit is None else 0.0,
                word_order=slot.word_order,
                byte_order=slot.byte_order,
                bit=slot.bit,
            )
            plan.append((slot, value))
        return await self._apply(unit, plan)

    async def _apply(self, unit: _Unit, plan: list[tuple[Slot, float]]) -> ExcCodes | None:
        for slot, value in plan:
            outcome = await self._sink.submit(
                WriteAttempt("modbus", slot.point, slot.address, value)
            )
            if not outcome.accepted:
                if outcome.reason in _ADDRESS_REFUSALS:
                    return ExcCodes.ILLEGAL_ADDRESS
                return ExcCodes.ILLEGAL_VALUE
        return None


async def _no_such_unit(
    function_code: int,
    start_address: int,
    address: int,
    count: int,
    registers: list[int],
    values: list[int] | list[bool] | None,
) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE
