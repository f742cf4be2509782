"""What-if from the current state: ``edgetwin simulate --set level_sp=1.8 --horizon 600``.

An engineer's question before a change: what would the plant do? The answer starts from
the best state there is:

* the running daemon's estimate (``<state_dir>/twin.json``, rewritten every few seconds:
  the observer's state, the estimated parameters and their uncertainty), or
* when the daemon is not running, the historian's latest values: the state is rebuilt
  from them as the observer starts (the model's ``initialise``), with the nominal
  parameters and their declared spread, and the output says so.

It runs the same ensemble the forecasts run (parameter samples, constant inputs) and
prints each output's spread over the horizon against the safety envelope, and when a
bound would be crossed. It changes nothing anywhere: simulate never writes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from gateway.config.schema import GatewayConfig
from gateway.errors import GatewayError
from gateway.twin.forecast import Crossing, forecast_crossings, format_duration
from gateway.twin.integrate import Simulator, Trajectories
from gateway.twin.model import F64Array, TwinModel
from gateway.twin.observer import PARAMETER_STD_FLOOR
from gateway.twin.runtime import record_every

TWIN_STATE_FILE: Final = "twin.json"
"""Written by the daemon in its state directory (see ``gateway.daemon``)."""
DAEMON_STATE_MAX_AGE_S: Final = 30.0
"""An estimate older than this is not the running daemon's any more."""


class WhatIfError(GatewayError):
    """The question cannot be answered (no state, an unknown tag, a bad value)."""


@dataclass(frozen=True)
class StartingPoint:
    """Where the simulation starts.

    Attributes:
        source: "daemon" (the running daemon's estimate) or "store" (rebuilt from the
            historian's latest values).
        age_s: How old the newest data behind it is.
        state: ``x``.
        inputs: ``u`` in force (before the changes).
        parameters: Parameter values (estimated where the daemon estimates them).
        parameter_std: Their spread for the ensemble.
        note: One line on what the starting point is made of.
    """

    source: str
    age_s: float
    state: F64Array
    inputs: F64Array
    parameters: F64Array
    parameter_std: F64Array
    note: str


def nominal_start(model: TwinModel) -> StartingPoint:
    """The model's nominal initial state, inputs and parameters (for benchmarks and tests
    that need a twin without a plant)."""
    return StartingPoint(
        "nominal",
        0.0,
        model.initial_state(),
        model.input_vector(),
        model.parameter_vector(),
        model.parameter_std(),
        "the model's nominal steady state",
    )


@dataclass(frozen=True)
class WhatIf:
    """The answer: the trajectories and the envelope crossings."""

    start: StartingPoint
    changes: Mapping[str, float]
    horizon_s: float
    trajectories: Trajectories
    crossings: tuple[Crossing, ...]


def starting_point(
    cfg: GatewayConfig, model: TwinModel, state_dir: Path, now: float | None = None
) -> StartingPoint:
    """The daemon's estimate if it is fresh, else a state rebuilt from the store.

    Raises:
        WhatIfError: Neither is available, or the store lacks an input the model needs.
    """
    now = time.time() if now is None else now
    daemon = _from_daemon(model, state_dir / TWIN_STATE_FILE, now)
    if daemon is not None:
        return daemon
    return _from_store(cfg, model, state_dir / "history.db", now)


def _from_daemon(model: TwinModel, path: Path, now: float) -> StartingPoint | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        age = now - float(doc["saved_at"])
        if not 0 <= age <= DAEMON_STATE_MAX_AGE_S:
            return None
        return from_snapshot(model, doc["observer"], age)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no daemon, or a file from another version: use the store


def from_snapshot(model: TwinModel, obs: Mapping[str, Any], age_s: float) -> StartingPoint:
    """A starting point from the observer's snapshot (``StateObserver.snapshot()``).

    Raises:
        ValueError: The snapshot is of another model, incomplete or not finite.
    """
    try:
        if obs["model"] != model.name:
            raise ValueError(f"the snapshot is of model {obs['model']!r}, not {model.name!r}")
        x = np.array([float(obs["state"][n]) for n in model.state_names])
        u = np.array([float(obs["inputs"][n]) for n in model.input_names])
        p = np.array([float(obs["parameters"][n]) for n in model.parameter_names])
        std = np.array([float(obs["parameter_std"][n]) for n in model.parameter_names])
    except (KeyError, TypeError) as err:
        raise ValueError(f"incomplete twin snapshot: {err}") from err
    if not (np.isfinite(x).all() and np.isfinite(u).all() and np.isfinite(p).all()):
        raise ValueError("the twin snapshot is not finite")
    estimated = set(obs.get("estimated", []))
    declared = model.parameter_std()
    for j, q in enumerate(model.parameters):
        if q.name in estimated:
            std[j] = max(std[j], PARAMETER_STD_FLOOR * declared[j])
    note = "the running daemon's estimate"
    if estimated:
        note += f" (estimated: {', '.join(sorted(estimated))})"
    return StartingPoint("daemon", age_s, x, u, p, std, note)


