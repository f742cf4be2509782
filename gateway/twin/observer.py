"""Keeping the twin in step with the plant: state and parameter estimation from live signals.

An extended Kalman filter on the model's state augmented with the parameters the model
declares as estimable (``Parameter.drift_s``), as random walks. Why this filter:

* The states no signal carries (the PLC's PV filters and loop integrals in the skid) are
  corrected through the model's dynamics from the ones that are measured; a plain
  overwrite would leave them wherever the last guess put them.
* Estimating the parameters in the same filter gives them a covariance for free, and
  that covariance is what the ensemble samples (:meth:`StateObserver.parameter_samples`),
  so the gate's ensemble widens when the data cannot pin a coefficient down.
* It is generic: the model's compiled rhs and outputs, its declared noises and bounds are
  all it needs. Adding a process model does not touch this file.

The prediction step runs the model through the ensemble integrator (one kernel call
propagates the estimate and its finite-difference perturbations together, so the
Jacobian is that of the same RK4 map the gate uses); the update uses the outputs whose
measurement is good and whose ``Output.noise`` is declared. Each call costs well under a
millisecond; the daemon still calls it off the event loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from gateway.twin.integrate import Simulator
from gateway.twin.model import F64Array, TwinModel

MAX_SUBSTEP_S: Final = 0.5
"""Longest RK4 step of the prediction (the model's fastest dynamics are ~1 s)."""
DEFAULT_MAX_GAP_S: Final = 10.0
"""After a gap in the data longer than this the estimate is started again from the
measurements: propagating blind over minutes and then correcting would give a wrong state
a large, confident covariance."""
INNOVATION_GATE: Final = 50.0
"""A measurement this many predicted std away from the estimate is not folded in: one
wildly wrong reading (a scaling error, a transmitter gone mad) must not drag the state or
the parameters across their range. Repeated for :data:`GATE_RESTART_AFTER` updates, the
estimate is the one that is wrong, and it is started again from the measurements."""
GATE_RESTART_AFTER: Final = 5
PARAMETER_STD_FLOOR: Final = 0.5
"""Ensemble samples of an estimated parameter never use less than this fraction of its
declared std: the filter's covariance says how well the *model's* coefficient fits the
recent data, not how far the plant may move before the next estimate."""


@dataclass(frozen=True)
class ObserverStep:
    """What one update did.

    Attributes:
        t: Time of the measurements, s.
        kind: "initialised" (the estimate was (re)started from the measurements, with
            ``reason``) or "updated".
        reason: Why the estimate was (re)started, else None.
        used: Outputs that corrected the estimate.
        rejected: Outputs whose measurement failed the innovation gate.
        innovation: Per used output, measured minus predicted, in output units.
        normalised: Per used output, the innovation divided by its predicted std: about
            N(0, 1) while the model explains the plant.
    """

    t: float
    kind: str
    reason: str | None
    used: tuple[str, ...]
    innovation: Mapping[str, float]
    normalised: Mapping[str, float]
    rejected: tuple[str, ...] = ()


class StateObserver:
    """Extended Kalman filter over the model's state and its estimable parameters.

    Not thread-safe: one caller (the twin's worker) at a time.

    Args:
        model: The model (with the config's parameter overrides).
        outputs: The outputs that have a signal (from ``[twin.outputs]``); only those with a
            declared ``noise`` correct the estimate.
        max_gap_s: Restart from the measurements after a gap longer than this.
    """

    def __init__(
        self,
        model: TwinModel,
        *,
        outputs: Sequence[str] | None = None,
        max_gap_s: float = DEFAULT_MAX_GAP_S,
    ) -> None:
        self.model = model
        wanted = set(model.output_names if outputs is None else outputs)
        self._used = tuple(
            i for i, o in enumerate(model.outputs) if o.noise is not None and o.name in wanted
        )
        self._noise = np.array(
            [model.outputs[i].noise or 0.0 for i in range(model.n_outputs)], dtype=np.float64
        )
        self._estimated = tuple(i for i, q in enumerate(model.parameters) if q.drift_s is not None)
        self.max_gap_s = max_gap_s
        self._simulator = Simulator(model, dt_s=MAX_SUBSTEP_S, horizon_s=MAX_SUBSTEP_S)
        n, q = model.n_states, len(self._estimated)
        self._n, self._q = n, q
        self._state_low = np.array([s.low for s in model.states])
        self._state_high = np.array([s.high for s in model.states])
        self._state_q = np.array([s.process_std**2 for s in model.states])
        est = [model.parameters[j] for j in self._estimated]
        self._theta_low = np.array([p.low for p in est])
        self._theta_high = np.array([p.high for p in est])
        self._theta_q = np.array([p.std**2 / (p.drift_s or 1.0) for p in est])
        self._theta_prior = np.array([p.std**2 for p in est])
        self._p = model.parameter_vector()
        self._z: F64Array | None = None
        self._cov = np.zeros((n + q, n + q))
        self._t: float | None = None
        self._u: F64Array | None = None
        self.updates = 0
        self.restarts = 0
        self._gated_run = 0

    # ------------------------------------------------------------------ what it knows

    @property
    def initialised(self) -> bool:
        """True once an estimate exists."""
        return self._z is not None

    @property
    def time(self) -> float | None:
        """Time of the last measurement folded in, s."""
        return self._t

    @property
    def state(self) -> F64Array:
        """The estimated state ``x`` (a copy).

        Raises:
            RuntimeError: No estimate yet.
        """
        return self._require()[: self._n].copy()

    @property
    def inputs(self) -> F64Array:
        """The inputs in force at the last update (a copy).

        Raises:
            RuntimeError: No estimate yet.
        """
        self._require()
        assert self._u is not None
        return self._u.copy()

    @property
    def parameters(self) -> F64Array:
        """The full parameter vector with the current estimates put in (a copy)."""
        p = self._p.copy()
        if self._z is not None:
            p[list(self._estimated)] = self._z[self._n :]
        return p

    @property
    def estimated(self) -> tuple[str, ...]:
        """Names of the parameters estimated online."""
        return tuple(self.model.parameters[j].name for j in self._estimated)

    def parameter_std(self) -> F64Array:
        """One std per parameter: the filter's for the estimated ones, the declared one
        for the others."""
        std = self.model.parameter_std()
        if self._z is not None and self._q:
            diag = np.diag(self._cov)[self._n :]
            std[list(self._estimated)] = np.sqrt(np.maximum(diag, 0.0))
        return std

    def state_std(self) -> F64Array:
        """One std per state, from the filter's covariance (zeros before the first estimate)."""
        return np.sqrt(np.maximum(np.diag(self._cov)[: self._n], 0.0))

    def predicted_outputs(self) -> F64Array:
        """The model's outputs at the estimate (what the twin says the plant shows now)."""
        z = self._require()
        assert self._u is not None
        return self.model.output(z[: self._n], self._u, self.parameters)

    def parameter_samples(self, n: int, rng: np.random.Generator) -> F64Array:
        """``n`` parameter vectors for the ensemble, shape ``(n, n_parameters)``.

        Row 0 is the current estimate. The estimated parameters are drawn jointly from the
        filter's covariance, each std floored at :data:`PARAMETER_STD_FLOOR` of the declared
        one; the others independently from their declared std. Draws are truncated at 3 std
        and clipped to the parameters' physical bounds.

        Raises:
            ValueError: ``n`` < 1.
        """
        if n < 1:
            raise ValueError(f"need at least one parameter sample, got n={n}")
        model = self.model
        mean = self.parameters
        z = np.clip(rng.standard_normal((n, model.n_parameters)), -3.0, 3.0)
        samples = mean + z * model.parameter_std()
        if self._z is not None and self._q:
            est = list(self._estimated)
            cov = self._cov[self._n :, self._n :].copy()
            declared = model.parameter_std()[est]
            std = np.sqrt(np.maximum(np.diag(cov), 0.0))
            scale = np.maximum(std, PARAMETER_STD_FLOOR * declared) / np.maximum(std, 1e-300)
            cov = cov * np.outer(scale, scale)
            chol = _safe_cholesky(cov)
            draws = np.clip(rng.standard_normal((n, self._q)), -3.0, 3.0) @ chol.T
            samples[:, est] = mean[est] + draws
        samples[0] = mean
        low = np.array([q.low for q in model.parameters])
        high = np.array([q.high for q in model.parameters])
        return np.ascontiguousarray(np.clip(samples, low, high))

    # ------------------------------------------------------------------ the filter

    def reset(self) -> None:
        """Forget the estimate; the next update starts again from the measurements."""
        self._z = None
        self._t = None

    def update(self, t: float, u: F64Array, measured: Mapping[str, float]) -> ObserverStep:
        """Fold in the measurements taken at time ``t``.

        Args:
            t: Time of the measurements, s (monotonic within one run).
            u: The inputs in force now, shape ``(n_inputs,)``, all finite.
            measured: Good measurements by output name; missing outputs are simply not
                used (a stale or bad signal never corrects the estimate).

        Raises:
            ValueError: ``u`` has the wrong shape or is not finite.
        """
        u = np.array(u, dtype=np.float64)
        if u.shape != (self.model.n_inputs,) or not np.isfinite(u).all():
            raise ValueError(
                f"u must be {self.model.n_inputs} finite inputs "
                f"({', '.join(self.model.input_names)}), got {u!r}"
            )
        values = {k: float(v) for k, v in measured.items() if v is not None and math.isfinite(v)}
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return self._update(t, u, values)

    def _update(self, t: float, u: F64Array, values: Mapping[str, float]) -> ObserverStep:
        reason = self._restart_reason(t)
        if reason is None:
            assert self._t is not None
            # The inputs read now were (almost always) written during the interval, and
            # the plant responded to them within it: propagating with the old ones would
            # make the filter explain the response by moving an unmeasured state.
            self._u = u
            try:
                self._predict(t - self._t)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError) as err:
                reason = f"the prediction failed: {err}"
        if reason is not None:
            self._start(t, u, values)
            return ObserverStep(t, "initialised", reason, (), {}, {})
        self._t = t
        self._u = u
        try:
            step = self._correct(t, values)
        except (np.linalg.LinAlgError, FloatingPointError, ValueError) as err:
            self._start(t, u, values)
            return ObserverStep(t, "initialised", f"the correction failed: {err}", (), {}, {})
        self._gated_run = self._gated_run + 1 if step.rejected else 0
        if self._gated_run >= GATE_RESTART_AFTER:
            self._start(t, u, values)
            reason = (
                f"{', '.join(step.rejected)} failed the innovation gate "
                f"{GATE_RESTART_AFTER} times in a row"
            )
            return ObserverStep(t, "initialised", reason, (), {}, {}, step.rejected)
        return step

    def _restart_reason(self, t: float) -> str | None:
        if self._z is None or self._t is None:
            return "first measurements"
        if t <= self._t:
            return f"time went back from {self._t:.3f} to {t:.3f}"
        if t - self._t > self.max_gap_s:
            return f"{t - self._t:.1f} s without an update (limit {self.max_gap_s:g} s)"
        return None

    def _start(self, t: float, u: F64Array, values: Mapping[str, float]) -> None:
        model = self.model
        p = self._p.copy()
        if model.initialise is not None:
            x = np.asarray(model.initialise(values, u, p), dtype=np.float64)
        else:
            x = model.initial_state()
            for i, name in enumerate(model.state_names):
                if name in values and name in model.output_names:
                    x[i] = values[name]
        x = np.clip(x, self._state_low, self._state_high)
        theta = p[list(self._estimated)]
        self._z = np.concatenate([x, theta])
        # A minute's worth of model error on the states, the declared spread on the
        # parameters: the first minutes of data then move both.
        self._cov = np.diag(np.concatenate([self._state_q * 60.0 + 1e-12, self._theta_prior]))
        self._t = t
        self._u = u
        self._gated_run = 0
        self.restarts += 1

    def _predict(self, elapsed: float) -> None:
        z = self._require()
        assert self._u is not None
        n, q = self._n, self._q
        steps = max(1, math.ceil(elapsed / MAX_SUBSTEP_S - 1e-9))
        dt = elapsed / steps
        scale = np.maximum(np.abs(z), 1e-3)
        eps = 1e-6 * scale
        members = 1 + n + q
        x0 = np.tile(z[:n], (members, 1))
        params = np.tile(self.parameters, (members, 1))
        for i in range(n):
            x0[1 + i, i] += eps[i]
        for k, j in enumerate(self._estimated):
            params[1 + n + k, j] += eps[n + k]
        env = self._simulator.envelope(
            x0, self._u[None, None, :], params, horizon_s=steps * dt, dt_s=dt
        )
        final = env.final_states[0]
        if not np.isfinite(final).all():
            raise FloatingPointError("the model's state stopped being finite")
        jac = np.eye(n + q)
        jac[:n, :] = ((final[1:] - final[0]) / eps[:, None]).T
        process = np.concatenate([self._state_q, self._theta_q]) * elapsed
        self._cov = jac @ self._cov @ jac.T + np.diag(process)
        z[:n] = final[0]
        self._clip(z)

    def _correct(self, t: float, values: Mapping[str, float]) -> ObserverStep:
        z = self._require()
        assert self._u is not None
        model = self.model
        used = [i for i in self._used if model.outputs[i].name in values]
        if not used:
            self.updates += 1
            return ObserverStep(t, "updated", None, (), {}, {})
        n, q = self._n, self._q
        y_meas = np.array([values[model.outputs[i].name] for i in used])
        h0 = self._outputs(z)
        scale = np.maximum(np.abs(z), 1e-3)
        eps = 1e-6 * scale
        h = np.empty((len(used), n + q))
        for col in range(n + q):
            zp = z.copy()
            zp[col] += eps[col]
            h[:, col] = (self._outputs(zp)[used] - h0[used]) / eps[col]
        r = np.diag(self._noise[used] ** 2)
        innovation = y_meas - h0[used]
        s = h @ self._cov @ h.T + r
        sd = np.sqrt(np.diag(s))
        normalised = innovation / sd
        keep = np.abs(normalised) <= INNOVATION_GATE
        rejected = tuple(model.outputs[i].name for i, k in zip(used, keep, strict=True) if not k)
        if not keep.all():
            used = [i for i, k in zip(used, keep, strict=True) if k]
            h, r, innovation, normalised = (
                h[keep],
                r[np.ix_(keep, keep)],
                innovation[keep],
                normalised[keep],
            )
            s = s[np.ix_(keep, keep)]
        if used:
            gain = np.linalg.solve(s, h @ self._cov).T
            z += gain @ innovation
            i_kh = np.eye(n + q) - gain @ h
            self._cov = i_kh @ self._cov @ i_kh.T + gain @ r @ gain.T
            self._cov = 0.5 * (self._cov + self._cov.T)
            self._clip(z)
        if not (np.isfinite(z).all() and np.isfinite(self._cov).all()):
            raise FloatingPointError("the estimate stopped being finite")
        self.updates += 1
        names = tuple(model.outputs[i].name for i in used)
        return ObserverStep(
            t,
            "updated",
            None,
            names,
            {name: float(v) for name, v in zip(names, innovation, strict=True)},
            {name: float(v) for name, v in zip(names, normalised, strict=True)},
            rejected,
        )

    def _outputs(self, z: F64Array) -> F64Array:
        assert self._u is not None
        p = self._p.copy()
        p[list(self._estimated)] = z[self._n :]
        return self.model.output(z[: self._n], self._u, p)

    def _clip(self, z: F64Array) -> None:
        np.clip(z[: self._n], self._state_low, self._state_high, out=z[: self._n])
        if self._q:
            np.clip(z[self._n :], self._theta_low, self._theta_high, out=z[self._n :])

    def _require(self) -> F64Array:
        if self._z is None:
            raise RuntimeError("the observer has no estimate yet: call update() first")
        return self._z

    # ------------------------------------------------------------------ persistence

    def snapshot(self) -> dict[str, Any]:
        """The estimate as JSON-able data (for the status page and ``edgetwin simulate``).

        Raises:
            RuntimeError: No estimate yet.
        """
        z = self._require()
        model = self.model
        state_std = self.state_std()
        param_std = self.parameter_std()
        params = self.parameters
        return {
            "model": model.name,
            "t": self._t,
            "state": {name: float(z[i]) for i, name in enumerate(model.state_names)},
            "state_std": {name: float(state_std[i]) for i, name in enumerate(model.state_names)},
            "inputs": {
                name: float(v) for name, v in zip(model.input_names, self.inputs, strict=True)
            },
            "parameters": {name: float(params[i]) for i, name in enumerate(model.parameter_names)},
            "parameter_std": {
                name: float(param_std[i]) for i, name in enumerate(model.parameter_names)
            },
            "estimated": list(self.estimated),
        }


def _safe_cholesky(cov: F64Array) -> F64Array:
    """Cholesky factor of a covariance that rounding may have left slightly indefinite."""
    cov = 0.5 * (cov + cov.T)
    jitter = 1e-12 * max(1.0, float(np.max(np.abs(np.diag(cov)))))
    for _ in range(8):
        try:
            return np.asarray(np.linalg.cholesky(cov + jitter * np.eye(len(cov))), dtype=np.float64)
        except np.linalg.LinAlgError:
            jitter *= 100.0
    return np.diag(np.sqrt(np.maximum(np.diag(cov), 0.0)))
