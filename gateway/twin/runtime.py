"""The twin as the daemon runs it: kept in step with the live signals, scored, forecasting.

Once a second :meth:`TwinRuntime.step` (called in a worker thread; every call is cheap but
numba and NumPy must never run on the event loop) does, in this order:

1. builds the model's inputs and measured outputs from the live table through the
   config's ``[twin.inputs]`` / ``[twin.outputs]`` wiring (only good values; a measured
   disturbance may be held for :data:`INPUT_HOLD_S`, a setpoint never: without it the twin
   does not know what the PLC is doing);
2. folds them into the :class:`~gateway.twin.observer.StateObserver`;
3. scores earlier look-ahead predictions against what the plant then did and, every
   :data:`PREDICT_EVERY_S`, records new ones from the current estimate
   (:class:`~gateway.twin.fidelity.FidelityTracker`). A setpoint change voids the pending
   predictions: they were made for setpoints no longer in force, so their errors would
   measure the operator, not the model;
4. every :data:`FORECAST_EVERY_S`, runs the parameter ensemble over the horizon under the
   current setpoints and lists when each safety-envelope bound would be crossed
   (:func:`~gateway.twin.forecast.forecast_crossings`).

It knows nothing about a particular model: the wiring and the model's declarations are
all it uses. Alerts from the forecasts are the detect stage's business (data flows
twin → detect); the runtime only hands the crossings on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import numpy as np

from gateway.config.schema import GatewayConfig, TwinSection
from gateway.signals import SignalValue
from gateway.twin.fidelity import FidelityReport, FidelityTracker
from gateway.twin.forecast import Crossing, forecast_crossings
from gateway.twin.integrate import Simulator
from gateway.twin.model import F64Array, TwinModel
from gateway.twin.observer import ObserverStep, StateObserver

INPUT_HOLD_S: Final = 30.0
"""A measured disturbance (not a setpoint) may be held this long when its signal is not
good: supply and air temperatures move over minutes, and one stale reading should not
stop the twin."""
PREDICT_EVERY_S: Final = 5.0
"""Look-ahead predictions for the fidelity score are recorded this often."""
FORECAST_EVERY_S: Final = 10.0
"""The envelope forecast runs this often (a 32-member, 600 s ensemble takes ~10 ms)."""
FORECAST_RECORD_S: Final = 2.0
"""Resolution of the forecast's crossing times, s."""


@dataclass(frozen=True)
class TwinTick:
    """What one step produced.

    Attributes:
        t: Gateway time of the step.
        observer: The observer's update, None when it could not run (``skipped`` says why).
        fidelity: The fidelity report after this step.
        forecasts: The envelope crossings, when a forecast ran this step (else None).
        skipped: Why the observer did not run, else None.
        cpu_s: Thread CPU time the step took.
        drift: Each estimated parameter's distance from its declared value, in declared
            standard deviations (signed; empty until the estimate is initialised). A
            parameter the estimator moved far means the plant changed in a way the model
            has a name for (a pump delivering less head, a bearing running hotter).
    """

    t: float
    observer: ObserverStep | None
    fidelity: FidelityReport
    forecasts: tuple[Crossing, ...] | None
    skipped: str | None
    cpu_s: float
    drift: Mapping[str, float] = field(default_factory=dict)


@dataclass
class _Held:
    value: float
    at: float


@dataclass
class _Counters:
    steps: int = 0
    skipped: int = 0
    restarts: int = 0
    forecasts: int = 0
    cpu_s: float = 0.0
    last_skip: str | None = None
    clock_steps: int = 0
    last_restart: str | None = None