def sample_parameters(
    model: TwinModel, start: StartingPoint, members: int, rng: np.random.Generator
) -> F64Array:
    """``members`` parameter vectors around the starting point's, row 0 the point itself;
    truncated at 3 std and clipped to the parameters' physical bounds."""
    z = np.clip(rng.standard_normal((members, model.n_parameters)), -3.0, 3.0)
    params = start.parameters + z * start.parameter_std
    params[0] = start.parameters
    low = np.array([q.low for q in model.parameters])
    high = np.array([q.high for q in model.parameters])
    return np.ascontiguousarray(np.clip(params, low, high))


def _from_store(cfg: GatewayConfig, model: TwinModel, path: Path, now: float) -> StartingPoint:
    assert cfg.twin is not None
    if not path.exists():
        raise WhatIfError(
            f"no state to start from: the daemon is not running (no fresh {TWIN_STATE_FILE}) "
            f"and there is no historian at {path}; start `edgetwin run` or pass --state-dir"
        )
    from gateway.store.historian import SqliteHistorian

    with SqliteHistorian(path) as historian:
        latest = historian.latest()

    def good(signal: str) -> float | None:
        sample = latest.get(signal)
        if sample is None or sample.quality != "good" or not math.isfinite(sample.value):
            return None
        return sample.value

    u = model.input_vector()
    missing = []
    newest = -math.inf
    for name, signal in cfg.twin.inputs.items():
        value = good(signal)
        if value is None:
            missing.append(signal)
            continue
        u[model.index("input", name)] = value
        newest = max(newest, latest[signal].ts)
    if missing:
        raise WhatIfError(
            f"the historian has no good value of {', '.join(missing)} (twin inputs); the "
            "twin cannot know what the PLC is doing without them"
        )
    measured = {
        name: value
        for name, signal in cfg.twin.outputs.items()
        if (value := good(signal)) is not None
    }
    p = model.parameter_vector()
    if model.initialise is not None:
        x = np.asarray(model.initialise(measured, u, p), dtype=np.float64)
    else:
        x = model.initial_state()
        for i, name in enumerate(model.state_names):
            if name in measured:
                x[i] = measured[name]
    note = "the historian's latest values (the daemon is not running): nominal parameters"
    return StartingPoint("store", now - newest, x, u, p, model.parameter_std(), note)


def parse_changes(
    cfg: GatewayConfig, model: TwinModel, targets: Mapping[str, float]
) -> dict[str, float]:
    """``{tag or input: value}`` (as the CLI parsed ``--set``) → ``{model input: value}``.

    A name is a writable tag (``[writable.*]``) whose signal drives a model input, or a
    model input's own name.

    Raises:
        WhatIfError: An unknown name (the message lists the names that are accepted).
    """
    assert cfg.twin is not None
    by_signal = {signal: name for name, signal in cfg.twin.inputs.items()}
    accepted: dict[str, str] = {
        tag: by_signal[w.signal] for tag, w in cfg.writable.items() if w.signal in by_signal
    }
    for name in model.input_names:
        accepted.setdefault(name, name)
    changes: dict[str, float] = {}
    for tag, value in targets.items():
        if tag not in accepted:
            raise WhatIfError(
                f"--set {tag}={value:g}: {tag!r} is neither a writable tag nor a twin input; "
                f"use one of: {', '.join(sorted(accepted))}"
            )
        changes[accepted[tag]] = value
    return changes


