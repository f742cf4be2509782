"""The governance state machine (tests/soak/governance_machine.py) in every test run.

The machine runs in a fresh interpreter with a hard time limit: it drives a plant and a
daemon on a thread of their own, and a wedge there must fail this test with the
machine's own output, not hang the suite. ``make test`` runs ``CI_EXAMPLES`` examples of
up to 16 steps (each step a burst of 4-10 actions); ``make soak`` runs many more
(``EDGETWIN_SOAK_EXAMPLES``, ``EDGETWIN_SOAK_STEPS``). Hypothesis's statistics (what the
proposals met, how many writes reached the plant) are printed with ``-s``.
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
CI_EXAMPLES = 4
"""Examples in the default run: about 4 minutes on 2 cores."""
PER_EXAMPLE_S = 240
"""Time allowed per example (a plant, a daemon, the twin earning trust, up to 16 bursts;
the longest seen alone took 111 s)."""


@pytest.mark.timeout(0)  # bounded by its own, example-scaled limit below
def test_governance_never_writes_what_it_must_not() -> None:
    env = dict(os.environ)
    env.setdefault("EDGETWIN_SOAK_EXAMPLES", str(CI_EXAMPLES))
    limit_s = 120 + PER_EXAMPLE_S * int(env["EDGETWIN_SOAK_EXAMPLES"])
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "timeout=0",
                str(MACHINE),
                "--hypothesis-show-statistics",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=limit_s,
        )
    except subprocess.TimeoutExpired as err:
        tail = (
            (err.stdout or b"")[-4000:]
            if isinstance(err.stdout, bytes)
            else (err.stdout or "")[-4000:]
        )
        pytest.fail(f"the governance state machine did not finish in {limit_s} s:\n{tail}")
    summary = [line for line in done.stdout.splitlines() if "%," in line or "passed" in line]
    print("\n".join(summary))
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
