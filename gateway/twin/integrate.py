"""Ensemble simulation: K candidate input schedules × M parameter samples, fixed-step RK4.

One call runs every member ``(k, m)`` from the same initial state (or one per parameter
sample) over the same horizon and returns either full output trajectories or, for the
simulation gate, each member's per-output min/max envelope and the first step at which
each output left given bounds. Everything is computed in compiled code, one member after
the other (or in parallel over members), with a handful of small scratch arrays per
member and no per-step Python objects.

How the model gets into the kernel
----------------------------------
The kernels take the model's ``rhs`` and ``output_fn`` as numba *first-class functions*
typed with the one :data:`~gateway.twin.model.MODEL_SIGNATURE`, and call them through a
function pointer. Measured with numba 0.68 before choosing:

* Passing the model's dispatcher as an ordinary argument (so each model specialises the
  kernel and LLVM can inline its rhs), or a ``make_simulator(model)`` factory whose jitted
  kernel closes over the model's dispatchers, both **recompile the kernel on every
  process start**: the on-disk cache index is keyed on the dispatcher's type or the
  closure's pickled contents, which differ from one process to the next, so each start
  writes a new cache entry and never reads one (numba #6251 made such functions
  cacheable at all, but the entries do not match across processes; the closure case is
  described in Deltares/numba_celltree#80). They would also go stale silently:
  numba's cache only checks the source file of the cached function, so a kernel
  specialised on a model's rhs would not notice an edit to the model's module.
* With a function-pointer argument the kernels are model-independent machine code,
  compiled once per machine and afterwards loaded from the cache in milliseconds; each
  model's two functions are cached on their own, keyed on their own file, so editing a
  model recompiles only that model. The price is an indirect call per evaluation that
  LLVM cannot inline: about 6 ns, against ~35 ns for the skid's rhs itself; the inlined
  specialisation measured no faster on the skid. ``bench/twin.py`` measures the whole
  kernel against scipy and NumPy.

Inputs
------
A schedule is piecewise constant: ``schedules[k]`` has S rows of inputs; row ``j`` is in
force from step ``knot_steps[j]`` on (``knot_steps[0] == 0``). By default the S rows split
the horizon evenly (S = 1: constant inputs; S = number of steps: one row per step);
``times_s`` puts the changes at given times instead (each takes effect at the first step
that starts at or after it). Inputs are held over a whole RK4 step, as a PLC holds a
setpoint between scans, so a change never falls inside a step.

Threads
-------
Every kernel is ``nogil=True``; :class:`Simulator` copies its arguments before a kernel
sees them, so :meth:`Simulator.simulate_async` can run in a worker thread while the event
loop goes on (and mutates its own arrays). ``parallel=True`` spreads the members over
numba's thread pool (off by default: a 2-core Pi also runs the event loop and the LLM).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numba
import numpy as np
import numpy.typing as npt
from numba import prange, types

from gateway.twin.model import MODEL_SIGNATURE, F64Array, TwinModel

I64Array = npt.NDArray[np.int64]

DEFAULT_MAX_TRAJECTORY_BYTES: Final = 256 * 2**20
"""Full trajectories larger than this are refused (use ``record_every`` or ``envelope``)."""

# ---------------------------------------------------------------------------------------
# Compiled code. Plain functions here; compiled with explicit signatures on first use.


def _observe(
    x: F64Array, y: F64Array, step: int, bounds: F64Array, env: F64Array, exits: I64Array
) -> bool:
    """Fold one output sample into the envelope; False once anything is not finite."""
    # 0·v is NaN exactly when v is NaN or ±inf: one test at the end instead of a branch
    # per value keeps this loop cheap (it runs every step).
    poison = 0.0
    for i in range(x.shape[0]):
        poison += 0.0 * x[i]
    for o in range(y.shape[0]):
        v = y[o]
        poison += 0.0 * v
        if v < env[o, 0]:
            env[o, 0] = v
        if v > env[o, 1]:
            env[o, 1] = v
        if (v < bounds[o, 0] or v > bounds[o, 1]) and exits[o] < 0:
            exits[o] = step
    return poison == 0.0


def _simulate_member(
    rhs: Any,
    output_fn: Any,
    x0: F64Array,
    schedule: F64Array,
    knot_steps: I64Array,
    p: F64Array,
    dt: float,
    n_steps: int,
    record_every: int,
    record: bool,
    bounds: F64Array,
    traj: F64Array,
    env: F64Array,
    exits: I64Array,
    x_final: F64Array,
) -> None:
    """Integrate one member; write its records, envelope, exits and final state."""
    n = x0.shape[0]
    ny = bounds.shape[0]
    n_knots = knot_steps.shape[0]
    x = x0.copy()
    xs = np.empty(n)
    k1 = np.empty(n)
    k2 = np.empty(n)
    k3 = np.empty(n)
    k4 = np.empty(n)
    y = np.empty(ny)
    for o in range(ny):
        env[o, 0] = np.inf
        env[o, 1] = -np.inf
        exits[o] = -1
    half = 0.5 * dt
    sixth = dt / 6.0

    # The inputs in force live in one scratch vector, refreshed only when the schedule
    # moves to its next row (a fresh row view per step would cost reference counting).
    u = schedule[0].copy()
    j = 0
    output_fn(x, u, p, y)
    ok = _observe_c(x, y, 0, bounds, env, exits)
    if ok and record:
        traj[0, :] = y
    step = 0
    while ok and step < n_steps:
        rhs(x, u, p, k1)
        for i in range(n):
            xs[i] = x[i] + half * k1[i]
        rhs(xs, u, p, k2)
        for i in range(n):
            xs[i] = x[i] + half * k2[i]
        rhs(xs, u, p, k3)
        for i in range(n):
            xs[i] = x[i] + dt * k3[i]
        rhs(xs, u, p, k4)
        for i in range(n):
            x[i] += sixth * (k1[i] + 2.0 * (k2[i] + k3[i]) + k4[i])
        step += 1
        # Inputs change at step boundaries; the outputs there already see the new ones.
        if j + 1 < n_knots and knot_steps[j + 1] <= step:
            while j + 1 < n_knots and knot_steps[j + 1] <= step:
                j += 1
            u[:] = schedule[j]
        output_fn(x, u, p, y)
        ok = _observe_c(x, y, step, bounds, env, exits)
        if ok and record and step % record_every == 0:
            traj[step // record_every, :] = y

    if ok:
        x_final[:] = x
        return
    # Diverged at `step`: nothing after it means anything. NaN makes every comparison a
    # gate makes fail, and the exit step says when it happened.
    x_final[:] = np.nan
    for o in range(ny):
        env[o, 0] = np.nan
        env[o, 1] = np.nan
        if exits[o] < 0:
            exits[o] = step
    if record:
        for r in range((step + record_every - 1) // record_every, traj.shape[0]):
            traj[r, :] = np.nan


def _drive_serial(
    rhs: Any,
    output_fn: Any,
    x0: F64Array,
    schedules: F64Array,
    knot_steps: I64Array,
    params: F64Array,
    dt: float,
    n_steps: int,
    record_every: int,
    record: bool,
    bounds: F64Array,
    traj: F64Array,
    env: F64Array,
    exits: I64Array,
    x_final: F64Array,
) -> None:
    """All K×M members, one after the other."""
    n_m = params.shape[0]
    for idx in range(schedules.shape[0] * n_m):
        k = idx // n_m
        m = idx - k * n_m
        row = m if x0.shape[0] > 1 else 0
        tk = k if record else 0
        tm = m if record else 0
        _member_c(
            rhs,
            output_fn,
            x0[row],
            schedules[k],
            knot_steps,
            params[m],
            dt,
            n_steps,
            record_every,
            record,
            bounds,
            traj[tk, tm],
            env[k, m],
            exits[k, m],
            x_final[k, m],
        )


def _drive_parallel(
    rhs: Any,
    output_fn: Any,
    x0: F64Array,
    schedules: F64Array,
    knot_steps: I64Array,
    params: F64Array,
    dt: float,
    n_steps: int,
    record_every: int,
    record: bool,
    bounds: F64Array,
    traj: F64Array,
    env: F64Array,
    exits: I64Array,
    x_final: F64Array,
) -> None:
    """All K×M members spread over numba's threads (members are independent)."""
    n_m = params.shape[0]
    for idx in prange(schedules.shape[0] * n_m):
        k = idx // n_m
        m = idx - k * n_m
        row = m if x0.shape[0] > 1 else 0
        tk = k if record else 0
        tm = m if record else 0
        _member_c(
            rhs,
            output_fn,
            x0[row],
            schedules[k],
            knot_steps,
            params[m],
            dt,
            n_steps,
            record_every,
            record,
            bounds,
            traj[tk, tm],
            env[k, m],
            exits[k, m],
            x_final[k, m],
        )


