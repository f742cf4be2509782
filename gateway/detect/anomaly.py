"""The anomaly model: an ``.onnx`` file run by onnxruntime, described by a metadata file.

The model file holds the learned arithmetic; the metadata file (JSON) says what it expects
and how to read its answer: the ordered feature names and units of its one input matrix,
its output names, the alert thresholds, and for the built-in signal features the window
and calibration :mod:`gateway.detect.features` needs. The pair is checked against each
other when loaded and refused with a message naming the file and the mismatch, so a model
can never be fed features in an order it was not trained on.

Contract for any model (ours is built by ``models/build_anomaly_model.py``; a user's own
works the same way when it follows it):

* one float32 input of shape ``[N, F]``, F = the number of declared features, in order;
* an output ``score`` of shape ``[N]`` (or ``[N, 1]``): higher is more anomalous, compared
  against the metadata's ``threshold``;
* optionally ``contributions`` ``[N, F]`` (how much each feature adds to the score) and
  ``deviations`` ``[N, F]`` (signed standardised deviation of each feature), which the
  signature rules use to name a likely fault; without them a fault stays "unknown";
* optionally the model's metadata property ``edgetwin.features`` (a JSON list of names);
  when present it must equal the metadata file's feature names, in order.

Scoring is blocking C++ work: :meth:`AnomalyModel.score_async` runs it in a worker
thread so the event loop never waits on it. One intra-op thread: the model is tiny, and
the box's other cores belong to the twin and the LLM.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from gateway.detect.features import (
    FEATURES,
    Calibration,
    WindowConfig,
    check_calibration,
)
from gateway.detect.score import AnomalyScore
from gateway.errors import GatewayError

__all__ = [
    "AnomalyModel",
    "AnomalyScore",
    "FeatureInfo",
    "ModelError",
    "ModelMetadata",
    "load_metadata",
    "parse_metadata",
]

METADATA_FORMAT: Final = "edgetwin.anomaly/1"
FEATURES_PROPERTY: Final = "edgetwin.features"
"""Model metadata property (JSON list of names) that pins the feature order in the .onnx."""

_TOP_KEYS: Final = frozenset(
    {
        "format",
        "model_sha256",
        "input",
        "outputs",
        "features",
        "threshold",
        "clear_threshold",
        "window",
        "calibration",
        "training",
    }
)
_OUTPUT_KEYS: Final = frozenset({"score", "contributions", "deviations"})
_FEATURE_KEYS: Final = frozenset({"name", "unit", "description"})


class ModelError(GatewayError):
    """An anomaly model or its metadata cannot be used; the message names the file."""


@dataclass(frozen=True)
class FeatureInfo:
    """One declared model input feature."""

    name: str
    unit: str
    description: str = ""


@dataclass(frozen=True)
class ModelMetadata:
    """What a model expects and how to read its answer (parsed from the JSON file).

    Attributes:
        path: The metadata file, for messages.
        features: The input features, in input column order.
        input: Name of the model's input tensor.
        score_output: Name of the score output.
        contributions_output: Name of the per-feature contributions output, if any.
        deviations_output: Name of the per-feature signed deviations output, if any.
        threshold: Score above which a window is anomalous.
        clear_threshold: Score below which an active alert may clear (hysteresis).
        window: Window geometry of the built-in features.
        calibration: Coefficients of the calibrated built-in features.
        model_sha256: SHA-256 of the model file it was written for, if pinned.
        training: Free-form description of the training run (not interpreted).
    """

    path: Path
    features: tuple[FeatureInfo, ...]
    input: str
    score_output: str
    contributions_output: str | None
    deviations_output: str | None
    threshold: float
    clear_threshold: float
    window: WindowConfig
    calibration: Calibration
    model_sha256: str | None = None
    training: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in input column order."""
        return tuple(f.name for f in self.features)

    @property
    def external(self) -> tuple[str, ...]:
        """Declared features not computed by :mod:`gateway.detect.features` (the caller
        supplies them, e.g. twin residuals)."""
        return tuple(n for n in self.names if n not in FEATURES)


