"""The skid's reduced-order model: its steady state balances, the PLC's loops hold their
setpoints and answer a setpoint step, parameter samples spread the ensemble, and its
datasheet and tuning agree with the plant it models (the plant is read here, in a test;
the model itself does not import it)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from gateway.plantsim import plc as plant_plc
from gateway.plantsim.process import CP, RHO, Process, ProcessParams
from gateway.twin import skid as twin_skid
from gateway.twin.integrate import Simulator
from gateway.twin.model import TwinModel
from gateway.twin.skid import steady_state

OPERATING_POINTS = [
    {},
    {"level_sp": 1.2, "temp_sp": 44.0, "valve_cmd": 40.0},
    {"level_sp": 2.2, "temp_sp": 45.0, "valve_cmd": 60.0},
    {"level_sp": 0.8, "temp_sp": 60.0, "valve_cmd": 20.0, "inlet_temp": 58.0, "ambient_temp": 5.0},
]


@pytest.mark.parametrize("point", OPERATING_POINTS)
def test_steady_state_satisfies_the_mass_and_energy_balances(
    skid: TwinModel, point: dict[str, float], rng: np.random.Generator
) -> None:
    """At steady_state(): inflow = outflow; heater power · efficiency =
    ρ·cp·Q·(T − T_in) + UA·(T − T_amb); the level and temperature are on their setpoints;
    and every state derivative is zero (for nominal and sampled parameters)."""
    u = skid.input_vector(point)
    for p in skid.sample_parameters(3, rng):
        x = steady_state(**point, params=p)
        y = dict(zip(skid.output_names, skid.output(x, u, p), strict=True))
        assert y["pump_flow"] == pytest.approx(y["outlet_flow"], rel=1e-12)
        assert y["tank_level"] == u[skid.index("input", "level_sp")]
        assert y["tank_temp"] == u[skid.index("input", "temp_sp")]
        t, t_in, t_amb = y["tank_temp"], u[3], u[4]
        ua, efficiency = p[skid.index("parameter", "heat_loss_ua")], p[3]
        heat_w = RHO * CP * y["pump_flow"] / 3600.0 * (t - t_in) + ua * (t - t_amb)
        assert y["heater_power"] * 1000.0 * efficiency == pytest.approx(heat_w, rel=1e-12)
        np.testing.assert_allclose(skid.derivative(x, u, p), 0.0, atol=1e-12)


def test_steady_state_refuses_what_the_actuators_cannot_hold() -> None:
    """A level the pump cannot reach at that outflow, or a temperature needing more than
    the heater's rating (or cooling), is a ValueError that says which and by how much."""
    with pytest.raises(ValueError, match=r"pump cannot hold 2.9 m .* \(needs \d+ % speed\)"):
        steady_state(level_sp=2.9, valve_cmd=100.0)
    with pytest.raises(ValueError, match=r"heater cannot hold 60 degC.*rating 0..60 kW"):
        steady_state(temp_sp=60.0)
    with pytest.raises(ValueError, match=r"heater cannot hold 30 degC: it would need -"):
        steady_state(temp_sp=30.0)


def test_the_nominal_initial_state_is_the_nominal_steady_state(skid: TwinModel) -> None:
    """The model's declared initial state is the steady state at the nominal inputs."""
    np.testing.assert_array_equal(skid.initial_state(), steady_state())


def test_pi_loops_hold_their_setpoints(skid: TwinModel, skid_sim: Simulator) -> None:
    """From the steady state the loops keep level and temperature on their setpoints for
    the whole horizon; from a disturbed state (level 10 cm low, 2 K cold) they bring both
    back within 20 min."""
    u = skid.input_vector()[None, None, :]
    p = skid.parameter_vector()[None, :]
    steady = skid_sim.envelope(skid.initial_state(), u, p)
    for name, sp in (("tank_level", 1.5), ("tank_temp", 45.0)):
        np.testing.assert_allclose(steady.output(name)[0, 0], [sp, sp], atol=1e-9)

    disturbed = skid.initial_state()
    disturbed[[0, 6]] -= 0.1  # level and the PLC's filtered level
    disturbed[[1, 7]] -= 2.0  # temperature and its filtered PV
    traj = skid_sim.simulate(disturbed, u, p, 1200.0, record_every=20)
    assert traj.output("tank_level")[0, 0, -1] == pytest.approx(1.5, abs=0.005)
    assert traj.output("tank_temp")[0, 0, -1] == pytest.approx(45.0, abs=0.05)


def test_a_level_setpoint_step_reaches_the_new_level_in_every_member(
    skid: TwinModel, skid_sim: Simulator, rng: np.random.Generator
) -> None:
    """level_sp 1.5 → 1.8 m at t = 10 s: every parameter sample ends within 5 mm of 1.8 m
    with the temperature held near 45 degC, the pump faster than before, and the members
    differ from one another (different pump heads need different speeds). Each member
    starts from its own parameters' steady state, as an estimator's ensemble would."""
    before = skid.input_vector()
    after = skid.input_vector({"level_sp": 1.8})
    schedule = np.stack([before, after])[None]
    params = skid.sample_parameters(8, rng)
    x0 = np.stack([steady_state(params=p) for p in params])
    traj = skid_sim.simulate(x0, schedule, params, times_s=[0.0, 10.0])
    level = traj.output("tank_level")[0]
    speed = traj.output("pump_speed")[0]
    np.testing.assert_allclose(level[:, 20], 1.5, atol=1e-9)  # t = 10 s: nothing yet
    np.testing.assert_allclose(level[:, -1], 1.8, atol=0.005)
    assert level.max() < 1.85
    np.testing.assert_allclose(traj.output("tank_temp")[0], 45.0, atol=1.0)
    assert (speed[:, -1] > speed[:, 0]).all()
    assert np.ptp(speed[:, -1]) > 10.0  # rpm
    assert np.ptp(traj.output("heater_power")[0, :, -1]) > 0.1  # kW
    assert len({tuple(row) for row in np.round(traj.outputs[0, :, -1], 9)}) == len(params)