# The inner functions are compiled into the drivers (not cached on their own: the drivers'
# cached machine code contains them).
_observe_c = numba.njit(nogil=True)(_observe)
_member_c = numba.njit(nogil=True)(_simulate_member)


def _array(ndim: int, dtype: Any = types.float64) -> Any:
    return types.Array(dtype, ndim, "C")


_MODEL_FN = types.FunctionType(MODEL_SIGNATURE)
KERNEL_SIGNATURE: Final = types.void(
    _MODEL_FN,  # rhs
    _MODEL_FN,  # output_fn
    _array(2),  # x0 [1 or M, n_states]
    _array(3),  # schedules [K, S, n_inputs]
    _array(1, types.int64),  # knot_steps [S]
    _array(2),  # params [M, n_parameters]
    types.float64,  # dt, s
    types.int64,  # n_steps
    types.int64,  # record_every
    types.boolean,  # record
    _array(2),  # bounds [n_outputs, 2]
    _array(4),  # traj [K, M, n_record, n_outputs] (or [1, 1, 1, n_outputs] unused)
    _array(4),  # env [K, M, n_outputs, 2]
    _array(3, types.int64),  # exits [K, M, n_outputs]
    _array(3),  # x_final [K, M, n_states]
)
"""The one signature each driver is compiled for."""


