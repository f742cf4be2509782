"""Reduced-order model of the pump–tank–heater skid, with its PLC's two PI loops.

Written from the skid's datasheet and the PLC's loop tuning, deliberately simpler than the
plant (:mod:`gateway.plantsim` is a separate, richer implementation and is not imported):
no noise, no drift, no faults, no trips, no PLC scan sampling. What is left:

=================  =======  =================================================================
state              unit     dynamics
=================  =======  =================================================================
``level``          m        A·dh/dt = (Q_in − Q_out)/3600; no rise above the tank height
``temp``           degC     ρ·cp·A·max(h, h_min)·dT/dt = ρ·cp·Q_in/3600·(T_in − T)
                            + η_h·P·1000 − UA·(T − T_amb)
``pump_speed``     0..1     τ_p·ds/dt = pump_demand/100 − s   (VFD, τ_p = 3 s)
``valve_position`` %        τ_v·dv/dt = clamp(valve_cmd, 0, 100) − v   (τ_v = 2 s)
``heater_power``   kW       τ_h·dP/dt = heater_demand/100·P_max − P   (SCR, τ_h = 5 s)
``bearing_temp``   degC     τ_b·dT_b/dt = T_amb + ΔT_b·s − T_b   (τ_b = 60 s)
``level_pv``       m        PLC's level PV filter, τ ≈ 1.05 s
``temp_pv``        degC     PLC's temperature PV filter, τ ≈ 2.05 s
``level_integral`` %        PLC level loop integral: dI/dt = Kp/Ti·e (held, see below)
``temp_integral``  %        PLC temperature loop integral
=================  =======  =================================================================

Algebraic relations (flows in m³/h, heads in m, as on the datasheet):

* pump against the system: H0·s² − a2·Q² = lift + h + k·Q²  ⇒
  Q_in = sqrt(max(H0·s² − lift − h, 0) / (a2 + k)), with H0 the uncertain shut-off head;
* equal-percentage valve: Q_out = Cv·R^(v/100 − 1)·sqrt(h + z_out − h_back), fading out
  below 2 cm of level (0 when the valve is shut);
* PI loops as the PLC runs them: ``out = clamp(Kp·e + I, 0, 100)`` on the filtered PV, the
  integral frozen while the output is saturated in the direction the error pushes
  (conditional integration); level → pump speed demand, temperature → heater demand.
  The PLC's discrete PV filter ``pv += (meas − pv)·dt/(τ + dt)`` at its 0.1 s scan is the
  continuous lag with τ_eq = −dt/ln(τ/(τ + dt)).

Left out on purpose (the plant has them; fidelity measures what they cost): pump heat,
UA growing with the wetted wall, the valve's closing ramp below 5 % stroke, valve
stiction, leaks, heater degradation and the slow drift of UA, pipe friction and back
pressure, the flow meters' low-flow cut-off, trips and the PLC's scan sampling. The
uncertain parameters' std are chosen so that the plant's drift and small fault severities
(about 0.1–0.2) lie within about two std of the nominal values: the ensemble then spans
what the plant may currently be doing.

All constants live in this file: numba caches ``skid_rhs`` and ``skid_outputs`` keyed on
this file's contents (see :mod:`gateway.twin.model`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Final

import numpy as np

from gateway.twin.model import (
    F64Array,
    Output,
    Parameter,
    TwinModel,
    Variable,
    model_function,
    model_helper,
)

# ---------------------------------------------------------------------------------------
# Datasheet constants (fixed: not estimated)

RHO: Final = 1000.0
"""Liquid density, kg/m³."""
CP: Final = 4186.0
"""Liquid specific heat, J/(kg·K)."""
G: Final = 9.81
"""Gravity, m/s²."""
TANK_AREA_M2: Final = 1.0
TANK_HEIGHT_M: Final = 3.0
THERMAL_MIN_LEVEL_M: Final = 0.05
"""Heat capacity floor, so an almost empty tank does not divide by zero."""
DRAIN_LEVEL_M: Final = 0.02
"""Below this level the outflow fades out linearly."""
SPEED_MAX_RPM: Final = 3000.0
PUMP_TAU_S: Final = 3.0
PUMP_INTERNAL_LOSS_M_PER_M3H2: Final = 0.06
"""a2: the pump curve's droop with flow."""
PIPE_FRICTION_M_PER_M3H2: Final = 0.071
"""k: the discharge line's friction."""
STATIC_LIFT_M: Final = 0.5
SUCTION_HEAD_M: Final = 1.0
PUMP_EFFICIENCY: Final = 0.60
CHURN_LOSS_KW: Final = 0.6
BEARING_LOSS_KW: Final = 0.1
MOTOR_NO_LOAD_A: Final = 2.0
MOTOR_A_PER_KW: Final = 3.0
VALVE_TAU_S: Final = 2.0
VALVE_RANGEABILITY: Final = 10.0
OUTLET_ELEVATION_M: Final = 1.0
BACK_PRESSURE_M: Final = 0.3
HEATER_MAX_KW: Final = 60.0
HEATER_TAU_S: Final = 5.0
BEARING_TAU_S: Final = 60.0
VIBRATION_BASE_MM_S: Final = 0.15
VIBRATION_PER_SPEED_MM_S: Final = 3.8

