"""Modbus reader (TCP or RTU): batched polling of one link, units isolated from each other.

A link (a TCP connection or a serial line) carries one request at a time, so a unit that
does not answer costs every other unit on the link a timeout per request. To keep one dead
unit from stalling the others, a unit that times out is set aside with its own capped
backoff and only probed again when that expires; its signals simply stop being refreshed
and turn stale. After a timeout the client is rebuilt (a late answer could otherwise be
matched to the next request), which on a healthy link costs a reconnect, not a stall, and is
not reported as a link transition (the other units' values stay as fresh as they are).

When every unit of the link has stopped answering, the link is reported down ("no unit
answers") and probed with the link's own capped backoff; it is reported up again only once
a unit answers. On a serial line this is the only sign of a pulled cable or a dead bus: the
port itself still opens, so "connected" there would say nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from gateway.config.schema import ModbusSource, Signal
from gateway.errors import SourceError
from gateway.io.apart import call_apart
from gateway.io.modbus_codec import decode_registers
from gateway.io.modbus_plan import ReadBlock, plan_reads
from gateway.io.ports import LinkState, SampleSink
from gateway.signals import Quality, RawSample

log = structlog.get_logger("gateway.io.modbus")

LINK_FAILURES = (OSError, TimeoutError, ConnectionException, SourceError)


class UnitTimeout(SourceError):
    """One unit did not answer in time; the link itself may be fine."""


def make_client(cfg: ModbusSource) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
    """A fresh client with pymodbus's own retries and reconnects off: we supervise."""
    if cfg.transport == "tcp":
        assert cfg.host is not None
        return AsyncModbusTcpClient(
            cfg.host, port=cfg.port, timeout=cfg.timeout_s, retries=0, reconnect_delay=0
        )
    assert cfg.serial is not None
    s = cfg.serial
    return AsyncModbusSerialClient(
        s.device,
        baudrate=s.baudrate,
        parity=s.parity,
        stopbits=s.stopbits,
        bytesize=s.bytesize,
        timeout=cfg.timeout_s,
        retries=0,
        reconnect_delay=0,
    )


def decode_block(
    block: ReadBlock, words: Sequence[int], signals: Mapping[str, Signal], received: float
) -> list[tuple[str, RawSample]]:
    """Decode every member of a block read; a member that fails to decode is bad alone."""
    out: list[tuple[str, RawSample]] = []
    for m in block.members:
        spec = signals[m.signal]
        try:
            value = decode_registers(
                [int(w) for w in words[m.index : m.index + m.count]],
                spec.type,
                scale=spec.scale,
                offset=spec.offset,
                word_order=spec.word_order,
                byte_order=spec.byte_order,
                bit=spec.bit,
            )
            sample = RawSample(value, received, received)
        except ValueError as err:
            sample = RawSample(None, received, received, Quality.BAD, f"decode error: {err}")
        out.append((m.signal, sample))
    return out


