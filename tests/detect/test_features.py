"""Feature extraction: the build (training) path and the gateway (serving) path agree
exactly, and only full windows of good, evenly spaced samples give a vector."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from gateway.detect.anomaly import load_metadata
from gateway.detect.features import (
    FEATURES,
    FeatureExtractor,
    WindowConfig,
    required_signals,
    values_from_snapshot,
)
from gateway.signals import Quality, SignalValue

SMALL = WindowConfig(length=40, hop=10, short=20, edge=5)


def _stream(
    builder: ModuleType, seed: int, seconds: float
) -> list[tuple[float, dict[str, float | None]]]:
    return list(builder.plant_samples(seed, seconds))


def test_build_and_serve_paths_give_identical_features(
    builder: ModuleType, built: tuple[Path, Path]
) -> None:
    """The features the model was trained on (build script path) and the features the
    gateway scores (FeatureExtractor) are bit-identical for the same samples."""
    meta = load_metadata(built[1])
    samples = _stream(builder, seed=7, seconds=1200)
    train = builder.feature_matrix(builder.collect_terms(iter(samples)), meta.calibration)

    extractor = FeatureExtractor(meta.names, meta.calibration, meta.window)
    results = [r for t, v in samples if (r := extractor.push(t, v)) is not None]
    serve = np.array([[r.vector.values[n] for n in meta.names] for r in results if r.vector])
    assert (
        serve.shape
        == train.shape
        == ((1200 - meta.window.length) // meta.window.hop + 1, len(FEATURES))
    )
    np.testing.assert_array_equal(serve, train)


def test_windows_fall_due_every_hop_and_fill_first(builder: ModuleType) -> None:
    """A window falls due every `hop` samples; until `length` samples are in, a due
    window carries a reason instead of a vector."""
    extractor = FeatureExtractor(("valve_tracking",), {}, SMALL)
    results = [extractor.push(t, v) for t, v in _stream(builder, seed=3, seconds=60)]
    due = [(i, r) for i, r in enumerate(results) if r is not None]
    assert [i for i, _ in due] == [9, 19, 29, 39, 49, 59]
    assert [r.vector is not None for _, r in due] == [False, False, False, True, True, True]
    assert due[0][1].reason == "collecting the first window"


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        pytest.param(
            lambda t, v: (t, {**v, "valve_cmd": None}),
            "valve_cmd missing or not good",
            id="not-good",
        ),
        pytest.param(
            lambda t, v: (t, {**v, "valve_position": math.nan}), "valve_position missing", id="nan"
        ),
        pytest.param(
            lambda t, v: (t, {k: x for k, x in v.items() if k != "valve_cmd"}),
            "valve_cmd missing",
            id="absent",
        ),
        pytest.param(lambda t, v: (t + 5.0, v), "sample gap of 6 s", id="gap"),
    ],
)
def test_bad_or_missing_samples_give_no_vector_until_a_full_good_window(
    builder: ModuleType, spoil, reason: str
) -> None:
    """One non-good, NaN or missing input, or a gap in time, empties the window: the next
    `length` samples give no vector (due windows say why), then vectors resume."""
    samples = _stream(builder, seed=3, seconds=200)
    bad_at = 100
    extractor = FeatureExtractor(("valve_tracking",), {}, SMALL)
    shift = 0.0
    outcome: dict[int, bool] = {}
    reasons = set()
    for i, (t, v) in enumerate(samples):
        if i == bad_at:
            t2, v2 = spoil(t, v)
            shift = t2 - t
            t, v = t2, v2
        r = extractor.push(t + (shift if i > bad_at else 0.0), v)
        if r is not None:
            outcome[i] = r.vector is not None
            if r.vector is None and i > bad_at:
                reasons.add(r.reason)
    before = [ok for i, ok in outcome.items() if SMALL.length <= i < bad_at]
    blind = [ok for i, ok in outcome.items() if bad_at <= i < bad_at + SMALL.length - 1]
    after = [ok for i, ok in outcome.items() if i >= bad_at + SMALL.length + 1]
    assert all(before)
    assert before
    assert not any(blind)
    assert blind
    assert all(after)
    assert after
    assert any(reason in (r or "") for r in reasons), reasons


def test_undefined_feature_gives_no_vector(builder: ModuleType) -> None:
    """A feature with no meaning in the window (outlet valve shut: no valve-curve
    residual) gives a reason, not a made-up value."""
    cal = {"valve_flow_residual": (0.0, 0.0, 0.0)}
    extractor = FeatureExtractor(("valve_flow_residual",), cal, SMALL)
    results = []
    for t, v in _stream(builder, seed=3, seconds=60):
        results.append(extractor.push(t, {**v, "outlet_flow": 0.0}))
    due = [r for r in results if r is not None and r.vector is None and r.reason]
    assert any("valve nearly shut" in (r.reason or "") for r in due)
    assert not any(r.vector for r in results if r is not None)


def test_extractor_requires_matching_calibration() -> None:
    """A calibrated feature without its coefficients is refused at construction."""
    with pytest.raises(ValueError, match="'pump_head_residual' needs calibration coefficients"):
        FeatureExtractor(("pump_head_residual",), {}, SMALL)


def test_extractor_reads_only_the_signals_its_features_need() -> None:
    """The extractor keeps a buffer only for the signals of its features (bounded memory:
    length × signals floats), and external feature names are left to the caller."""
    extractor = FeatureExtractor(("valve_tracking", "twin_level_residual"), {}, SMALL)
    assert extractor.signals == ("valve_cmd", "valve_position")
    assert extractor.names == ("valve_tracking",)
    assert required_signals(tuple(FEATURES)) == tuple(
        sorted({s for spec in FEATURES.values() for s in spec.signals})
    )


def test_snapshot_values_use_only_good_signals() -> None:
    """From a live-table snapshot only good values are used; stale, bad and absent
    signals become None, and a signal map renames roles to configured signals."""

    def sv(name: str, value: float, quality: Quality) -> SignalValue:
        return SignalValue(name, value, "", 0.0, 0.0, 0.0, quality)

    snapshot = {
        "mb_tank_level": sv("mb_tank_level", 1.5, Quality.GOOD),
        "pump_flow": sv("pump_flow", 10.0, Quality.STALE),
        "outlet_flow": sv("outlet_flow", 9.0, Quality.BAD),
        "valve_cmd": sv("valve_cmd", 50.0, Quality.UNCERTAIN),
    }
    values = values_from_snapshot(
        snapshot,
        ("tank_level", "pump_flow", "outlet_flow", "valve_cmd", "tank_temp"),
        {"tank_level": "mb_tank_level"},
    )
    assert values == {
        "tank_level": 1.5,
        "pump_flow": None,
        "outlet_flow": None,
        "valve_cmd": None,
        "tank_temp": None,
    }


def test_window_config_is_validated() -> None:
    """Impossible window geometries are refused with every problem named."""
    with pytest.raises(ValueError, match=r"hop must be within .*edge must be within"):
        WindowConfig(length=10, hop=11, edge=6)