# The PLC's loops as commissioned (PLC program, not the plant's physics).
PLC_SCAN_S: Final = 0.1
LEVEL_KP: Final = 600.0
"""% speed per m of level error."""
LEVEL_TI_S: Final = 200.0
TEMP_KP: Final = 80.0
"""% heater per K of temperature error."""
TEMP_TI_S: Final = 240.0
LEVEL_PV_FILTER_S: Final = 1.0
TEMP_PV_FILTER_S: Final = 2.0
LEVEL_PV_TAU_S: Final = -PLC_SCAN_S / math.log(LEVEL_PV_FILTER_S / (LEVEL_PV_FILTER_S + PLC_SCAN_S))
"""Continuous lag equivalent to the PLC's discrete level PV filter, s (≈ 1.05)."""
TEMP_PV_TAU_S: Final = -PLC_SCAN_S / math.log(TEMP_PV_FILTER_S / (TEMP_PV_FILTER_S + PLC_SCAN_S))
"""Continuous lag equivalent to the PLC's discrete temperature PV filter, s (≈ 2.05)."""

# Derived constants. The compiled functions multiply by reciprocals: LLVM may not turn a
# division by a constant into a multiplication itself (it is not exact), and divisions
# are the slowest arithmetic in a function the integrator calls four times per step.
_INV_SYSTEM_FRICTION: Final = 1.0 / (PUMP_INTERNAL_LOSS_M_PER_M3H2 + PIPE_FRICTION_M_PER_M3H2)
_LN_RANGEABILITY: Final = math.log(VALVE_RANGEABILITY)
_INV_DRAIN_LEVEL: Final = 1.0 / DRAIN_LEVEL_M
_LEVEL_RATE_PER_M3H: Final = 1.0 / (3600.0 * TANK_AREA_M2)
"""dh/dt in m/s per m³/h of net inflow."""
_HEAT_RATE_W_PER_M3H_K: Final = RHO * CP / 3600.0
"""Heat carried by 1 m³/h of liquid per kelvin, W/K."""
_HEAT_CAPACITY_J_PER_M_K: Final = RHO * CP * TANK_AREA_M2
_INV_LEVEL_PV_TAU: Final = 1.0 / LEVEL_PV_TAU_S
_INV_TEMP_PV_TAU: Final = 1.0 / TEMP_PV_TAU_S
_INV_PUMP_TAU: Final = 1.0 / PUMP_TAU_S
_INV_VALVE_TAU: Final = 1.0 / VALVE_TAU_S
_INV_HEATER_TAU: Final = 1.0 / HEATER_TAU_S
_INV_BEARING_TAU: Final = 1.0 / BEARING_TAU_S
_HYDRAULIC_KW_PER_M3H_M: Final = RHO * G / 3600.0 / 1000.0
_INV_PUMP_EFFICIENCY: Final = 1.0 / PUMP_EFFICIENCY
_BAR_PER_M: Final = RHO * G / 1e5
_LEVEL_KI: Final = LEVEL_KP / LEVEL_TI_S
_TEMP_KI: Final = TEMP_KP / TEMP_TI_S

