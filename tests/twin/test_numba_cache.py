"""Where numba caches the twin's machine code: use_cache_dir points it into a writable
directory before anything compiles, and refuses when that is impossible or too late."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.errors import GatewayError
from gateway.twin.model import TwinModel
from gateway.twin.numba_cache import use_cache_dir

REPO = Path(__file__).resolve().parents[2]


def test_compiled_model_functions_are_cached_in_the_chosen_directory(tmp_path: Path) -> None:
    """In a fresh process, use_cache_dir() before importing a model makes numba write
    that model's cache files (index .nbi, code .nbc) under the chosen directory."""
    cache = tmp_path / "state" / "numba"
    code = (
        "import sys\n"
        "from gateway.twin.numba_cache import use_cache_dir\n"
        "print(use_cache_dir(sys.argv[1]))\n"
        "import tests.twin.test_second_model as m\n"
        "m.tank_model()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(cache)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(cache.resolve())
    names = [p.name for p in cache.rglob("*")]
    assert any(n.startswith("test_second_model.tank_rhs") and n.endswith(".nbi") for n in names)
    assert any(n.endswith(".nbc") for n in names)


def test_too_late_once_a_model_is_compiled(skid: TwinModel, tmp_path: Path) -> None:
    """After the skid model's module was imported its cache location is fixed: moving it
    now would silently not apply, so it is an error."""
    with pytest.raises(GatewayError, match=r"came too late: gateway\.twin\.skid"):
        use_cache_dir(tmp_path / "numba")


def test_an_unwritable_directory_is_refused(tmp_path: Path) -> None:
    """A path that cannot be created (here: below a regular file) is an error naming it."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(GatewayError, match=r"numba cache directory .*file/numba.* not writable"):
        use_cache_dir(blocker / "numba")
