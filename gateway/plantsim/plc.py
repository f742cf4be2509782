"""The skid's PLC: two PI loops, remote/local modes, a heartbeat watchdog, protective
trips and the acceptance rules for writes from the gateway.

What the PLC decides on its own, whatever the gateway does:

* **Modes.** ``remote_mode`` = the operator's remote-enable switch AND a healthy gateway
  heartbeat. In remote the loops follow the remote setpoints the gateway writes; in local
  they follow the PLC's own local setpoints. This is the fallback of safety invariant 7:
  if the gateway dies, its heartbeat stops changing and the plant returns to safe values.
  The remote setpoint registers keep their values through a fallback, so when the
  heartbeat resumes the loops return to what the gateway last wrote (and reads back).
* **Watchdog.** The heartbeat is healthy while its value has changed within the last
  ``watchdog_s`` seconds (a stuck writer repeating one value is as dead as a silent one).
  After start or restart, the PLC grants ``watchdog_s`` of grace before the first change.
* **Trips.** Protective trips latch with hysteresis and clear on their own once the
  condition is gone. They read the PLC's own safety transmitters, modelled as the true
  process values: no noise, drift, freeze or failure, because a trip must not depend
  on the instruments the faults corrupt. Trip latches are retentive across a restart.
* **Alarm banner.** Whenever the set of active trips changes, the PLC program writes a
  short text naming them (``alarm_message``, "" once all have cleared), as a real PLC
  feeds an HMI banner. Anyone may overwrite it in between (an HMI, a test); the text
  is free-form plant data and the gateway treats it as such.
* **Write acceptance.** The PLC refuses unknown and read-only points, non-finite values,
  values outside the point's acceptance limits and setpoint writes in local mode.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.plantsim.points import (
    POINTS,
    SETPOINTS,
    TRIP_HEATER_LOW_LEVEL,
    TRIP_HEATER_OVER_TEMP,
    TRIP_PUMP_BEARING_TEMP,
    TRIP_PUMP_DRY_RUN,
    UINT16_MAX,
)
from gateway.plantsim.process import ActuatorDemand

TRIP_TEXTS: Final[Mapping[int, str]] = MappingProxyType(
    {
        TRIP_HEATER_LOW_LEVEL: "TRIP: heater off, tank level low",
        TRIP_HEATER_OVER_TEMP: "TRIP: heater off, tank over-temperature",
        TRIP_PUMP_BEARING_TEMP: "TRIP: pump stopped, bearing hot",
        TRIP_PUMP_DRY_RUN: "TRIP: pump stopped, running dry",
    }
)
"""The banner text of each trip bit, as the PLC program writes it."""

REMOTE_DEFAULTS: Final[Mapping[str, float]] = MappingProxyType(
    {"level_sp": 1.5, "temp_sp": 45.0, "valve_cmd": 50.0}
)
"""Remote setpoints at first start: the skid's nominal operating point."""
LOCAL_DEFAULTS: Final[Mapping[str, float]] = MappingProxyType(
    {"level_sp": 1.2, "temp_sp": 40.0, "valve_cmd": 40.0}
)
"""Local (fallback) setpoints unless the constructor is given others."""

# Trip thresholds: (trip above/below, clear above/below). Hysteresis keeps a trip from
# chattering while the condition hovers at the threshold.
LOW_LEVEL_TRIP_M: Final = 0.3
LOW_LEVEL_CLEAR_M: Final = 0.5
OVER_TEMP_TRIP_C: Final = 95.0
OVER_TEMP_CLEAR_C: Final = 85.0
BEARING_TRIP_C: Final = 90.0
BEARING_CLEAR_C: Final = 75.0
DRY_RUN_SPEED_PCT: Final = 30.0
DRY_RUN_FLOW_M3H: Final = 0.5
DRY_RUN_DELAY_S: Final = 5.0
DRY_RUN_RESET_S: Final = 30.0