# Positions in x, u, p, y (compile-time constants in the compiled functions).
LEVEL, TEMP, SPEED, VALVE, HEATER, BEARING, LEVEL_PV, TEMP_PV, LEVEL_I, TEMP_I = range(10)
LEVEL_SP, TEMP_SP, VALVE_CMD, INLET_TEMP, AMBIENT_TEMP = range(5)
P_SHUTOFF_HEAD, P_VALVE_CV, P_UA, P_HEATER_EFF, P_BEARING_RISE = range(5)
(
    Y_LEVEL,
    Y_TEMP,
    Y_SPEED,
    Y_PUMP_FLOW,
    Y_OUTLET_FLOW,
    Y_DISCHARGE,
    Y_VALVE,
    Y_HEATER,
    Y_CURRENT,
    Y_BEARING,
    Y_VIBRATION,
    Y_PUMP_DEMAND,
    Y_HEATER_DEMAND,
) = range(13)

# ---------------------------------------------------------------------------------------
# Compiled model


@model_helper
def pump_flow(speed: float, level: float, shutoff_head: float) -> float:
    """Pump flow into the tank, m³/h, at relative ``speed`` against ``level`` m."""
    drive = shutoff_head * speed * speed - STATIC_LIFT_M - max(level, 0.0)
    if drive <= 0.0:
        return 0.0
    return math.sqrt(drive * _INV_SYSTEM_FRICTION)


@model_helper
def valve_flow(position_pct: float, level: float, cv: float) -> float:
    """Flow through the outlet valve, m³/h, at ``position_pct`` % stroke and ``level`` m."""
    x = position_pct * 0.01
    if x <= 0.0 or level <= 0.0:
        return 0.0
    dp = level + OUTLET_ELEVATION_M - BACK_PRESSURE_M
    if dp <= 0.0:
        return 0.0
    characteristic = math.exp((min(x, 1.0) - 1.0) * _LN_RANGEABILITY)
    fade = min(1.0, level * _INV_DRAIN_LEVEL)
    return cv * characteristic * math.sqrt(dp) * fade


@model_helper
def pi_output(kp: float, error: float, integral: float) -> float:
    """The PLC's PI output, % (clamped to 0..100)."""
    return min(max(kp * error + integral, 0.0), 100.0)


@model_helper
def pi_integral_rate(kp: float, ki: float, error: float, integral: float) -> float:
    """d(integral)/dt, %/s (``ki = kp/ti``): zero while saturated in the direction the
    error pushes (the PLC's conditional integration)."""
    unclamped = kp * error + integral
    if (unclamped > 100.0 and error > 0.0) or (unclamped < 0.0 and error < 0.0):
        return 0.0
    return ki * error


