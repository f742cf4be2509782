"""`edgetwin status`'s twin block: fidelity now, its stored history, estimates, forecasts."""

from __future__ import annotations

from pathlib import Path

from gateway.status import render_twin
from gateway.store.historian import SqliteHistorian
from gateway.store.ports import Sample

TRACKING = {
    "state": "running",
    "model": "skid",
    "tracking": True,
    "fidelity": {
        "score": 0.42,
        "threshold": 0.8,
        "trusted": False,
        "weakest": "pump_flow",
        "per_output": {"tank_level": 0.97, "pump_flow": 0.42, "vibration_rms": None},
    },
    "parameters": {
        "pump_shutoff_head": {"value": 45.51, "std": 0.21, "unit": "m", "estimated": True},
        "bearing_rise": {"value": 62.0, "std": 4.0, "unit": "K", "estimated": False},
    },
    "forecasts": [{"message": "tank_level falls to 0.3 m in 7 min 40 s (32/32 members)"}],
    "forecast_alerts": [{"alert_id": "abc-f-1", "message": "tank_level falls to 0.3 m"}],
    "divergence_alert": {
        "alert_id": "twin-abc-1",
        "message": "twin divergence raised: likely impeller_wear (58% of the score)",
    },
}


def test_untrusted_fidelity_names_its_weakest_output(tmp_path: Path) -> None:
    text = "\n".join(render_twin(TRACKING, tmp_path, 1000.0))
    assert "fidelity 0.420 (threshold 0.8) NOT trusted" in text
    assert "weakest output pump_flow" in text
    assert "pump_flow 0.42" in text
    assert "vibration_rms" not in text
    assert "pump_shutoff_head 45.51 ± 0.21 m" in text
    assert "bearing_rise" not in text
    assert "forecast: tank_level falls to 0.3 m in 7 min 40 s" in text
    assert "ALERT abc-f-1" in text
    assert "ALERT twin-abc-1: twin divergence raised: likely impeller_wear" in text


def test_unknown_fidelity_is_not_trusted(tmp_path: Path) -> None:
    doc = {**TRACKING, "fidelity": {"score": None, "threshold": 0.8, "per_output": {}}}
    assert "unknown (not enough scored predictions yet): not trusted" in "\n".join(
        render_twin(doc, tmp_path, 1000.0)
    )


def test_stored_fidelity_history_shows_without_the_daemon(tmp_path: Path) -> None:
    """The daemon stores its score every 10 s; with the daemon stopped the last hour is
    still summarised from the historian."""
    with SqliteHistorian(tmp_path / "history.db") as historian:
        historian.append(
            [
                Sample("twin.fidelity", 1000.0 + 10 * k, 0.95 if k != 7 else 0.31, "good", 0.0)
                for k in range(30)
            ]
            + [Sample("twin.fidelity", 1400.0, float("nan"), "uncertain", 0.0)]
        )
    text = "\n".join(render_twin(None, tmp_path, 1300.0))
    assert "no live state (daemon not running)" in text
    assert "lowest 0.310" in text
    assert "(30 stored scores)" in text


def test_a_twin_that_failed_to_build_says_why(tmp_path: Path) -> None:
    doc = {"state": "failed", "error": "twin.model: unknown model 'x'"}
    assert render_twin(doc, tmp_path, 0.0)[1] == "  twin: failed: twin.model: unknown model 'x'"