def test_a_saturating_step_does_not_wind_up(skid: TwinModel, skid_sim: Simulator) -> None:
    """level_sp 1.5 → 2.4 m saturates the pump demand at 100 %; conditional integration
    keeps the integral from winding up, so the level settles with little overshoot."""
    u = skid.input_vector({"level_sp": 2.4})[None, None, :]
    traj = skid_sim.simulate(skid.initial_state(), u, skid.parameter_vector()[None, :])
    demand = traj.output("pump_demand")[0, 0]
    level = traj.output("tank_level")[0, 0]
    assert demand.max() == 100.0
    assert demand.min() >= 0.0
    assert level.max() < 2.4 + 0.03
    assert level[-1] == pytest.approx(2.4, abs=0.005)
    integral = traj.envelope.final_states[0, 0, skid.index("state", "level_integral")]
    assert 0.0 < integral < 100.0


def test_datasheet_and_loop_tuning_match_the_plant() -> None:
    """The model's constants are the skid's datasheet values and the PLC's tuning as
    commissioned: a change on one side must be made on the other."""
    plant = ProcessParams()
    assert (twin_skid.LEVEL_KP, twin_skid.LEVEL_TI_S) == (plant_plc.LEVEL_KP, plant_plc.LEVEL_TI_S)
    assert (twin_skid.TEMP_KP, twin_skid.TEMP_TI_S) == (plant_plc.TEMP_KP, plant_plc.TEMP_TI_S)
    assert twin_skid.LEVEL_PV_FILTER_S == plant_plc.LEVEL_PV_FILTER_S
    assert twin_skid.TEMP_PV_FILTER_S == plant_plc.TEMP_PV_FILTER_S
    assert twin_skid.PLC_SCAN_S == plant_plc.PLC.SCAN_S
    pairs = {
        "tank_area_m2": twin_skid.TANK_AREA_M2,
        "tank_height_m": twin_skid.TANK_HEIGHT_M,
        "pump_tau_s": twin_skid.PUMP_TAU_S,
        "valve_tau_s": twin_skid.VALVE_TAU_S,
        "heater_tau_s": twin_skid.HEATER_TAU_S,
        "bearing_tau_s": twin_skid.BEARING_TAU_S,
        "heater_max_kw": twin_skid.HEATER_MAX_KW,
        "pump_curve_m_per_m3h2": twin_skid.PUMP_INTERNAL_LOSS_M_PER_M3H2,
        "pipe_friction_m_per_m3h2": twin_skid.PIPE_FRICTION_M_PER_M3H2,
        "static_lift_m": twin_skid.STATIC_LIFT_M,
        "outlet_elevation_m": twin_skid.OUTLET_ELEVATION_M,
        "back_pressure_m": twin_skid.BACK_PRESSURE_M,
        "valve_rangeability": twin_skid.VALVE_RANGEABILITY,
        "speed_max_rpm": twin_skid.SPEED_MAX_RPM,
    }
    for field, value in pairs.items():
        assert getattr(plant, field) == value, field
    nominal = {p.name: p.nominal for p in twin_skid.PARAMETERS}
    assert nominal["pump_shutoff_head"] == plant.shutoff_head_m
    assert nominal["valve_cv"] == plant.valve_cv_m3h_per_sqrt_m
    assert nominal["bearing_rise"] == plant.bearing_rise_k


def test_the_steady_state_agrees_with_the_plants(skid: TwinModel) -> None:
    """At the nominal point the plant's own settle() needs the same pump speed and, give
    or take the heat the twin leaves out (pump losses, UA's level dependence), the same
    heater power: within 1 kW of ~35 kW."""
    plant = Process(ProcessParams(), random.Random(0))
    pump_pct, heater_pct = plant.settle(level=1.5, temp=45.0, valve_pct=50.0)
    x = skid.initial_state()
    assert 100.0 * x[skid.index("state", "pump_speed")] == pytest.approx(pump_pct, rel=1e-9)
    heater_kw = heater_pct / 100.0 * twin_skid.HEATER_MAX_KW
    assert x[skid.index("state", "heater_power")] == pytest.approx(heater_kw, abs=1.0)
    y = dict(
        zip(
            skid.output_names,
            skid.output(x, skid.input_vector(), skid.parameter_vector()),
            strict=True,
        )
    )
    true = plant.true_measurements()
    for name in ("pump_flow", "outlet_flow", "discharge_pressure", "bearing_temp"):
        assert y[name] == pytest.approx(true[name], rel=1e-6), name
    assert y["motor_current"] == pytest.approx(true["motor_current"], rel=1e-6)
