"""The fault catalogue: everything that can be injected into the reference plant at run time.

Process-layer faults change the physics, the sensors or the PLC and are applied by
:class:`gateway.plantsim.plant.Plant`. Protocol-layer faults are catalogued here so one
list names every fault, but they are applied by the protocol servers (the plant itself
has no network). Severity is a float in [0, 1]; the constants below say what severity 1
means, and effects scale linearly with severity unless the description says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from gateway.plantsim.points import MEASUREMENTS

FaultLayer = Literal["process", "protocol"]

# What severity 1.0 means, per fault. process.py and plant.py use these constants so the
# catalogue's descriptions cannot drift away from the behaviour.
IMPELLER_WEAR_HEAD_LOSS: Final = 0.30
"""Fraction of the pump's developed head lost at severity 1."""
IMPELLER_WEAR_EFFICIENCY_LOSS: Final = 0.25
"""Fraction of the pump's hydraulic efficiency lost at severity 1."""
IMPELLER_WEAR_VIBRATION: Final = 2.5
"""Extra vibration, mm/s RMS per unit of relative speed, at severity 1 (imbalance)."""
BEARING_HEAT_GAIN: Final = 2.5
"""Bearing temperature rise above ambient is multiplied by (1 + gain·severity)."""
BEARING_VIBRATION: Final = 9.0
"""Extra vibration, mm/s RMS per unit of relative speed, at severity 1."""
BEARING_FRICTION_GAIN: Final = 3.0
"""Bearing friction power is multiplied by (1 + gain·severity)."""
STICTION_BAND_PCT: Final = 10.0
"""Valve stick band at severity 1, % of stroke: the stem moves only when the actuator's
demand differs from the stem position by more than the band, and then it jumps."""
LEVEL_DRIFT_RATE_M_PER_S: Final = 0.0005
"""Growth rate of the level transmitter's offset at severity 1 (3 cm per minute)."""
LEVEL_DRIFT_MAX_M: Final = 0.5
"""The level transmitter's offset saturates here."""
LEAK_COEFF_M3H_PER_SQRT_M: Final = 8.0
"""Leak flow at severity 1 is this times sqrt(level in m) (a hole near the tank bottom)."""
HEATER_DEGRADATION_LOSS: Final = 0.5
"""Fraction of the heater's electrical power not delivered to the liquid at severity 1."""


@dataclass(frozen=True)
class FaultSpec:
    """One injectable fault.

    Attributes:
        name: Fault name, the key in :data:`FAULTS` and the argument of ``inject_fault``.
        layer: "process" (applied by the plant) or "protocol" (applied by a server).
        description: The effect, including what severity means.
        affects: Points whose readings the fault changes, directly or through the loops.
    """

    name: str
    layer: FaultLayer
    description: str
    affects: tuple[str, ...]


