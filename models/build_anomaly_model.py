"""Train edgetwin's anomaly model on normal operation of the simulated skid; write the .onnx.

What it does, deterministically (every random draw is seeded):

1. Runs the reference plant (:class:`gateway.plantsim.plant.Plant`) fault-free for several
   seeds and hours, driven like an operator would: the valve command moves by a few % every
   few minutes, the level and temperature setpoints move within their normal ranges every
   tens of minutes, and the plant's own slow drift (wall heat loss, pipe friction, inlet
   and ambient temperature, downstream back-pressure) runs underneath. The gateway's
   heartbeat is written every simulated second so the PLC stays in remote mode.
2. Windows the 1 s samples and computes the feature terms with the same code the gateway
   runs (:mod:`gateway.detect.features`), fits each residual feature's calibration by least
   squares, and computes the feature vectors.
3. Fits the detector: standardisation + a Mahalanobis distance with a shrunk correlation
   matrix. The score is d² = zᵀ·P·z with z the standardised features; the per-feature
   contributions z_i·(P·z)_i add up to the score, so the signature rules can see which
   residuals drive an anomaly.
4. Writes it with the ``onnx`` package (opset 17, IR 8: Sub, Mul, MatMul, ReduceSum) as
   ``anomaly.onnx`` and the metadata the gateway needs (feature order and units, window,
   calibration, thresholds, the model file's SHA-256) as ``anomaly.json``.

The alert threshold is the 99.9th percentile of the training windows' scores times a margin;
the clear threshold (hysteresis) is the 99th percentile.

Usage::

    python models/build_anomaly_model.py              # writes models/anomaly.{onnx,json}
    python models/build_anomaly_model.py --evaluate   # and measures detection (MODEL_CARD.md)
    python models/build_anomaly_model.py --out DIR --seeds 1 2 --hours 1

``onnx`` is a development dependency: the gateway only needs onnxruntime to run the model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

if __package__ in (None, ""):  # run as a script from anywhere: make `gateway` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.detect.features import (
    FEATURES,
    FeatureUndefined,
    SampleWindow,
    Terms,
    WindowConfig,
    apply_calibration,
    required_signals,
    window_terms,
)
from gateway.plantsim.plant import Plant
from gateway.plantsim.points import MEASUREMENTS

FloatArray = npt.NDArray[np.float64]

MODELS_DIR: Final = Path(__file__).resolve().parent
TRAIN_SEEDS: Final = (1, 2, 3, 4, 5, 6)
TRAIN_HOURS: Final = 4.0
FEATURE_NAMES: Final = tuple(FEATURES)
WINDOW: Final = WindowConfig()

# Normal operating ranges of the reference skid. The heater is sized for a few kelvin of
# rise over the feed at full flow, so the temperature setpoint range is narrow.
LEVEL_SP_RANGE: Final = (1.2, 1.8)
"""m"""
TEMP_SP_RANGE: Final = (44.0, 45.5)
"""degC"""
VALVE_CMD_RANGE: Final = (40.0, 60.0)
"""%"""
VALVE_MOVE_PCT: Final = (1.0, 6.0)
"""Size of an operator's valve move, % of stroke (either direction)."""
VALVE_MOVE_MEAN_S: Final = 240.0
SETPOINT_MOVE_MEAN_S: Final = 1200.0

SHRINKAGE: Final = 0.05
"""Weight of the identity in the shrunk correlation matrix (keeps P well conditioned)."""
THRESHOLD_QUANTILE: Final = 0.999
THRESHOLD_MARGIN: Final = 1.5
CLEAR_QUANTILE: Final = 0.99
OPSET: Final = 17
IR_VERSION: Final = 8
"""IR 8 / opset 17 load in every onnxruntime since 1.12."""


# ---------------------------------------------------------------------------- the plant, driven