@model_function
def skid_rhs(x: F64Array, u: F64Array, p: F64Array, dxdt: F64Array) -> None:
    """dx/dt of the skid; x, u, p, dxdt as declared by :func:`skid_model`."""
    level = x[LEVEL]
    temp = x[TEMP]
    speed = x[SPEED]

    # The PLC: PI loops on the filtered PVs.
    level_error = u[LEVEL_SP] - x[LEVEL_PV]
    temp_error = u[TEMP_SP] - x[TEMP_PV]
    pump_pct = pi_output(LEVEL_KP, level_error, x[LEVEL_I])
    heater_pct = pi_output(TEMP_KP, temp_error, x[TEMP_I])
    dxdt[LEVEL_I] = pi_integral_rate(LEVEL_KP, _LEVEL_KI, level_error, x[LEVEL_I])
    dxdt[TEMP_I] = pi_integral_rate(TEMP_KP, _TEMP_KI, temp_error, x[TEMP_I])
    dxdt[LEVEL_PV] = (level - x[LEVEL_PV]) * _INV_LEVEL_PV_TAU
    dxdt[TEMP_PV] = (temp - x[TEMP_PV]) * _INV_TEMP_PV_TAU

    # Actuators.
    dxdt[SPEED] = (pump_pct * 0.01 - speed) * _INV_PUMP_TAU
    valve_target = min(max(u[VALVE_CMD], 0.0), 100.0)
    dxdt[VALVE] = (valve_target - x[VALVE]) * _INV_VALVE_TAU
    dxdt[HEATER] = (heater_pct * 0.01 * HEATER_MAX_KW - x[HEATER]) * _INV_HEATER_TAU

    # Balances.
    q_in = pump_flow(speed, level, p[P_SHUTOFF_HEAD])
    q_out = valve_flow(x[VALVE], level, p[P_VALVE_CV])
    dlevel = (q_in - q_out) * _LEVEL_RATE_PER_M3H
    if level >= TANK_HEIGHT_M and dlevel > 0.0:
        dlevel = 0.0  # overflow
    dxdt[LEVEL] = dlevel
    inflow_w = _HEAT_RATE_W_PER_M3H_K * q_in * (u[INLET_TEMP] - temp)
    heater_w = p[P_HEATER_EFF] * x[HEATER] * 1000.0
    loss_w = p[P_UA] * (temp - u[AMBIENT_TEMP])
    capacity_j_k = _HEAT_CAPACITY_J_PER_M_K * max(level, THERMAL_MIN_LEVEL_M)
    dxdt[TEMP] = (inflow_w + heater_w - loss_w) / capacity_j_k
    dxdt[BEARING] = (u[AMBIENT_TEMP] + p[P_BEARING_RISE] * speed - x[BEARING]) * _INV_BEARING_TAU


@model_function
def skid_outputs(x: F64Array, u: F64Array, p: F64Array, y: F64Array) -> None:
    """The skid's measured points (and the PLC's loop outputs) from the state."""
    level = x[LEVEL]
    speed = x[SPEED]
    q_in = pump_flow(speed, level, p[P_SHUTOFF_HEAD])
    head_m = p[P_SHUTOFF_HEAD] * speed * speed - PUMP_INTERNAL_LOSS_M_PER_M3H2 * q_in * q_in
    hydraulic_kw = _HYDRAULIC_KW_PER_M3H_M * q_in * head_m
    shaft_kw = (
        hydraulic_kw * _INV_PUMP_EFFICIENCY
        + CHURN_LOSS_KW * speed * speed * speed
        + BEARING_LOSS_KW * speed
    )
    y[Y_LEVEL] = level
    y[Y_TEMP] = x[TEMP]
    y[Y_SPEED] = speed * SPEED_MAX_RPM
    y[Y_PUMP_FLOW] = q_in
    y[Y_OUTLET_FLOW] = valve_flow(x[VALVE], level, p[P_VALVE_CV])
    y[Y_DISCHARGE] = _BAR_PER_M * (SUCTION_HEAD_M + head_m)
    y[Y_VALVE] = x[VALVE]
    y[Y_HEATER] = x[HEATER]
    y[Y_CURRENT] = MOTOR_NO_LOAD_A * min(1.0, speed * 20.0) + MOTOR_A_PER_KW * shaft_kw
    y[Y_BEARING] = x[BEARING]
    y[Y_VIBRATION] = VIBRATION_BASE_MM_S + VIBRATION_PER_SPEED_MM_S * speed
    y[Y_PUMP_DEMAND] = pi_output(LEVEL_KP, u[LEVEL_SP] - x[LEVEL_PV], x[LEVEL_I])
    y[Y_HEATER_DEMAND] = pi_output(TEMP_KP, u[TEMP_SP] - x[TEMP_PV], x[TEMP_I])


