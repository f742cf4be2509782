"""Physics of the pump–tank–heater skid: a continuous process stepped in small substeps.

The skid: a variable-speed centrifugal pump feeds a vertical cylindrical tank from a
supply; an immersion heater warms the liquid; an equal-percentage control valve lets it
out to the downstream process. States and units:

====================  ======  ===================================================
state                 unit    dynamics
====================  ======  ===================================================
``level``             m       dh/dt = (Q_in − Q_out − Q_leak) / A (overflow at H)
``temp``              degC    well-mixed energy balance (below)
``speed``             0..1    VFD follows the speed demand, first order (~3 s)
``valve_actuator``    %       actuator follows the valve demand, first order (~2 s)
``valve_pos``         %       stem; follows the actuator unless stiction holds it
``heater_kw``         kW      SCR power follows the heater demand, first order (~5 s)
``bearing_temp``      degC    first order towards ambient + friction rise (~60 s)
====================  ======  ===================================================

Energy balance of the tank, per unit time (W)::

    ρ·cp·A·max(h, h_min)·dT/dt = ρ·cp·Q_in·(T_in − T) + P_heat + P_pump − UA·(T − T_amb)

with P_heat the heater's delivered heat and P_pump the impeller losses that end up in
the pumped liquid. The outflow and leak leave at T and so do not appear.

Effects the twin is not expected to model (so its fidelity is a real measurement): the
pump heat, UA that grows with the wetted wall area, the valve's closing ramp below 5 %
stroke, the flow meters' low-flow cut-off (in the sensors), valve stiction, and slow
random drift of UA, pipe friction, inlet and ambient temperatures and the downstream
back-pressure. Everything here is plain-float arithmetic: numpy scalars would make a
1 s step cost milliseconds.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gateway.plantsim.faults import (
    BEARING_FRICTION_GAIN,
    BEARING_HEAT_GAIN,
    BEARING_VIBRATION,
    HEATER_DEGRADATION_LOSS,
    IMPELLER_WEAR_EFFICIENCY_LOSS,
    IMPELLER_WEAR_HEAD_LOSS,
    IMPELLER_WEAR_VIBRATION,
    LEAK_COEFF_M3H_PER_SQRT_M,
    STICTION_BAND_PCT,
)

RHO = 1000.0
"""Liquid density, kg/m³."""
CP = 4186.0
"""Liquid specific heat, J/(kg·K)."""
G = 9.81
"""Gravity, m/s²."""


@dataclass(frozen=True)
class ProcessParams:
    """Physical constants of the skid; the defaults are the reference plant.

    Flows are in m³/h and heads in m of liquid throughout, as on a datasheet.
    """

    # Tank
    tank_area_m2: float = 1.0
    tank_height_m: float = 3.0
    thermal_min_level_m: float = 0.05
    """Heat capacity floor so an almost empty tank does not divide by zero."""
    drain_level_m: float = 0.02
    """Below this level the outlet and leak flows fade out (vortexing, air entrainment)."""
    # Pump: head H_p = a0·s²·w − a2·Q² against h_static + level + k_pipe·Q²
    speed_max_rpm: float = 3000.0
    pump_tau_s: float = 3.0
    shutoff_head_m: float = 50.0
    pump_curve_m_per_m3h2: float = 0.06
    pipe_friction_m_per_m3h2: float = 0.071
    static_lift_m: float = 0.5
    suction_head_m: float = 1.0
    pump_efficiency: float = 0.60
    churn_loss_kw: float = 0.6
    """Disc friction and recirculation at full speed (∝ speed³), into the liquid."""
    bearing_loss_kw: float = 0.1
    """Bearing friction at full speed (∝ speed), into the bearing housing."""
    motor_no_load_a: float = 2.0
    motor_a_per_kw: float = 3.0
    # Outlet control valve: Q = Cv·f(x)·sqrt(level + elevation − back-pressure)
    valve_tau_s: float = 2.0
    valve_cv_m3h_per_sqrt_m: float = 21.3
    valve_rangeability: float = 10.0
    valve_ramp_pct: float = 5.0
    """Below this stroke the equal-percentage curve ramps linearly to tight shut-off."""
    outlet_elevation_m: float = 1.0
    back_pressure_m: float = 0.3
    """Mean downstream back-pressure head; the actual value drifts around it."""
    # Heater
    heater_max_kw: float = 60.0
    heater_tau_s: float = 5.0
    # Heat loss: UA = U·(bottom area + perimeter·level)
    wall_u_w_m2k: float = 40.0
    inlet_temp_c: float = 42.5
    ambient_temp_c: float = 20.0
    # Bearing: equilibrium rise above ambient ∝ speed, times the degradation factor
    bearing_tau_s: float = 60.0
    bearing_rise_k: float = 62.0
    # Vibration RMS = base + speed·(per_speed + fault terms)
    vibration_base_mm_s: float = 0.15
    vibration_per_speed_mm_s: float = 3.8
    # Slow drift (stationary standard deviations and correlation times)
    drift_rel_std: float = 0.05
    drift_rel_tau_s: float = 6 * 3600.0
    inlet_temp_std_k: float = 0.25
    inlet_temp_tau_s: float = 900.0
    ambient_temp_std_k: float = 1.5
    ambient_temp_tau_s: float = 3600.0
    back_pressure_std_m: float = 0.08
    back_pressure_tau_s: float = 600.0

    @property
    def tank_perimeter_m(self) -> float:
        """Wetted perimeter of the cylindrical tank, m."""
        return 2.0 * math.sqrt(math.pi * self.tank_area_m2)


@dataclass(slots=True)
class ActuatorDemand:
    """What the PLC asks of the actuators; held between PLC scans.

    Attributes:
        pump_pct: Speed demand, % of maximum speed.
        heater_pct: Heater power demand, % of rated power.
        valve_pct: Valve position demand, % of stroke.
        pump_enabled: False while a pump trip holds the drive off (it coasts down).
        heater_enabled: False while a heater trip holds the contactor open (power 0 at once).
    """

    pump_pct: float = 0.0
    heater_pct: float = 0.0
    valve_pct: float = 0.0
    pump_enabled: bool = True
    heater_enabled: bool = True


@dataclass(slots=True)
class PhysicalFaults:
    """Severities (0..1) of the faults that act on the physics; see :mod:`faults`."""

    impeller_wear: float = 0.0
    bearing_degradation: float = 0.0
    valve_stiction: float = 0.0
    leak: float = 0.0
    heater_degradation: float = 0.0


def _clamp(x: float, low: float, high: float) -> float:
    return low if x < low else high if x > high else x


class Process:
    """The skid's continuous process, advanced in caller-chosen substeps.

    Actuator lags use the exact first-order discretisation; level, temperature and
    bearing temperature use semi-implicit Euler (actuators first, then the balances
    with the new flows). Substeps of 0.05 s are ample: the fastest time constant is 2 s.

    Args:
        params: Physical constants.
        rng: Random source for the slow drift; the plant seeds it.
    """

    __slots__ = (
        "_alphas",
        "_rng",
        "ambient_temp",
        "back_pressure",
        "bearing_temp",
        "discharge_bar",
        "faults",
        "heat_delivered_kw",
        "heat_loss_kw",
        "heater_kw",
        "inlet_temp",
        "level",
        "motor_current",
        "params",
        "pipe_factor",
        "pump_head_m",
        "pump_heat_kw",
        "q_in",
        "q_leak",
        "q_out",
        "q_overflow",
        "shaft_kw",
        "speed",
        "temp",
        "u_factor",
        "valve_actuator",
        "valve_pos",
        "vibration",
    )

    def __init__(self, params: ProcessParams, rng: random.Random) -> None:
        self.params = params
        self.faults = PhysicalFaults()
        self._rng = rng
        self._alphas: tuple[float, float, float, float, float] = (-1.0, 0.0, 0.0, 0.0, 0.0)
        # States
        self.level = 1.5
        self.temp = params.inlet_temp_c
        self.speed = 0.0
        self.valve_actuator = 0.0
        self.valve_pos = 0.0
        self.heater_kw = 0.0
        self.bearing_temp = params.ambient_temp_c
        # Slowly drifting conditions and parameters (multiplicative factors start at 1)
        self.inlet_temp = params.inlet_temp_c
        self.ambient_temp = params.ambient_temp_c
        self.back_pressure = params.back_pressure_m
        self.u_factor = 1.0
        self.pipe_factor = 1.0
        # Algebraic outputs, refreshed by _algebraics()
        self.q_in = 0.0
        self.q_out = 0.0
        self.q_leak = 0.0
        self.q_overflow = 0.0
        self.pump_head_m = 0.0
        self.discharge_bar = 0.0
        self.shaft_kw = 0.0
        self.motor_current = 0.0
        self.pump_heat_kw = 0.0
        self.heat_delivered_kw = 0.0
        self.heat_loss_kw = 0.0
        self.vibration = 0.0
        self._algebraics()

    # ------------------------------------------------------------------ set-up

    def settle(self, *, level: float, temp: float, valve_pct: float) -> tuple[float, float]:
        """Put the process in the steady state that holds ``level`` and ``temp``.

        The plant starts as if it had been running at its setpoints for a long time, so
        tests and the twin do not begin with a start-up transient. No faults are assumed.

        Returns:
            ``(pump_pct, heater_pct)``: the actuator demands that hold this state, for
            the PLC to preload its integrators with (bumpless start).
        """
        p = self.params
        self.level = level
        self.temp = temp
        self.valve_actuator = self.valve_pos = valve_pct
        q = self._valve_flow(valve_pct, level)
        friction = p.pump_curve_m_per_m3h2 + p.pipe_friction_m_per_m3h2 * self.pipe_factor
        head = p.static_lift_m + level + friction * q * q
        self.speed = _clamp(math.sqrt(head / p.shutoff_head_m), 0.0, 1.0)
        self.bearing_temp = self.ambient_temp + p.bearing_rise_k * self.speed
        self.heater_kw = 0.0
        self._algebraics()
        inflow_kw = RHO * CP * self.q_in / 3600.0 * (self.inlet_temp - temp) / 1000.0
        needed_kw = self.heat_loss_kw - inflow_kw - self.pump_heat_kw
        self.heater_kw = _clamp(needed_kw, 0.0, p.heater_max_kw)
        self._algebraics()
        return 100.0 * self.speed, 100.0 * self.heater_kw / p.heater_max_kw

    # ------------------------------------------------------------------ dynamics

    def advance(self, h: float, demand: ActuatorDemand) -> None:
        """Advance the process by one substep of ``h`` seconds under ``demand``."""
        p = self.params
        f = self.faults
        if self._alphas[0] != h:
            self._alphas = (
                h,
                1.0 - math.exp(-h / p.pump_tau_s),
                1.0 - math.exp(-h / p.valve_tau_s),
                1.0 - math.exp(-h / p.heater_tau_s),
                1.0 - math.exp(-h / p.bearing_tau_s),
            )
        _, a_pump, a_valve, a_heater, a_bearing = self._alphas

        # Actuators
        speed_target = _clamp(demand.pump_pct, 0.0, 100.0) / 100.0 if demand.pump_enabled else 0.0
        self.speed += (speed_target - self.speed) * a_pump
        self.valve_actuator += (
            _clamp(demand.valve_pct, 0.0, 100.0) - self.valve_actuator
        ) * a_valve
        # Stick-slip: the stem breaks away only when the actuator force (∝ the mismatch)
        # exceeds static friction, then jumps to where the actuator is.
        if abs(self.valve_actuator - self.valve_pos) > STICTION_BAND_PCT * f.valve_stiction:
            self.valve_pos = self.valve_actuator
        if demand.heater_enabled:
            heater_target = _clamp(demand.heater_pct, 0.0, 100.0) / 100.0 * p.heater_max_kw
            self.heater_kw += (heater_target - self.heater_kw) * a_heater
        else:
            self.heater_kw = 0.0  # the trip opens the contactor: no ramp-down

        self._algebraics()

        # Balances
        rise = p.bearing_rise_k * self.speed * (1.0 + BEARING_HEAT_GAIN * f.bearing_degradation)
        self.bearing_temp += (self.ambient_temp + rise - self.bearing_temp) * a_bearing

        level = self.level + h * (self.q_in - self.q_out - self.q_leak) / 3600.0 / p.tank_area_m2
        self.q_overflow = 0.0
        if level > p.tank_height_m:
            self.q_overflow = (level - p.tank_height_m) * p.tank_area_m2 * 3600.0 / h
            level = p.tank_height_m
        level = max(level, 0.0)

        inflow_kw = RHO * CP * self.q_in / 3600.0 * (self.inlet_temp - self.temp) / 1000.0
        net_kw = inflow_kw + self.heat_delivered_kw + self.pump_heat_kw - self.heat_loss_kw
        capacity_kj_k = RHO * CP * p.tank_area_m2 * max(self.level, p.thermal_min_level_m) / 1000.0
        self.temp += h * net_kw / capacity_kj_k
        self.level = level

    def drift(self, dt: float) -> None:
        """Advance the slow random drift by ``dt`` seconds (Ornstein–Uhlenbeck processes)."""
        p = self.params
        gauss = self._rng.gauss

        def ou(x: float, mean: float, std: float, tau: float) -> float:
            return x + (mean - x) * dt / tau + std * math.sqrt(2.0 * dt / tau) * gauss(0.0, 1.0)

        # UA and pipe friction wander by a few % per hour as log-normal factors around 1.
        self.u_factor = math.exp(
            ou(math.log(self.u_factor), 0.0, p.drift_rel_std, p.drift_rel_tau_s)
        )
        self.pipe_factor = math.exp(
            ou(math.log(self.pipe_factor), 0.0, p.drift_rel_std, p.drift_rel_tau_s)
        )
        self.inlet_temp = ou(
            self.inlet_temp, p.inlet_temp_c, p.inlet_temp_std_k, p.inlet_temp_tau_s
        )
        self.ambient_temp = ou(
            self.ambient_temp, p.ambient_temp_c, p.ambient_temp_std_k, p.ambient_temp_tau_s
        )
        self.back_pressure = ou(
            self.back_pressure, p.back_pressure_m, p.back_pressure_std_m, p.back_pressure_tau_s
        )

    # ------------------------------------------------------------------ algebra

    def _valve_flow(self, pos_pct: float, level: float) -> float:
        p = self.params
        x = pos_pct / 100.0
        ramp = p.valve_ramp_pct / 100.0
        if x <= 0.0:
            return 0.0
        if x < ramp:
            char = math.pow(p.valve_rangeability, ramp - 1.0) * x / ramp
        else:
            char = math.pow(p.valve_rangeability, min(x, 1.0) - 1.0)
        dp = level + p.outlet_elevation_m - self.back_pressure
        if dp <= 0.0 or level <= 0.0:
            return 0.0
        fade = min(1.0, level / p.drain_level_m)
        return p.valve_cv_m3h_per_sqrt_m * char * math.sqrt(dp) * fade

    def _algebraics(self) -> None:
        """Flows, pump duty, heat terms and vibration from the current state."""
        p = self.params
        f = self.faults
        level = self.level
        s = self.speed
        # Pump against the system: closed form of a0·s²·w − a2·Q² = h_static + h + k·Q²
        developed = p.shutoff_head_m * s * s * (1.0 - IMPELLER_WEAR_HEAD_LOSS * f.impeller_wear)
        drive = developed - p.static_lift_m - level
        friction = p.pump_curve_m_per_m3h2 + p.pipe_friction_m_per_m3h2 * self.pipe_factor
        q_in = math.sqrt(drive / friction) if drive > 0.0 else 0.0
        head = developed - p.pump_curve_m_per_m3h2 * q_in * q_in
        self.q_in = q_in
        self.pump_head_m = head
        self.discharge_bar = RHO * G * (p.suction_head_m + head) / 1e5
        hydraulic_kw = RHO * G * q_in / 3600.0 * head / 1000.0
        efficiency = p.pump_efficiency * (1.0 - IMPELLER_WEAR_EFFICIENCY_LOSS * f.impeller_wear)
        impeller_loss_kw = hydraulic_kw * (1.0 / efficiency - 1.0) + p.churn_loss_kw * s**3
        bearing_kw = p.bearing_loss_kw * s * (1.0 + BEARING_FRICTION_GAIN * f.bearing_degradation)
        self.shaft_kw = hydraulic_kw + impeller_loss_kw + bearing_kw
        self.motor_current = (
            p.motor_no_load_a * min(1.0, s / 0.05) + p.motor_a_per_kw * self.shaft_kw
        )
        # Impeller losses heat the liquid that carries them into the tank; with no
        # through-flow they stay in the casing.
        self.pump_heat_kw = impeller_loss_kw * min(1.0, q_in / 0.5)
        # Outlet and leak
        self.q_out = self._valve_flow(self.valve_pos, level)
        leak = LEAK_COEFF_M3H_PER_SQRT_M * f.leak
        self.q_leak = leak * math.sqrt(level) * min(1.0, level / p.drain_level_m) if leak else 0.0
        # Heat
        self.heat_delivered_kw = self.heater_kw * (
            1.0 - HEATER_DEGRADATION_LOSS * f.heater_degradation
        )
        ua_w_k = p.wall_u_w_m2k * self.u_factor * (p.tank_area_m2 + p.tank_perimeter_m * level)
        self.heat_loss_kw = ua_w_k * (self.temp - self.ambient_temp) / 1000.0
        self.vibration = p.vibration_base_mm_s + s * (
            p.vibration_per_speed_mm_s
            + BEARING_VIBRATION * f.bearing_degradation
            + IMPELLER_WEAR_VIBRATION * f.impeller_wear
        )

    # ------------------------------------------------------------------ outputs

    def true_measurements(self) -> dict[str, float]:
        """The true value of every measured point, keyed by point name, in point units."""
        return {
            "tank_level": self.level,
            "tank_temp": self.temp,
            "inlet_temp": self.inlet_temp,
            "ambient_temp": self.ambient_temp,
            "pump_speed": self.speed * self.params.speed_max_rpm,
            "pump_flow": self.q_in,
            "outlet_flow": self.q_out,
            "discharge_pressure": self.discharge_bar,
            "valve_position": self.valve_pos,
            "heater_power": self.heater_kw,
            "motor_current": self.motor_current,
            "bearing_temp": self.bearing_temp,
            "vibration_rms": self.vibration,
        }

    def internals(self) -> dict[str, float]:
        """Flows, heat terms and drifting parameters not visible as points (for balances)."""
        p = self.params
        return {
            "q_leak_m3h": self.q_leak,
            "q_overflow_m3h": self.q_overflow,
            "heat_delivered_kw": self.heat_delivered_kw,
            "heat_loss_kw": self.heat_loss_kw,
            "pump_heat_kw": self.pump_heat_kw,
            "shaft_power_kw": self.shaft_kw,
            "pump_head_m": self.pump_head_m,
            "valve_actuator_pct": self.valve_actuator,
            "back_pressure_m": self.back_pressure,
            "ua_w_per_k": p.wall_u_w_m2k
            * self.u_factor
            * (p.tank_area_m2 + p.tank_perimeter_m * self.level),
            "pipe_friction_m_per_m3h2": p.pipe_friction_m_per_m3h2 * self.pipe_factor,
        }
