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


def test_audit_verify_reports_tampering_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`edgetwin audit verify` passes an intact trail (exit 0) and names the first broken
    record of an edited one (exit 2)."""
    import sqlite3

    from gateway.store.audit import SqliteAuditTrail

    path = tmp_path / "audit.db"
    with SqliteAuditTrail(path) as audit:
        for i in range(4):
            audit.append("proposal", {"n": i}, proposal_id=f"p{i}")
    assert main(["audit", "verify", str(path)]) == 0
    assert "4 records, chain intact" in capsys.readouterr().out
    with sqlite3.connect(path) as conn:
        triggers = conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
        for (name,) in triggers.fetchall():
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("UPDATE audit_log SET payload = '{\"n\":9}' WHERE seq = 3")
    assert main(["audit", "verify", str(path)]) == 2
    assert "BROKEN at record 3" in capsys.readouterr().out


def test_audit_verify_missing_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing audit file is an error naming the path, not a traceback."""
    assert main(["audit", "verify", str(tmp_path / "none.db")]) == 1
    assert "none.db" in capsys.readouterr().err