@dataclass
class Operator:
    """Moves the setpoints like a plant operator would, from its own seeded random stream."""

    rng: random.Random
    next_valve_s: float = 0.0
    next_level_s: float = 0.0
    next_temp_s: float = 0.0
    valve_cmd: float = 50.0

    def __post_init__(self) -> None:
        self.next_valve_s = self.rng.expovariate(1.0 / VALVE_MOVE_MEAN_S)
        self.next_level_s = self.rng.expovariate(1.0 / SETPOINT_MOVE_MEAN_S)
        self.next_temp_s = self.rng.expovariate(1.0 / SETPOINT_MOVE_MEAN_S)

    def act(self, plant: Plant, t: float) -> None:
        """Write the setpoint moves that are due at simulated time ``t``."""
        rng = self.rng
        if t >= self.next_valve_s:
            step = rng.uniform(*VALVE_MOVE_PCT) * rng.choice((-1.0, 1.0))
            low, high = VALVE_CMD_RANGE
            target = self.valve_cmd + step
            if not low <= target <= high:
                target = self.valve_cmd - step
            self.valve_cmd = round(target, 1)
            plant.write("valve_cmd", self.valve_cmd)
            self.next_valve_s = t + rng.expovariate(1.0 / VALVE_MOVE_MEAN_S)
        if t >= self.next_level_s:
            plant.write("level_sp", round(rng.uniform(*LEVEL_SP_RANGE), 2))
            self.next_level_s = t + rng.expovariate(1.0 / SETPOINT_MOVE_MEAN_S)
        if t >= self.next_temp_s:
            plant.write("temp_sp", round(rng.uniform(*TEMP_SP_RANGE), 1))
            self.next_temp_s = t + rng.expovariate(1.0 / SETPOINT_MOVE_MEAN_S)


Sample = dict[str, float | None]


def plant_samples(
    seed: int,
    duration_s: float,
    *,
    faults: Sequence[tuple[float, str, float]] = (),
) -> Iterator[tuple[float, Sample]]:
    """Run the plant under :class:`Operator` and yield ``(t, values)`` once per second.

    ``values`` holds every measurement and the valve command as the PLC reports them,
    None where the reading is not good (what the gateway's live table would give).

    Args:
        seed: Seeds the plant (noise, drift) and the operator.
        duration_s: Simulated seconds.
        faults: ``(time_s, fault, severity)`` injections, applied when due.
    """
    plant = Plant(seed=seed)
    operator = Operator(random.Random(f"edgetwin-operator-{seed}"))
    pending = sorted(faults)
    names = (*MEASUREMENTS, "valve_cmd")
    for k in range(int(duration_s)):
        t = float(k)
        operator.act(plant, t)
        while pending and pending[0][0] <= t:
            _, fault, severity = pending.pop(0)
            plant.inject_fault(fault, severity)
        plant.step(1.0)
        plant.write("heartbeat", (k + 1) % 65536)
        readings = plant.read()
        yield t + 1.0, {n: readings[n].value if readings[n].good else None for n in names}


# ---------------------------------------------------------------------------- training data


def collect_terms(
    samples: Iterator[tuple[float, Sample]], config: WindowConfig = WINDOW
) -> list[dict[str, Terms]]:
    """Window terms of every due window of a sample stream (the training path)."""
    window = SampleWindow(required_signals(FEATURE_NAMES), config)
    out = []
    for t, values in samples:
        if window.push(t, values) and window.full:
            try:
                out.append(window_terms(window.window(), FEATURE_NAMES))
            except FeatureUndefined:
                continue  # the runtime scores no such window either
    return out


def fit_calibration(terms: Sequence[Mapping[str, Terms]]) -> dict[str, tuple[float, ...]]:
    """Least-squares coefficients (intercept first) of every calibrated feature."""
    calibration = {}
    for name, spec in FEATURES.items():
        if not spec.calibrated:
            continue
        y = np.array([w[name].target for w in terms])
        a = np.array([(1.0, *w[name].regressors) for w in terms])
        coefs, *_ = np.linalg.lstsq(a, y, rcond=None)
        calibration[name] = tuple(round(float(c), 9) for c in coefs)
    return calibration


def feature_matrix(
    terms: Sequence[Mapping[str, Terms]], calibration: Mapping[str, tuple[float, ...]]
) -> FloatArray:
    """Rows of feature values, columns in :data:`FEATURE_NAMES` order."""
    rows = []
    for w in terms:
        values = apply_calibration(w, calibration)
        rows.append([values[n] for n in FEATURE_NAMES])
    return np.array(rows, dtype=np.float64)


# ---------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Mahalanobis:
    """The fitted model: standardisation and the shrunk inverse correlation matrix."""

    mean: FloatArray
    std: FloatArray
    precision: FloatArray
    """P = (shrunk correlation)⁻¹, so that score = zᵀ·P·z."""