class ModbusReader:
    """Polls one Modbus link forever and pushes samples into a sink."""

    def __init__(
        self,
        name: str,
        config: ModbusSource,
        signals: Mapping[str, Signal],
        sink: SampleSink,
        *,
        clock: Callable[[], float] = time.time,
        initial_backoff_s: float = 0.25,
    ) -> None:
        self.name = name
        self._cfg = config
        self._signals = dict(signals)
        self._sink = sink
        self._clock = clock
        self._initial_backoff_s = initial_backoff_s
        self.unit = config.unit
        self.blocks = plan_reads(self._signals, config.unit)
        self._unit_retry_at: dict[int, float] = {}
        self._unit_backoff: dict[int, float] = {}
        self.state = LinkState.DISCONNECTED
        self.last_error: str | None = None
        self.connects = 0
        #: Times the link was reported up (a unit answered, or the client connected while
        #: some unit was still believed alive).
        self._ups = 0
        self.requests = 0
        #: Loop iterations (connect attempts, poll cycles): proof of life for the watchdog.
        self.cycles = 0
        #: The connected client, for the write path in ``modbus_writer``; None when down.
        self.client: Any = None
        #: Serialises this link's requests: reads and the writer share one connection.
        self.lock = asyncio.Lock()

    @property
    def dead_units(self) -> list[int]:
        return sorted(self._unit_retry_at)

    async def run(self) -> None:
        delay = self._initial_backoff_s
        while True:
            self.cycles += 1
            if self.state is not LinkState.CONNECTED:
                # Not when rebuilding the client after one unit's timeout: announcing that
                # would mark the units that do answer stale.
                self._transition(LinkState.CONNECTING, None)
            client = make_client(self._cfg)
            ups_before = self._ups
            try:
                await self._session(client)
            except UnitTimeout:
                if self._link_silent():
                    self._transition(
                        LinkState.DISCONNECTED, f"no unit answers on {self._describe()}"
                    )
                else:
                    delay = 0.0  # the link answered others recently: rebuild the client at once
            except LINK_FAILURES as err:
                detail = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
                self._transition(LinkState.DISCONNECTED, detail)
            finally:
                self.client = None
                client.close()
            if self._ups > ups_before and delay:
                delay = self._initial_backoff_s
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, self._initial_backoff_s), self._cfg.reconnect_max_s)

    def _transition(self, state: LinkState, detail: str | None) -> None:
        if state is self.state and detail == self.last_error:
            return
        if state is LinkState.CONNECTED and self.state is not LinkState.CONNECTED:
            self._ups += 1
        if state is LinkState.DISCONNECTED:
            self.last_error = detail
        self.state = state
        self._sink.link(self.name, state, detail)

    async def _session(self, client: Any) -> None:
        # In a task of its own: pymodbus answers a cancellation of connect() with False,
        # which would swallow ours (see gateway.io.apart).
        connected = await call_apart(client.connect(), self._cfg.timeout_s * 2, "connect")
        if not connected:
            raise SourceError(f"cannot connect to {self._describe()}")
        self.connects += 1
        self.client = client
        if not self._link_silent():
            self._transition(LinkState.CONNECTED, None)
        # else: up only once a unit answers (see _read_block)
        next_at = time.monotonic()
        while True:
            self.cycles += 1
            await self._cycle(client)
            next_at += self._cfg.poll_interval_s
            now = time.monotonic()
            if next_at < now:  # overran: do not try to catch up with a burst
                next_at = now
            await asyncio.sleep(next_at - now)

    def _describe(self) -> str:
        if self._cfg.transport == "tcp":
            return f"{self._cfg.host}:{self._cfg.port}"
        return self._cfg.serial.device if self._cfg.serial else "serial"

    def _link_silent(self) -> bool:
        """Every unit this link reads is set aside: nothing on it answers."""
        units = {block.unit for block in self.blocks}
        return bool(units) and units <= self._unit_retry_at.keys()

    async def _cycle(self, client: Any) -> None:
        # On a silent link, run()'s backoff already spaced this attempt: probe every unit.
        probe_all = self._link_silent()
        for block in self.blocks:
            retry_at = self._unit_retry_at.get(block.unit)
            if not probe_all and retry_at is not None and time.monotonic() < retry_at:
                continue
            async with self.lock:
                await self._read_block(client, block)

    async def _read_block(self, client: Any, block: ReadBlock) -> None:
        reader = {
            "hr": client.read_holding_registers,
            "ir": client.read_input_registers,
            "co": client.read_coils,
            "di": client.read_discrete_inputs,
        }[block.table]
        self.requests += 1
        try:
            response = await call_apart(
                reader(block.start, count=block.count, device_id=block.unit),
                self._cfg.timeout_s + 0.5,
                f"read of unit {block.unit}",
            )
        except (TimeoutError, ModbusException) as err:
            if isinstance(err, ConnectionException):
                raise
            self._unit_failed(block.unit)
            raise UnitTimeout(f"unit {block.unit} did not answer: {err}") from err
        received = self._clock()
        self._unit_recovered(block.unit)
        self._transition(LinkState.CONNECTED, None)
        if response.isError():
            code = getattr(response, "exception_code", "?")
            reason = f"modbus exception {code} reading {block.table}:{block.start}+{block.count}"
            bad = [
                (m.signal, RawSample(None, received, received, Quality.BAD, reason))
                for m in block.members
            ]
            self._sink.samples(self.name, bad)
            return
        words = response.bits if block.table in ("co", "di") else response.registers
        self._sink.samples(self.name, decode_block(block, words, self._signals, received))

    def _unit_failed(self, unit: int) -> None:
        backoff = min(self._unit_backoff.get(unit, 0.5) * 2, self._cfg.reconnect_max_s)
        self._unit_backoff[unit] = backoff
        if unit not in self._unit_retry_at:
            log.warning("modbus_unit_unresponsive", source=self.name, unit=unit)
        self._unit_retry_at[unit] = time.monotonic() + backoff

    def _unit_recovered(self, unit: int) -> None:
        if self._unit_retry_at.pop(unit, None) is not None:
            log.info("modbus_unit_recovered", source=self.name, unit=unit)
        self._unit_backoff.pop(unit, None)
