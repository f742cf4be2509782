"""Where numba keeps the twin's compiled machine code between starts.

The twin's functions are compiled with ``cache=True``: the first start on a machine
compiles them (seconds, see ``bench/twin.py``) and writes the object code to disk; later
starts load it (tens of milliseconds). By default numba writes next to the source, in
``gateway/twin/__pycache__``, and falls back to a per-user directory. Under systemd with
``ProtectSystem=strict`` and no home directory neither is writable, numba silently
recompiles on every start and the watchdog sees a slow start-up. So the daemon points the
cache into its state directory, which systemd makes writable::

    from gateway.twin.numba_cache import use_cache_dir
    use_cache_dir(Path(state_dir) / "numba")      # before building the twin

or, equivalently, in the unit file: ``Environment=NUMBA_CACHE_DIR=%S/edgetwin/numba``.

numba decides where a function's cache lives when the function is *decorated* (for the
model functions: when their module is imported; for the integrator's kernels: when a
``Simulator`` first needs them). ``use_cache_dir`` therefore refuses to run once a twin
module with compiled functions has been imported; it does not import numba itself.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from gateway.errors import GatewayError

ENV_VAR = "NUMBA_CACHE_DIR"

# Model modules create cached numba dispatchers when imported. A model module registered
# later must also be imported after the cache directory is chosen; this list guards the
# ones that ship.
_COMPILING_MODULES = ("gateway.twin.skid",)


def use_cache_dir(path: str | Path) -> Path:
    """Make numba cache compiled twin code under ``path`` (created if missing).

    Args:
        path: A directory the process can write, e.g. ``<state_dir>/numba``.

    Returns:
        The absolute directory now in use.

    Raises:
        GatewayError: The directory cannot be created or written, or a twin module that
            compiles on import was already imported (its cache location is already fixed).
    """
    directory = Path(path).expanduser().resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError as err:
        raise GatewayError(
            f"numba cache directory {str(directory)!r} is not writable: {err.strerror or err}; "
            "point it into the gateway's state directory"
        ) from err
    numba = sys.modules.get("numba")
    in_use = numba.core.config.CACHE_DIR if numba is not None else os.environ.get(ENV_VAR, "")
    if in_use == str(directory):
        return directory  # already in use: nothing to move
    early = [name for name in _COMPILING_MODULES if name in sys.modules]
    integrate = sys.modules.get("gateway.twin.integrate")
    if integrate is not None and integrate.kernels_built():
        early.append("the integrator's kernels")
    if early:
        raise GatewayError(
            f"use_cache_dir({str(directory)!r}) came too late: {', '.join(early)} already "
            "imported or built, so numba has fixed their cache location; call it before "
            "building the twin"
        )
    os.environ[ENV_VAR] = str(directory)
    if numba is not None:
        # numba read the variable when it was imported; later decorations read its config.
        numba.core.config.CACHE_DIR = str(directory)
    return directory