# Loop tuning (SIMC-style for the linearised skid at the nominal point). The level loop
# sees a near-integrating process (~6e-5 m/s per % speed, 3 s drive lag); the temperature
# loop a ~9 min first-order process with ~0.05 K per % heater.
LEVEL_KP: Final = 600.0
"""% speed per m of level error."""
LEVEL_TI_S: Final = 200.0
TEMP_KP: Final = 80.0
"""% heater per K of temperature error."""
TEMP_TI_S: Final = 240.0
LEVEL_PV_FILTER_S: Final = 1.0
TEMP_PV_FILTER_S: Final = 2.0


@dataclass(frozen=True)
class WriteOutcome:
    """The PLC's answer to a write.

    Attributes:
        accepted: Whether the PLC took the write.
        reason: "ok", or why it was refused: "unknown point", "read-only", "not finite",
            "out of range", "not an integer", "local mode".
    """

    accepted: bool
    reason: str


class PIController:
    """PI controller with conditional-integration anti-windup and a held mode.

    Args:
        kp: Proportional gain, output units per PV unit.
        ti_s: Integral time, s.
        low: Output lower limit.
        high: Output upper limit.
    """

    __slots__ = ("high", "integral", "kp", "low", "ti_s")

    def __init__(self, kp: float, ti_s: float, low: float = 0.0, high: float = 100.0) -> None:
        self.kp = kp
        self.ti_s = ti_s
        self.low = low
        self.high = high
        self.integral = 0.0

    def update(self, error: float, dt: float, *, hold: bool = False) -> float:
        """One sample: returns the clamped output.

        The integral does not move while ``hold`` is set (actuator forced off by a trip or
        the PV is bad) or while the output is saturated in the direction the error pushes,
        so the loop comes out of saturation without windup overshoot.
        """
        proportional = self.kp * error
        if not hold:
            candidate = self.integral + self.kp * dt / self.ti_s * error
            unclamped = proportional + candidate
            pushing_further = (unclamped > self.high and error > 0.0) or (
                unclamped < self.low and error < 0.0
            )
            if not pushing_further:
                self.integral = min(max(candidate, self.low), self.high)
        return min(max(proportional + self.integral, self.low), self.high)


def _validated_local(local_setpoints: Mapping[str, float] | None) -> dict[str, float]:
    values = dict(LOCAL_DEFAULTS)
    for name, value in (local_setpoints or {}).items():
        if name not in SETPOINTS:
            raise ValueError(f"local_setpoints: unknown setpoint {name!r}; use one of {SETPOINTS}")
        spec = POINTS[name]
        if not (math.isfinite(value) and spec.low <= value <= spec.high):
            raise ValueError(
                f"local_setpoints[{name!r}] = {value!r} is outside the PLC's limits "
                f"[{spec.low:g}, {spec.high:g}] {spec.unit}"
            )
        values[name] = float(value)
    return values


