"""The reference plant: process + PLC + instruments behind one small, pure API.

The protocol servers (OPC UA, Modbus) publish :meth:`Plant.read` and forward writes to
:meth:`Plant.write`; tests and balances use :meth:`Plant.truth`. Time is simulated:
:meth:`Plant.step` advances it, nothing here reads a clock, sleeps, logs or spawns.

Timing. The process advances in fixed 0.05 s ticks and the PLC scans every 0.1 s, so the
result depends only on the seed, the total time stepped and when writes and faults
happen, not on how ``step`` calls chunk the time (a remainder shorter than a tick is
carried to the next call). The PLC samples its transmitters once per scan and publishes
that image; :meth:`Plant.read` returns the image and so draws no random numbers: reading
as often as you like does not change the simulation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from gateway.plantsim.faults import FAULTS, LEVEL_DRIFT_MAX_M, LEVEL_DRIFT_RATE_M_PER_S
from gateway.plantsim.plc import PLC, REMOTE_DEFAULTS, WriteOutcome
from gateway.plantsim.points import MEASUREMENTS, POINTS, SETPOINTS
from gateway.plantsim.process import Process, ProcessParams

__all__ = ["Plant", "Reading", "WriteOutcome"]

TICK_S: Final = 0.05
"""Process integration substep, s."""
_SCAN_TICKS: Final = round(PLC.SCAN_S / TICK_S)
_DRIFT_TICKS: Final = 20
"""The slow drift is advanced once per simulated second."""
_EPS: Final = 1e-9


@dataclass(frozen=True)
class Reading:
    """One point as the PLC reports it.

    Attributes:
        value: The value in the point's unit (for a failed sensor: the bottom of its range).
        good: False when the instrument reports a failure.
        reason: Why the value is not good; None when good.
        sampled_at: Simulated time the instrument last delivered this value; None for
            PLC-internal points (always current). A frozen transmitter keeps its old time,
            so the PLC serves its value with an old source timestamp.
    """

    value: float
    good: bool
    reason: str | None = None
    sampled_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class _Instrument:
    """Transmitter model: Gaussian noise (absolute + relative), quantisation, range clip."""

    noise: float
    rel_noise: float
    quantum: float
    cutoff: float = 0.0
    """Readings below this are reported as 0 (flow meters' low-flow cut-off)."""


_INSTRUMENTS: Final[Mapping[str, _Instrument]] = {
    "tank_level": _Instrument(0.002, 0.0, 0.001),
    "tank_temp": _Instrument(0.05, 0.0, 0.1),
    "inlet_temp": _Instrument(0.05, 0.0, 0.1),
    "ambient_temp": _Instrument(0.1, 0.0, 0.1),
    "pump_speed": _Instrument(2.0, 0.0, 1.0),
    "pump_flow": _Instrument(0.05, 0.005, 0.01, cutoff=0.2),
    "outlet_flow": _Instrument(0.05, 0.005, 0.01, cutoff=0.2),
    "discharge_pressure": _Instrument(0.005, 0.0, 0.001),
    "valve_position": _Instrument(0.1, 0.0, 0.1),
    "heater_power": _Instrument(0.1, 0.0, 0.1),
    "motor_current": _Instrument(0.05, 0.0, 0.01),
    "bearing_temp": _Instrument(0.1, 0.0, 0.1),
    "vibration_rms": _Instrument(0.02, 0.04, 0.01),
}

_TEMP_SENSOR_FAILURE: Final = "sensor failure"


class Plant:
    """The simulated pump–tank–heater skid with its PLC, pure and deterministic.

    The plant starts at the steady state of the default remote setpoints (level 1.5 m,
    45 degC, valve 50 %), as if it had been running, with remote mode on.

    Args:
        seed: Seeds the drift and the instrument noise (two independent streams).
        watchdog_s: PLC heartbeat watchdog time, s.
        local_setpoints: Overrides of the PLC's local (fallback) setpoints, by name
            ("level_sp", "temp_sp", "valve_cmd"); each must lie in the point's limits.

    Raises:
        ValueError: An unknown local setpoint name, a value outside its limits, or a
            non-positive watchdog time.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        watchdog_s: float = 10.0,
        local_setpoints: Mapping[str, float] | None = None,
    ) -> None:
        self._plc = PLC(watchdog_s=watchdog_s, local_setpoints=local_setpoints)
        self._process = Process(ProcessParams(), random.Random(f"edgetwin-plant-drift-{seed}"))
        self._noise = random.Random(f"edgetwin-plant-noise-{seed}")
        self._ticks = 0
        self._carry = 0.0
        self._faults: dict[str, float] = {}
        self._level_offset = 0.0
        self._frozen = False
        self._image: dict[str, Reading] = {}
        pump_pct, heater_pct = self._process.settle(
            level=REMOTE_DEFAULTS["level_sp"],
            temp=REMOTE_DEFAULTS["temp_sp"],
            valve_pct=REMOTE_DEFAULTS["valve_cmd"],
        )
        self._plc.preload(pump_pct=pump_pct, heater_pct=heater_pct)
        self._scan()

    # ------------------------------------------------------------------ time

    @property
    def time(self) -> float:
        """Simulated seconds since start (the sum of every ``step``'s ``dt``)."""
        return self._ticks * TICK_S + self._carry

    def step(self, dt: float) -> None:
        """Advance the plant by ``dt`` simulated seconds.

        Raises:
            ValueError: ``dt`` is negative or not finite.
        """
        if not (math.isfinite(dt) and dt >= 0.0):
            raise ValueError(f"dt must be a finite, non-negative number of seconds, got {dt}")
        self._carry += dt
        while self._carry >= TICK_S - _EPS:
            self._carry = max(self._carry - TICK_S, 0.0)
            self._tick()

    def _tick(self) -> None:
        self._process.advance(TICK_S, self._plc.demand)
        self._ticks += 1
        drift = self._faults.get("level_sensor_drift", 0.0)
        if drift:
            self._level_offset = min(
                self._level_offset + LEVEL_DRIFT_RATE_M_PER_S * drift * TICK_S, LEVEL_DRIFT_MAX_M
            )
        if self._ticks % _DRIFT_TICKS == 0:
            self._process.drift(_DRIFT_TICKS * TICK_S)
        if self._ticks % _SCAN_TICKS == 0:
            self._scan()

    def _now(self) -> float:
        """Time of the last tick: what the PLC's clock says."""
        return self._ticks * TICK_S

    # ------------------------------------------------------------------ instruments + PLC

    def _scan(self) -> None:
        """Sample every transmitter, run one PLC scan, publish the measurement image."""
        true = self._process.true_measurements()
        gauss = self._noise.gauss
        sampled: dict[str, float] = {}
        for name, inst in _INSTRUMENTS.items():
            value = true[name]
            if name == "tank_level":
                value += self._level_offset
            value += gauss(0.0, inst.noise + inst.rel_noise * abs(value))
            if value < inst.cutoff:
                value = 0.0
            spec = POINTS[name]
            value = round(value / inst.quantum) * inst.quantum
            sampled[name] = min(max(value, spec.low), spec.high)
        temp_failed = "sensor_loss" in self._faults

        self._plc.scan(
            self._now(),
            level_pv=sampled["tank_level"],
            temp_pv=None if temp_failed else sampled["tank_temp"],
            safety_level=self._process.level,
            safety_temp=self._process.temp,
            bearing_temp=self._process.bearing_temp,
            pump_speed_pct=100.0 * self._process.speed,
            pump_flow=self._process.q_in,
        )

        if self._frozen:
            return
        now = self._now()
        image = {name: Reading(round(sampled[name], 6), True, None, now) for name in MEASUREMENTS}
        if temp_failed:
            image["tank_temp"] = Reading(POINTS["tank_temp"].low, False, _TEMP_SENSOR_FAILURE, now)
        self._image = image

    # ------------------------------------------------------------------ public API

    def read(self) -> dict[str, Reading]:
        """Every point in :data:`POINTS` as the PLC reports it (last scan's image)."""
        plc = self._plc
        out = dict(self._image)
        for name in SETPOINTS:
            out[name] = Reading(plc.remote_setpoints[name], True)
        out["remote_mode"] = Reading(1.0 if plc.remote else 0.0, True)
        out["trip_word"] = Reading(float(plc.trip_word), True)
        out["heartbeat"] = Reading(float(plc.heartbeat), True)
        return {name: out[name] for name in POINTS}

    def truth(self) -> dict[str, float]:
        """True physical values: every measurement without instrument effects, plus
        internal flows and heat terms (``q_leak_m3h``, ``q_overflow_m3h``,
        ``heat_delivered_kw``, ``heat_loss_kw``, ``pump_heat_kw``, ...), the PLC's
        active setpoints and outputs, and the level transmitter's offset."""
        plc = self._plc
        active = plc.active_setpoints
        out = self._process.true_measurements()
        out.update(self._process.internals())
        out.update(
            {
                "level_sp_active": active["level_sp"],
                "temp_sp_active": active["temp_sp"],
                "valve_cmd_active": active["valve_cmd"],
                "pump_cmd_pct": plc.demand.pump_pct,
                "heater_cmd_pct": plc.demand.heater_pct,
                "remote_mode": 1.0 if plc.remote else 0.0,
                "trip_word": float(plc.trip_word),
                "level_sensor_offset_m": self._level_offset,
            }
        )
        return out

    def write(self, point: str, value: float) -> WriteOutcome:
        """Write a point as the gateway would; the PLC decides (see :mod:`plc`)."""
        return self._plc.write(point, value, self._now())

    def inject_fault(self, name: str, severity: float) -> None:
        """Start (or change the severity of) a process fault; severity 0 removes it.

        Raises:
            ValueError: Unknown fault, a protocol-layer fault (the servers apply those),
                or a severity outside [0, 1].
        """
        spec = FAULTS.get(name)
        if spec is None:
            raise ValueError(f"unknown fault {name!r}; known: {sorted(FAULTS)}")
        if spec.layer != "process":
            raise ValueError(
                f"fault {name!r} is a {spec.layer}-layer fault; inject it in the server"
            )
        if not (math.isfinite(severity) and 0.0 <= severity <= 1.0):
            raise ValueError(f"severity must be within [0, 1], got {severity!r}")
        if severity == 0.0:
            self._faults.pop(name, None)
        else:
            self._faults[name] = float(severity)
        self._apply_faults()

    def clear_faults(self) -> None:
        """Remove every process fault; the level transmitter is recalibrated."""
        self._faults.clear()
        self._apply_faults()

    @property
    def active_faults(self) -> dict[str, float]:
        """Active process faults and their severities (a copy)."""
        return dict(self._faults)

    def set_remote_enabled(self, enabled: bool) -> None:
        """Operate the operator's remote-enable switch on the panel.

        Writes see the new mode at once; the loops and the ``remote_mode`` point at the
        next PLC scan (within 0.1 s).
        """
        self._plc.remote_enabled = bool(enabled)

    @property
    def alarm_message(self) -> str:
        """The PLC's alarm banner: its active trips, "" when none (see :mod:`plc`)."""
        return self._plc.alarm_message

    def set_alarm_message(self, text: str) -> None:
        """Overwrite the alarm banner, as an HMI or a test may; the PLC rewrites it the next
        time its trips change."""
        self._plc.alarm_message = text

    def restart_plc(self) -> None:
        """Restart the PLC: integrators reset, remote setpoints back to the local values,
        heartbeat grace restarts; trip latches are retentive. The process keeps running."""
        self._plc.restart(self._now())

    def _apply_faults(self) -> None:
        f = self._faults
        pf = self._process.faults
        pf.impeller_wear = f.get("impeller_wear", 0.0)
        pf.bearing_degradation = f.get("bearing_degradation", 0.0)
        pf.valve_stiction = f.get("valve_stiction", 0.0)
        pf.leak = f.get("leak", 0.0)
        pf.heater_degradation = f.get("heater_degradation", 0.0)
        if "level_sensor_drift" not in f:
            self._level_offset = 0.0
        self._frozen = "sensor_freeze" in f
        self._plc.ignore_setpoint_writes = "write_ignore" in f