_SPECS: Final = (
    FaultSpec(
        name="impeller_wear",
        layer="process",
        description=(
            f"Worn impeller: developed head falls by {IMPELLER_WEAR_HEAD_LOSS:.0%}·severity and "
            f"hydraulic efficiency by {IMPELLER_WEAR_EFFICIENCY_LOSS:.0%}·severity, immediately. "
            "At a given speed pump_flow and discharge_pressure fall; the level loop answers "
            "with more speed and motor current. Imbalance adds "
            f"{IMPELLER_WEAR_VIBRATION} mm/s·severity per unit speed of vibration."
        ),
        affects=("pump_flow", "discharge_pressure", "pump_speed", "motor_current", "vibration_rms"),
    ),
    FaultSpec(
        name="bearing_degradation",
        layer="process",
        description=(
            "Damaged pump bearing: the bearing's temperature rise above ambient is multiplied "
            f"by (1 + {BEARING_HEAT_GAIN}·severity), its friction power by "
            f"(1 + {BEARING_FRICTION_GAIN}·severity), and vibration rises by "
            f"{BEARING_VIBRATION} mm/s·severity per unit speed. Immediate; bearing_temp then "
            "climbs with the bearing's thermal time constant (~1 min). At severity 1 and "
            "nominal speed it passes 90 degC and trips the pump."
        ),
        affects=("bearing_temp", "vibration_rms", "motor_current"),
    ),
    FaultSpec(
        name="valve_stiction",
        layer="process",
        description=(
            f"Sticky control valve: a stick band of {STICTION_BAND_PCT:g} %·severity of stroke. "
            "The stem stays put until the actuator's demand differs from it by more than the "
            "band, then jumps to the demand (stick-slip), so valve_position lags and "
            "sticks against valve_cmd steps smaller than the band."
        ),
        affects=("valve_position", "outlet_flow"),
    ),
    FaultSpec(
        name="level_sensor_drift",
        layer="process",
        description=(
            "Level transmitter drifts high: its offset grows at "
            f"{LEVEL_DRIFT_RATE_M_PER_S * 60:g} m/min·severity up to "
            f"{LEVEL_DRIFT_MAX_M:g} m. The level loop controls on this transmitter, so the "
            "true level falls below the setpoint while the reading stays on it. The offset "
            "resets when the fault is cleared (transmitter recalibrated)."
        ),
        affects=("tank_level",),
    ),
    FaultSpec(
        name="sensor_freeze",
        layer="process",
        description=(
            "The PLC's published measurement image stops updating (a hung I/O or "
            "communication module): every measurement holds the value it had at injection "
            "and stays 'good'. The PLC's own loops and trips keep running on live signals, "
            "so truth moves while the readings flatline. Any severity > 0 freezes all "
            "measurements."
        ),
        affects=MEASUREMENTS,
    ),
    FaultSpec(
        name="leak",
        layer="process",
        description=(
            "Leak near the tank bottom: q_leak = "
            f"{LEAK_COEFF_M3H_PER_SQRT_M:g}·severity·sqrt(level) m3/h leaves unmetered. The "
            "level loop answers with more pump speed, or the level falls if the pump "
            "cannot keep up. Immediate."
        ),
        affects=("tank_level", "pump_speed", "pump_flow", "motor_current"),
    ),
    FaultSpec(
        name="heater_degradation",
        layer="process",
        description=(
            f"Degraded heater: {HEATER_DEGRADATION_LOSS:.0%}·severity of its electrical power "
            "is lost to the surroundings instead of heating the liquid. The temperature loop "
            "answers with more heater_power; if the heater saturates, tank_temp falls."
        ),
        affects=("heater_power", "tank_temp"),
    ),
    FaultSpec(
        name="sensor_loss",
        layer="process",
        description=(
            "The tank temperature sensor has failed: tank_temp reads bad (reason 'sensor "
            "failure', value at the bottom of its range, as a NAMUR under-range signal). The "
            "temperature loop fails safe (heater command 0); the over-temperature trip uses "
            "the PLC's separate safety sensor and still works. Any severity > 0."
        ),
        affects=("tank_temp", "heater_power"),
    ),
    FaultSpec(
        name="write_ignore",
        layer="process",
        description=(
            "The PLC acknowledges setpoint writes (accepted, 'ok') but does not apply them, "
            "so the read-back differs from what was written. Heartbeat writes still work. "
            "Any severity > 0."
        ),
        affects=("level_sp", "temp_sp", "valve_cmd"),
    ),
    FaultSpec(
        name="server_restart",
        layer="protocol",
        description=(
            "The OPC UA server restarts: sessions and subscriptions are lost and the endpoint "
            "is unreachable for a moment. Applied by the OPC UA server, not the plant."
        ),
        affects=(),
    ),
    FaultSpec(
        name="modbus_silent",
        layer="protocol",
        description=(
            "The Modbus device stops answering requests (timeouts) while the TCP port stays "
            "open. Applied by the Modbus server, not the plant."
        ),
        affects=(),
    ),
)

FAULTS: Final[Mapping[str, FaultSpec]] = MappingProxyType({f.name: f for f in _SPECS})
"""Every injectable fault, by name."""

PROCESS_FAULTS: Final[tuple[str, ...]] = tuple(f.name for f in _SPECS if f.layer == "process")
"""Names of the faults the plant applies itself."""
