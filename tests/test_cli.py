"""The `edgetwin` command's contract: exit codes and what it prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main

SKID = Path(__file__).resolve().parents[1] / "config" / "skid.toml"


def test_check_config_valid_prints_summary_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """A valid file gets a one-screen summary naming sources, writables and interlocks."""
    assert main(["check-config", str(SKID)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{SKID}: OK")
    for word in ("sources", "plc_modbus", "writable", "level_sp", "interlocks", "bearing_hot"):
        assert word in out
    assert len(out.splitlines()) <= 40


def test_check_config_invalid_lists_all_problems_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken file gets every problem on stderr, file and key first, and exit code 2."""
    text = SKID.read_text().replace("limits = [0.5, 2.4]", "limits = [0.5, 3.4]")
    text = text.replace('signal = "bearing_temp"', 'signal = "bearing_tmp"')
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{bad}: writable.level_sp.limits: limits [0.5, 3.4]")
    assert err[1].startswith(f"{bad}: interlock[2].signal: unknown signal 'bearing_tmp'")
    assert err[-1] == f"{bad}: 2 problem(s); nothing was loaded"
