"""The anomaly model file and its metadata: loading, scoring, and refusing mismatches."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.detect.anomaly import AnomalyModel, ModelError
from gateway.detect.features import FEATURES


def _normal_vector(meta_path: Path) -> dict[str, float]:
    """The training mean of every feature: the most normal vector there is."""
    meta = json.loads(meta_path.read_text())
    names = [f["name"] for f in meta["features"]]
    return dict(zip(names, meta["training"]["feature_mean"], strict=True))


def _write_meta(tmp_path: Path, meta_path: Path, edit: Any) -> Path:
    data = json.loads(meta_path.read_text())
    edit(data)
    out = tmp_path / "edited.json"
    out.write_text(json.dumps(data))
    return out


def test_built_model_is_small_and_declares_the_catalogue(built: tuple[Path, Path]) -> None:
    """The build writes a KB-sized .onnx whose metadata lists every catalogue feature in
    order, with units, and pins the model file by its SHA-256."""
    model_path, meta_path = built
    assert model_path.stat().st_size < 16_000
    meta = json.loads(meta_path.read_text())
    assert [f["name"] for f in meta["features"]] == list(FEATURES)
    assert [f["unit"] for f in meta["features"]] == [s.unit for s in FEATURES.values()]
    assert len(meta["model_sha256"]) == 64
    assert 0 < meta["clear_threshold"] < meta["threshold"]


def test_model_loads_and_scores(model: AnomalyModel, built: tuple[Path, Path]) -> None:
    """A normal vector scores far below the threshold; contributions add up to the score;
    pushing one feature far off raises the score and that feature carries it."""
    normal = _normal_vector(built[1])
    calm = model.score(normal)
    assert 0.0 <= calm.score < calm.threshold
    assert not calm.anomalous
    assert sum(calm.contributions.values()) == pytest.approx(calm.score, abs=1e-3)

    std = dict(
        zip(model.names, json.loads(built[1].read_text())["training"]["feature_std"], strict=True)
    )
    hot = model.score(
        {
            **normal,
            "bearing_temp_excess": normal["bearing_temp_excess"] + 20 * std["bearing_temp_excess"],
        }
    )
    assert hot.anomalous
    assert hot.deviations["bearing_temp_excess"] == pytest.approx(20.0, rel=1e-3)
    assert max(hot.contributions, key=lambda n: hot.contributions[n]) == "bearing_temp_excess"
    assert sum(hot.contributions.values()) == pytest.approx(hot.score, rel=1e-4)


def test_score_refuses_missing_or_non_finite_features(
    model: AnomalyModel, built: tuple[Path, Path]
) -> None:
    """A vector with a missing or NaN feature is never scored."""
    normal = _normal_vector(built[1])
    with pytest.raises(ValueError, match="mass_balance"):
        model.score({k: v for k, v in normal.items() if k != "mass_balance"})
    with pytest.raises(ValueError, match="heater_residual"):
        model.score({**normal, "heater_residual": float("nan")})


async def test_score_async_runs_off_the_event_loop(
    model: AnomalyModel, built: tuple[Path, Path]
) -> None:
    """score_async gives the same answer as score, computed in a worker thread."""
    normal = _normal_vector(built[1])
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = model.score

    def spy(features: dict[str, float]) -> Any:
        seen.append(threading.get_ident())
        return original(features)

    model.score = spy  # type: ignore[method-assign]
    try:
        results = await asyncio.gather(*(model.score_async(normal) for _ in range(4)))
    finally:
        del model.score
    assert all(r == original(normal) for r in results)
    assert seen
    assert loop_thread not in seen


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            lambda d: d["features"].pop(),
            r"input 'features' takes 9 features, the metadata declares 8",
            id="feature-removed",
        ),
        pytest.param(
            lambda d: d["features"].__setitem__(-1, {"name": "twin_residual", "unit": "1"}),
            r"first difference at position 8: 'flatline_fraction' vs 'twin_residual'",
            id="feature-replaced",
        ),
        pytest.param(
            lambda d: d["features"].insert(0, d["features"].pop(3)),
            r"first difference at position 0: 'vibration_excess' vs 'pump_head_residual'",
            id="features-reordered",
        ),
        pytest.param(
            lambda d: d.update(input="X"),
            r"declares one input 'X', the model has 'features'",
            id="wrong-input",
        ),
        pytest.param(
            lambda d: d["outputs"].update(contributions="contrib"),
            r"names output 'contrib'",
            id="wrong-output",
        ),
    ],
)
def test_mismatched_metadata_is_refused(
    built: tuple[Path, Path], tmp_path: Path, edit: Any, message: str
) -> None:
    """A metadata file that does not describe the model is refused, naming both files and
    the mismatch (checked with the SHA-256 pin removed, so the contract check itself
    must catch it)."""
    model_path, meta_path = built

    def unpinned(d: dict[str, Any]) -> None:
        d.pop("model_sha256")
        edit(d)

    bad = _write_meta(tmp_path, meta_path, unpinned)
    with pytest.raises(ModelError, match=message) as info:
        AnomalyModel(model_path, bad)
    assert str(model_path) in str(info.value)
    assert str(bad) in str(info.value)


def test_metadata_for_another_model_file_is_refused(
    built: tuple[Path, Path], tmp_path: Path
) -> None:
    """The SHA-256 pin catches a model rebuilt without its metadata (or vice versa)."""
    model_path, meta_path = built
    bad = _write_meta(tmp_path, meta_path, lambda d: d.update(model_sha256="0" * 64))
    with pytest.raises(ModelError, match="rebuild both together"):
        AnomalyModel(model_path, bad)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(lambda d: d.update(threshhold=3), "unknown key 'threshhold'", id="typo"),
        pytest.param(lambda d: d.update(threshold=-1), "threshold: a finite number > 0", id="thr"),
        pytest.param(
            lambda d: d["calibration"]["mass_balance"].pop(),
            r"feature 'mass_balance' needs 2 coefficients",
            id="calibration",
        ),
        pytest.param(
            lambda d: d["features"][0].update(unit="in/s"),
            r"'vibration_excess' is computed in 'mm/s', not 'in/s'",
            id="unit",
        ),
        pytest.param(lambda d: d["window"].update(hop=0), r"window: .*hop", id="window"),
    ],
)
def test_invalid_metadata_names_file_and_key(
    built: tuple[Path, Path], tmp_path: Path, edit: Any, message: str
) -> None:
    """Invalid metadata fails hard with the file name and the offending key."""
    model_path, meta_path = built
    bad = _write_meta(tmp_path, meta_path, edit)
    with pytest.raises(ModelError, match=message) as info:
        AnomalyModel(model_path, bad)
    assert str(bad) in str(info.value)


def test_unreadable_files_are_named(built: tuple[Path, Path], tmp_path: Path) -> None:
    """A missing model or a file that is not ONNX gives a ModelError naming it."""
    _model_path, meta_path = built
    with pytest.raises(ModelError, match="cannot read the model"):
        AnomalyModel(tmp_path / "nope.onnx", meta_path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    unpinned = _write_meta(tmp_path, meta_path, lambda d: d.pop("model_sha256"))
    with pytest.raises(ModelError, match=f"{garbage}: onnxruntime cannot load it"):
        AnomalyModel(garbage, unpinned)
