"""The running plant: the simulated skid, its two protocol servers, faults and write log.

:class:`PlantRuntime` owns one :class:`Plant` and steps it in real time (times ``speed``),
publishes every scan to the OPC UA and Modbus servers, routes client writes to the PLC and
the write log, and applies the protocol-layer faults the plant itself cannot:

* ``server_restart``: the OPC UA server stops (sessions and subscriptions are lost) and
  comes back on the same port after ``2 + 8·severity`` simulated seconds (divided by
  ``speed`` in wall time), or at once when the faults are cleared;
* ``modbus_silent``: the Modbus server receives requests but answers none until the fault
  is cleared (or injected again with severity 0).

Simulated time is locked to the wall clock: after ``w`` wall seconds the plant has run
``speed·w`` simulated seconds, whatever the scheduling jitter (the plant's result does not
depend on how its steps are chunked). Published values carry the simulated instant as
their source timestamp, mapped to wall-clock time as ``start + simulated seconds`` (so at
``speed`` 1 it is the wall clock; see :meth:`PlantRuntime.instant`).

Everything long-lived runs in one ``asyncio.TaskGroup`` with named tasks; leaving the
``async with`` block (or cancelling :func:`run_plant_forever`) stops both servers cleanly.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine, Mapping
from contextlib import AsyncExitStack, suppress
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from gateway.config.schema import GatewayConfig
from gateway.logs import get_logger
from gateway.plantsim.faults import FAULTS
from gateway.plantsim.modbus_server import PlantModbusServer
from gateway.plantsim.opcua_server import PlantOpcUaServer
from gateway.plantsim.plant import Plant, WriteOutcome
from gateway.plantsim.writelog import WriteAttempt, WriteLog

log = get_logger(__name__)

RESTART_BASE_S: Final = 2.0
"""OPC UA downtime of a ``server_restart`` at severity 0, simulated seconds."""
RESTART_PER_SEVERITY_S: Final = 8.0
"""Extra downtime per unit of severity, simulated seconds."""
_ANSWER_GRACE_S: Final = 0.2
"""Wall time a ``server_restart`` waits before stopping, so the InjectFault call that
asked for it gets its answer first."""
_MAX_CATCH_UP_WALL_S: Final = 2.0
"""If the loop falls further behind than this (a suspended process), the lost time is
skipped instead of simulated in one burst."""


class PlantRuntime:
    """The simulated plant serving OPC UA and Modbus TCP on loopback.

    Use as ``async with PlantRuntime(cfg, opcua_port=..., modbus_port=...) as rt:``.

    Args:
        cfg: The config: its OPC UA and Modbus sources and signals are the address map.
        host: Listen address of both servers.
        opcua_port: OPC UA port (the endpoint path comes from the config).
        modbus_port: Modbus TCP port.
        write_log: Append every write received here as JSON lines (None: not kept).
        speed: Simulated seconds per wall second.
        seed: The plant's random seed (noise and drift).
        watchdog_s: The PLC's heartbeat watchdog, simulated seconds.
        tick_s: Wall seconds between steps and publications.
        faults: Faults to inject at start, name to severity.
        local_setpoints: Overrides of the PLC's local (fallback) setpoints.
        opcua_certificate: Server certificate, enabling secure OPC UA endpoints.
        opcua_private_key: The certificate's private key.
        display_names: Plant point name -> the DisplayName its OPC UA node shows instead of
            the signal's name: plant-written text, for tests and the demo to make hostile.

    Raises:
        ValueError: ``speed`` or ``tick_s`` not a positive finite number, an unknown fault
            or a severity outside [0, 1] in ``faults``, a bad ``watchdog_s`` or
            ``local_setpoints`` (from :class:`Plant`), or a ``display_names`` key that is
            not a point served over OPC UA.
        ConfigError: The config cannot be served (see the two server classes).
    """

    def __init__(
        self,
        cfg: GatewayConfig,
        *,
        host: str = "127.0.0.1",
        opcua_port: int = 4840,
        modbus_port: int = 5020,
        write_log: Path | None = None,
        speed: float = 1.0,
        seed: int = 0,
        watchdog_s: float = 10.0,
        tick_s: float = 0.1,
        faults: Mapping[str, float] | None = None,
        local_setpoints: Mapping[str, float] | None = None,
        opcua_certificate: Path | None = None,
        opcua_private_key: Path | None = None,
        display_names: Mapping[str, str] | None = None,
    ) -> None:
        for label, value in (("speed", speed), ("tick_s", tick_s)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{label} must be a positive number, got {value!r}")
        self.speed = speed
        self.tick_s = tick_s
        self.plant = Plant(seed=seed, watchdog_s=watchdog_s, local_setpoints=local_setpoints)
        self.opcua = PlantOpcUaServer(
            cfg,
            host=host,
            port=opcua_port,
            sink=self,
            simulation=self,
            certificate=opcua_certificate,
            private_key=opcua_private_key,
            display_names=display_names,
        )
        self.modbus = PlantModbusServer(cfg, host=host, port=modbus_port, sink=self)
        self._write_log_path = write_log
        self.write_log = WriteLog(None)
        self._initial_faults = dict(faults or {})
        for name, severity in self._initial_faults.items():
            if name not in FAULTS:
                raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
            if not (math.isfinite(severity) and 0.0 <= severity <= 1.0):
                raise ValueError(
                    f"fault {name!r}: severity must be within [0, 1], got {severity!r}"
                )
        self._protocol_faults: dict[str, float] = {}
        self._epoch = time.time() - self.plant.time
        self._publish_lock = asyncio.Lock()
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._restart_cleared = asyncio.Event()
        self._stack: AsyncExitStack | None = None

    # ------------------------------------------------------------------ properties

    @property
    def opcua_endpoint(self) -> str:
        return self.opcua.endpoint

    @property
    def modbus_address(self) -> tuple[str, int]:
        return self.modbus.host, self.modbus.port

    @property
    def active_faults(self) -> dict[str, float]:
        """Every active fault, process and protocol layer, with its severity."""
        return {**self.plant.active_faults, **self._protocol_faults}

    def instant(self, sim_time: float | None = None) -> datetime:
        """The wall-clock instant a simulated time maps to (default: the plant's now)."""
        t = self.plant.time if sim_time is None else sim_time
        return datetime.fromtimestamp(self._epoch + t, UTC)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        async with AsyncExitStack() as stack:
            self._tg = await stack.enter_async_context(asyncio.TaskGroup())
            stack.push_async_callback(self._close)
            self.write_log = WriteLog(self._write_log_path)
            await self._publish()
            await self.opcua.start()
            await self.modbus.start()
            # Simulated time starts now, not before the servers' start-up took its second.
            self._epoch = time.time() - self.plant.time
            await self._publish(force=True)
            self._spawn(self._run(), "plant-tick")
            for name, severity in self._initial_faults.items():
                self.inject_fault(name, severity)
            log.info(
                "plant_running",
                speed=self.speed,
                opcua_endpoint=self.opcua_endpoint,
                modbus_host=self.modbus.host,
                modbus_port=self.modbus.port,
            )
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._stack = self._stack, None
        if stack is None:
            return None
        return await stack.__aexit__(exc_type, exc, tb)

    async def _close(self) -> None:
        """Stop our tasks, then both servers, then the log (before the TaskGroup exits)."""
        tasks = [t for t in self._tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        try:
            await self.opcua.stop()
        finally:
            try:
                await self.modbus.stop()
            finally:
                self.write_log.close()
                self._tg = None

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        if self._tg is None:
            coro.close()
            raise RuntimeError("the plant runtime is not running; use 'async with'")
        task = self._tg.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ stepping

    async def _run(self) -> None:
        """Step and publish every ``tick_s`` wall seconds, locked to the wall clock."""
        loop = asyncio.get_running_loop()
        t0, sim0, k = loop.time(), self.plant.time, 0
        while True:
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * self.tick_s - loop.time()))
            now = loop.time()
            behind = now - (t0 + k * self.tick_s)
            if behind > self.tick_s:
                k = math.ceil((now - t0) / self.tick_s)  # skip missed ticks, do not burst
            dt = sim0 + self.speed * (now - t0) - self.plant.time
            limit = self.speed * _MAX_CATCH_UP_WALL_S
            if dt > limit:
                lost = (dt - limit) / self.speed
                log.warning("plant_fell_behind", skipped_wall_s=round(lost, 3))
                t0 += lost
                self._epoch += lost
                dt = limit
            if dt > 0:
                self.plant.step(dt)
            await self._publish()

    async def _publish(self, *, force: bool = False) -> None:
        async with self._publish_lock:
            readings = self.plant.read()
            self.modbus.publish(readings)
            await self.opcua.publish(readings, self.instant(), force=force, stamp=self.instant)
            await self.opcua.set_alarm_message(self.plant.alarm_message)

    # ------------------------------------------------------------------ writes (WriteSink)

    async def submit(self, attempt: WriteAttempt) -> WriteOutcome:
        """Let the PLC judge a client's write, log it, and publish its effect at once."""
        value = attempt.value
        if attempt.point is None or not isinstance(value, float | int):
            outcome = WriteOutcome(False, "no decodable value for a plant point")
        else:
            outcome = self.plant.write(attempt.point, float(value))
        self.write_log.record(
            attempt, sim_time=self.plant.time, accepted=outcome.accepted, reason=outcome.reason
        )
        if outcome.accepted:
            await self._publish()  # the read-back shows what the PLC holds now
        return outcome

    def refuse(self, attempt: WriteAttempt, reason: str) -> None:
        """Log a write a server refused before it reached the PLC."""
        self.write_log.record(attempt, sim_time=self.plant.time, accepted=False, reason=reason)

    # ------------------------------------------------------------------ scenario control

    def inject_fault(self, name: str, severity: float) -> None:
        """Start a fault (severity in [0, 1]; 0 removes it), process or protocol layer.

        Raises:
            ValueError: Unknown fault or severity outside [0, 1].
        """
        spec = FAULTS.get(name)
        if spec is None or spec.layer == "process":
            self.plant.inject_fault(name, severity)  # raises ValueError with the known names
            return
        if not (math.isfinite(severity) and 0.0 <= severity <= 1.0):
            raise ValueError(f"severity must be within [0, 1], got {severity!r}")
        if name == "modbus_silent":
            self.modbus.silent = severity > 0
            if severity > 0:
                self._protocol_faults[name] = severity
            else:
                self._protocol_faults.pop(name, None)
        elif name == "server_restart":
            if severity > 0 and name not in self._protocol_faults:
                self._protocol_faults[name] = severity
                self._restart_cleared = asyncio.Event()
                self._spawn(self._restart_opcua(severity), "plant-opcua-restart")
        else:  # pragma: no cover - a protocol fault added to the catalogue but not here
            raise ValueError(f"protocol fault {name!r} is not implemented by the runtime")

    def clear_faults(self) -> None:
        """Remove every fault; a restarting OPC UA server comes back at once."""
        self.plant.clear_faults()
        self.modbus.silent = False
        self._protocol_faults.pop("modbus_silent", None)
        self._restart_cleared.set()

    def set_remote(self, enabled: bool) -> None:
        """Operate the operator's remote-enable switch."""
        self.plant.set_remote_enabled(enabled)

    def restart_plc(self) -> None:
        """Restart the PLC program (see :meth:`Plant.restart_plc`); the servers stay up."""
        self.plant.restart_plc()

    async def set_operator_note(self, text: str) -> None:
        """Replace the plant-provided free text served as ``Skid.OperatorNote``."""
        await self.opcua.set_operator_note(text)

    async def set_alarm_message(self, text: str) -> None:
        """Overwrite the PLC's alarm banner ``Skid.AlarmMessage`` (until its trips change)
        and serve it at once."""
        self.plant.set_alarm_message(text)
        async with self._publish_lock:
            await self.opcua.set_alarm_message(self.plant.alarm_message)

    async def _restart_opcua(self, severity: float) -> None:
        down_s = (RESTART_BASE_S + RESTART_PER_SEVERITY_S * severity) / self.speed
        try:
            await asyncio.sleep(_ANSWER_GRACE_S)
            log.info("plant_opcua_restarting", down_wall_s=round(down_s, 3))
            await self.opcua.stop()
            with suppress(TimeoutError):
                async with asyncio.timeout(down_s):
                    await self._restart_cleared.wait()
            await self.opcua.start()
        finally:
            self._protocol_faults.pop("server_restart", None)


async def run_plant_forever(
    cfg: GatewayConfig,
    *,
    host: str = "127.0.0.1",
    opcua_port: int = 4840,
    modbus_port: int = 5020,
    write_log: Path | None = None,
    speed: float = 1.0,
    seed: int = 0,
    watchdog_s: float = 10.0,
    tick_s: float = 0.1,
    faults: Mapping[str, float] | None = None,
) -> None:
    """Run the plant until cancelled (the CLI cancels on SIGINT/SIGTERM), then stop both
    servers cleanly. A failure of the plant's own tasks ends it with that error."""
    async with PlantRuntime(
        cfg,
        host=host,
        opcua_port=opcua_port,
        modbus_port=modbus_port,
        write_log=write_log,
        speed=speed,
        seed=seed,
        watchdog_s=watchdog_s,
        tick_s=tick_s,
        faults=faults,
    ):
        await asyncio.Event().wait()