class TwinRuntime:
    """One model kept in step with the live table; not thread-safe (one worker at a time).

    Args:
        cfg: The validated config; it must have a ``[twin]`` section.
        model: The configured model (``build_twin``'s).
        simulator: Its simulator (``build_twin``'s).
        seed: Seeds the ensemble's parameter samples (default: ``twin.seed``).
        predict_every_s: How often look-ahead predictions are recorded for the fidelity.
        fidelity_min_samples: Scored predictions a (output, look-ahead) pair needs before
            it counts (fewer: fidelity unknown, so not trusted).
    """

    def __init__(
        self,
        cfg: GatewayConfig,
        model: TwinModel,
        simulator: Simulator,
        *,
        seed: int | None = None,
        predict_every_s: float = PREDICT_EVERY_S,
        fidelity_min_samples: int = 10,
    ) -> None:
        if cfg.twin is None:
            raise ValueError("the config has no [twin] section")
        twin: TwinSection = cfg.twin
        self.cfg = cfg
        self.model = model
        self.simulator = simulator
        self.input_signals: dict[str, str] = dict(twin.inputs)
        self.output_signals: dict[str, str] = dict(twin.outputs)
        writable_signals = {w.signal for w in cfg.writable.values()}
        self.setpoints = frozenset(
            name for name, signal in self.input_signals.items() if signal in writable_signals
        )
        self.observer = StateObserver(model, outputs=list(self.output_signals))
        tolerances = {
            o.name: o.tolerance
            for o in model.outputs
            if o.tolerance is not None and o.name in self.output_signals
        }
        self.lookaheads_s = tuple(sorted(twin.lookahead_s))
        self.fidelity = FidelityTracker(
            tolerances,
            self.lookaheads_s,
            twin.fidelity_threshold,
            min_samples=fidelity_min_samples,
        )
        self.predict_every_s = predict_every_s
        signal_to_output = {signal: name for name, signal in self.output_signals.items()}
        self.limits: dict[str, tuple[float | None, float | None]] = {
            signal_to_output[signal]: (bound.low, bound.high)
            for signal, bound in cfg.envelope.items()
            if signal in signal_to_output
        }
        self.units = {o.name: o.unit for o in model.outputs}
        self.ensemble = twin.ensemble
        self.horizon_s = twin.horizon_s
        self.rng = np.random.default_rng(twin.seed if seed is None else seed)
        self._held: dict[str, _Held] = {}
        self._last_setpoints: dict[str, float] | None = None
        self._next_predict = -math.inf
        self._next_forecast = -math.inf
        self._last_forecast: tuple[Crossing, ...] = ()
        self._last_forecast_at: float | None = None
        self._last_fidelity: FidelityReport | None = None
        self._last_now = -math.inf
        self.counters = _Counters()
        self._status: dict[str, Any] = {"model": model.name, "tracking": False}
        self._snapshot: dict[str, Any] | None = None

    # ------------------------------------------------------------------ one step

    def step(self, now: float, snapshot: Mapping[str, SignalValue]) -> TwinTick:
        """Advance the twin to ``now`` with the live table's ``snapshot``."""
        started = time.thread_time()
        tick = self._step(now, snapshot)
        cpu = time.thread_time() - started
        self.counters.cpu_s += cpu
        # Published by reference for readers on other threads (the status loop): they
        # never wait for a step, and never see a half-built document.
        self._status = self._build_status()
        self._snapshot = self.observer.snapshot() if self.observer.initialised else None
        return replace(tick, cpu_s=cpu, drift=self.parameter_drift())

    def _step(self, now: float, snapshot: Mapping[str, SignalValue]) -> TwinTick:
        self.counters.steps += 1
        if now < self._last_now:
            # The wall clock stepped back (NTP on a box without a real-time clock): the
            # pending predictions' due times and the scored window are on the old scale.
            # Start the score afresh (unknown, so not trusted) rather than stop the twin;
            # the observer restarts itself on a step back.
            self.counters.clock_steps += 1
            self.fidelity.reset(f"the clock stepped back from {self._last_now:.3f} to {now:.3f}")
            self._next_predict = self._next_forecast = -math.inf
        self._last_now = now
        measured = {
            output: sv.value
            for output, signal in self.output_signals.items()
            if (sv := snapshot.get(signal)) is not None and sv.usable
        }
        self.fidelity.observe(now, measured)
        u, missing = self._inputs(now, snapshot)
        if u is None:
            self.counters.skipped += 1
            self.counters.last_skip = missing
            report = self.fidelity.report(now)
            self._last_fidelity = report
            return TwinTick(now, None, report, None, missing, 0.0)

        setpoints = {name: float(u[self.model.index("input", name)]) for name in self.setpoints}
        if self._last_setpoints is not None and setpoints != self._last_setpoints:
            changed = sorted(k for k in setpoints if setpoints[k] != self._last_setpoints.get(k))
            self.fidelity.discard_pending(f"setpoint changed: {', '.join(changed)}")
        self._last_setpoints = setpoints

        step = self.observer.update(now, u, measured)
        if step.kind == "initialised":
            self.counters.restarts += 1
            self.counters.last_restart = step.reason
            # Predictions made from the abandoned estimate say nothing about the model.
            self.fidelity.discard_pending(f"observer restarted: {step.reason}")
            self._next_predict = now + self.predict_every_s

        if now >= self._next_predict and self.observer.initialised:
            self._next_predict = now + self.predict_every_s
            self._record_predictions(now, u)

        forecasts: tuple[Crossing, ...] | None = None
        if now >= self._next_forecast and self.observer.initialised:
            self._next_forecast = now + FORECAST_EVERY_S
            forecasts = self._forecast(u)
            self._last_forecast = forecasts
            self._last_forecast_at = now
            self.counters.forecasts += 1
        report = self.fidelity.report(now)
        self._last_fidelity = report
        return TwinTick(now, step, report, forecasts, None, 0.0)

    def _inputs(
        self, now: float, snapshot: Mapping[str, SignalValue]
    ) -> tuple[F64Array | None, str | None]:
        u = self.model.input_vector()
        missing: list[str] = []
        for name, signal in self.input_signals.items():
            sv = snapshot.get(signal)
            i = self.model.index("input", name)
            if sv is not None and sv.usable:
                u[i] = sv.value
                self._held[name] = _Held(sv.value, now)
                continue
            held = self._held.get(name)
            if name not in self.setpoints and held is not None and now - held.at <= INPUT_HOLD_S:
                u[i] = held.value
                continue
            quality = "missing" if sv is None else str(sv.quality)
            missing.append(f"{signal} ({quality})")
        if missing:
            return None, "inputs not good: " + ", ".join(missing)
        return u, None

    def _record_predictions(self, now: float, u: F64Array) -> None:
        dt = self.simulator.dt_s
        horizon = max(self.lookaheads_s)
        steps = [round(la / dt) for la in self.lookaheads_s]
        traj = self.simulator.simulate(
            self.observer.state,
            u[None, None, :],
            self.observer.parameters[None, :],
            horizon_s=horizon,
        )
        names = self.model.output_names
        predictions = {
            la: {
                name: float(traj.outputs[0, 0, k, j])
                for j, name in enumerate(names)
                if name in self.fidelity.tolerances
            }
            for la, k in zip(self.lookaheads_s, steps, strict=True)
        }
        self.fidelity.record(now, predictions)

    def _forecast(self, u: F64Array) -> tuple[Crossing, ...]:
        if not self.limits:
            return ()
        traj = self.simulate(u, self.ensemble, self.horizon_s)
        return tuple(forecast_crossings(traj, self.limits, self.units))

    def simulate(self, u: F64Array, members: int, horizon_s: float) -> Any:
        """The ensemble from the current estimate under constant inputs ``u``, recorded
        every :data:`FORECAST_RECORD_S` (or the nearest step count that divides the
        horizon)."""
        params = self.observer.parameter_samples(members, self.rng)
        n_steps = round(horizon_s / self.simulator.dt_s)
        every = record_every(n_steps, self.simulator.dt_s, FORECAST_RECORD_S)
        return self.simulator.simulate(
            self.observer.state, u[None, None, :], params, horizon_s=horizon_s, record_every=every
        )

    # ------------------------------------------------------------------ for the status page

    def status(self) -> dict[str, Any]:
        """JSON-able state of the twin after the last step (for ``status.json``); safe
        to call from another thread while a step runs."""
        return self._status

    def snapshot(self) -> dict[str, Any] | None:
        """The observer's estimate after the last step (for ``edgetwin simulate``), None
        before the first one; safe to call from another thread."""
        return self._snapshot

    def parameter_drift(self) -> dict[str, float]:
        """Each estimated parameter's ``(estimate − declared) / declared std``; empty while
        the estimate is not initialised. Declared = the model's nominal value after the
        config's overrides, i.e. what the plant was commissioned as."""
        obs = self.observer
        if not obs.initialised:
            return {}
        estimate = obs.parameters
        return {
            q.name: float((estimate[i] - q.nominal) / q.std)
            for i, q in enumerate(self.model.parameters)
            if q.name in obs.estimated and q.std > 0
        }

    def residual_features(self) -> dict[str, float]:
        """The twin's residuals as features for an anomaly model that declares them as
        external: ``twin_fidelity`` (the overall score) and ``twin_nrmse_<output>`` (the
        RMS error of the longest look-ahead, in tolerances). Only known values are given;
        a model that needs a missing one scores "no score" for that window."""
        report = self._last_fidelity
        if report is None:
            return {}
        out: dict[str, float] = {}
        if report.score is not None:
            out["twin_fidelity"] = report.score
        longest = max(self.lookaheads_s)
        for name, by_lookahead in report.nrmse.items():
            value = by_lookahead.get(longest)
            if value is not None:
                out[f"twin_nrmse_{name}"] = value
        return out

    def _build_status(self) -> dict[str, Any]:
        obs = self.observer
        fidelity = self._last_fidelity
        out: dict[str, Any] = {
            "model": self.model.name,
            "tracking": obs.initialised,
            "steps": self.counters.steps,
            "skipped": self.counters.skipped,
            "last_skip": self.counters.last_skip,
            "restarts": self.counters.restarts,
            "clock_steps_back": self.counters.clock_steps,
            "last_restart": self.counters.last_restart,
            "cpu_ms_per_step": round(1000.0 * self.counters.cpu_s / max(1, self.counters.steps), 3),
            "fidelity": None if fidelity is None else fidelity.to_dict(),
            "forecast_at": self._last_forecast_at,
            "forecasts": [c.to_record() for c in self._last_forecast],
        }
        if obs.initialised:
            std = obs.parameter_std()
            params = obs.parameters
            out["parameters"] = {
                q.name: {
                    "value": round(float(params[i]), 6),
                    "std": round(float(std[i]), 6),
                    "unit": q.unit,
                    "estimated": q.name in obs.estimated,
                }
                for i, q in enumerate(self.model.parameters)
            }
        return out


def record_every(n_steps: int, dt_s: float, wanted_s: float) -> int:
    """The divisor of ``n_steps`` closest to ``wanted_s / dt_s`` steps (at least 1)."""
    target = max(1, round(wanted_s / dt_s))
    divisors = [d for d in range(1, n_steps + 1) if n_steps % d == 0]
    return min(divisors, key=lambda d: (abs(d - target), d))