# ---------------------------------------------------------------------------------------
# Declarations

NOMINAL_INPUTS: Final = {
    "level_sp": 1.5,
    "temp_sp": 45.0,
    "valve_cmd": 50.0,
    "inlet_temp": 42.5,
    "ambient_temp": 20.0,
}
"""The skid's nominal operating point (the PLC's remote defaults, mean supply and air)."""

PARAMETERS: Final = (
    Parameter(
        "pump_shutoff_head",
        "m",
        50.0,
        1.5,
        "Pump head at full speed and no flow (head/flow scale of the pump curve). Std 3 %: "
        "pipe-friction drift (~2 % equivalent per std) and impeller wear up to severity "
        "~0.2 (30 %·severity of head) within 2 std.",
        drift_s=3600.0,
        low=20.0,
        high=70.0,
    ),
    Parameter(
        "valve_cv",
        "m3/h/sqrt(m)",
        21.3,
        0.5,
        "Outlet valve flow coefficient at full stroke. Std 2.3 %: the back-pressure drift "
        "(±0.08 m on 2.2 m of differential head ≈ ±1.8 % of flow) within 2 std.",
        drift_s=3600.0,
        low=5.0,
        high=40.0,
    ),
    Parameter(
        "heat_loss_ua",
        "W/K",
        250.0,
        30.0,
        "Tank heat-loss coefficient to ambient (at the nominal 1.5 m; the real one grows "
        "with the wetted wall: ~210 W/K at 1.2 m, ~295 W/K at 1.8 m). Std 12 % also covers "
        "its slow drift (5 % std).",
        drift_s=3600.0,
        low=20.0,
        high=1000.0,
    ),
    Parameter(
        "heater_efficiency",
        "1",
        1.0,
        0.03,
        "Fraction of the heater's electrical power delivered to the liquid. Std 3 %: heater "
        "degradation up to severity ~0.12 (50 %·severity of loss) within 2 std.",
        low=0.2,
        high=1.2,
    ),
    Parameter(
        "bearing_rise",
        "K",
        62.0,
        4.0,
        "Bearing temperature rise above ambient at full speed. Std 6.5 %: bearing "
        "degradation up to severity ~0.05 (rise × (1 + 2.5·severity)) within 2 std.",
        drift_s=1800.0,
        low=10.0,
        high=200.0,
    ),
)

INPUTS: Final = (
    Variable("level_sp", "m", NOMINAL_INPUTS["level_sp"], "Level setpoint of the PLC loop."),
    Variable("temp_sp", "degC", NOMINAL_INPUTS["temp_sp"], "Temperature setpoint."),
    Variable("valve_cmd", "%", NOMINAL_INPUTS["valve_cmd"], "Outlet valve demand."),
    Variable("inlet_temp", "degC", NOMINAL_INPUTS["inlet_temp"], "Supply temperature."),
    Variable("ambient_temp", "degC", NOMINAL_INPUTS["ambient_temp"], "Air temperature."),
)

