"""`edgetwin simulate`: a what-if from the running daemon's estimate or from the store."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from gateway.cli import main
from gateway.store.historian import SqliteHistorian
from gateway.store.ports import Sample
from gateway.twin.observer import StateObserver
from gateway.twin.skid import skid_model
from gateway.twin.whatif import TWIN_STATE_FILE
from tests.support import SKID
from tests.twin.plant_feed import run_plant, vectors


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "skid.toml"
    path.write_text(SKID.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def _store_plant_values(state: Path, now: float) -> None:
    """The historian as a stopped daemon left it: the plant's last values, all good."""
    *_, (_t, _plant, table) = run_plant(30, seed=31)
    state.mkdir(parents=True, exist_ok=True)
    with SqliteHistorian(state / "history.db") as historian:
        historian.append(
            [Sample(n, now - 5.0, sv.value, "good", now - 5.0) for n, sv in table.items()]
        )


def test_from_the_store_a_setpoint_above_the_envelope_is_shown_crossing(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    _store_plant_values(state, time.time())
    code = main(
        [
            "simulate",
            "--config",
            str(config),
            "--state-dir",
            str(state),
            "--set",
            "level_sp=2.8",
            "--horizon",
            "600",
            "--ensemble",
            "8",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "starting point: the historian's latest values" in out
    assert "level_sp 1.5 -> 2.8 m" in out
    assert "CROSSES: tank_level reaches 2.7 m in" in out
    assert "8 parameter samples" in out


def test_from_the_daemon_estimate_the_current_setpoints_stay_inside(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = skid_model()
    obs = StateObserver(model)
    for t, _plant, table in run_plant(120, seed=32):
        obs.update(t, *vectors(model, table))
    state = tmp_path / "state"
    state.mkdir()
    doc = {"saved_at": time.time(), "gateway": "x", "observer": obs.snapshot()}
    (state / TWIN_STATE_FILE).write_text(json.dumps(doc))
    code = main(
        [
            "simulate",
            "--config",
            str(config),
            "--state-dir",
            str(state),
            "--horizon",
            "120",
            "--ensemble",
            "4",
            "--json",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["starting_point"]["source"] == "daemon"
    assert out["members"] == 4
    assert out["crossings"] == []
    level = out["outputs"]["tank_level"]
    assert min(level["min"]) > 1.45
    assert max(level["max"]) < 1.55
    assert np.isclose(out["times_s"][-1], 120.0)


def test_an_old_daemon_estimate_is_not_used(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A twin.json left by a daemon that stopped is not the plant now: with no historian
    either, the command says what is missing and exits 2."""
    state = tmp_path / "state"
    state.mkdir()
    obs_doc = {"saved_at": time.time() - 3600, "observer": {"model": "skid"}}
    (state / TWIN_STATE_FILE).write_text(json.dumps(obs_doc))
    code = main(["simulate", "--config", str(config), "--state-dir", str(state)])
    assert code == 2
    assert "no state to start from" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("pump_speed=3", "neither a writable tag nor a twin input; use one of:"),
        ("level_sp", "expected TAG=VALUE"),
        ("level_sp=high", "'high' is not a number"),
        ("level_sp=nan", "finite"),
    ],
)
def test_a_bad_setting_is_refused_with_the_names_that_work(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str, message: str
) -> None:
    code = main(
        ["simulate", "--config", str(config), "--state-dir", str(tmp_path), "--set", setting]
    )
    assert code == 2
    assert message in capsys.readouterr().err
