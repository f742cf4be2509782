"""The gate's view of the twin: the running twin's last published estimate, frozen.

The twin steps in its own worker thread; the gate runs in another. So the gate never
touches the observer: it works from the snapshot the twin published at the end of its
last step (plain numbers, consistent by construction), samples the parameter ensemble
from it, and simulates with the twin's own simulator (whose kernels are thread-safe and
release the GIL).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

from gateway.config.schema import GatewayConfig
from gateway.govern.gate import SimulationResult, TwinView
from gateway.govern.ramp import RampStep
from gateway.twin.integrate import Simulator
from gateway.twin.model import TwinModel
from gateway.twin.runtime import TwinRuntime
from gateway.twin.whatif import StartingPoint, from_snapshot, sample_parameters

MAX_SNAPSHOT_AGE_S = 5.0
"""A twin estimate older than this is not "now": the twin is not tracking."""
BAND_EVERY_S = 10.0
"""Spacing of the predicted band kept with a verdict for the outcome check (the envelope
itself is taken over every step)."""


def envelope_bounds(cfg: GatewayConfig, model: TwinModel) -> np.ndarray:
    """``[n_outputs, 2]``: each envelope signal's bounds, shrunk by its margin, on the
    output the twin maps to it; ±inf for outputs without an envelope."""
    assert cfg.twin is not None
    bounds = np.empty((model.n_outputs, 2))
    bounds[:, 0], bounds[:, 1] = -np.inf, np.inf
    for output, signal in cfg.twin.outputs.items():
        bound = cfg.envelope.get(signal)
        if bound is not None:
            bounds[model.index("output", output)] = (
                bound.low + bound.margin,
                bound.high - bound.margin,
            )
    return bounds


def simulate_ramps(
    model: TwinModel,
    simulator: Simulator,
    start: StartingPoint,
    ramps: Mapping[str, Sequence[RampStep]],
    *,
    members: int,
    horizon_s: float,
    bounds: np.ndarray,
    rng: np.random.Generator,
) -> SimulationResult:
    """Run the ramps (by model input) from ``start`` for ``members`` parameter samples.

    The inputs are piecewise constant: a row at t = 0 with the current inputs, then one
    row at each ramp step's time with every input's value as of then.

    Raises:
        ValueError: A ramp longer than the horizon, or steps too close for the twin's
            step (the gate turns this into a rejection).
    """
    times = sorted({0.0} | {s.offset_s for steps in ramps.values() for s in steps})
    u = start.inputs.copy()
    rows = []
    for t in times:
        for name, steps in ramps.items():
            i = model.index("input", name)
            for step in steps:
                if step.offset_s <= t:
                    u[i] = step.value
        rows.append(u.copy())
    if times[-1] >= horizon_s:
        raise ValueError(
            f"the ramp takes {times[-1]:.0f} s, longer than the twin's horizon {horizon_s:g} s"
        )
    params = sample_parameters(model, start, members, rng)
    n_steps = max(1, round(horizon_s / simulator.dt_s))
    every = max(1, min(n_steps, round(BAND_EVERY_S / simulator.dt_s)))
    while n_steps % every:
        every -= 1
    traj = simulator.simulate(
        start.state,
        np.array(rows)[None, :, :],
        params,
        horizon_s=horizon_s,
        record_every=every,
        times_s=np.array(times),
        bounds=bounds,
    )
    env = traj.envelope
    outputs = traj.outputs[0]  # [M, n_records, n_outputs]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN records: diverged members
        band = np.stack([np.nanmin(outputs, axis=0), np.nanmax(outputs, axis=0)], axis=-1)
    return SimulationResult(
        outputs=env.output_names,
        low_high=np.asarray(env.low_high[0]),
        first_exit_s=np.asarray(env.first_exit_s[0]),
        diverged=np.asarray(env.diverged[0]),
        bounds=np.asarray(env.bounds),
        horizon_s=env.n_steps * env.dt_s,
        band=band,
        band_every_s=every * env.dt_s,
    )


def twin_view(
    cfg: GatewayConfig,
    runtime: TwinRuntime | None,
    *,
    now: float | None = None,
    rng: np.random.Generator | None = None,
) -> TwinView | None:
    """The gate's view of ``runtime`` now (None without a twin)."""
    if runtime is None or cfg.twin is None:
        return None
    now = time.time() if now is None else now
    snapshot = runtime.snapshot()
    status = runtime.status()
    fidelity = (status.get("fidelity") or {}).get("score")
    tracking = False
    start: StartingPoint | None = None
    if snapshot is not None and snapshot.get("t") is not None:
        age = now - float(snapshot["t"])
        if 0.0 <= age <= MAX_SNAPSHOT_AGE_S:
            try:
                start = from_snapshot(runtime.model, snapshot, age)
                tracking = True
            except ValueError:
                start = None
    return view_from_start(
        cfg,
        runtime.model,
        runtime.simulator,
        start,
        fidelity=None if fidelity is None else float(fidelity),
        tracking=tracking,
        rng=rng if rng is not None else np.random.default_rng(),
    )


def view_from_start(
    cfg: GatewayConfig,
    model: TwinModel,
    simulator: Simulator,
    start: StartingPoint | None,
    *,
    fidelity: float | None,
    tracking: bool,
    rng: np.random.Generator,
    members: int | None = None,
) -> TwinView:
    """A twin view that simulates from ``start`` (None: every simulation fails, so the gate
    rejects), with the config's ensemble (or ``members``), horizon and envelope."""
    assert cfg.twin is not None
    twin = cfg.twin
    bounds = envelope_bounds(cfg, model)

    def simulate(ramps: Mapping[str, Sequence[RampStep]]) -> SimulationResult:
        if start is None:
            raise ValueError("the twin has no current estimate")
        return simulate_ramps(
            model,
            simulator,
            start,
            ramps,
            members=members or twin.ensemble,
            horizon_s=twin.horizon_s,
            bounds=bounds,
            rng=rng,
        )

    return TwinView(
        tracking=tracking,
        fidelity=fidelity,
        fidelity_threshold=twin.fidelity_threshold,
        input_of_signal={signal: name for name, signal in twin.inputs.items()},
        output_of_signal={signal: name for name, signal in twin.outputs.items()},
        simulate=simulate,
    )
