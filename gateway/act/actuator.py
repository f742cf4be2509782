"""The actuator: every write the gateway makes to a PLC goes through here.

Today that is the heartbeat only; setpoint writes arrive with governance and will accept
nothing but a valid Verdict from ``gateway.govern``. Keeping the heartbeat on this same path
means there is exactly one door to the PLC to guard.

The heartbeat is written only while acquisition makes progress: a gateway whose reads have
stalled must not keep telling the PLC that all is well, so the PLC's watchdog sheds to
local setpoints exactly when the gateway can no longer see the plant.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config.schema import GatewayConfig
from gateway.errors import WriteError
from gateway.io.modbus_reader import ModbusReader
from gateway.io.opcua_reader import OpcUaReader
from gateway.io.write_path import PointWriter

HEARTBEAT_MODULUS = 65536


class Actuator:
    def __init__(
        self, cfg: GatewayConfig, readers: Mapping[str, OpcUaReader | ModbusReader]
    ) -> None:
        self._cfg = cfg
        self._writer = PointWriter(cfg, readers, allowed_signals(cfg))
        self._counter = 0
        self.heartbeats_written = 0
        self._setpoints = frozenset(w.signal for w in cfg.writable.values())

    async def beat(self) -> int:
        """Write the next heartbeat value; raise WriteError if there is no heartbeat or it fails."""
        if self._cfg.heartbeat is None:
            raise WriteError("no heartbeat configured")
        value = (self._counter + 1) % HEARTBEAT_MODULUS
        await self._writer.write(self._cfg.heartbeat.signal, value)
        self._counter = value
        self.heartbeats_written += 1
        return value

    async def write_setpoint(self, signal: str, value: float) -> None:
        """Write a declared setpoint's signal. Called only by the setpoint executor, which
        holds a fitting Verdict; the heartbeat is not a setpoint and cannot go this way."""
        if signal not in self._setpoints:
            raise WriteError(f"{signal}: not a declared writable setpoint")
        await self._writer.write(signal, value)


def allowed_signals(cfg: GatewayConfig) -> frozenset[str]:
    """Every signal the gateway may ever write: the heartbeat and the declared setpoints."""
    allowed = {w.signal for w in cfg.writable.values()}
    if cfg.heartbeat is not None:
        allowed.add(cfg.heartbeat.signal)
    return frozenset(allowed)