OUTPUTS: Final = (
    # noise: the transmitter's noise and resolution plus what the model leaves out there;
    # tolerance: the prediction error at which that output's fidelity score is 0.5.
    Output("tank_level", "m", "Tank level above the outlet nozzle.", 0.003, 0.02),
    Output("tank_temp", "degC", "Well-mixed tank temperature.", 0.1, 0.5),
    Output("pump_speed", "rpm", "Pump shaft speed.", 3.0, 60.0),
    Output("pump_flow", "m3/h", "Pump flow into the tank.", 0.1, 0.5),
    Output("outlet_flow", "m3/h", "Flow through the outlet valve.", 0.1, 0.5),
    Output("discharge_pressure", "bar", "Pump discharge pressure (gauge).", 0.01, 0.07),
    Output("valve_position", "%", "Outlet valve stem position.", 0.3, 2.0),
    Output("heater_power", "kW", "Electrical power drawn by the heater.", 0.3, 3.0),
    # Motor current and vibration carry losses the model does not estimate (pump and
    # bearing condition): scored, but not used to correct the state.
    Output("motor_current", "A", "Pump motor current.", None, 0.5),
    Output("bearing_temp", "degC", "Pump bearing temperature.", 0.2, 2.0),
    Output("vibration_rms", "mm/s", "Pump vibration, RMS (healthy machine).", None, 0.5),
    Output("pump_demand", "%", "Level loop output: speed demand to the drive."),
    Output("heater_demand", "%", "Temperature loop output: heater power demand."),
)

_STATE_DECLARATIONS: Final = (
    # name, unit, description, process noise (units/√s), low, high
    ("level", "m", "Tank level.", 2e-4, 0.0, TANK_HEIGHT_M),
    ("temp", "degC", "Tank temperature.", 5e-3, -20.0, 150.0),
    ("pump_speed", "1", "Pump speed, fraction of maximum.", 2e-3, 0.0, 1.05),
    ("valve_position", "%", "Valve stem position.", 0.2, 0.0, 100.0),
    ("heater_power", "kW", "Heater electrical power.", 0.2, 0.0, HEATER_MAX_KW),
    ("bearing_temp", "degC", "Bearing temperature.", 0.02, -40.0, 250.0),
    ("level_pv", "m", "PLC's filtered level PV.", 1e-4, 0.0, TANK_HEIGHT_M),
    ("temp_pv", "degC", "PLC's filtered temperature PV.", 1e-3, -20.0, 150.0),
    ("level_integral", "%", "PLC level loop integral term.", 0.2, -1000.0, 1000.0),
    ("temp_integral", "%", "PLC temperature loop integral term.", 0.2, -1000.0, 1000.0),
)
"""The process noise says where the model is weakest: the actuators (valve stiction, drive
and heater behaviour the model simplifies) and the loop integrals (the PLC's scan, which
the model treats as continuous) move most; the tank's balances are trusted."""


def steady_state(
    *,
    level_sp: float = NOMINAL_INPUTS["level_sp"],
    temp_sp: float = NOMINAL_INPUTS["temp_sp"],
    valve_cmd: float = NOMINAL_INPUTS["valve_cmd"],
    inlet_temp: float = NOMINAL_INPUTS["inlet_temp"],
    ambient_temp: float = NOMINAL_INPUTS["ambient_temp"],
    params: F64Array | None = None,
) -> F64Array:
    """The state in which the PLC holds level and temperature at their setpoints.

    Level and temperature sit on their setpoints, the valve at its command; the pump
    speed makes the inflow equal the outflow, the heater makes up the inflow's and the
    wall's heat, and the loop integrals hold exactly those actuator demands (zero error).

    Args:
        level_sp: m. temp_sp: degC. valve_cmd: %. inlet_temp: degC. ambient_temp: degC.
        params: Parameter vector (default: nominal), shape ``(5,)``.

    Returns:
        x, shape ``(10,)``, in the order of :func:`skid_model`'s states.

    Raises:
        ValueError: The pump cannot reach that level against that outflow, or the heater
            cannot hold that temperature (it would need more than its rating, or cooling).
    """
    p = (
        np.array([q.nominal for q in PARAMETERS], dtype=np.float64)
        if params is None
        else np.asarray(params, dtype=np.float64)
    )
    q = _valve_flow_py(valve_cmd, level_sp, float(p[P_VALVE_CV]))
    head = STATIC_LIFT_M + level_sp + q * q / _INV_SYSTEM_FRICTION
    speed = math.sqrt(head / float(p[P_SHUTOFF_HEAD]))
    if speed > 1.0:
        raise ValueError(
            f"the pump cannot hold {level_sp:g} m against {q:.2f} m3/h of outflow "
            f"(needs {100 * speed:.0f} % speed)"
        )
    inflow_w = _HEAT_RATE_W_PER_M3H_K * q * (inlet_temp - temp_sp)
    loss_w = float(p[P_UA]) * (temp_sp - ambient_temp)
    heater_kw = (loss_w - inflow_w) / 1000.0 / float(p[P_HEATER_EFF])
    if not 0.0 <= heater_kw <= HEATER_MAX_KW:
        raise ValueError(
            f"the heater cannot hold {temp_sp:g} degC: it would need {heater_kw:.1f} kW "
            f"(rating 0..{HEATER_MAX_KW:g} kW)"
        )
    x = np.empty(len(_STATE_DECLARATIONS), dtype=np.float64)
    x[LEVEL] = x[LEVEL_PV] = level_sp
    x[TEMP] = x[TEMP_PV] = temp_sp
    x[SPEED] = speed
    x[VALVE] = valve_cmd
    x[HEATER] = heater_kw
    x[BEARING] = ambient_temp + float(p[P_BEARING_RISE]) * speed
    x[LEVEL_I] = 100.0 * speed
    x[TEMP_I] = 100.0 * heater_kw / HEATER_MAX_KW
    return x


