"""The ensemble integrator: RK4's order, the schedule and envelope semantics, divergence,
argument validation, real numba compilation and running off the event loop.

Small test models are defined here with the public model API, as any process model is.
"""

from __future__ import annotations

import ast
import asyncio
import itertools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.twin import integrate
from gateway.twin.integrate import KERNEL_SIGNATURE, Simulator, kernel
from gateway.twin.model import (
    MODEL_SIGNATURE,
    F64Array,
    Output,
    Parameter,
    TwinModel,
    Variable,
    model_function,
)

# ---------------------------------------------------------------------------------------
# Test models


@model_function
def _logistic_oscillator_rhs(x: F64Array, u: F64Array, p: F64Array, dxdt: F64Array) -> None:
    dxdt[0] = p[0] * x[0] * (1.0 - x[0] / p[1])  # logistic growth, rate r, capacity K
    dxdt[1] = x[2]  # harmonic oscillator at angular frequency w
    dxdt[2] = -p[2] * p[2] * x[1]


@model_function
def _first_two_states(x: F64Array, u: F64Array, p: F64Array, y: F64Array) -> None:
    y[0] = x[0]
    y[1] = x[1]


LOGISTIC_OSCILLATOR = TwinModel(
    name="logistic_oscillator",
    description="Logistic growth next to an undamped oscillator: both solvable exactly.",
    states=(
        Variable("a", "1", 0.1, "Logistic population."),
        Variable("b", "1", 1.0, "Oscillator position."),
        Variable("c", "1/s", 0.0, "Oscillator velocity."),
    ),
    inputs=(),
    parameters=(
        Parameter("r", "1/s", 1.5, 0.0, "Growth rate."),
        Parameter("k", "1", 2.0, 0.0, "Capacity."),
        Parameter("w", "rad/s", 2.0, 0.0, "Angular frequency."),
    ),
    outputs=(Output("a", "1", "Population."), Output("b", "1", "Position.")),
    rhs=_logistic_oscillator_rhs,
    output_fn=_first_two_states,
)


def _logistic_oscillator_exact(t: float) -> np.ndarray:
    r, k, w = 1.5, 2.0, 2.0
    a0 = 0.1
    return np.array(
        [k / (1.0 + (k / a0 - 1.0) * math.exp(-r * t)), math.cos(w * t), -w * math.sin(w * t)]
    )


@model_function
def _ramp_rhs(x: F64Array, u: F64Array, p: F64Array, dxdt: F64Array) -> None:
    dxdt[0] = u[0]


@model_function
def _ramp_outputs(x: F64Array, u: F64Array, p: F64Array, y: F64Array) -> None:
    y[0] = x[0]
    y[1] = u[0]


RAMP = TwinModel(
    name="ramp",
    description="x' = u: RK4 integrates a piecewise-constant input exactly.",
    states=(Variable("x", "1", 0.0, "Integral of the input."),),
    inputs=(Variable("rate", "1/s", 1.0, "Slope."),),
    parameters=(),
    outputs=(Output("x", "1", "Integral."), Output("rate", "1/s", "The input in force.")),
    rhs=_ramp_rhs,
    output_fn=_ramp_outputs,
)


@model_function
def _blowup_rhs(x: F64Array, u: F64Array, p: F64Array, dxdt: F64Array) -> None:
    dxdt[0] = p[0] * x[0] * x[0]


@model_function
def _blowup_outputs(x: F64Array, u: F64Array, p: F64Array, y: F64Array) -> None:
    y[0] = x[0]


BLOWUP = TwinModel(
    name="blowup",
    description="x' = p·x²: from x = 1 it escapes to infinity at t = 1/p when p > 0.",
    states=(Variable("x", "1", 1.0, "State."),),
    inputs=(),
    parameters=(Parameter("p", "1/s", 1.0, 0.0, "Rate."),),
    outputs=(Output("x", "1", "State."),),
    rhs=_blowup_rhs,
    output_fn=_blowup_outputs,
)

