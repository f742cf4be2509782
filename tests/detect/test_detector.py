"""The detector wiring: external (twin residual) features are just more named features,
and the async path scores off the event loop with the same result as the sync path."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from gateway.detect.anomaly import AnomalyModel
from gateway.detect.detector import Detector
from gateway.detect.features import FEATURES
from gateway.signals import Quality, SignalValue


@pytest.fixture(scope="module")
def twin_model(
    builder: ModuleType, built: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> AnomalyModel:
    """The test model's features plus one external feature, 'twin_level_residual'
    (standard normal in training), written as a user would declare it."""
    meta = json.loads(built[1].read_text())
    names = [*FEATURES, "twin_level_residual"]
    rng = np.random.default_rng(0)
    mean = np.array([*meta["training"]["feature_mean"], 0.0])
    std = np.array([*meta["training"]["feature_std"], 1.0])
    x = mean + std * rng.standard_normal((4000, len(names)))
    fitted = builder.fit_mahalanobis(x)
    out = tmp_path_factory.mktemp("twin")
    (out / "twin.onnx").write_bytes(builder.onnx_model(fitted, names).SerializeToString())
    meta.pop("model_sha256")
    meta["features"].append({"name": "twin_level_residual", "unit": "m"})
    (out / "twin.json").write_text(json.dumps(meta))
    return AnomalyModel(out / "twin.onnx", out / "twin.json")


def test_external_features_are_merged_by_name(
    builder: ModuleType, twin_model: AnomalyModel
) -> None:
    """A model may declare features the gateway does not compute; the detector takes them
    from the caller by name, scores with them, and scores nothing while one is missing."""
    detector = Detector(twin_model)
    assert detector.external == ("twin_level_residual",)
    steps = []
    for i, (t, values) in enumerate(builder.plant_samples(11, 900)):
        external = {} if i < 600 else {"twin_level_residual": 0.1 if i < 800 else 25.0}
        step = detector.observe(t, values, external)
        if step is not None:
            steps.append((i, step))
    missing = [s for i, s in steps if 300 <= i < 600]
    assert missing
    assert all(s.score is None for s in missing)
    assert "twin_level_residual" in (missing[0].reason or "")
    calm = [s for i, s in steps if 600 <= i < 800]
    assert all(s.score is not None and not s.score.anomalous for s in calm)
    off = [s for i, s in steps if i >= 800]
    assert all(s.score is not None and s.score.anomalous for s in off)
    assert off[-1].score is not None
    assert off[-1].score.deviations["twin_level_residual"] == pytest.approx(25.0, rel=0.05)
    assert [e.kind for _, s in steps for e in s.events] == ["raised"]


async def test_async_and_sync_paths_agree(builder: ModuleType, model: AnomalyModel) -> None:
    """observe_async (model in a worker thread) produces the same steps as observe."""
    sync, asyn = Detector(model), Detector(model)
    samples = list(builder.plant_samples(12, 420, faults=[(330.0, "leak", 0.2)]))
    a = [s for t, v in samples if (s := sync.observe(t, v)) is not None]
    b = [s for t, v in samples if (s := await asyn.observe_async(t, v)) is not None]
    assert len(a) == len(b) == 42
    assert [(s.t, s.score) for s in a] == [(s.t, s.score) for s in b]
    assert any(s.events for s in b)


def test_snapshot_sampling_uses_the_signal_map(model: AnomalyModel) -> None:
    """The detector reads its signals from a live-table snapshot through the signal map
    (here: every role from the Modbus source's 'mb_' signals); unusable values are None."""
    detector = Detector(model, signal_map={role: f"mb_{role}" for role in detector_roles()})
    snapshot = {
        f"mb_{role}": SignalValue(f"mb_{role}", float(i), "", 0.0, 0.0, 0.0, Quality.GOOD)
        for i, role in enumerate(detector.signals)
    }
    snapshot["mb_valve_cmd"] = replace(snapshot["mb_valve_cmd"], quality=Quality.STALE)
    values = detector.sample_snapshot(snapshot)
    assert set(values) == set(detector.signals)
    assert values["valve_cmd"] is None
    assert values[detector.signals[0]] == 0.0
    assert sum(v is not None for v in values.values()) == len(detector.signals) - 1


def detector_roles() -> list[str]:
    return sorted({s for spec in FEATURES.values() for s in spec.signals})
