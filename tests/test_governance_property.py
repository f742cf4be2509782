"""CI's run of the governance state machine (tests/soak/governance_machine.py).

The machine runs in a fresh interpreter with a hard time limit: it drives a plant and a
daemon on a thread of their own, and a wedge there must fail this test with the
machine's own output, not hang the suite. ``make soak`` runs the same machine directly
with many more examples.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MACHINE = ROOT / "tests" / "soak" / "governance_machine.py"
LIMIT_S = 600


def test_governance_never_writes_what_it_must_not() -> None:
    env = {**os.environ, "EDGETWIN_SOAK_EXAMPLES": os.environ.get("EDGETWIN_SOAK_EXAMPLES", "3")}
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                str(MACHINE),
                "--hypothesis-show-statistics",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
        )
    except subprocess.TimeoutExpired as err:
        tail = (
            (err.stdout or b"")[-4000:]
            if isinstance(err.stdout, bytes)
            else (err.stdout or "")[-4000:]
        )
        pytest.fail(f"the governance state machine did not finish in {LIMIT_S} s:\n{tail}")
    summary = [line for line in done.stdout.splitlines() if "%," in line or "passed" in line]
    print("\n".join(summary))
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