NO_INPUT = np.empty((1, 1, 0))

# ---------------------------------------------------------------------------------------
# Accuracy and semantics


def test_rk4_error_falls_sixteenfold_when_the_step_halves() -> None:
    """Classical RK4 is fourth order: halving dt divides the global error by ~16 (the
    observed order on an exactly solvable nonlinear system is 4 ± 0.3)."""
    sim = Simulator(LOGISTIC_OSCILLATOR)
    horizon = 8.0
    exact = _logistic_oscillator_exact(horizon)
    errors = []
    for dt in (0.1, 0.05, 0.025):
        env = sim.envelope(
            LOGISTIC_OSCILLATOR.initial_state(),
            NO_INPUT,
            LOGISTIC_OSCILLATOR.parameter_vector()[None, :],
            horizon_s=horizon,
            dt_s=dt,
        )
        errors.append(float(np.max(np.abs(env.final_states[0, 0] - exact))))
    orders = [math.log2(coarse / fine) for coarse, fine in itertools.pairwise(errors)]
    assert errors[-1] < 1e-5
    for order in orders:
        assert order == pytest.approx(4.0, abs=0.3), (errors, orders)


def test_schedule_rows_split_the_horizon_and_outputs_see_the_input_in_force() -> None:
    """With no ``times_s``, S rows split the horizon evenly; each row holds over whole
    steps, and the output at a step boundary already uses the new row."""
    sim = Simulator(RAMP, dt_s=1.0, horizon_s=4.0)
    rates = np.array([[[1.0], [3.0]]])  # 1/s for 2 s, then 3/s for 2 s
    traj = sim.simulate([0.0], rates, np.empty((1, 0)))
    np.testing.assert_allclose(traj.times_s, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(traj.output("x")[0, 0], [0, 1, 2, 5, 8], rtol=0, atol=1e-12)
    np.testing.assert_allclose(traj.output("rate")[0, 0], [1, 1, 3, 3, 3])


def test_times_s_take_effect_at_the_first_step_starting_at_or_after_them() -> None:
    """A change at 1.2 s with 0.5 s steps takes effect at t = 1.5 s (step 3)."""
    sim = Simulator(RAMP, dt_s=0.5, horizon_s=3.0)
    traj = sim.simulate([0.0], [[[0.0], [2.0]]], np.empty((1, 0)), times_s=[0.0, 1.2])
    np.testing.assert_allclose(traj.output("rate")[0, 0], [0, 0, 0, 2, 2, 2, 2])
    np.testing.assert_allclose(traj.output("x")[0, 0, -1], 2.0 * 1.5, atol=1e-12)


def test_per_step_rows_and_per_sample_initial_states() -> None:
    """S equal to the number of steps gives one input row per step; an [M, n_states] x0
    starts member m from row m."""
    sim = Simulator(RAMP, dt_s=0.5, horizon_s=2.0)
    rows = np.array([[[1.0], [2.0], [3.0], [4.0]]])
    env = sim.envelope([[0.0], [10.0]], rows, np.empty((2, 0)))
    np.testing.assert_allclose(env.final_states[0, :, 0], [5.0, 15.0], atol=1e-12)


def test_envelope_is_min_and_max_of_the_full_trajectories(
    skid: TwinModel, skid_sim: Simulator, rng: np.random.Generator
) -> None:
    """envelope() returns, per member and output, exactly the min and max over every step
    of the trajectories simulate() records with record_every=1, and the same exits."""
    schedules = np.stack([skid.input_vector(), skid.input_vector({"level_sp": 1.8})])[:, None]
    params = skid.sample_parameters(4, rng)
    bounds = {"tank_level": (0.0, 1.7), "tank_temp": (44.9, 45.1)}
    kwargs: dict[str, Any] = {"horizon_s": 300.0, "bounds": bounds}
    traj = skid_sim.simulate(skid.initial_state(), schedules, params, record_every=1, **kwargs)
    env = skid_sim.envelope(skid.initial_state(), schedules, params, **kwargs)
    expected = np.stack([traj.outputs.min(axis=2), traj.outputs.max(axis=2)], axis=-1)
    np.testing.assert_array_equal(env.low_high, expected)
    np.testing.assert_array_equal(traj.envelope.low_high, expected)
    np.testing.assert_array_equal(env.first_exit_step, traj.envelope.first_exit_step)
    np.testing.assert_array_equal(env.final_states, traj.envelope.final_states)


def test_first_exit_step_is_the_first_step_outside_the_bounds(
    skid: TwinModel, skid_sim: Simulator
) -> None:
    """first_exit_step is the index of the first sample outside the bounds, -1 where the
    output never left them; inside() is True only for members that stayed in."""
    schedules = np.stack([skid.input_vector(), skid.input_vector({"level_sp": 1.8})])[:, None]
    params = skid.parameter_vector()[None, :]
    bounds = {"tank_level": (1.0, 1.7)}
    traj = skid_sim.simulate(skid.initial_state(), schedules, params, 300.0, bounds=bounds)
    level = traj.output("tank_level")
    step_member = traj.envelope.first_exit_step[1, 0, skid.index("output", "tank_level")]
    assert step_member == int(np.argmax(level[1, 0] > 1.7)) > 0
    assert traj.envelope.first_exit_step[0, 0].tolist() == [-1] * skid.n_outputs
    assert traj.envelope.inside().tolist() == [[True], [False]]
    assert traj.envelope.first_exit_s[1, 0, 0] == pytest.approx(step_member * 0.5)
    assert math.isinf(traj.envelope.first_exit_s[0, 0, 0])


def test_a_diverging_member_is_marked_and_the_others_are_untouched() -> None:
    """A member whose state stops being finite gets NaN envelope and final state, its exit
    step set to the divergence, NaN trajectory from then on; other members are normal."""
    sim = Simulator(BLOWUP, dt_s=0.01, horizon_s=2.0)
    traj = sim.simulate([1.0], np.empty((1, 1, 0)), [[1.0], [-1.0]], record_every=10)
    env = traj.envelope
    assert env.diverged.tolist() == [[True, False]]
    assert np.isnan(env.low_high[0, 0]).all()
    assert np.isnan(env.final_states[0, 0]).all()
    step = int(env.first_exit_step[0, 0, 0])
    assert 100 <= step <= 200  # escapes just after t = 1 s
    x = traj.output("x")[0, 0]
    assert np.isfinite(x[: step // 10]).all()
    assert np.isnan(x[(step + 9) // 10 :]).all()
    assert env.final_states[0, 1, 0] == pytest.approx(1.0 / 3.0, rel=1e-6)  # x = 1/(1 + t)
    assert not env.inside()[0, 0]


def test_parallel_and_serial_kernels_give_identical_results(
    skid: TwinModel, rng: np.random.Generator
) -> None:
    """parallel=True spreads members over threads without changing any member's result."""
    schedules = np.stack([skid.input_vector({"level_sp": sp}) for sp in (1.3, 1.6, 1.9)])
    params = skid.sample_parameters(5, rng)
    results = [
        Simulator(skid, parallel=parallel).simulate(
            skid.initial_state(), schedules[:, None], params, 120.0, record_every=8
        )
        for parallel in (False, True)
    ]
    np.testing.assert_array_equal(results[0].outputs, results[1].outputs)
    np.testing.assert_array_equal(results[0].envelope.low_high, results[1].envelope.low_high)


# ---------------------------------------------------------------------------------------
# Validation


def _skid_args(skid: TwinModel) -> dict[str, Any]:
    return {
        "x0": skid.initial_state(),
        "schedules": skid.input_vector()[None, None, :],
        "params": skid.parameter_vector()[None, :],
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"x0": np.zeros(3)}, r"x0 must have shape \(10,\) or \(1, 10\)"),
        ({"x0": np.zeros((2, 10))}, r"x0 must have shape"),
        ({"schedules": np.zeros((1, 5))}, r"schedules must have shape \(K, S, 5\)"),
        ({"schedules": np.zeros((1, 1, 4))}, r"schedules must have shape \(K, S, 5\)"),
        ({"schedules": np.zeros((0, 1, 5))}, r"K, S >= 1"),
        ({"params": np.zeros(5)}, r"params must have shape \(M, 5\)"),
        ({"params": np.zeros((1, 4))}, r"params must have shape \(M, 5\).*pump_shutoff_head"),
        ({"params": [[50.0, np.nan, 250.0, 1.0, 62.0]]}, r"params must be finite; params\[0, 1\]"),
        ({"x0": np.full(10, np.inf)}, r"x0 must be finite"),
        ({"schedules": [[["a"] * 5]]}, r"schedules must be an array of numbers"),
        ({"horizon_s": 10.25}, r"horizon_s=10.25 is not a whole number of dt_s=0.5 steps"),
        ({"horizon_s": -1.0}, r"horizon_s must be a positive number"),
        ({"dt_s": 0.0}, r"dt_s must be a positive number"),
        ({"dt_s": math.nan}, r"dt_s must be a positive number"),
        ({"record_every": 7}, r"record_every=7 must be >= 1 and divide the 20 steps"),
        ({"record_every": 0}, r"record_every=0 must be >= 1"),
        ({"record_every": 2.0}, r"record_every must be an integer"),
        ({"times_s": [0.0, 5.0]}, r"one time per schedule row, shape \(1,\)"),
        (
            {"schedules": np.zeros((1, 2, 5)), "times_s": [1.0, 5.0]},
            r"times_s must start at 0",
        ),
        (
            {"schedules": np.zeros((1, 2, 5)), "times_s": [0.0, 10.0]},
            r"stay within the horizon \[0, 10\) s",
        ),
        (
            {"schedules": np.zeros((1, 3, 5)), "times_s": [0.0, 0.6, 0.9]},
            r"put two input changes in one step",
        ),
        ({"schedules": np.zeros((1, 21, 5))}, r"21 rows but the horizon has only 20 steps"),
        ({"bounds": {"tank_level": (2.0, 1.0)}}, r"bounds for output 'tank_level'.*low <= high"),
        ({"bounds": {"level": (0.0, 1.0)}}, r"the model 'skid' has no output 'level'; it has: "),
        ({"bounds": np.zeros((3, 2))}, r"bounds must have shape \(13, 2\)"),
    ],
)
def test_bad_arguments_are_refused_before_the_kernel_runs(
    skid: TwinModel, skid_sim: Simulator, change: dict[str, Any], message: str
) -> None:
    """Every malformed argument raises ValueError naming the argument, the expected shape
    or rule and what was given; the compiled kernel never sees it."""
    args = _skid_args(skid) | {"horizon_s": 10.0} | change
    with pytest.raises(ValueError, match=message):
        skid_sim.simulate(**args)


def test_recording_beyond_the_memory_limit_is_refused(skid: TwinModel) -> None:
    """simulate() refuses trajectories above max_trajectory_bytes and says what to do;
    the envelope of the same ensemble is fine (its memory does not grow with the horizon)."""
    sim = Simulator(skid, max_trajectory_bytes=1_000_000)
    args = _skid_args(skid) | {"schedules": np.tile(skid.input_vector(), (100, 1, 1))}
    with pytest.raises(ValueError, match=r"needs 12 MiB.*record less often"):
        sim.simulate(**args)
    assert sim.envelope(**args).low_high.shape == (100, 1, skid.n_outputs, 2)


def test_simulator_refuses_a_horizon_that_is_not_whole_steps(skid: TwinModel) -> None:
    """The simulator's default horizon must be a whole number of default steps."""
    with pytest.raises(ValueError, match="not a whole number"):
        Simulator(skid, dt_s=0.4, horizon_s=1.0)


def test_results_are_read_only(skid: TwinModel, skid_sim: Simulator) -> None:
    """Results may be shared between threads: their arrays cannot be written."""
    traj = skid_sim.simulate(**_skid_args(skid), horizon_s=2.0)
    for array in (traj.outputs, traj.times_s, traj.envelope.low_high, traj.envelope.final_states):
        with pytest.raises(ValueError, match="read-only"):
            array[...] = 0.0


# ---------------------------------------------------------------------------------------
# Compilation and threads


def test_kernels_and_model_functions_are_numba_compiled(skid: TwinModel) -> None:
    """The driver is a numba dispatcher compiled for exactly the kernel signature (with the
    model functions as first-class function arguments), and the model functions are
    compiled for the model signature only."""
    driver = kernel(False)
    assert driver.nopython_signatures == [KERNEL_SIGNATURE]
    assert driver.targetoptions["nogil"] is True
    assert skid.rhs.nopython_signatures == [MODEL_SIGNATURE]  # type: ignore[attr-defined]
    assert skid.output_fn.nopython_signatures == [MODEL_SIGNATURE]  # type: ignore[attr-defined]
    assert integrate.kernels_built()


def test_a_model_function_must_be_compiled_with_model_function() -> None:
    """Handing TwinModel a plain Python function (or one jitted without the model
    signature) is a TypeError at construction, not a crash inside the kernel."""

    def plain(x: F64Array, u: F64Array, p: F64Array, out: F64Array) -> None:
        out[0] = 0.0

    with pytest.raises(TypeError, match="rhs must be compiled with"):
        TwinModel(
            name="plain",
            description="",
            states=(Variable("x", "1", 0.0, ""),),
            inputs=(),
            parameters=(),
            outputs=(Output("x", "1", ""),),
            rhs=plain,
            output_fn=_blowup_outputs,
        )


def test_the_integrator_knows_no_particular_model() -> None:
    """integrate.py imports nothing of the gateway but the model contract, so a process
    model reaches it only as a TwinModel (adding one never touches the integrator)."""
    tree = ast.parse(Path(integrate.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert {name for name in imported if name and name.startswith("gateway")} == {
        "gateway.twin.model"
    }


async def test_simulate_async_leaves_the_event_loop_running(
    skid: TwinModel, skid_sim: Simulator, rng: np.random.Generator
) -> None:
    """While a large ensemble runs via simulate_async, a coroutine ticking every 5 ms
    keeps ticking: the kernel runs in a worker thread without the GIL. (Were the loop
    blocked, the longest gap between ticks would be the whole simulation.)"""
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    schedules = np.tile(skid.input_vector({"level_sp": 1.7}), (64, 1, 1))
    params = skid.sample_parameters(16, rng)
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    traj = await skid_sim.simulate_async(skid.initial_state(), schedules, params, record_every=20)
    elapsed = time.perf_counter() - started
    stop.set()
    await task

    during = [t for t in ticks if started <= t <= started + elapsed]
    gaps = np.diff([started, *during, started + elapsed])
    assert elapsed > 0.1, "the ensemble should take long enough to matter"
    assert gaps.max() < elapsed / 3, (gaps.max(), elapsed)
    assert len(during) >= 5
    assert traj.outputs.shape == (64, 16, 61, skid.n_outputs)


async def test_envelope_async_equals_envelope(skid: TwinModel, skid_sim: Simulator) -> None:
    """The async variant returns what the synchronous one does."""
    args = _skid_args(skid) | {"horizon_s": 60.0}
    expected = skid_sim.envelope(**args)
    got = await skid_sim.envelope_async(**args)
    np.testing.assert_array_equal(got.low_high, expected.low_high)