_KERNELS: dict[bool, Any] = {}
_KERNELS_LOCK = threading.Lock()


def kernel(parallel: bool = False) -> Any:
    """The compiled driver (a numba dispatcher), built on first use and cached on disk.

    Separate Python functions back the serial and parallel drivers because numba's cache
    key does not include the ``parallel`` flag: one function compiled both ways would
    share, and confuse, one cache entry. The lock keeps a warm-up thread and a first
    simulation from compiling the same driver twice.
    """
    with _KERNELS_LOCK:
        if parallel not in _KERNELS:
            driver = _drive_parallel if parallel else _drive_serial
            _KERNELS[parallel] = numba.njit(
                KERNEL_SIGNATURE, cache=True, nogil=True, parallel=parallel
            )(driver)
        return _KERNELS[parallel]


def kernels_built() -> bool:
    """Whether a driver has been compiled or loaded in this process (fixes its cache dir)."""
    return bool(_KERNELS)


# ---------------------------------------------------------------------------------------
# Results


def _frozen(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    array.flags.writeable = False
    return array


@dataclass(frozen=True)
class Envelope:
    """Per-member extremes of every output over the horizon, for the simulation gate.

    Member ``(k, m)`` is candidate schedule ``k`` run with parameter sample ``m``. All
    arrays are read-only.

    Attributes:
        output_names: Output names, in the order of the last axis of ``low_high``.
        dt_s: Integration step, s.
        n_steps: Steps simulated; the horizon is ``n_steps * dt_s``.
        low_high: ``[K, M, n_outputs, 2]``: minimum and maximum of each output over every
            step from 0 to ``n_steps`` inclusive, in output units. NaN for a member whose
            state or outputs stopped being finite (it diverged; see ``diverged``).
        first_exit_step: ``[K, M, n_outputs]`` int64: first step at which the output was
            outside ``bounds`` (or not finite), -1 if it never was.
        bounds: ``[n_outputs, 2]``: the bounds used; ±inf where none was given.
        final_states: ``[K, M, n_states]``: the state at the end of the horizon (NaN for a
            diverged member): the starting point for propagating an ensemble onward.
    """

    output_names: tuple[str, ...]
    dt_s: float
    n_steps: int
    low_high: F64Array
    first_exit_step: I64Array
    bounds: F64Array
    final_states: F64Array

    @property
    def diverged(self) -> npt.NDArray[np.bool_]:
        """``[K, M]``: True where the member's simulation stopped being finite."""
        return np.asarray(np.isnan(self.low_high).any(axis=(2, 3)))

    @property
    def first_exit_s(self) -> F64Array:
        """``[K, M, n_outputs]``: time of ``first_exit_step`` in s; +inf for never."""
        times = self.first_exit_step.astype(np.float64) * self.dt_s
        return np.where(self.first_exit_step < 0, np.inf, times)

    def inside(self) -> npt.NDArray[np.bool_]:
        """``[K, M]``: True where every output stayed finite and within bounds throughout."""
        return np.asarray((self.first_exit_step < 0).all(axis=2))

    def output(self, name: str) -> F64Array:
        """``[K, M, 2]``: min and max of one output (by name)."""
        return self.low_high[:, :, self.output_names.index(name), :]


@dataclass(frozen=True)
class Trajectories:
    """Recorded output trajectories of every member, plus their envelope.

    Attributes:
        output_names: Output names, in the order of the last axis of ``outputs``.
        times_s: ``[n_record]``: time of each record, s from the initial state (0 included).
        outputs: ``[K, M, n_record, n_outputs]`` in output units; from the step at which a
            member diverged on, NaN.
        envelope: The members' envelope, computed at every step (not only the recorded ones).
    """

    output_names: tuple[str, ...]
    times_s: F64Array
    outputs: F64Array
    envelope: Envelope

    def output(self, name: str) -> F64Array:
        """``[K, M, n_record]``: one output's trajectories (by name)."""
        return self.outputs[:, :, :, self.output_names.index(name)]


# ---------------------------------------------------------------------------------------
# The Python face: validation, then one kernel call.


@dataclass(frozen=True)
class _Prepared:
    x0: F64Array
    schedules: F64Array
    knot_steps: I64Array
    params: F64Array
    dt_s: float
    n_steps: int
    record_every: int
    bounds: F64Array


class Simulator:
    """Validated entry point to the compiled ensemble integrator for one model.

    The kernels are compiled (or loaded from numba's on-disk cache) on first use; call
    :meth:`warm_up` at start-up, in a worker thread, to pay that before the first proposal.

    Args:
        model: The model to simulate.
        dt_s: Default integration step, s.
        horizon_s: Default horizon, s.
        parallel: Spread ensemble members over numba's threads.
        max_trajectory_bytes: Refuse :meth:`simulate` calls whose recorded trajectories
            would be larger than this (memory stays bounded on a small box).

    Raises:
        ValueError: A step or horizon that is not a positive number, or a horizon that is
            not a whole number of steps.
    """

    def __init__(
        self,
        model: TwinModel,
        *,
        dt_s: float = 0.5,
        horizon_s: float = 600.0,
        parallel: bool = False,
        max_trajectory_bytes: int = DEFAULT_MAX_TRAJECTORY_BYTES,
    ) -> None:
        self.model = model
        self.parallel = parallel
        self.max_trajectory_bytes = max_trajectory_bytes
        _steps(horizon_s, dt_s)
        self.dt_s = float(dt_s)
        self.horizon_s = float(horizon_s)

    def __repr__(self) -> str:
        return (
            f"Simulator(model={self.model.name!r}, dt_s={self.dt_s}, "
            f"horizon_s={self.horizon_s}, parallel={self.parallel})"
        )

    # ------------------------------------------------------------------ public API

    def simulate(
        self,
        x0: npt.ArrayLike,
        schedules: npt.ArrayLike,
        params: npt.ArrayLike,
        horizon_s: float | None = None,
        dt_s: float | None = None,
        record_every: int = 1,
        *,
        times_s: npt.ArrayLike | None = None,
        bounds: Mapping[str, tuple[float, float]] | npt.ArrayLike | None = None,
    ) -> Trajectories:
        """Simulate every (schedule, parameter sample) pair and record the outputs.

        Args:
            x0: Initial state: ``[n_states]`` shared by all members, or ``[M, n_states]``
                (row ``m`` goes with parameter sample ``m``, e.g. an estimator's ensemble).
            schedules: ``[K, S, n_inputs]`` candidate input schedules (see module docstring).
            params: ``[M, n_parameters]`` parameter samples.
            horizon_s: Simulated time, s (default: the simulator's); a whole number of steps.
            dt_s: RK4 step, s (default: the simulator's).
            record_every: Record the outputs every this many steps (must divide the number
                of steps); records include t = 0 and the end of the horizon.
            times_s: ``[S]`` times at which the schedule rows take effect; ``times_s[0]``
                must be 0 and the times strictly increasing within the horizon. Default:
                the rows split the horizon evenly.
            bounds: Output bounds for ``first_exit_step``: ``{output: (low, high)}`` or an
                ``[n_outputs, 2]`` array (±inf for unbounded). Default: unbounded.

        Returns:
            ``Trajectories`` with ``outputs[K, M, n_steps // record_every + 1, n_outputs]``.

        Raises:
            ValueError: A shape, size or value is invalid (the message says which and why).
        """
        prep = self._prepare(x0, schedules, params, horizon_s, dt_s, record_every, times_s, bounds)
        return self._record(prep)

    def envelope(
        self,
        x0: npt.ArrayLike,
        schedules: npt.ArrayLike,
        params: npt.ArrayLike,
        horizon_s: float | None = None,
        dt_s: float | None = None,
        *,
        times_s: npt.ArrayLike | None = None,
        bounds: Mapping[str, tuple[float, float]] | npt.ArrayLike | None = None,
    ) -> Envelope:
        """Like :meth:`simulate`, but keep only each member's envelope (no trajectories).

        Memory is ``O(K·M·n_outputs)`` whatever the horizon: this is the gate's call.
        """
        prep = self._prepare(x0, schedules, params, horizon_s, dt_s, 1, times_s, bounds)
        return self._run(prep, None)

    async def simulate_async(
        self,
        x0: npt.ArrayLike,
        schedules: npt.ArrayLike,
        params: npt.ArrayLike,
        horizon_s: float | None = None,
        dt_s: float | None = None,
        record_every: int = 1,
        *,
        times_s: npt.ArrayLike | None = None,
        bounds: Mapping[str, tuple[float, float]] | npt.ArrayLike | None = None,
    ) -> Trajectories:
        """:meth:`simulate` in a worker thread; the kernel releases the GIL.

        Arguments are copied before this returns control to the loop, so the caller may
        change its arrays at once. Cancelling the awaiting task does not stop the kernel
        (a thread cannot be interrupted); it finishes in the background and its result
        is dropped, so callers bound the work by the ensemble size, not by cancellation.
        """
        prep = self._prepare(x0, schedules, params, horizon_s, dt_s, record_every, times_s, bounds)
        return await asyncio.to_thread(self._record, prep)

    async def envelope_async(
        self,
        x0: npt.ArrayLike,
        schedules: npt.ArrayLike,
        params: npt.ArrayLike,
        horizon_s: float | None = None,
        dt_s: float | None = None,
        *,
        times_s: npt.ArrayLike | None = None,
        bounds: Mapping[str, tuple[float, float]] | npt.ArrayLike | None = None,
    ) -> Envelope:
        """:meth:`envelope` in a worker thread (see :meth:`simulate_async`)."""
        prep = self._prepare(x0, schedules, params, horizon_s, dt_s, 1, times_s, bounds)
        return await asyncio.to_thread(self._run, prep, None)

    def warm_up(self) -> None:
        """Compile or load the kernel and run a one-step simulation (for start-up)."""
        model = self.model
        self.envelope(
            model.initial_state(),
            model.input_vector()[None, None, :],
            model.parameter_vector()[None, :],
            horizon_s=self.dt_s,
            dt_s=self.dt_s,
        )

    # ------------------------------------------------------------------ internals

    def _record(self, prep: _Prepared) -> Trajectories:
        """Allocate the trajectories (within the memory limit) and run the kernel."""
        k, m = prep.schedules.shape[0], prep.params.shape[0]
        n_record = prep.n_steps // prep.record_every + 1
        size = k * m * n_record * self.model.n_outputs * 8
        if size > self.max_trajectory_bytes:
            raise ValueError(
                f"recording {k}×{m} members × {n_record} samples × {self.model.n_outputs} "
                f"outputs needs {size / 2**20:.0f} MiB, above the limit of "
                f"{self.max_trajectory_bytes / 2**20:.0f} MiB; record less often "
                "(record_every) or ask for the envelope only"
            )
        traj = np.empty((k, m, n_record, self.model.n_outputs))
        envelope = self._run(prep, traj)
        times = np.arange(n_record, dtype=np.float64) * prep.record_every * prep.dt_s
        return Trajectories(
            output_names=self.model.output_names,
            times_s=_frozen(times),
            outputs=_frozen(traj),
            envelope=envelope,
        )

    def _run(self, prep: _Prepared, traj: F64Array | None) -> Envelope:
        """One kernel call; fills ``traj`` when given (else only the envelope)."""
        model = self.model
        k, m = prep.schedules.shape[0], prep.params.shape[0]
        record = traj is not None
        if traj is None:
            traj = np.empty((1, 1, 1, model.n_outputs))  # never written
        env = np.empty((k, m, model.n_outputs, 2))
        exits = np.empty((k, m, model.n_outputs), dtype=np.int64)
        x_final = np.empty((k, m, model.n_states))
        kernel(self.parallel)(
            model.rhs,
            model.output_fn,
            prep.x0,
            prep.schedules,
            prep.knot_steps,
            prep.params,
            prep.dt_s,
            prep.n_steps,
            prep.record_every,
            record,
            prep.bounds,
            traj,
            env,
            exits,
            x_final,
        )
        return Envelope(
            output_names=model.output_names,
            dt_s=prep.dt_s,
            n_steps=prep.n_steps,
            low_high=_frozen(env),
            first_exit_step=_frozen(exits),
            bounds=_frozen(prep.bounds.copy()),
            final_states=_frozen(x_final),
        )

    def _prepare(
        self,
        x0: npt.ArrayLike,
        schedules: npt.ArrayLike,
        params: npt.ArrayLike,
        horizon_s: float | None,
        dt_s: float | None,
        record_every: int,
        times_s: npt.ArrayLike | None,
        bounds: Mapping[str, tuple[float, float]] | npt.ArrayLike | None,
    ) -> _Prepared:
        model = self.model
        dt = self.dt_s if dt_s is None else dt_s
        horizon = self.horizon_s if horizon_s is None else horizon_s
        n_steps = _steps(horizon, dt)
        if isinstance(record_every, bool) or not isinstance(record_every, int | np.integer):
            raise ValueError(f"record_every must be an integer, got {record_every!r}")
        if record_every < 1 or n_steps % record_every:
            raise ValueError(
                f"record_every={record_every} must be >= 1 and divide the {n_steps} steps of "
                f"the horizon, so that the last record is the end of the horizon"
            )

        p = _float_array("params", params)
        if p.ndim != 2 or p.shape[1] != model.n_parameters or p.shape[0] < 1:
            raise ValueError(
                f"params must have shape (M, {model.n_parameters}) with M >= 1 (parameters: "
                f"{', '.join(model.parameter_names) or 'none'}), got {p.shape}"
            )
        x = _float_array("x0", x0)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != model.n_states or x.shape[0] not in (1, p.shape[0]):
            raise ValueError(
                f"x0 must have shape ({model.n_states},) or ({p.shape[0]}, {model.n_states}) "
                f"(one row per parameter sample), got {np.shape(x0)}"
            )
        s = _float_array("schedules", schedules)
        if s.ndim != 3 or s.shape[2] != model.n_inputs or s.shape[0] < 1 or s.shape[1] < 1:
            raise ValueError(
                f"schedules must have shape (K, S, {model.n_inputs}) with K, S >= 1 (inputs: "
                f"{', '.join(model.input_names) or 'none'}); a single constant input vector "
                f"u is u[None, None, :]; got {s.shape}"
            )
        knots = _knot_steps(s.shape[1], n_steps, dt, times_s)
        return _Prepared(
            x0=np.ascontiguousarray(x),
            schedules=s,
            knot_steps=knots,
            params=p,
            dt_s=float(dt),
            n_steps=n_steps,
            record_every=int(record_every),
            bounds=self._bounds(bounds),
        )

    def _bounds(self, bounds: Mapping[str, tuple[float, float]] | npt.ArrayLike | None) -> F64Array:
        model = self.model
        out = np.empty((model.n_outputs, 2))
        out[:, 0] = -np.inf
        out[:, 1] = np.inf
        if bounds is None:
            return out
        if isinstance(bounds, Mapping):
            for name, pair in bounds.items():
                low, high = pair
                out[model.index("output", name)] = (low, high)
        else:
            given = np.array(bounds, dtype=np.float64)
            if given.shape != out.shape:
                raise ValueError(
                    f"bounds must have shape ({model.n_outputs}, 2) or be a mapping "
                    f"output -> (low, high), got shape {given.shape}"
                )
            out[:] = given
        if np.isnan(out).any() or (out[:, 0] > out[:, 1]).any():
            bad = int(np.flatnonzero(np.isnan(out).any(axis=1) | (out[:, 0] > out[:, 1]))[0])
            raise ValueError(
                f"bounds for output {model.output_names[bad]!r} = {tuple(out[bad])} must be "
                "low <= high and not NaN"
            )
        return out


def _steps(horizon_s: float, dt_s: float) -> int:
    if not (isinstance(dt_s, int | float) and math.isfinite(dt_s) and dt_s > 0):
        raise ValueError(f"dt_s must be a positive number of seconds, got {dt_s!r}")
    if not (isinstance(horizon_s, int | float) and math.isfinite(horizon_s) and horizon_s > 0):
        raise ValueError(f"horizon_s must be a positive number of seconds, got {horizon_s!r}")
    n_steps = round(horizon_s / dt_s)
    if n_steps < 1 or abs(n_steps * dt_s - horizon_s) > 1e-9 * max(1.0, horizon_s):
        raise ValueError(
            f"horizon_s={horizon_s:g} is not a whole number of dt_s={dt_s:g} steps; "
            "choose a horizon that is a multiple of the step"
        )
    return int(n_steps)


def _float_array(what: str, value: npt.ArrayLike) -> F64Array:
    """A private C-contiguous float64 copy (the kernel may run in another thread), finite."""
    try:
        array = np.array(value, dtype=np.float64, order="C", copy=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be an array of numbers: {err}") from err
    if not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ValueError(f"{what} must be finite; {what}{list(where)} = {array[where]!r}")
    return array


def _knot_steps(n_rows: int, n_steps: int, dt_s: float, times_s: npt.ArrayLike | None) -> I64Array:
    if n_rows > n_steps:
        raise ValueError(
            f"schedules have {n_rows} rows but the horizon has only {n_steps} steps; "
            "at most one input row per step"
        )
    if times_s is None:
        return np.array([j * n_steps // n_rows for j in range(n_rows)], dtype=np.int64)
    times = _float_array("times_s", times_s)
    if times.shape != (n_rows,):
        raise ValueError(
            f"times_s must have one time per schedule row, shape ({n_rows},), got {times.shape}"
        )
    if times[0] != 0.0 or (np.diff(times) <= 0).any() or times[-1] >= n_steps * dt_s:
        raise ValueError(
            "times_s must start at 0, increase strictly and stay within the horizon "
            f"[0, {n_steps * dt_s:g}) s, got {times.tolist()}"
        )
    # A change takes effect at the first step that starts at or after its time.
    knots = np.ceil(times / dt_s - 1e-9).astype(np.int64)
    if (np.diff(knots) <= 0).any():
        raise ValueError(
            f"times_s {times.tolist()} put two input changes in one step of {dt_s:g} s"
        )
    return knots