def run_whatif(
    cfg: GatewayConfig,
    model: TwinModel,
    simulator: Simulator,
    start: StartingPoint,
    changes: Mapping[str, float],
    *,
    horizon_s: float,
    members: int,
    seed: int = 0,
) -> WhatIf:
    """Simulate the changes from ``start`` for ``members`` parameter samples.

    Raises:
        WhatIfError: A horizon that is not a whole number of the twin's steps.
    """
    u = start.inputs.copy()
    for name, value in changes.items():
        u[model.index("input", name)] = value
    params = sample_parameters(model, start, members, np.random.default_rng(seed))
    n_steps = round(horizon_s / simulator.dt_s)
    if n_steps < 1 or abs(n_steps * simulator.dt_s - horizon_s) > 1e-9 * max(1.0, horizon_s):
        raise WhatIfError(
            f"--horizon {horizon_s:g}: must be a positive multiple of the twin's step "
            f"({simulator.dt_s:g} s)"
        )
    every = record_every(n_steps, simulator.dt_s, 2.0)
    traj = simulator.simulate(
        start.state, u[None, None, :], params, horizon_s=horizon_s, record_every=every
    )
    assert cfg.twin is not None
    signal_to_output = {signal: name for name, signal in cfg.twin.outputs.items()}
    limits: dict[str, tuple[float | None, float | None]] = {
        signal_to_output[s]: (b.low, b.high)
        for s, b in cfg.envelope.items()
        if s in signal_to_output
    }
    units = {o.name: o.unit for o in model.outputs}
    crossings = tuple(forecast_crossings(traj, limits, units))
    return WhatIf(start, dict(changes), horizon_s, traj, crossings)


def render(cfg: GatewayConfig, model: TwinModel, answer: WhatIf, columns: int = 6) -> str:
    """A table: each mapped output's min..max over the members at a few times, and the
    envelope verdict."""
    assert cfg.twin is not None
    start = answer.start
    traj = answer.trajectories
    members = traj.outputs.shape[1]
    lines = [
        f"starting point: {start.note}, {format_duration(max(0.0, start.age_s))} old",
    ]
    if answer.changes:
        moved = []
        for name, value in answer.changes.items():
            before = float(start.inputs[model.index("input", name)])
            unit = model.inputs[model.index("input", name)].unit
            moved.append(f"{name} {before:.4g} -> {value:.4g} {unit}")
        lines.append("change: " + ", ".join(moved))
    else:
        lines.append("change: none (the current setpoints held)")
    lines.append(f"horizon: {format_duration(answer.horizon_s)}, {members} parameter samples")
    lines.append("")
    times = traj.times_s
    picks = sorted({round(k) for k in np.linspace(0, len(times) - 1, columns + 1)})
    header = f"  {'output':<20}{'unit':<7}" + "".join(
        f"{format_duration(float(times[k])):>17}" for k in picks
    )
    lines.append(header + "  envelope")
    by_output = {c.output: c for c in answer.crossings}
    for name, signal in cfg.twin.outputs.items():
        j = model.index("output", name)
        unit = model.outputs[j].unit
        cells = ""
        for k in picks:
            values = traj.outputs[0, :, k, j]
            lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
            cells += f"{_span(lo, hi):>17}"
        bound = cfg.envelope.get(signal)
        verdict = ""
        if bound is not None:
            verdict = f"[{bound.low:g}, {bound.high:g}] "
            crossing = by_output.get(name)
            verdict += "inside" if crossing is None else f"CROSSES: {crossing.message()}"
        lines.append(f"  {name:<20}{unit:<7}{cells}  {verdict}")
    lines.append("")
    if answer.crossings:
        lines.append(f"{len(answer.crossings)} envelope bound(s) would be crossed.")
    else:
        lines.append("every member stays inside the safety envelope over the horizon.")
    return "\n".join(lines)


def to_json(model: TwinModel, answer: WhatIf) -> dict[str, Any]:
    """The answer as data: per output, min and max over the members at each record."""
    traj = answer.trajectories
    outputs = {
        name: {
            "min": np.nanmin(traj.outputs[0, :, :, j], axis=0).round(6).tolist(),
            "max": np.nanmax(traj.outputs[0, :, :, j], axis=0).round(6).tolist(),
        }
        for j, name in enumerate(model.output_names)
    }
    return {
        "starting_point": {"source": answer.start.source, "age_s": answer.start.age_s},
        "changes": dict(answer.changes),
        "horizon_s": answer.horizon_s,
        "members": int(traj.outputs.shape[1]),
        "times_s": traj.times_s.tolist(),
        "outputs": outputs,
        "crossings": [c.to_record() for c in answer.crossings],
    }


def _span(lo: float, hi: float) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "diverged"
    if abs(hi - lo) <= 5e-4 * max(1.0, abs(hi)):
        return f"{(lo + hi) / 2:.4g}"
    return f"{lo:.4g}..{hi:.4g}"