class PLC:
    """The skid's controller, scanned by the plant every ``SCAN_S`` simulated seconds.

    Args:
        watchdog_s: How long the heartbeat may stay unchanged before remote mode drops.
        local_setpoints: Overrides of :data:`LOCAL_DEFAULTS`, by setpoint name.
    """

    SCAN_S: Final = 0.1

    def __init__(
        self, *, watchdog_s: float = 10.0, local_setpoints: Mapping[str, float] | None = None
    ) -> None:
        if not (math.isfinite(watchdog_s) and watchdog_s > 0.0):
            raise ValueError(f"watchdog_s must be a positive number of seconds, got {watchdog_s}")
        self.watchdog_s = watchdog_s
        self.local_setpoints: Mapping[str, float] = MappingProxyType(
            _validated_local(local_setpoints)
        )
        self.remote_setpoints: dict[str, float] = dict(REMOTE_DEFAULTS)
        self.remote_enabled = True
        self.ignore_setpoint_writes = False
        """Set by the ``write_ignore`` fault: acknowledge setpoint writes, apply none."""
        self.heartbeat = 0
        self._heartbeat_changed_at = 0.0
        self.remote = True
        """Mode in force at the last scan."""
        self.trip_word = 0
        self.alarm_message = ""
        """The alarm banner; rewritten by the PLC when its trips change (see module doc)."""
        self._dry_run_s = 0.0
        self._dry_run_tripped_at = 0.0
        self.level_loop = PIController(LEVEL_KP, LEVEL_TI_S)
        self.temp_loop = PIController(TEMP_KP, TEMP_TI_S)
        self._level_pv: float | None = None
        self._temp_pv: float | None = None
        self.demand = ActuatorDemand()

    # ------------------------------------------------------------------ modes

    def heartbeat_healthy(self, now: float) -> bool:
        """True while the heartbeat changed (or the grace began) less than watchdog_s ago."""
        return now - self._heartbeat_changed_at < self.watchdog_s

    def remote_mode(self, now: float) -> bool:
        """Whether remote setpoints are in force at ``now``."""
        return self.remote_enabled and self.heartbeat_healthy(now)

    @property
    def active_setpoints(self) -> Mapping[str, float]:
        """The setpoints the loops followed at the last scan."""
        return self.remote_setpoints if self.remote else self.local_setpoints

    def preload(self, *, pump_pct: float, heater_pct: float) -> None:
        """Set the integrators so the loops start at these outputs (bumpless start)."""
        self.level_loop.integral = pump_pct
        self.temp_loop.integral = heater_pct

    def restart(self, now: float) -> None:
        """A PLC restart: non-retentive memory is lost, retentive trip latches are kept.

        Integrators and PV filters reset, the remote setpoints are re-initialised to the
        local values (a restart must not resume a stale remote operating point), and the
        heartbeat starts over with a fresh grace period.
        """
        self.level_loop.integral = 0.0
        self.temp_loop.integral = 0.0
        self._level_pv = None
        self._temp_pv = None
        self.remote_setpoints = dict(self.local_setpoints)
        self.heartbeat = 0
        self._heartbeat_changed_at = now
        self._dry_run_s = 0.0

    # ------------------------------------------------------------------ scan

    def scan(
        self,
        now: float,
        *,
        level_pv: float,
        temp_pv: float | None,
        safety_level: float,
        safety_temp: float,
        bearing_temp: float,
        pump_speed_pct: float,
        pump_flow: float,
    ) -> ActuatorDemand:
        """One PLC scan: mode, trips, loops. Returns (and keeps) the actuator demand.

        Args:
            now: Simulated time, s.
            level_pv: Level transmitter reading the level loop controls on, m.
            temp_pv: Temperature transmitter reading, degC; None when the sensor failed.
            safety_level: Safety level transmitter (true level), m.
            safety_temp: Safety temperature sensor (true temperature), degC.
            bearing_temp: Bearing temperature (true), degC.
            pump_speed_pct: Drive's actual speed, % of maximum.
            pump_flow: Pump flow switch/meter (true), m³/h.
        """
        dt = self.SCAN_S
        self.remote = self.remote_mode(now)
        sp = self.active_setpoints
        self._update_trips(
            now, dt, safety_level, safety_temp, bearing_temp, pump_speed_pct, pump_flow
        )
        pump_ok = not self.trip_word & (TRIP_PUMP_BEARING_TEMP | TRIP_PUMP_DRY_RUN)
        heater_ok = not self.trip_word & (TRIP_HEATER_LOW_LEVEL | TRIP_HEATER_OVER_TEMP)

        # First-order PV filters take the edge off transmitter noise before the P term.
        if self._level_pv is None:
            self._level_pv = level_pv
        else:
            self._level_pv += (level_pv - self._level_pv) * dt / (LEVEL_PV_FILTER_S + dt)
        level_out = self.level_loop.update(sp["level_sp"] - self._level_pv, dt, hold=not pump_ok)

        if temp_pv is None:
            # Bad PV: the loop cannot know the temperature, so it fails safe (heater off)
            # and freezes its integral until the sensor is back.
            self._temp_pv = None
            self.temp_loop.update(0.0, dt, hold=True)
            heater_out = 0.0
        else:
            if self._temp_pv is None:
                self._temp_pv = temp_pv
            else:
                self._temp_pv += (temp_pv - self._temp_pv) * dt / (TEMP_PV_FILTER_S + dt)
            heater_out = self.temp_loop.update(
                sp["temp_sp"] - self._temp_pv, dt, hold=not heater_ok
            )

        d = self.demand
        d.pump_pct = level_out
        d.heater_pct = heater_out
        d.valve_pct = sp["valve_cmd"]
        d.pump_enabled = pump_ok
        d.heater_enabled = heater_ok
        return d

    def _update_trips(
        self,
        now: float,
        dt: float,
        level: float,
        temp: float,
        bearing: float,
        speed_pct: float,
        flow: float,
    ) -> None:
        word = self.trip_word
        word = _latch(
            word, TRIP_HEATER_LOW_LEVEL, level < LOW_LEVEL_TRIP_M, level > LOW_LEVEL_CLEAR_M
        )
        word = _latch(
            word, TRIP_HEATER_OVER_TEMP, temp > OVER_TEMP_TRIP_C, temp < OVER_TEMP_CLEAR_C
        )
        word = _latch(
            word, TRIP_PUMP_BEARING_TEMP, bearing > BEARING_TRIP_C, bearing < BEARING_CLEAR_C
        )
        # Dry run: the drive turns but nothing flows. Confirmed after a delay so the
        # start-up of a pump against a closed check valve does not trip it.
        if speed_pct > DRY_RUN_SPEED_PCT and flow < DRY_RUN_FLOW_M3H:
            self._dry_run_s += dt
        else:
            self._dry_run_s = 0.0
        if not word & TRIP_PUMP_DRY_RUN and self._dry_run_s >= DRY_RUN_DELAY_S - 1e-9:
            word |= TRIP_PUMP_DRY_RUN
            self._dry_run_tripped_at = now
            self._dry_run_s = 0.0
        elif word & TRIP_PUMP_DRY_RUN and now - self._dry_run_tripped_at >= DRY_RUN_RESET_S:
            word &= ~TRIP_PUMP_DRY_RUN
        if word != self.trip_word:
            # On changes only, so a text someone else wrote stays until the PLC has news.
            self.alarm_message = alarm_text(word)
        self.trip_word = word

    # ------------------------------------------------------------------ writes

    def write(self, point: str, value: float, now: float) -> WriteOutcome:
        """Accept or refuse a write from the gateway; see the module docstring."""
        spec = POINTS.get(point)
        if spec is None:
            return WriteOutcome(False, "unknown point")
        if not spec.writable:
            return WriteOutcome(False, "read-only")
        value = float(value)
        if not math.isfinite(value):
            return WriteOutcome(False, "not finite")
        if not spec.low <= value <= spec.high:
            return WriteOutcome(False, "out of range")
        if point == "heartbeat":
            if value != int(value):
                return WriteOutcome(False, "not an integer")
            beat = int(value)
            if beat != self.heartbeat:
                self.heartbeat = beat
                self._heartbeat_changed_at = now
            return WriteOutcome(True, "ok")
        if not self.remote_mode(now):
            return WriteOutcome(False, "local mode")
        if not self.ignore_setpoint_writes:
            self.remote_setpoints[point] = value
        return WriteOutcome(True, "ok")


def alarm_text(trip_word: int) -> str:
    """The banner for a trip word: each active trip's text in bit order, "" when none."""
    return "; ".join(text for bit, text in TRIP_TEXTS.items() if trip_word & bit)


def _latch(word: int, bit: int, trip: bool, clear: bool) -> int:
    """Set ``bit`` when ``trip``; clear it only when ``clear`` (hysteresis)."""
    if trip:
        return word | bit
    if word & bit and clear:
        return word & ~bit & UINT16_MAX
    return word
