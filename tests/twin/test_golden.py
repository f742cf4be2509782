"""Golden trajectories of the skid model: any change to the model's equations, constants,
steady state or the integrator shows up here as a numerical difference.

``golden_skid.npz`` holds the inputs of a small ensemble (2 candidate schedules × 3
parameter samples, 180 s, outputs every 2 s) and what the twin computed from them. When a
change to the model is intended, regenerate it and commit the new file with the change:

    .venv/bin/python -m tests.twin.test_golden --regen

and say in the commit why the trajectories moved.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from gateway.twin.integrate import Simulator, Trajectories
from gateway.twin.skid import skid_model, steady_state

GOLDEN = Path(__file__).with_name("golden_skid.npz")
HORIZON_S = 180.0
DT_S = 0.5
RECORD_EVERY = 4
TIMES_S = np.array([0.0, 10.0, 60.0, 90.0])


def golden_inputs() -> dict[str, np.ndarray]:
    """The golden run's inputs: per-sample steady states, two schedules, three samples.

    Candidate 0 holds the nominal inputs; candidate 1 steps the level setpoint to 1.8 m at
    10 s, the temperature setpoint to 46 degC at 60 s and the valve to 40 % at 90 s.
    """
    model = skid_model()
    params = model.sample_parameters(3, np.random.default_rng(7))
    x0 = np.stack([steady_state(params=p) for p in params])
    nominal = model.input_vector()
    stepped = [
        nominal,
        model.input_vector({"level_sp": 1.8}),
        model.input_vector({"level_sp": 1.8, "temp_sp": 46.0}),
        model.input_vector({"level_sp": 1.8, "temp_sp": 46.0, "valve_cmd": 40.0}),
    ]
    schedules = np.stack([np.tile(nominal, (4, 1)), np.stack(stepped)])
    return {"x0": x0, "schedules": schedules, "params": params, "times_s": TIMES_S}


def run(inputs: dict[str, np.ndarray]) -> Trajectories:
    """Simulate the golden ensemble from ``inputs``."""
    sim = Simulator(skid_model(), dt_s=DT_S, horizon_s=HORIZON_S)
    return sim.simulate(
        inputs["x0"],
        inputs["schedules"],
        inputs["params"],
        record_every=RECORD_EVERY,
        times_s=inputs["times_s"],
    )


def regenerate() -> None:
    """Rewrite golden_skid.npz from the current model (only for an intended change)."""
    inputs = golden_inputs()
    traj = run(inputs)
    np.savez_compressed(
        GOLDEN,
        **inputs,
        outputs=traj.outputs,
        low_high=traj.envelope.low_high,
        final_states=traj.envelope.final_states,
        output_names=np.array(traj.output_names),
    )
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")


def test_golden_inputs_are_unchanged() -> None:
    """The steady states and parameter samples the golden run starts from are what the
    model computes today (catches changes in steady_state and sample_parameters)."""
    with np.load(GOLDEN) as golden:
        for name, value in golden_inputs().items():
            np.testing.assert_allclose(value, golden[name], rtol=1e-12, err_msg=name)


def test_skid_trajectories_match_the_golden_file() -> None:
    """From the stored inputs, the twin reproduces the stored outputs, envelope and final
    states to rtol 1e-9, with the same output names in the same order."""
    with np.load(GOLDEN) as golden:
        inputs = {name: golden[name] for name in ("x0", "schedules", "params", "times_s")}
        traj = run(inputs)
        assert traj.output_names == tuple(golden["output_names"].tolist())
        np.testing.assert_allclose(traj.outputs, golden["outputs"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            traj.envelope.low_high, golden["low_high"], rtol=1e-9, atol=1e-12
        )
        np.testing.assert_allclose(
            traj.envelope.final_states, golden["final_states"], rtol=1e-9, atol=1e-12
        )


def test_golden_file_is_small() -> None:
    """The fixture stays small enough to live in the repository (< 200 KB)."""
    assert GOLDEN.stat().st_size < 200_000


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit(f"usage: python -m tests.twin.test_golden --regen\n\n{__doc__}")
    regenerate()
