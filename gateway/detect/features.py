"""Anomaly features from a rolling window of signal samples: pure, shared by training and serving.

``models/build_anomaly_model.py`` (training) and the gateway (serving) run exactly these
functions, so the features a model was fitted on and the features it scores cannot skew.
Nothing here reads a clock, does I/O or logs; time comes from the samples.

A feature is computed in two steps:

1. :func:`window_terms`: calibration-free statistics of one window of 1 s samples, each
   a mean of a physically motivated per-sample term (the ``target``, e.g. the mean
   discharge pressure) and the terms it is expected to follow in normal operation (the
   ``regressors``, e.g. the mean of speed² and flow² for the pump curve).
2. :func:`apply_calibration`: the feature is the residual ``target − (c0 + Σ ci·ri)``
   with coefficients fitted on normal-operation data by the build script and shipped in
   the model's metadata. The relations are linear in the coefficients, so a mean of
   per-sample residuals equals the residual of the means, and fitting is least squares.
   Features with no regressors (valve tracking, flatline) are the target itself.

So every feature is a named residual that is ~0 (or small) in normal operation and has a
physical sign. Residuals computed elsewhere (the twin's prediction errors) are simply more
named features: a model's metadata may declare names that are not in :data:`FEATURES`,
and the caller supplies them (see :class:`gateway.detect.detector.Detector`).

Data quality rule: a window is used only if every sample of every signal the features
need is present, good and finite, and the samples are evenly spaced. One bad or missing
sample, or a gap in time, empties the window; features return only after a full window
of good samples has been collected again. A model never scores garbage.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from gateway.signals import SignalValue

FloatArray = npt.NDArray[np.float64]

RHO_CP_J_PER_M3K: Final = 1000.0 * 4186.0
"""Volumetric heat capacity of water, J/(m³·K): scales the inflow enthalpy and tank
heat-capacity terms to kW (the fit absorbs a different liquid's value)."""


@dataclass(frozen=True)
class WindowConfig:
    """How samples are windowed.

    Attributes:
        period_s: Expected sample period, s. Consecutive samples further apart than
            ``max_gap_factor·period_s`` start a new window (a gap is missing data).
        length: Samples per window (the full span used by the balances). Also how long
            detection stays blind after missing or bad data: a new window must fill.
        hop: A window falls due every ``hop`` samples.
        short: The newest ``short`` samples, for the algebraic (instantaneous) residuals.
        edge: Samples averaged at each end of the window to estimate slopes (dLevel/dt,
            dT/dt) without the noise of two single samples.
        bearing_tau_s: Thermal time constant the bearing temperature follows speed with
            (the pump's datasheet; 60 s on the reference skid).
        max_gap_factor: See ``period_s``.
    """

    period_s: float = 1.0
    length: int = 300
    hop: int = 10
    short: int = 30
    edge: int = 10
    bearing_tau_s: float = 60.0
    max_gap_factor: float = 1.5

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            problems.append(f"period_s must be > 0, got {self.period_s}")
        if self.length < 4:
            problems.append(f"length must be >= 4 samples, got {self.length}")
        if not 1 <= self.hop <= self.length:
            problems.append(f"hop must be within [1, length], got {self.hop}")
        if not 2 <= self.short <= self.length:
            problems.append(f"short must be within [2, length], got {self.short}")
        if not 1 <= self.edge <= self.length // 2:
            problems.append(f"edge must be within [1, length/2], got {self.edge}")
        if not (math.isfinite(self.bearing_tau_s) and self.bearing_tau_s > 0):
            problems.append(f"bearing_tau_s must be > 0, got {self.bearing_tau_s}")
        if not (math.isfinite(self.max_gap_factor) and self.max_gap_factor > 1):
            problems.append(f"max_gap_factor must be > 1, got {self.max_gap_factor}")
        if problems:
            raise ValueError("invalid window config: " + "; ".join(problems))


@dataclass(frozen=True)
class Window:
    """One full window: sample times (s, oldest first) and each signal's samples."""

    t: FloatArray
    x: Mapping[str, FloatArray]
    config: WindowConfig

    def short(self, name: str) -> FloatArray:
        """The newest ``config.short`` samples of ``name``."""
        return self.x[name][-self.config.short :]

    def head(self, name: str) -> float:
        """Mean of the oldest ``config.edge`` samples of ``name``."""
        return float(self.x[name][: self.config.edge].mean())

    def tail(self, name: str) -> float:
        """Mean of the newest ``config.edge`` samples of ``name``."""
        return float(self.x[name][-self.config.edge :].mean())

    @property
    def span_s(self) -> float:
        """Time between the centres of the head and tail edges, s."""
        e = self.config.edge
        return float(self.t[-e:].mean() - self.t[:e].mean())

    def inner(self, values: FloatArray) -> FloatArray:
        """The samples between the head and tail edge centres: the span a
        ``(tail − head)/span_s`` slope covers, so balances compare like with like."""
        half = self.config.edge // 2
        return values[half : len(values) - half]

    def slope(self, name: str) -> float:
        """d(name)/dt per second, between the head and tail edge means."""
        return (self.tail(name) - self.head(name)) / self.span_s


@dataclass(frozen=True)
class Terms:
    """Calibration-free statistics of one feature over one window."""

    target: float
    regressors: tuple[float, ...] = ()


class FeatureUndefined(ValueError):
    """The feature has no meaning in this window (e.g. the outlet valve is shut)."""


@dataclass(frozen=True)
class FeatureSpec:
    """One feature of the catalogue.

    Attributes:
        name: Feature name, the key in :data:`FEATURES` and in a model's metadata.
        unit: Unit of the feature value.
        signals: Signal roles (plant point names) the feature reads.
        regressors: Names of the regressor terms, in coefficient order after the
            intercept. Empty: the feature is its target and needs no calibration.
        description: What the feature is and what moves it, for the model card and logs.
        terms: Computes the window statistics; raises :class:`FeatureUndefined`.
    """

    name: str
    unit: str
    signals: tuple[str, ...]
    regressors: tuple[str, ...]
    description: str
    terms: Callable[[Window], Terms] = field(repr=False, compare=False)

    @property
    def calibrated(self) -> bool:
        """Whether the feature needs coefficients (intercept + one per regressor)."""
        return bool(self.regressors)

    @property
    def n_coefficients(self) -> int:
        return len(self.regressors) + 1 if self.regressors else 0


# ---------------------------------------------------------------------------- term functions


def _krpm(rpm: FloatArray) -> FloatArray:
    return rpm / 1000.0


def _vibration(w: Window) -> Terms:
    vib = w.short("vibration_rms")
    krpm = _krpm(w.short("pump_speed"))
    return Terms(float(vib.mean()), (float(krpm.mean()),))


def _bearing(w: Window) -> Terms:
    # The bearing's rise over ambient relaxes towards k·speed with time constant tau:
    #   rise(end) = a·rise(start) + k·Σ (1 − e^(−dt/tau))·e^(−(end − t_i)/tau)·speed_i
    # with a = e^(−span/tau). Starting from the measured rise makes the expectation exact
    # through speed transients; a degraded bearing's higher equilibrium leaves a residual.
    tau = w.config.bearing_tau_s
    a = math.exp(-w.span_s / tau)
    rise_start = w.head("bearing_temp") - w.head("ambient_temp")
    rise_end = w.tail("bearing_temp") - w.tail("ambient_temp")
    t = w.inner(w.t)
    krpm = _krpm(w.inner(w.x["pump_speed"]))
    gain = (1.0 - math.exp(-w.config.period_s / tau)) * np.exp((t - t[-1]) / tau)
    return Terms(rise_end - a * rise_start, (float(np.dot(gain, krpm)),))


_NO_LOAD_KRPM: Final = 0.15
"""The drive's no-load (magnetising) current builds up with speed to here (V/f ramp)."""


def _motor_current(w: Window) -> Terms:
    # Current = no-load current while the drive runs + a·shaft power, with shaft power
    # = hydraulic power / efficiency + churn (∝ speed³) + bearing friction (∝ speed).
    current = w.short("motor_current")
    krpm = _krpm(w.short("pump_speed"))
    hydraulic = w.short("pump_flow") * w.short("discharge_pressure")  # ∝ hydraulic power
    running = np.minimum(krpm / _NO_LOAD_KRPM, 1.0)
    return Terms(
        float(current.mean()),
        (
            float(running.mean()),
            float(krpm.mean()),
            float(hydraulic.mean()),
            float((krpm**3).mean()),
        ),
    )


def _pump_head(w: Window) -> Terms:
    # Centrifugal pump curve: head = a·speed² − b·flow² (+ suction offset).
    dp = w.short("discharge_pressure")
    krpm = _krpm(w.short("pump_speed"))
    flow = w.short("pump_flow")
    return Terms(float(dp.mean()), (float((krpm**2).mean()), float((flow**2).mean())))


_MIN_VALVE_FLOW_M3H: Final = 0.5
_MIN_VALVE_POS_PCT: Final = 10.0


def _valve_flow(w: Window) -> Terms:
    # Equal-percentage valve: ln Q = ln Cv + (x − 1)·ln R + ½·ln Δp, with Δp rising with
    # the level; linear in (x, level) over the normal operating range.
    flow = w.short("outlet_flow")
    pos = w.short("valve_position")
    if float(flow.min()) < _MIN_VALVE_FLOW_M3H or float(pos.min()) < _MIN_VALVE_POS_PCT:
        raise FeatureUndefined(
            f"outlet valve nearly shut (flow < {_MIN_VALVE_FLOW_M3H} m3/h or "
            f"position < {_MIN_VALVE_POS_PCT} %): the valve-curve residual is undefined"
        )
    level = w.short("tank_level")
    return Terms(float(np.log(flow).mean()), (float(pos.mean()), float(level.mean())))


def _valve_tracking(w: Window) -> Terms:
    # The median ignores the positioner's normal ~2 s lag after a command step; a valve
    # that sticks stays off its command for the whole window.
    gap = np.abs(w.short("valve_position") - w.short("valve_cmd"))
    return Terms(float(np.median(gap)))


def _mass_balance(w: Window) -> Terms:
    # Inflow − outflow must equal area·dLevel/dt. Unmetered outflow (a leak) makes the
    # residual positive; a level reading that drifts up while the loop holds it on the
    # setpoint makes it negative (the true level falls, the reading does not).
    net = w.inner(w.x["pump_flow"] - w.x["outlet_flow"])
    dlevel_m_per_h = w.slope("tank_level") * 3600.0
    return Terms(float(net.mean()), (dlevel_m_per_h,))


def _heater(w: Window) -> Terms:
    # Energy balance of the well-mixed tank: heater power = heat carried by the inflow
    # + wall loss UA(level)·(T − T_amb) + heat capacity·dT/dt (− pump heat, in c0).
    temp = w.inner(w.x["tank_temp"])
    level = w.inner(w.x["tank_level"])
    flow = w.inner(w.x["pump_flow"])
    inflow_kw = RHO_CP_J_PER_M3K * flow / 3600.0 * (temp - w.inner(w.x["inlet_temp"])) / 1e3
    over_ambient = temp - w.inner(w.x["ambient_temp"])
    storage_kw = RHO_CP_J_PER_M3K * float(level.mean()) * w.slope("tank_temp") / 1e3
    return Terms(
        float(w.inner(w.x["heater_power"]).mean()),
        (
            float(inflow_kw.mean()),
            float(over_ambient.mean()),
            float((over_ambient * level).mean()),
            storage_kw,
        ),
    )


_FLATLINE_SIGNALS: Final = ("tank_level", "outlet_flow", "discharge_pressure", "vibration_rms")
"""Transmitters whose noise exceeds their quantum in every normal state, including a
stopped pump (its flow and current then read a flat, clipped 0)."""


def _flatline(w: Window) -> Terms:
    # Live transmitters are noisier than their quantum, so consecutive equal readings are
    # uncommon; a hung I/O module repeats the last value while still reporting "good".
    repeats = [float(np.mean(np.diff(w.short(name)) == 0.0)) for name in _FLATLINE_SIGNALS]
    return Terms(float(np.mean(repeats)))


# ---------------------------------------------------------------------------- catalogue

_SPECS: Final = (
    FeatureSpec(
        name="vibration_excess",
        unit="mm/s",
        signals=("vibration_rms", "pump_speed"),
        regressors=("speed_krpm",),
        description="Vibration RMS above its normal value at this speed (bearing damage, "
        "impeller imbalance).",
        terms=_vibration,
    ),
    FeatureSpec(
        name="bearing_temp_excess",
        unit="K",
        signals=("bearing_temp", "ambient_temp", "pump_speed"),
        regressors=("speed_krpm_lagged",),
        description="Bearing temperature rise over ambient at the window's end minus the "
        "rise a first-order thermal model predicts from its start and the speed in between "
        "(bearing friction).",
        terms=_bearing,
    ),
    FeatureSpec(
        name="motor_current_residual",
        unit="A",
        signals=("motor_current", "pump_speed", "pump_flow", "discharge_pressure"),
        regressors=("running", "speed_krpm", "flow_x_pressure", "speed_krpm_cubed"),
        description="Motor current above what the pump's hydraulic duty and speed need "
        "(efficiency loss, friction).",
        terms=_motor_current,
    ),
    FeatureSpec(
        name="pump_head_residual",
        unit="bar",
        signals=("discharge_pressure", "pump_speed", "pump_flow"),
        regressors=("speed_krpm_squared", "flow_squared"),
        description="Discharge pressure minus the pump curve at this speed and flow; "
        "negative when the pump develops less head (impeller wear).",
        terms=_pump_head,
    ),
    FeatureSpec(
        name="valve_flow_residual",
        unit="ln(m3/h)",
        signals=("outlet_flow", "valve_position", "tank_level"),
        regressors=("valve_position", "tank_level"),
        description="Log outlet flow minus the valve curve at this stem position and level "
        "reading; negative when less flows than the level reading implies.",
        terms=_valve_flow,
    ),
    FeatureSpec(
        name="valve_tracking",
        unit="%",
        signals=("valve_position", "valve_cmd"),
        regressors=(),
        description="Median |valve position − valve command| over the short span "
        "(stiction: the stem stays off its command).",
        terms=_valve_tracking,
    ),
    FeatureSpec(
        name="mass_balance",
        unit="m3/h",
        signals=("pump_flow", "outlet_flow", "tank_level"),
        regressors=("dlevel_dt_m_per_h",),
        description="Pump flow − outlet flow − area·dLevel/dt: positive for unmetered "
        "outflow (leak), negative for a level reading drifting up.",
        terms=_mass_balance,
    ),
    FeatureSpec(
        name="heater_residual",
        unit="kW",
        signals=(
            "heater_power",
            "pump_flow",
            "tank_temp",
            "inlet_temp",
            "ambient_temp",
            "tank_level",
        ),
        regressors=(
            "inflow_heat_kw",
            "temp_over_ambient",
            "temp_over_ambient_x_level",
            "storage_kw",
        ),
        description="Heater electrical power minus the tank's heat demand (inflow, wall "
        "loss, storage); positive when power is drawn but does not reach the liquid.",
        terms=_heater,
    ),
    FeatureSpec(
        name="flatline_fraction",
        unit="1",
        signals=_FLATLINE_SIGNALS,
        regressors=(),
        description="Fraction of consecutive identical readings of the noisy "
        "transmitters (frozen measurement image).",
        terms=_flatline,
    ),
)

FEATURES: Final[Mapping[str, FeatureSpec]] = MappingProxyType({s.name: s for s in _SPECS})
"""The signal-only features, by name, in their canonical order."""

Calibration = Mapping[str, tuple[float, ...]]
"""Fitted coefficients per calibrated feature: (intercept, one per regressor)."""


def check_calibration(names: Sequence[str], calibration: Calibration) -> list[str]:
    """Problems with ``calibration`` for computing ``names`` (empty list when usable)."""
    problems = []
    for name in names:
        spec = FEATURES.get(name)
        if spec is None or not spec.calibrated:
            if spec is not None and name in calibration:
                problems.append(f"feature {name!r} takes no calibration")
            continue
        coefs = calibration.get(name)
        if coefs is None:
            problems.append(
                f"feature {name!r} needs calibration coefficients "
                f"(intercept, {', '.join(spec.regressors)})"
            )
        elif len(coefs) != spec.n_coefficients:
            problems.append(
                f"feature {name!r} needs {spec.n_coefficients} coefficients "
                f"(intercept, {', '.join(spec.regressors)}), got {len(coefs)}"
            )
        elif not all(math.isfinite(c) for c in coefs):
            problems.append(f"feature {name!r} has non-finite calibration coefficients")
    return problems


def window_terms(window: Window, names: Sequence[str]) -> dict[str, Terms]:
    """The calibration-free statistics of each catalogue feature in ``names``.

    Raises:
        KeyError: A name is not in :data:`FEATURES`.
        FeatureUndefined: A feature has no meaning in this window.
    """
    return {name: FEATURES[name].terms(window) for name in names}


def apply_calibration(terms: Mapping[str, Terms], calibration: Calibration) -> dict[str, float]:
    """Residual features from window terms: ``target − (c0 + Σ ci·ri)`` (or the target)."""
    out = {}
    for name, term in terms.items():
        if FEATURES[name].calibrated:
            coefs = calibration[name]
            expected = coefs[0] + sum(
                c * r for c, r in zip(coefs[1:], term.regressors, strict=True)
            )
            out[name] = term.target - expected
        else:
            out[name] = term.target
    return out


def required_signals(names: Sequence[str]) -> tuple[str, ...]:
    """Signal roles the catalogue features in ``names`` read, sorted, without duplicates."""
    return tuple(sorted({s for name in names if name in FEATURES for s in FEATURES[name].signals}))


# ---------------------------------------------------------------------------- windowing


class SampleWindow:
    """A bounded ring buffer of the latest samples of a fixed set of signals.

    Memory is ``config.length × len(signals)`` floats, however long it runs. A window
    falls due every ``config.hop`` pushes, whatever the data quality, so the consumer
    sees a steady cadence of windows: full ones, and empty ones while data is missing.

    Args:
        signals: Signal roles to keep.
        config: Window geometry.
    """

    def __init__(self, signals: Sequence[str], config: WindowConfig) -> None:
        self.signals = tuple(signals)
        self.config = config
        self._buf = np.empty((config.length, len(self.signals)), dtype=np.float64)
        self._t = np.empty(config.length, dtype=np.float64)
        self._next = 0
        self._count = 0
        self._pushes = 0
        self.reason: str | None = "collecting the first window"
        """Why the window is not full (None when it is)."""

    @property
    def full(self) -> bool:
        """Whether the window holds ``length`` consecutive good samples."""
        return self._count == self.config.length

    def reset(self, reason: str) -> None:
        """Empty the window: the next full window needs ``length`` fresh good samples."""
        self._count = 0
        self.reason = reason

    def push(self, t: float, values: Mapping[str, float | None]) -> bool:
        """Add one sample at time ``t`` (s). True when a window falls due (every ``hop``).

        A sample missing a signal, or with a None/non-finite value, empties the window,
        and so does a gap in time: a full window is always ``length`` consecutive good
        samples. Check :attr:`full` before using :meth:`window`.
        """
        self._pushes += 1
        due = self._pushes % self.config.hop == 0
        if not math.isfinite(t):
            self.reset(f"non-finite sample time {t}")
            return due
        row = np.empty(len(self.signals), dtype=np.float64)
        for i, name in enumerate(self.signals):
            value = values.get(name)
            if value is None or not math.isfinite(value):
                self.reset(f"{name} missing or not good")
                return due
            row[i] = value
        if self._count:
            step = t - self._t[(self._next - 1) % self.config.length]
            if not 0.0 < step <= self.config.max_gap_factor * self.config.period_s:
                self.reset(f"sample gap of {step:g} s (expected {self.config.period_s:g} s)")
        self._buf[self._next] = row
        self._t[self._next] = t
        self._next = (self._next + 1) % self.config.length
        self._count = min(self._count + 1, self.config.length)
        if self.full:
            self.reason = None
        return due

    def window(self) -> Window:
        """The current window, oldest sample first.

        Raises:
            ValueError: The window is not full.
        """
        if not self.full:
            raise ValueError(f"the window is not full: {self.reason}")
        order = (self._next + np.arange(self.config.length)) % self.config.length
        data = self._buf[order]
        return Window(
            t=self._t[order],
            x={name: data[:, i] for i, name in enumerate(self.signals)},
            config=self.config,
        )


@dataclass(frozen=True)
class FeatureVector:
    """Named feature values of one window, ending at time ``t`` (s)."""

    t: float
    values: Mapping[str, float]


@dataclass(frozen=True)
class WindowResult:
    """A due window: its feature vector, or why there is none."""

    t: float
    vector: FeatureVector | None
    reason: str | None = None


class FeatureExtractor:
    """Rolling-window features for a model: push one sample a period, get due windows.

    Args:
        names: Catalogue feature names to compute (names not in :data:`FEATURES` are
            external and ignored here).
        calibration: Coefficients for the calibrated features.
        config: Window geometry.

    Raises:
        ValueError: ``calibration`` does not fit ``names``.
    """

    def __init__(
        self, names: Sequence[str], calibration: Calibration, config: WindowConfig
    ) -> None:
        self.names = tuple(n for n in names if n in FEATURES)
        problems = check_calibration(self.names, calibration)
        if problems:
            raise ValueError("; ".join(problems))
        self.calibration = MappingProxyType(dict(calibration))
        self.window = SampleWindow(required_signals(self.names), config)

    @property
    def signals(self) -> tuple[str, ...]:
        """Signal roles the features read."""
        return self.window.signals

    def push(self, t: float, values: Mapping[str, float | None]) -> WindowResult | None:
        """Add a sample; when a window is due, return its vector or why there is none."""
        if not self.window.push(t, values):
            return None
        if not self.window.full:
            return WindowResult(t, None, self.window.reason)
        try:
            terms = window_terms(self.window.window(), self.names)
        except FeatureUndefined as err:
            return WindowResult(t, None, str(err))
        values_ = MappingProxyType(apply_calibration(terms, self.calibration))
        return WindowResult(t, FeatureVector(t, values_))


def values_from_snapshot(
    snapshot: Mapping[str, SignalValue],
    roles: Sequence[str],
    signal_map: Mapping[str, str] | None = None,
) -> dict[str, float | None]:
    """Sample values by role from the live table: None for a missing or unusable signal.

    Args:
        snapshot: ``LiveTable.snapshot(now)``.
        roles: Signal roles wanted (plant point names).
        signal_map: Role → configured signal name where they differ (e.g. a Modbus
            source's ``mb_tank_level``); identity otherwise.
    """
    mapping = signal_map or {}
    out: dict[str, float | None] = {}
    for role in roles:
        value = snapshot.get(mapping.get(role, role))
        out[role] = value.value if value is not None and value.usable else None
    return out
