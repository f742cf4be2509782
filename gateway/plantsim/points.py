"""The plant's point vocabulary: every value the simulated PLC exposes, by name.

The names are the contract between the simulator, the protocol servers that publish it
(OPC UA, Modbus) and the gateway's config. ``low``/``high`` are what the transmitter or
PLC register can represent; for writable points they are the PLC's own acceptance limits
(a write outside them is refused by the PLC, whatever the gateway believes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

PointKind = Literal["float", "uint16", "bool"]


@dataclass(frozen=True)
class PointSpec:
    """One named point of the plant.

    Attributes:
        name: Point name, unique; the key in :data:`POINTS`.
        unit: Engineering unit ("" for status words).
        low: Lowest representable value (writable points: lowest accepted write).
        high: Highest representable value (writable points: highest accepted write).
        kind: Register type the servers should use.
        writable: Whether the gateway may write it.
        description: What the point is, for generated docs and server browse names.
    """

    name: str
    unit: str
    low: float
    high: float
    kind: PointKind
    writable: bool
    description: str


# Bits of ``trip_word``. Each bit is a latched protective trip inside the PLC.
TRIP_HEATER_LOW_LEVEL: Final = 1 << 0
TRIP_HEATER_OVER_TEMP: Final = 1 << 1
TRIP_PUMP_BEARING_TEMP: Final = 1 << 2
TRIP_PUMP_DRY_RUN: Final = 1 << 3

UINT16_MAX: Final = 65535

_SPECS: Final = (
    # --- measurements (read-only) ---
    PointSpec(
        name="tank_level",
        unit="m",
        low=0.0,
        high=3.0,
        kind="float",
        writable=False,
        description="Tank level above the bottom (radar transmitter; the level loop's PV).",
    ),
    PointSpec(
        name="tank_temp",
        unit="degC",
        low=0.0,
        high=120.0,
        kind="float",
        writable=False,
        description="Liquid temperature in the well-mixed tank (RTD; the temperature loop's PV).",
    ),
    PointSpec(
        name="inlet_temp",
        unit="degC",
        low=0.0,
        high=60.0,
        kind="float",
        writable=False,
        description="Temperature of the feed the pump delivers (drifts slowly).",
    ),
    PointSpec(
        name="ambient_temp",
        unit="degC",
        low=-20.0,
        high=50.0,
        kind="float",
        writable=False,
        description="Air temperature around the skid (drifts slowly).",
    ),
    PointSpec(
        name="pump_speed",
        unit="rpm",
        low=0.0,
        high=3000.0,
        kind="float",
        writable=False,
        description="Feed-pump speed reported by its variable-frequency drive.",
    ),
    PointSpec(
        name="pump_flow",
        unit="m3/h",
        low=0.0,
        high=40.0,
        kind="float",
        writable=False,
        description="Flow into the tank (magnetic flowmeter, low-flow cut-off 0.2 m3/h).",
    ),
    PointSpec(
        name="outlet_flow",
        unit="m3/h",
        low=0.0,
        high=40.0,
        kind="float",
        writable=False,
        description="Flow out through the control valve to the process (magnetic flowmeter).",
    ),
    PointSpec(
        name="discharge_pressure",
        unit="bar",
        low=0.0,
        high=6.0,
        kind="float",
        writable=False,
        description="Gauge pressure at the pump discharge.",
    ),
    PointSpec(
        name="valve_position",
        unit="%",
        low=0.0,
        high=100.0,
        kind="float",
        writable=False,
        description="Outlet control-valve stem position from its positioner (0 closed, 100 open).",
    ),
    PointSpec(
        name="heater_power",
        unit="kW",
        low=0.0,
        high=60.0,
        kind="float",
        writable=False,
        description="Electrical power drawn by the immersion heater (power meter).",
    ),
    PointSpec(
        name="motor_current",
        unit="A",
        low=0.0,
        high=60.0,
        kind="float",
        writable=False,
        description="Pump-motor current reported by the drive.",
    ),
    PointSpec(
        name="bearing_temp",
        unit="degC",
        low=0.0,
        high=150.0,
        kind="float",
        writable=False,
        description="Pump drive-end bearing temperature.",
    ),
    PointSpec(
        name="vibration_rms",
        unit="mm/s",
        low=0.0,
        high=50.0,
        kind="float",
        writable=False,
        description="Pump bearing-housing vibration velocity, RMS.",
    ),
    # --- remote setpoints (writable by the gateway while the PLC is in remote mode) ---
    PointSpec(
        name="level_sp",
        unit="m",
        low=0.2,
        high=2.8,
        kind="float",
        writable=True,
        description="Remote tank-level setpoint; used by the level loop while in remote mode.",
    ),
    PointSpec(
        name="temp_sp",
        unit="degC",
        low=10.0,
        high=90.0,
        kind="float",
        writable=True,
        description="Remote tank-temperature setpoint; the temperature loop's SP in remote mode.",
    ),
    PointSpec(
        name="valve_cmd",
        unit="%",
        low=0.0,
        high=100.0,
        kind="float",
        writable=True,
        description="Remote outlet-valve demand; drives the valve while in remote mode.",
    ),
    # --- status ---
    PointSpec(
        name="remote_mode",
        unit="",
        low=0.0,
        high=1.0,
        kind="bool",
        writable=False,
        description="1 when the PLC follows the remote setpoints: operator remote-enable is on and "
        "the gateway heartbeat is healthy. 0 means local setpoints are in force.",
    ),
    PointSpec(
        name="trip_word",
        unit="",
        low=0.0,
        high=float(UINT16_MAX),
        kind="uint16",
        writable=False,
        description="Latched protective trips: bit0 heater/low level, "
        "bit1 heater/over-temperature, bit2 pump/high bearing temperature, bit3 pump/dry run.",
    ),
    PointSpec(
        name="heartbeat",
        unit="",
        low=0.0,
        high=float(UINT16_MAX),
        kind="uint16",
        writable=True,
        description="Gateway heartbeat counter. The PLC drops to local mode when it has not "
        "changed for the watchdog time.",
    ),
)

POINTS: Final[Mapping[str, PointSpec]] = MappingProxyType({p.name: p for p in _SPECS})
"""Every point of the plant, by name, in a stable order (measurements, setpoints, status)."""

MEASUREMENTS: Final[tuple[str, ...]] = tuple(
    p.name for p in _SPECS if not p.writable and p.kind == "float"
)
"""The read-only process measurements (the points sensor faults act on)."""

SETPOINTS: Final[tuple[str, ...]] = ("level_sp", "temp_sp", "valve_cmd")
"""The remote setpoints, in the order the PLC keeps them."""