def _finite_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def parse_metadata(data: object, path: Path) -> ModelMetadata:
    """Validate a metadata document; every problem is reported with the key path.

    Raises:
        ModelError: Listing each problem, prefixed with the file name.
    """
    problems: list[str] = []
    if not isinstance(data, dict):
        raise ModelError(f"{path}: the metadata must be a JSON object")
    for key in sorted(set(data) - _TOP_KEYS):
        problems.append(f"unknown key {key!r} (known: {', '.join(sorted(_TOP_KEYS))})")
    if data.get("format") != METADATA_FORMAT:
        problems.append(f"format: expected {METADATA_FORMAT!r}, got {data.get('format')!r}")

    features: list[FeatureInfo] = []
    raw_features = data.get("features")
    if not isinstance(raw_features, list) or not raw_features:
        problems.append("features: a non-empty list of {name, unit} objects is required")
        raw_features = []
    for i, item in enumerate(raw_features):
        if not isinstance(item, dict):
            problems.append(f"features[{i}]: expected an object with 'name' and 'unit'")
            continue
        for key in sorted(set(item) - _FEATURE_KEYS):
            problems.append(f"features[{i}]: unknown key {key!r}")
        name, unit = item.get("name"), item.get("unit")
        if not isinstance(name, str) or not name:
            problems.append(f"features[{i}].name: a non-empty string is required")
            continue
        if not isinstance(unit, str):
            problems.append(f'features[{i}].unit: a string is required ("1" if unitless)')
            continue
        spec = FEATURES.get(name)
        if spec is not None and spec.unit != unit:
            problems.append(
                f"features[{i}].unit: {name!r} is computed in {spec.unit!r}, not {unit!r}"
            )
        features.append(FeatureInfo(name, unit, str(item.get("description", ""))))
    names = [f.name for f in features]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"features: duplicate names {duplicates}")

    input_name = data.get("input")
    if not isinstance(input_name, str) or not input_name:
        problems.append("input: the name of the model's input tensor is required")
        input_name = ""

    outputs = data.get("outputs", {"score": "score"})
    if not isinstance(outputs, dict):
        problems.append('outputs: expected an object like {"score": "score"}')
        outputs = {}
    for key in sorted(set(outputs) - _OUTPUT_KEYS):
        problems.append(f"outputs: unknown key {key!r} (known: {', '.join(sorted(_OUTPUT_KEYS))})")
    for key, value in outputs.items():
        if not isinstance(value, str) or not value:
            problems.append(f"outputs.{key}: an output tensor name is required")
    score_output = outputs.get("score")
    if not isinstance(score_output, str) or not score_output:
        problems.append("outputs.score: the name of the score output is required")
        score_output = ""

    threshold = data.get("threshold")
    clear = data.get("clear_threshold", threshold)
    if not _finite_number(threshold) or float(threshold) <= 0:  # type: ignore[arg-type]
        problems.append(f"threshold: a finite number > 0 is required, got {threshold!r}")
        threshold = clear = 1.0
    if not _finite_number(clear) or not 0 < float(clear) <= float(threshold):  # type: ignore[arg-type]
        problems.append(
            f"clear_threshold: a number in (0, threshold={threshold}] is required, got {clear!r}"
        )
        clear = threshold

    window = WindowConfig()
    raw_window = data.get("window", {})
    if not isinstance(raw_window, dict):
        problems.append("window: expected an object")
    else:
        try:
            window = WindowConfig(**raw_window)
        except (TypeError, ValueError) as err:
            problems.append(f"window: {err}")

    calibration: dict[str, tuple[float, ...]] = {}
    raw_cal = data.get("calibration", {})
    if not isinstance(raw_cal, dict):
        problems.append("calibration: expected an object of feature name → coefficient list")
        raw_cal = {}
    for name, coefs in raw_cal.items():
        if name not in names:
            problems.append(f"calibration.{name}: not a declared feature")
        elif not isinstance(coefs, list) or not all(_finite_number(c) for c in coefs):
            problems.append(f"calibration.{name}: a list of finite numbers is required")
        else:
            calibration[name] = tuple(float(c) for c in coefs)
    problems.extend(f"calibration: {p}" for p in check_calibration(names, calibration))

    sha = data.get("model_sha256")
    if sha is not None and not (isinstance(sha, str) and len(sha) == 64):
        problems.append("model_sha256: a 64-character hex digest is required when given")
    training = data.get("training", {})
    if not isinstance(training, dict):
        problems.append("training: expected an object")
        training = {}

    if problems:
        raise ModelError("\n".join(f"{path}: {p}" for p in problems))
    contributions = outputs.get("contributions")
    deviations = outputs.get("deviations")
    return ModelMetadata(
        path=path,
        features=tuple(features),
        input=str(input_name),
        score_output=str(score_output),
        contributions_output=contributions if isinstance(contributions, str) else None,
        deviations_output=deviations if isinstance(deviations, str) else None,
        threshold=float(threshold),  # type: ignore[arg-type]
        clear_threshold=float(clear),  # type: ignore[arg-type]
        window=window,
        calibration=MappingProxyType(calibration),
        model_sha256=sha,
        training=MappingProxyType(dict(training)),
    )


