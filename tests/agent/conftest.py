"""Fixtures for the agent tests: a real GGUF model, built in a temporary directory.

The model is the tiny random-weights llama of ``models/build_tiny_gguf.py`` (loaded from
its file: ``models/`` is not a package). Building it needs only the ``gguf`` package and
numpy, so this process never loads llama.cpp: every test that runs the model does so in
the worker child process, where an abort on an unusual model costs one test, not the run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BUILD_SCRIPT = Path(__file__).resolve().parents[2] / "models" / "build_tiny_gguf.py"


def load_tiny_builder() -> ModuleType:
    """models/build_tiny_gguf.py as a module, loaded once per session."""
    builder = sys.modules.get("build_tiny_gguf")
    if builder is None:
        spec = importlib.util.spec_from_file_location("build_tiny_gguf", BUILD_SCRIPT)
        assert spec is not None
        assert spec.loader is not None
        builder = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = builder
        spec.loader.exec_module(builder)
    return builder


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a freshly built tiny GGUF (2 layers, 64 wide, byte vocabulary, seed 0)."""
    path: Path = load_tiny_builder().build_tiny_gguf(
        tmp_path_factory.mktemp("gguf") / "tiny.gguf", seed=0
    )
    return path


@pytest.fixture(scope="session")
def aborting_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model without token types: llama.cpp aborts on its first grammar sample."""
    path: Path = load_tiny_builder().build_tiny_gguf(
        tmp_path_factory.mktemp("gguf") / "aborts.gguf", seed=0, token_types=False
    )
    return path
