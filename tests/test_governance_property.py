"""The governance state machine (tests/soak/governance_machine.py), on request.

The machine runs in a fresh interpreter with a hard time limit: it drives a plant and a
daemon on a thread of their own, and a wedge there must fail this test with the
machine's own output, not hang the suite. It runs when ``EDGETWIN_SOAK_EXAMPLES`` is set
(``make soak`` sets it and runs many more examples). It is not part of the default run
yet: in the full CI suite three examples did not finish within 10 minutes (the same three
take about 3 minutes alone), which is being investigated.
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
PER_EXAMPLE_S = 120
"""Time allowed per example (a plant, a daemon, the twin earning trust, up to 16 bursts)."""


@pytest.mark.timeout(0)  # bounded by its own, example-scaled limit below
@pytest.mark.skipif(
    "EDGETWIN_SOAK_EXAMPLES" not in os.environ,
    reason="the governance state machine runs with EDGETWIN_SOAK_EXAMPLES set (make soak)",
)
def test_governance_never_writes_what_it_must_not() -> None:
    env = dict(os.environ)
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