def load_metadata(path: str | Path) -> ModelMetadata:
    """Read and validate a metadata file.

    Raises:
        ModelError: Unreadable, not JSON, or invalid (each problem with its key).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ModelError(f"{path}: cannot read the model metadata: {err.strerror}") from err
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: not valid JSON: {err}") from err
    return parse_metadata(data, path)


def _static_dim(dim: object) -> int | None:
    return dim if isinstance(dim, int) and dim > 0 else None


class AnomalyModel:
    """An anomaly model loaded in onnxruntime and checked against its metadata.

    Args:
        path: The ``.onnx`` file.
        meta_path: Its metadata JSON.

    Raises:
        ModelError: Either file is missing or invalid, or they do not match; the message
            names the file and the mismatch.
    """

    def __init__(self, path: str | Path, meta_path: str | Path) -> None:
        self.path = Path(path)
        self.metadata = load_metadata(meta_path)
        try:
            blob = self.path.read_bytes()
        except OSError as err:
            raise ModelError(f"{self.path}: cannot read the model: {err.strerror}") from err
        digest = hashlib.sha256(blob).hexdigest()
        if self.metadata.model_sha256 is not None and digest != self.metadata.model_sha256:
            raise ModelError(
                f"{self.metadata.path} was written for a model with SHA-256 "
                f"{self.metadata.model_sha256[:12]}…, but {self.path} has {digest[:12]}…: "
                "rebuild both together (models/build_anomaly_model.py) or drop model_sha256"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                blob, sess_options=options, providers=["CPUExecutionProvider"]
            )
        # onnxruntime's errors derive from Exception directly; this is the boundary.
        except Exception as err:
            raise ModelError(f"{self.path}: onnxruntime cannot load it: {err}") from err
        self._check_contract()
        meta = self.metadata
        self._outputs = [meta.score_output]
        if meta.contributions_output:
            self._outputs.append(meta.contributions_output)
        if meta.deviations_output:
            self._outputs.append(meta.deviations_output)

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names in input order."""
        return self.metadata.names

    @property
    def threshold(self) -> float:
        return self.metadata.threshold

    def _check_contract(self) -> None:
        meta = self.metadata
        where = f"{self.path} does not match {meta.path}"
        n = len(meta.features)
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or inputs[0].name != meta.input:
            declared = ", ".join(repr(i.name) for i in inputs)
            raise ModelError(
                f"{where}: the metadata declares one input {meta.input!r}, the model has "
                f"{declared or 'none'}"
            )
        arg = inputs[0]
        if arg.type != "tensor(float)" or len(arg.shape) != 2:
            raise ModelError(
                f"{where}: input {arg.name!r} must be a float32 matrix [N, {n}], the model "
                f"declares {arg.type} {arg.shape}"
            )
        width = _static_dim(arg.shape[1])
        if width is not None and width != n:
            raise ModelError(
                f"{where}: input {arg.name!r} takes {width} features, the metadata declares "
                f"{n} ({', '.join(meta.names)})"
            )
        pinned = self._session.get_modelmeta().custom_metadata_map.get(FEATURES_PROPERTY)
        if pinned is not None:
            try:
                model_names = json.loads(pinned)
            except json.JSONDecodeError as err:
                raise ModelError(f"{self.path}: property {FEATURES_PROPERTY} is not JSON") from err
            if list(model_names) != list(meta.names):
                diff = _first_difference(model_names, meta.names)
                raise ModelError(
                    f"{where}: the model was trained on features {model_names}, the metadata "
                    f"declares {list(meta.names)} ({diff})"
                )
        outputs = {o.name: o for o in self._session.get_outputs()}
        wanted: list[tuple[str, tuple[int, ...]]] = [(meta.score_output, (1, 2))]
        wanted += [(o, (2,)) for o in (meta.contributions_output, meta.deviations_output) if o]
        for name, ranks in wanted:
            out = outputs.get(name)
            if out is None:
                raise ModelError(
                    f"{where}: the metadata names output {name!r}, the model has {sorted(outputs)}"
                )
            if len(out.shape) not in ranks:
                raise ModelError(f"{where}: output {name!r} has shape {out.shape}")
            if len(out.shape) == 2 and name != meta.score_output:
                cols = _static_dim(out.shape[1])
                if cols is not None and cols != n:
                    raise ModelError(
                        f"{where}: output {name!r} has {cols} columns for {n} features"
                    )

    def score(self, features: Mapping[str, float]) -> AnomalyScore:
        """Score one feature vector (blocking; see :meth:`score_async`).

        Raises:
            ValueError: A declared feature is missing or not finite (never scored).
        """
        row = np.empty((1, len(self.names)), dtype=np.float32)
        for i, name in enumerate(self.names):
            value = features.get(name)
            if value is None or not math.isfinite(value):
                raise ValueError(f"feature {name!r} is missing or not finite: {value!r}")
            row[0, i] = value
        results = self._session.run(self._outputs, {self.metadata.input: row})
        meta = self.metadata
        score = float(np.asarray(results[0]).reshape(-1)[0])
        extra = iter(results[1:])
        contributions = (
            self._per_feature(next(extra)) if meta.contributions_output else MappingProxyType({})
        )
        deviations = (
            self._per_feature(next(extra)) if meta.deviations_output else MappingProxyType({})
        )
        return AnomalyScore(
            score=score,
            threshold=meta.threshold,
            clear_threshold=meta.clear_threshold,
            contributions=contributions,
            deviations=deviations,
        )

    def _per_feature(self, values: Any) -> Mapping[str, float]:
        row = np.asarray(values, dtype=np.float64).reshape(-1)
        return MappingProxyType({n: float(v) for n, v in zip(self.names, row, strict=True)})

    async def score_async(self, features: Mapping[str, float]) -> AnomalyScore:
        """:meth:`score` in a worker thread, so the event loop never blocks on inference.

        onnxruntime sessions may be run from several threads at once.
        """
        return await asyncio.to_thread(self.score, features)


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"first difference at position {i}: {x!r} vs {y!r}"
    return f"{len(a)} vs {len(b)} features"