def initial_state(measured: Mapping[str, float], u: F64Array, p: F64Array) -> F64Array:
    """A state consistent with what is measured, for the observer's first estimate.

    Starts from the steady state at the current inputs (or the nominal one, if those
    inputs have none), puts in the measured tank, actuator and bearing values, lets the
    PLC's PV filters sit on the measured level and temperature, and gives each loop the
    integral that makes its output equal the actuator's current position: an unmeasured
    integral taken from the steady state would make the first prediction kick the pump.
    """
    inputs = {name: float(u[i]) for i, name in enumerate(NOMINAL_INPUTS)}
    try:
        x = steady_state(**inputs, params=p)
    except ValueError:
        x = steady_state(params=p)

    def take(state: int, output: str, scale: float = 1.0) -> None:
        value = measured.get(output)
        if value is not None and math.isfinite(value):
            x[state] = value * scale

    take(LEVEL, "tank_level")
    take(TEMP, "tank_temp")
    take(SPEED, "pump_speed", 1.0 / SPEED_MAX_RPM)
    take(VALVE, "valve_position")
    take(HEATER, "heater_power")
    take(BEARING, "bearing_temp")
    x[LEVEL_PV] = x[LEVEL]
    x[TEMP_PV] = x[TEMP]
    x[LEVEL_I] = 100.0 * x[SPEED] - LEVEL_KP * (u[LEVEL_SP] - x[LEVEL])
    x[TEMP_I] = 100.0 * x[HEATER] / HEATER_MAX_KW - TEMP_KP * (u[TEMP_SP] - x[TEMP])
    return x


def _valve_flow_py(position_pct: float, level: float, cv: float) -> float:
    # The compiled helper called from Python (numba dispatches scalars fine); kept as a
    # function so the steady state cannot disagree with the model.
    return float(valve_flow(position_pct, level, cv))


@functools.cache
def skid_model() -> TwinModel:
    """The skid's model, with the nominal steady state as its initial state."""
    x0 = steady_state()
    states = tuple(
        Variable(name, unit, float(x0[i]), description, noise, low, high)
        for i, (name, unit, description, noise, low, high) in enumerate(_STATE_DECLARATIONS)
    )
    return TwinModel(
        name="skid",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else "skid",
        states=states,
        inputs=INPUTS,
        parameters=PARAMETERS,
        outputs=OUTPUTS,
        rhs=skid_rhs,
        output_fn=skid_outputs,
        initialise=initial_state,
    )