def fit_mahalanobis(x: FloatArray, shrinkage: float = SHRINKAGE) -> Mahalanobis:
    """Standardise each feature and invert the shrunk correlation matrix of ``x``."""
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    if np.any(std <= 0):
        flat = [FEATURE_NAMES[i] for i in np.flatnonzero(std <= 0)]
        raise ValueError(f"features without variance in the training data: {flat}")
    z = (x - mean) / std
    corr = np.corrcoef(z, rowvar=False)
    shrunk = (1.0 - shrinkage) * corr + shrinkage * np.eye(len(mean))
    return Mahalanobis(mean, std, np.linalg.inv(shrunk))


def onnx_model(fitted: Mahalanobis, names: Sequence[str]) -> Any:
    """The fitted model as an ONNX graph (returns an ``onnx.ModelProto``).

    ``features`` [N, F] → deviations z = (x − mean)·(1/std) → contributions z ∘ (z·P)
    → score = Σ contributions. Outputs: score [N], contributions [N, F], deviations [N, F].
    """
    import onnx  # a development dependency: the gateway itself only runs the model
    from onnx import TensorProto, helper, numpy_helper

    n = len(names)
    as_f32 = np.float32
    initializers = [
        numpy_helper.from_array(fitted.mean.astype(as_f32), name="mean"),
        numpy_helper.from_array((1.0 / fitted.std).astype(as_f32), name="inv_std"),
        numpy_helper.from_array(fitted.precision.astype(as_f32), name="precision"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), name="feature_axis"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"], name="centre"),
        helper.make_node("Mul", ["centred", "inv_std"], ["deviations"], name="standardise"),
        helper.make_node("MatMul", ["deviations", "precision"], ["weighted"], name="whiten"),
        helper.make_node("Mul", ["deviations", "weighted"], ["contributions"], name="contrib"),
        helper.make_node(
            "ReduceSum", ["contributions", "feature_axis"], ["score"], name="score", keepdims=0
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "edgetwin_anomaly",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", n])],
        [
            helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("contributions", TensorProto.FLOAT, ["N", n]),
            helper.make_tensor_value_info("deviations", TensorProto.FLOAT, ["N", n]),
        ],
        initializer=initializers,
        doc_string="Mahalanobis distance of standardised features (shrunk correlation); "
        "contributions add up to the score.",
    )
    model = helper.make_model(
        graph,
        producer_name="edgetwin/models/build_anomaly_model.py",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    helper.set_model_props(model, {"edgetwin.features": json.dumps(list(names))})
    onnx.checker.check_model(model, full_check=True)
    return model


def _scores(model_bytes: bytes, x: FloatArray) -> FloatArray:
    """Scores of the rows of ``x`` as onnxruntime computes them (what the gateway sees)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
    )
    (score,) = session.run(["score"], {"features": x.astype(np.float32)})
    return np.asarray(score, dtype=np.float64)


@dataclass(frozen=True)
class BuildResult:
    """Where the model went and what it was fitted on."""

    model_path: Path
    meta_path: Path
    windows: int
    threshold: float
    clear_threshold: float
    seconds: float
    metadata: dict[str, Any] = field(repr=False)


def build(
    out_dir: Path = MODELS_DIR,
    *,
    seeds: Sequence[int] = TRAIN_SEEDS,
    hours: float = TRAIN_HOURS,
    name: str = "anomaly",
) -> BuildResult:
    """Generate normal data, fit, and write ``{name}.onnx`` and ``{name}.json``.

    Deterministic: the same seeds and hours give byte-identical files.
    """
    started = time.perf_counter()
    terms: list[dict[str, Terms]] = []
    for seed in seeds:
        terms.extend(collect_terms(plant_samples(seed, hours * 3600.0)))
    if len(terms) < 10 * len(FEATURE_NAMES):
        raise ValueError(f"only {len(terms)} training windows: run longer")
    calibration = fit_calibration(terms)
    x = feature_matrix(terms, calibration)
    fitted = fit_mahalanobis(x)
    model_bytes = onnx_model(fitted, FEATURE_NAMES).SerializeToString()
    scores = _scores(model_bytes, x)
    q_threshold, q_clear, q50 = np.quantile(scores, [THRESHOLD_QUANTILE, CLEAR_QUANTILE, 0.5])
    threshold = round(float(q_threshold) * THRESHOLD_MARGIN, 3)
    clear = round(float(q_clear), 3)

    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / f"{name}.onnx"
    meta_path = out_dir / f"{name}.json"
    model_path.write_bytes(model_bytes)
    metadata: dict[str, Any] = {
        "format": "edgetwin.anomaly/1",
        "model_sha256": hashlib.sha256(model_bytes).hexdigest(),
        "input": "features",
        "outputs": {"score": "score", "contributions": "contributions", "deviations": "deviations"},
        "features": [
            {"name": n, "unit": FEATURES[n].unit, "description": FEATURES[n].description}
            for n in FEATURE_NAMES
        ],
        "threshold": threshold,
        "clear_threshold": clear,
        "window": {
            "period_s": WINDOW.period_s,
            "length": WINDOW.length,
            "hop": WINDOW.hop,
            "short": WINDOW.short,
            "edge": WINDOW.edge,
            "bearing_tau_s": WINDOW.bearing_tau_s,
            "max_gap_factor": WINDOW.max_gap_factor,
        },
        "calibration": {k: list(v) for k, v in calibration.items()},
        "training": {
            "script": "models/build_anomaly_model.py",
            "plant": "gateway.plantsim.plant.Plant (fault-free)",
            "seeds": list(seeds),
            "hours_per_seed": hours,
            "windows": len(terms),
            "level_sp_range_m": list(LEVEL_SP_RANGE),
            "temp_sp_range_degC": list(TEMP_SP_RANGE),
            "valve_cmd_range_pct": list(VALVE_CMD_RANGE),
            "threshold_rule": f"{THRESHOLD_MARGIN} x quantile {THRESHOLD_QUANTILE} of training "
            f"scores; clear at quantile {CLEAR_QUANTILE}",
            "score_median": round(float(q50), 3),
            "feature_mean": [round(float(v), 9) for v in fitted.mean],
            "feature_std": [round(float(v), 9) for v in fitted.std],
        },
    }
    meta_path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return BuildResult(
        model_path,
        meta_path,
        len(terms),
        threshold,
        clear,
        time.perf_counter() - started,
        metadata,
    )


# ---------------------------------------------------------------------------- evaluation


EVAL_FAULTS: Final[tuple[tuple[str, float], ...]] = (
    ("bearing_degradation", 0.2),
    ("impeller_wear", 0.2),
    ("valve_stiction", 0.4),
    ("level_sensor_drift", 0.3),
    ("leak", 0.1),
    ("heater_degradation", 0.3),
    ("sensor_freeze", 1.0),
    ("sensor_loss", 1.0),
    ("write_ignore", 1.0),
)
"""Faults and the severities the model card states detection results for."""
EVAL_LOW_FAULTS: Final[tuple[tuple[str, float], ...]] = (
    ("bearing_degradation", 0.05),
    ("impeller_wear", 0.05),
    ("valve_stiction", 0.1),
    ("level_sensor_drift", 0.1),
    ("leak", 0.03),
    ("heater_degradation", 0.1),
)
"""Lower severities, to show where detection stops (the card's sensitivity table)."""
EVAL_SEEDS: Final = (201, 202, 203)
"""Held-out seeds (never used for training)."""
EVAL_WARMUP_S: Final = 900.0
EVAL_AFTER_S: Final = 3600.0
FALSE_ALERT_SEEDS: Final = (101, 102, 103, 104)
FALSE_ALERT_HOURS: Final = 6.0


@dataclass(frozen=True)
class ScenarioResult:
    """One run of the plant through a detector."""

    seed: int
    fault: str | None
    severity: float
    inject_at_s: float | None
    events: tuple[Any, ...]
    windows: int
    scored: int

    def raised(self) -> list[Any]:
        return [e for e in self.events if e.kind == "raised"]

    def before_fault(self) -> list[Any]:
        """Alerts raised before the injection (false alerts)."""
        limit = math.inf if self.inject_at_s is None else self.inject_at_s
        return [e for e in self.raised() if e.at <= limit]

    def first_alert_after_fault(self) -> Any | None:
        if self.inject_at_s is None:
            return None
        after = [e for e in self.raised() if e.at > self.inject_at_s]
        return after[0] if after else None

    def detection_delay_s(self) -> float | None:
        first = self.first_alert_after_fault()
        return None if first is None or self.inject_at_s is None else first.at - self.inject_at_s

    def final_fault(self) -> str | None:
        """Leading fault of the last raised/updated event of the first alert after the
        injection (what the operator is looking at)."""
        first = self.first_alert_after_fault()
        if first is None:
            return None
        same = [e for e in self.events if e.alert_id == first.alert_id and e.kind != "cleared"]
        return str(same[-1].fault)


def run_scenario(
    model_path: Path,
    meta_path: Path,
    *,
    seed: int,
    duration_s: float,
    fault: str | None = None,
    severity: float = 0.0,
    inject_at_s: float = 0.0,
    stop_on_alert: bool = False,
) -> ScenarioResult:
    """Run the plant (optionally with one fault) through the gateway's detector."""
    from gateway.detect.anomaly import AnomalyModel
    from gateway.detect.detector import Detector

    detector = Detector(AnomalyModel(model_path, meta_path))
    faults = [(inject_at_s, fault, severity)] if fault else []
    events: list[Any] = []
    windows = scored = 0
    for t, values in plant_samples(seed, duration_s, faults=faults):
        step = detector.observe(t, values)
        if step is None:
            continue
        windows += 1
        scored += step.score is not None
        events.extend(step.events)
        if (
            stop_on_alert
            and fault
            and any(e.kind == "raised" and e.at > inject_at_s for e in step.events)
        ):
            break
    return ScenarioResult(
        seed, fault, severity, inject_at_s if fault else None, tuple(events), windows, scored
    )


def _fault_row(model_path: Path, meta_path: Path, fault: str, severity: float) -> str:
    """One table row: the fault on every evaluation seed."""
    delays, names, before = [], [], 0
    for seed in EVAL_SEEDS:
        r = run_scenario(
            model_path,
            meta_path,
            seed=seed,
            duration_s=EVAL_WARMUP_S + EVAL_AFTER_S,
            fault=fault,
            severity=severity,
            inject_at_s=EVAL_WARMUP_S,
            stop_on_alert=True,
        )
        delay = r.detection_delay_s()
        delays.append("none" if delay is None else f"{delay:.0f}")
        names.append(r.final_fault() or "-")
        before += len(r.before_fault())
    return f"| {fault} | {severity:g} | {', '.join(delays)} | {', '.join(names)} | {before} |"


def evaluate(model_path: Path, meta_path: Path, out: Callable[[str], None] = print) -> bool:
    """Measure false alerts and detection; print the tables quoted in MODEL_CARD.md."""
    started = time.perf_counter()
    out(
        f"## False alerts: fault-free, seeds {list(FALSE_ALERT_SEEDS)}, "
        f"{FALSE_ALERT_HOURS:g} h each"
    )
    total_h = 0.0
    false_alerts = 0
    for seed in FALSE_ALERT_SEEDS:
        r = run_scenario(model_path, meta_path, seed=seed, duration_s=FALSE_ALERT_HOURS * 3600)
        total_h += FALSE_ALERT_HOURS
        false_alerts += len(r.raised())
        out(f"seed {seed}: {len(r.raised())} alerts, {r.scored}/{r.windows} windows scored")
    out(f"total: {false_alerts} alerts in {total_h:g} simulated hours")
    for title, cases in (("Detection", EVAL_FAULTS), ("Sensitivity", EVAL_LOW_FAULTS)):
        out("")
        out(
            f"## {title}: {EVAL_WARMUP_S / 60:g} min fault-free, then the fault, "
            f"up to {EVAL_AFTER_S / 60:g} min; seeds {list(EVAL_SEEDS)}"
        )
        out("| fault | severity | alert after injection (s), per seed | named as | false before |")
        out("|---|---|---|---|---|")
        for fault, severity in cases:
            out(_fault_row(model_path, meta_path, fault, severity))
    out("")
    out(f"evaluation took {time.perf_counter() - started:.0f} s")
    return false_alerts == 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="output directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(TRAIN_SEEDS))
    parser.add_argument("--hours", type=float, default=TRAIN_HOURS, help="hours per seed")
    parser.add_argument(
        "--evaluate", action="store_true", help="measure false alerts and detection times"
    )
    args = parser.parse_args(argv)
    result = build(args.out, seeds=args.seeds, hours=args.hours)
    print(
        f"wrote {result.model_path} ({result.model_path.stat().st_size} bytes) and "
        f"{result.meta_path}: {result.windows} training windows from seeds {args.seeds} x "
        f"{args.hours:g} h, threshold {result.threshold:g}, clear {result.clear_threshold:g}, "
        f"in {result.seconds:.0f} s"
    )
    if args.evaluate:
        print()
        evaluate(result.model_path, result.meta_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
