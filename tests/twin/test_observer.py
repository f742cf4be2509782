"""The observer keeps the twin in step with the plant: unmeasured states, estimated
parameters with their uncertainty, and robustness to bad data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.plantsim.faults import IMPELLER_WEAR_HEAD_LOSS
from gateway.twin.integrate import Simulator
from gateway.twin.model import TwinModel
from gateway.twin.observer import PARAMETER_STD_FLOOR, StateObserver
from gateway.twin.skid import LEVEL, steady_state
from tests.twin.plant_feed import Operator, run_plant, vectors


def test_tracks_the_plc_loop_it_cannot_measure(skid: TwinModel) -> None:
    """No signal carries the PLC's loop outputs; through level steps (which saturate the
    pump) the twin's pump demand follows the PLC's own within 1.5 % of speed."""
    obs = StateObserver(skid)
    worst = 0.0
    steps = {100: lambda p, t: p.write("level_sp", 2.0), 420: lambda p, t: p.write("level_sp", 1.3)}
    for t, plant, table in run_plant(720, actions=steps):
        u, measured = vectors(skid, table)
        obs.update(t, u, measured)
        if t > 30:
            demand = float(obs.predicted_outputs()[skid.index("output", "pump_demand")])
            worst = max(worst, abs(demand - plant.truth()["pump_cmd_pct"]))
    assert worst < 1.5, f"pump demand off by {worst:.2f} %"
    assert obs.restarts == 1
    assert obs.updates == 719


def test_parameters_stay_near_the_datasheet_in_normal_operation(skid: TwinModel) -> None:
    """30 minutes of normal operation with valve moves: pump head within 1 m and valve Cv
    within 0.8 of the datasheet (the plant's back pressure drifts ±0.08 m, about ±2 %
    of Cv), heat-loss UA within 60 W/K of the truth (it is weakly identifiable: the
    wall loss is a sixth of the heat balance)."""
    obs = StateObserver(skid)
    ua_true = math.nan
    for t, plant, table in run_plant(1800, seed=12, operator=Operator(12)):
        obs.update(t, *vectors(skid, table))
        ua_true = plant.truth()["ua_w_per_k"]
    p = dict(zip(skid.parameter_names, obs.parameters, strict=True))
    assert abs(p["pump_shutoff_head"] - 50.0) < 1.0
    assert abs(p["valve_cv"] - 21.3) < 0.8
    assert abs(p["heat_loss_ua"] - ua_true) < 60.0
    std = dict(zip(skid.parameter_names, obs.parameter_std(), strict=True))
    assert std["pump_shutoff_head"] < 0.5
    assert std["valve_cv"] < 0.3


def test_pump_head_estimate_follows_impeller_wear(skid: TwinModel) -> None:
    """Impeller wear 0.3 takes 9 % of the pump's head (50 m → 45.5 m): within 10 minutes
    of the fault the estimate is within 0.8 m of it and the ensemble samples around it."""
    severity = 0.3
    truth = 50.0 * (1 - IMPELLER_WEAR_HEAD_LOSS * severity)
    obs = StateObserver(skid)
    inject = {300: lambda p, t: p.inject_fault("impeller_wear", severity)}
    for t, _plant, table in run_plant(900, seed=13, actions=inject, operator=Operator(13)):
        obs.update(t, *vectors(skid, table))
    head = float(obs.parameters[skid.index("parameter", "pump_shutoff_head")])
    assert abs(head - truth) < 0.8, f"estimated {head:.2f} m, truth {truth:.2f} m"
    samples = obs.parameter_samples(256, np.random.default_rng(1))
    column = samples[:, skid.index("parameter", "pump_shutoff_head")]
    assert column[0] == pytest.approx(head)
    assert abs(float(np.median(column)) - truth) < 1.0


def test_parameter_samples_respect_floor_and_bounds(skid: TwinModel) -> None:
    """A converged filter is not allowed to make the ensemble overconfident, and no
    sample is unphysical."""
    obs = StateObserver(skid)
    for t, _plant, table in run_plant(300, seed=14):
        obs.update(t, *vectors(skid, table))
    samples = obs.parameter_samples(4000, np.random.default_rng(2))
    declared = skid.parameter_std()
    for j, q in enumerate(skid.parameters):
        col = samples[:, j]
        assert q.low <= col.min()
        assert col.max() <= q.high
        assert col.std() >= 0.9 * PARAMETER_STD_FLOOR * declared[j] * 0.97  # 3-std truncation


def test_restarts_after_a_gap_and_when_time_goes_back(skid: TwinModel) -> None:
    obs = StateObserver(skid, max_gap_s=10.0)
    u = skid.input_vector()
    y0 = skid.output(steady_state(), u, skid.parameter_vector())
    y = dict(zip(skid.output_names, y0, strict=True))
    assert obs.update(0.0, u, y).kind == "initialised"
    assert obs.update(1.0, u, y).kind == "updated"
    step = obs.update(30.0, u, y)
    assert step.kind == "initialised"
    assert "without an update" in (step.reason or "")
    step = obs.update(29.0, u, y)
    assert step.kind == "initialised"
    assert "time went back" in (step.reason or "")


def test_an_input_that_is_not_finite_is_refused(skid: TwinModel) -> None:
    obs = StateObserver(skid)
    u = skid.input_vector()
    u[0] = math.nan
    with pytest.raises(ValueError, match="finite"):
        obs.update(0.0, u, {})


def test_missing_measurements_leave_the_model_running(skid: TwinModel, skid_sim: Simulator) -> None:
    """Without any good measurement the estimate is the model's own prediction from the
    last estimate, and its uncertainty grows."""
    obs = StateObserver(skid)
    u = skid.input_vector({"level_sp": 1.8})
    x0 = steady_state()
    y0 = skid.output(x0, skid.input_vector(), skid.parameter_vector())
    obs.update(0.0, u, dict(zip(skid.output_names, y0, strict=True)))
    start, std0 = obs.state, obs.state_std()
    for k in range(1, 61):
        step = obs.update(float(k), u, {})
        assert step.used == ()
    expected = skid_sim.envelope(start, u[None, None, :], obs.parameters[None, :], horizon_s=60.0)
    np.testing.assert_allclose(obs.state, expected.final_states[0, 0], rtol=1e-9, atol=1e-9)
    assert obs.state[LEVEL] > start[LEVEL] + 0.01  # the loop is filling towards 1.8 m
    assert obs.state_std()[LEVEL] > std0[LEVEL]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    garbage=st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "tank_level",
                    "tank_temp",
                    "pump_speed",
                    "pump_flow",
                    "outlet_flow",
                    "heater_power",
                ]
            ),
            st.one_of(
                st.floats(allow_nan=True, allow_infinity=True),
                st.floats(min_value=-1e9, max_value=1e9),
            ),
            max_size=6,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_garbage_measurements_never_corrupt_the_estimate(
    skid: TwinModel, garbage: list[dict[str, float]]
) -> None:
    """Whatever numbers arrive (a transmitter gone mad, a wrong scaling), the estimate
    stays finite and within the states' and parameters' physical bounds."""
    obs = StateObserver(skid)
    u = skid.input_vector()
    for k, measured in enumerate(garbage):
        obs.update(float(k), u, measured)
        x = obs.state
        assert np.isfinite(x).all()
        for i, s in enumerate(skid.states):
            assert s.low <= x[i] <= s.high
        p = obs.parameters
        for j, q in enumerate(skid.parameters):
            assert q.low <= p[j] <= q.high
        assert np.isfinite(obs.parameter_std()).all()


def test_one_absurd_reading_is_gated_and_a_persistent_one_restarts(skid: TwinModel) -> None:
    """A level reading 40 cm off (a scaling slip) is not folded into the state; if it
    persists, the estimate is the one that is wrong and starts again from the data."""
    obs = StateObserver(skid)
    u = skid.input_vector()
    y = dict(
        zip(skid.output_names, skid.output(steady_state(), u, skid.parameter_vector()), strict=True)
    )
    for k in range(30):
        obs.update(float(k), u, y)
    level = obs.state[LEVEL]
    step = obs.update(30.0, u, {**y, "tank_level": y["tank_level"] + 0.4})
    assert step.rejected == ("tank_level",)
    assert "tank_level" not in step.used
    assert abs(obs.state[LEVEL] - level) < 1e-3
    kinds = [
        obs.update(31.0 + k, u, {**y, "tank_level": y["tank_level"] + 0.4}).kind for k in range(4)
    ]
    assert kinds == ["updated", "updated", "updated", "initialised"]
    assert abs(obs.state[LEVEL] - (y["tank_level"] + 0.4)) < 1e-9
