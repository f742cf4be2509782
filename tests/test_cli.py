"""The `edgetwin` command's contract: exit codes and what it prints."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.cli import main
from tests.support import load_model_builder

REPO = Path(__file__).resolve().parents[1]
SKID = REPO / "config" / "skid.toml"


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with anomaly.onnx + anomaly.json, built like `make models` builds them
    but on half an hour of one seed (~1 s): check-config needs a valid pair, not a good
    detector, and the real ones are git-ignored build outputs a fresh checkout lacks."""
    builder = load_model_builder()
    out = tmp_path_factory.mktemp("models")
    builder.build(out, seeds=(1,), hours=0.5)
    return out


def _skid_copy(root: Path, models: Path | None, edits: tuple[tuple[str, str], ...] = ()) -> Path:
    """config/skid.toml at root/config/, with the model pair at root/models/ (where its
    relative detect paths point) unless ``models`` is None."""
    text = SKID.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    (root / "config").mkdir()
    path = root / "config" / "skid.toml"
    path.write_text(text, encoding="utf-8")
    if models is not None:
        shutil.copytree(models, root / "models")
    return path


def test_check_config_valid_prints_summary_and_exits_0(
    tmp_path: Path, small_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid file gets a one-screen summary naming sources, writables, interlocks and
    the anomaly model it loaded."""
    path = _skid_copy(tmp_path, small_model)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK")
    for word in ("sources", "plc_modbus", "writable", "level_sp", "interlocks", "bearing_hot"):
        assert word in out
    assert f"detect      model {tmp_path.resolve() / 'models' / 'anomaly.onnx'}" in out
    assert "model: 9 features, threshold" in out
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


# (edits to config/skid.toml, model files present, first stderr line after the file name)
CHECK_CONFIG_REFUSED = [
    pytest.param(
        (),
        False,
        "detect.model: {root}/models/anomaly.onnx does not exist; build it with `make models` "
        "(models/build_anomaly_model.py), point detect.model at your own file, or set "
        "detect.enabled = false",
        id="model-not-built",
    ),
    pytest.param(
        (('metadata = "../models/anomaly.json"', 'metadata = "../models/other.json"'),),
        True,
        "detect.metadata: {root}/models/other.json does not exist; build it with `make models` "
        "(models/build_anomaly_model.py), point detect.metadata at your own file, or set "
        "detect.enabled = false",
        id="metadata-missing",
    ),
    pytest.param(
        (("[signal.vibration_rms]", "[signal.vib]"), ('= "vibration_rms"', '= "vib"')),
        True,
        "detect.signals.vibration_rms: the model reads signal role 'vibration_rms' (for "
        "vibration_excess, flatline_fraction) and no signal has that name; map it under "
        '[detect.signals]: vibration_rms = "<the signal that measures it>"',
        id="role-without-signal",
    ),
    pytest.param(
        (("[detect.signals]", '[detect.signals]\ntank_lvl = "mb_tank_level"'),),
        True,
        "detect.signals.tank_lvl: the model reads no signal role 'tank_lvl'; it reads: "
        "ambient_temp, bearing_temp, discharge_pressure, heater_power, inlet_temp, "
        "motor_current, outlet_flow, pump_flow, pump_speed, tank_level, tank_temp, valve_cmd, "
        "valve_position, vibration_rms",
        id="misspelt-role",
    ),
    pytest.param(
        (("[twin.parameters.valve_cv]", "[twin.parameters.valve_kv]"),),
        True,
        "twin.parameters.valve_kv: the model 'skid' has no parameter 'valve_kv'; it has: ",
        id="twin-unknown-parameter",
    ),
]


@pytest.mark.parametrize(("edits", "with_model", "expected"), CHECK_CONFIG_REFUSED)
def test_check_config_builds_twin_and_loads_model(
    tmp_path: Path,
    small_model: Path,
    capsys: pytest.CaptureFixture[str],
    edits: tuple[tuple[str, str], ...],
    with_model: bool,
    expected: str,
) -> None:
    """A file that loads but names a twin or anomaly model the daemon could not use is
    refused (exit 2) with the key and the fix, and no summary is printed."""
    path = _skid_copy(tmp_path, small_model if with_model else None, edits)
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.splitlines()
    assert err[0].startswith(f"{path}: " + expected.format(root=tmp_path.resolve()))
    assert err[-1].startswith(f"{path}: {len(err) - 1} problem(s) with the twin or the anomaly")


def test_check_config_accepts_roles_mapped_to_other_signals(
    tmp_path: Path, small_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Roles the model reads may come from signals of another name (here the Modbus copies),
    and the summary lists that wiring."""
    mapping = "\n".join(f'{r} = "mb_{r}"' for r in ("tank_level", "pump_flow", "outlet_flow"))
    path = _skid_copy(
        tmp_path, small_model, (("[detect.signals]", f"[detect.signals]\n{mapping}"),)
    )
    assert main(["check-config", str(path)]) == 0
    assert (
        "roles: tank_level <- mb_tank_level, pump_flow <- mb_pump_flow" in capsys.readouterr().out
    )


def test_check_config_reports_a_model_that_does_not_match_its_metadata(
    tmp_path: Path, small_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An .onnx rebuilt without its metadata (or edited) is caught here, not at start-up."""
    path = _skid_copy(tmp_path, small_model)
    with (tmp_path / "models" / "anomaly.onnx").open("ab") as f:
        f.write(b"\0")
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"{path}: detect.model: ")
    assert "was written for a model with SHA-256" in err[0]


def test_check_config_reports_invalid_metadata_per_key(
    tmp_path: Path, small_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Metadata that is not valid is reported under detect.metadata, one line per problem."""
    path = _skid_copy(tmp_path, small_model)
    (tmp_path / "models" / "anomaly.json").write_text('{"format": "x"}')
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    meta = tmp_path.resolve() / "models" / "anomaly.json"
    assert (
        err[0] == f"{path}: detect.metadata: {meta}: format: expected 'edgetwin.anomaly/1', got 'x'"
    )
    assert len(err) > 2


def test_check_config_skips_the_model_when_detection_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With detect.enabled = false no model is needed (none was built here)."""
    path = _skid_copy(tmp_path, None, (("[detect]\nenabled = true", "[detect]\nenabled = false"),))
    assert main(["check-config", str(path)]) == 0
    assert "detect      OFF (enabled = false)" in capsys.readouterr().out
