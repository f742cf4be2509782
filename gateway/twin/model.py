"""What a twin model is: two compiled functions plus declared names, units and values.

A model is a time-invariant state-space system written python-control style::

    rhs(x, u, p, dxdt)      dx/dt = f(x, u, p), written into ``dxdt``
    output_fn(x, u, p, y)   y     = g(x, u, p), written into ``y``

with, all float64 and C-contiguous:

* ``x``: state, shape ``(n_states,)``, in the units of :attr:`TwinModel.states`;
* ``u``: inputs, shape ``(n_inputs,)``, held constant over one integration step (setpoints,
  measured disturbances such as inlet temperature); anything time-varying enters here;
* ``p``: parameters, shape ``(n_parameters,)``: the uncertain physical coefficients;
* ``dxdt``: shape ``(n_states,)``, state units per second;
* ``y``: shape ``(n_outputs,)``, in the units of :attr:`TwinModel.outputs`, comparable with
  the measured signals the config maps them to.

Both functions must be compiled with :func:`model_function` (nopython, no GIL, cached on
disk, with the one signature :data:`MODEL_SIGNATURE` the integrator calls through a function
pointer) and must not allocate: the integrator calls ``rhs`` four times per step per
ensemble member. Constants they use must be defined in the model's own source file (or be
literals): numba caches a function's machine code keyed on its own file's contents, so an
edit elsewhere would not invalidate it.

The integrator knows nothing else about a model: a new process model is a new module with
two functions and a :class:`TwinModel`, registered in :data:`MODELS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt
from numba import types

F64Array = npt.NDArray[np.float64]
"""A float64 NumPy array (shape documented where it is used)."""

ModelFunction = Callable[[F64Array, F64Array, F64Array, F64Array], None]
"""``f(x, u, p, out)``: a compiled rhs or output function (a numba dispatcher)."""

Initialiser = Callable[[Mapping[str, float], F64Array, F64Array], F64Array]
"""``initialise(measured, u, p) -> x``: see :attr:`TwinModel.initialise`."""

_VECTOR = types.Array(types.float64, 1, "C")
MODEL_SIGNATURE = types.void(_VECTOR, _VECTOR, _VECTOR, _VECTOR)
"""numba signature of every model function: ``void(f8[::1], f8[::1], f8[::1], f8[::1])``."""

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_F = TypeVar("_F", bound=Callable[..., Any])


def model_function(fn: ModelFunction) -> ModelFunction:
    """Compile ``fn(x, u, p, out)`` as a model's rhs or output function.

    Eager compilation with the explicit :data:`MODEL_SIGNATURE` is what lets the integrator
    take it as a first-class function (a pointer), so the integrator's kernels are compiled
    once for every model; ``cache=True`` keeps the machine code on disk between starts.
    """
    compiled = numba.njit(MODEL_SIGNATURE, cache=True, nogil=True)(fn)
    return cast(ModelFunction, compiled)


def model_helper(fn: _F) -> _F:
    """Compile a scalar helper that model functions call (inlined by LLVM, cached)."""
    return cast(_F, numba.njit(cache=True, nogil=True)(fn))


@dataclass(frozen=True)
class Variable:
    """A declared state or input.

    Attributes:
        name: Identifier, ``[a-z][a-z0-9_]*``; inputs are mapped to signals by this name.
        unit: Unit of the value, as written in the config's signals (e.g. "m", "degC").
        nominal: Nominal value: the nominal initial state, or the nominal input.
        description: One line: what it is physically.
        process_std: States only: how fast the model's error in this state grows, as a
            random walk in units per √s. It is the observer's process noise: it decides
            how much the observer trusts the model against the measurements.
        low: States only: the physical lower bound (the observer clips its estimate).
        high: States only: the physical upper bound.
    """

    name: str
    unit: str
    nominal: float
    description: str
    process_std: float = 0.0
    low: float = -math.inf
    high: float = math.inf


@dataclass(frozen=True)
class Parameter:
    """A declared uncertain parameter: nominal value and one standard deviation.

    The std expresses how far the real plant may be from the nominal value through slow
    drift and small, not yet detected faults; ensembles sample within it.

    Attributes:
        drift_s: None: the parameter is not estimated online (the measured outputs cannot
            tell it apart from another one). Otherwise the observer estimates it, as a
            random walk that moves by one ``std`` in this many seconds.
        low: Physical lower bound; estimates and samples are clipped to it.
        high: Physical upper bound.
    """

    name: str
    unit: str
    nominal: float
    std: float
    description: str
    drift_s: float | None = None
    low: float = -math.inf
    high: float = math.inf


@dataclass(frozen=True)
class Output:
    """A declared output: a quantity the twin predicts, comparable with a signal.

    Attributes:
        noise: One std of the measurement this output is compared with (transmitter noise
            and resolution, plus what the model leaves out at this output), in output
            units. None: the observer does not correct the state from it (e.g. vibration,
            which the model knows only for a healthy machine).
        tolerance: Prediction error, in output units, at which the fidelity score of this
            output falls to 0.5 (see :mod:`gateway.twin.fidelity`). None: not scored.
    """

    name: str
    unit: str
    description: str
    noise: float | None = None
    tolerance: float | None = None


@dataclass(frozen=True)
class TwinModel:
    """A reduced-order process model the integrator can simulate.

    Attributes:
        name: Registry name (``config.twin.model``).
        description: One paragraph: what process, what is and is not modelled.
        states: Declared states, in the order of ``x``.
        inputs: Declared inputs, in the order of ``u``.
        parameters: Declared parameters, in the order of ``p``.
        outputs: Declared outputs, in the order of ``y``.
        rhs: ``rhs(x, u, p, dxdt)`` compiled with :func:`model_function`.
        output_fn: ``output_fn(x, u, p, y)`` compiled with :func:`model_function`.
        initialise: ``initialise(measured, u, p) -> x``: a consistent state from the
            measured outputs (by output name; any may be missing), the inputs and the
            parameters, where the model can do better than overwriting the states that
            share an output's name (e.g. the PLC's loop integrals, which no signal
            carries, follow from the actuators' positions). None: the default.

    Raises:
        ValueError: On construction, for a malformed name, a duplicate name within one
            kind, a non-finite nominal value, a negative or non-finite std, or no states
            or no outputs.
        TypeError: ``rhs`` or ``output_fn`` was not compiled with :func:`model_function`.
    """

    name: str
    description: str
    states: tuple[Variable, ...]
    inputs: tuple[Variable, ...]
    parameters: tuple[Parameter, ...]
    outputs: tuple[Output, ...]
    rhs: ModelFunction = field(repr=False)
    output_fn: ModelFunction = field(repr=False)
    initialise: Initialiser | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"model name {self.name!r} must match {_NAME.pattern}")
        if not self.states:
            raise ValueError(f"model {self.name!r} declares no states")
        if not self.outputs:
            raise ValueError(f"model {self.name!r} declares no outputs")
        kinds: tuple[tuple[str, tuple[Variable | Parameter | Output, ...]], ...] = (
            ("state", self.states),
            ("input", self.inputs),
            ("parameter", self.parameters),
            ("output", self.outputs),
        )
        for kind, declared in kinds:
            seen: set[str] = set()
            for item in declared:
                if not _NAME.match(item.name):
                    raise ValueError(
                        f"model {self.name!r}: {kind} name {item.name!r} must match {_NAME.pattern}"
                    )
                if item.name in seen:
                    raise ValueError(f"model {self.name!r}: duplicate {kind} {item.name!r}")
                seen.add(item.name)
                if isinstance(item, Variable | Parameter) and not math.isfinite(item.nominal):
                    raise ValueError(
                        f"model {self.name!r}: {kind} {item.name!r} nominal {item.nominal!r} "
                        "is not finite"
                    )
                if isinstance(item, Parameter) and not (math.isfinite(item.std) and item.std >= 0):
                    raise ValueError(
                        f"model {self.name!r}: parameter {item.name!r} std {item.std!r} must be "
                        "a finite number >= 0"
                    )
                _check_extras(self.name, kind, item)
        for role in ("rhs", "output_fn"):
            signatures = getattr(getattr(self, role), "nopython_signatures", None)
            if signatures is None or MODEL_SIGNATURE not in signatures:
                raise TypeError(
                    f"model {self.name!r}: {role} must be compiled with "
                    "gateway.twin.model.model_function (signature "
                    f"{MODEL_SIGNATURE}), got {getattr(self, role)!r}"
                )

    # ------------------------------------------------------------------ sizes and names

    @property
    def n_states(self) -> int:
        """Length of ``x``."""
        return len(self.states)

    @property
    def n_inputs(self) -> int:
        """Length of ``u``."""
        return len(self.inputs)

    @property
    def n_parameters(self) -> int:
        """Length of ``p``."""
        return len(self.parameters)

    @property
    def n_outputs(self) -> int:
        """Length of ``y``."""
        return len(self.outputs)

    @property
    def state_names(self) -> tuple[str, ...]:
        """State names in the order of ``x``."""
        return tuple(s.name for s in self.states)

    @property
    def input_names(self) -> tuple[str, ...]:
        """Input names in the order of ``u``."""
        return tuple(i.name for i in self.inputs)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        """Parameter names in the order of ``p``."""
        return tuple(q.name for q in self.parameters)

    @property
    def output_names(self) -> tuple[str, ...]:
        """Output names in the order of ``y``."""
        return tuple(o.name for o in self.outputs)

    def index(self, kind: str, name: str) -> int:
        """Position of ``name`` among the model's ``kind`` ("state", "input", "parameter",
        "output").

        Raises:
            ValueError: Unknown kind, or the model has no such name (the message lists them).
        """
        names = {
            "state": self.state_names,
            "input": self.input_names,
            "parameter": self.parameter_names,
            "output": self.output_names,
        }.get(kind)
        if names is None:
            raise ValueError(f"kind must be state, input, parameter or output, got {kind!r}")
        if name not in names:
            raise ValueError(
                f"the model {self.name!r} has no {kind} {name!r}; it has: {', '.join(names)}"
            )
        return names.index(name)

    # ------------------------------------------------------------------ vectors

    def initial_state(self) -> F64Array:
        """The nominal initial state ``x``, shape ``(n_states,)``."""
        return np.array([s.nominal for s in self.states], dtype=np.float64)

    def input_vector(self, values: Mapping[str, float] | None = None) -> F64Array:
        """``u`` with the nominal inputs, overridden by ``values`` (by input name).

        Raises:
            ValueError: An unknown input name or a non-finite value.
        """
        return self._vector("input", self.inputs, values)

    def parameter_vector(self, values: Mapping[str, float] | None = None) -> F64Array:
        """``p`` with the nominal parameters, overridden by ``values`` (by parameter name).

        Raises:
            ValueError: An unknown parameter name or a non-finite value.
        """
        return self._vector("parameter", self.parameters, values)

    def parameter_std(self) -> F64Array:
        """One standard deviation per parameter, shape ``(n_parameters,)``."""
        return np.array([q.std for q in self.parameters], dtype=np.float64)

    def sample_parameters(
        self, n: int, rng: np.random.Generator, *, truncate: float = 3.0
    ) -> F64Array:
        """``n`` parameter samples, shape ``(n, n_parameters)``; row 0 is the nominal.

        Each parameter is drawn independently from a normal distribution around its
        nominal value, truncated at ``truncate`` std so that no sample is unphysical
        (a negative heat-loss coefficient); keeping the nominal as a member means a
        1-member ensemble is the nominal prediction.

        Raises:
            ValueError: ``n`` < 1 or ``truncate`` <= 0.
        """
        if n < 1:
            raise ValueError(f"need at least one parameter sample, got n={n}")
        if not truncate > 0:
            raise ValueError(f"truncate must be > 0 std, got {truncate}")
        nominal = self.parameter_vector()
        z = np.clip(rng.standard_normal((n, self.n_parameters)), -truncate, truncate)
        samples = nominal + z * self.parameter_std()
        samples[0] = nominal
        return np.ascontiguousarray(samples, dtype=np.float64)

    def with_parameters(self, overrides: Mapping[str, tuple[float, float]]) -> TwinModel:
        """A copy with some parameters' ``(nominal, std)`` replaced (e.g. from config).

        Raises:
            ValueError: An unknown parameter name or an invalid value.
        """
        unknown = sorted(set(overrides) - set(self.parameter_names))
        if unknown:
            raise ValueError(
                f"the model {self.name!r} has no parameter {unknown[0]!r}; it has: "
                f"{', '.join(self.parameter_names)}"
            )
        params = tuple(
            replace(q, nominal=float(overrides[q.name][0]), std=float(overrides[q.name][1]))
            if q.name in overrides
            else q
            for q in self.parameters
        )
        return replace(self, parameters=params)

    # ------------------------------------------------------------------ one evaluation

    def derivative(self, x: npt.ArrayLike, u: npt.ArrayLike, p: npt.ArrayLike) -> F64Array:
        """``dx/dt = f(x, u, p)`` for one point, shape ``(n_states,)`` (for checks and tests)."""
        out = np.empty(self.n_states, dtype=np.float64)
        self.rhs(*self._point(x, u, p), out)
        return out

    def output(self, x: npt.ArrayLike, u: npt.ArrayLike, p: npt.ArrayLike) -> F64Array:
        """``y = g(x, u, p)`` for one point, shape ``(n_outputs,)``."""
        out = np.empty(self.n_outputs, dtype=np.float64)
        self.output_fn(*self._point(x, u, p), out)
        return out

    def _point(
        self, x: npt.ArrayLike, u: npt.ArrayLike, p: npt.ArrayLike
    ) -> tuple[F64Array, F64Array, F64Array]:
        return (
            _vector_arg("x", x, self.n_states),
            _vector_arg("u", u, self.n_inputs),
            _vector_arg("p", p, self.n_parameters),
        )

    def _vector(
        self,
        kind: str,
        declared: Iterable[Variable | Parameter],
        values: Mapping[str, float] | None,
    ) -> F64Array:
        vector = np.array([d.nominal for d in declared], dtype=np.float64)
        for name, value in (values or {}).items():
            position = self.index(kind, name)
            if not math.isfinite(value):
                raise ValueError(f"{kind} {name!r} = {value!r} is not finite")
            vector[position] = value
        return vector


def _check_extras(model: str, kind: str, item: Variable | Parameter | Output) -> None:
    """The observer's and the fidelity score's declarations: positive where given, and
    bounds that contain the nominal value."""
    where = f"model {model!r}: {kind} {item.name!r}"
    positive: list[tuple[str, float | None]] = []
    if isinstance(item, Output):
        positive = [("noise", item.noise), ("tolerance", item.tolerance)]
    elif isinstance(item, Parameter):
        positive = [("drift_s", item.drift_s)]
    for label, value in positive:
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{where} {label} {value!r} must be a finite number > 0 or None")
    if isinstance(item, Variable) and not (
        math.isfinite(item.process_std) and item.process_std >= 0
    ):
        raise ValueError(f"{where} process_std {item.process_std!r} must be finite and >= 0")
    if isinstance(item, Variable | Parameter) and not item.low <= item.nominal <= item.high:
        raise ValueError(
            f"{where} nominal {item.nominal!r} is outside its bounds [{item.low}, {item.high}]"
        )


def _vector_arg(what: str, value: npt.ArrayLike, n: int) -> F64Array:
    array = np.array(value, dtype=np.float64, order="C", copy=True)
    if array.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {array.shape}")
    return array


def _load_skid() -> TwinModel:
    from gateway.twin.skid import skid_model

    return skid_model()


MODELS: dict[str, Callable[[], TwinModel]] = {"skid": _load_skid}
"""Model factories by ``config.twin.model`` name.

Factories import their module lazily, so a model's compilation (or cache load) happens
only when it is selected. Adding a process model = adding one entry here.
"""
