"""Fixtures for the detect tests: a real anomaly model, built in a temporary directory.

The model is built by the same function as ``models/build_anomaly_model.py`` (the script
is loaded from its file: ``models/`` is not a package), on less data than the shipped
model so the session stays fast. Every test then runs real onnxruntime on a real .onnx.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from gateway.detect.anomaly import AnomalyModel
from tests.support import load_model_builder

TEST_SEEDS = (1, 2, 3, 4)
TEST_HOURS = 2.0
"""8 h of training (the shipped model has 24 h): enough pump regimes for the current and
pump-curve fits to hold on unseen seeds, and still built in ~15 s."""


@pytest.fixture(scope="session")
def builder() -> ModuleType:
    """The build script as a module."""
    return load_model_builder()


@pytest.fixture(scope="session")
def built(builder: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model path, metadata path) of a model trained on TEST_SEEDS x TEST_HOURS."""
    result = builder.build(tmp_path_factory.mktemp("model"), seeds=TEST_SEEDS, hours=TEST_HOURS)
    return result.model_path, result.meta_path


@pytest.fixture(scope="session")
def model(built: tuple[Path, Path]) -> AnomalyModel:
    return AnomalyModel(*built)
