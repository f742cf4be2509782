"""The daemon's view of alerts: a twin divergence alert is one of the active alerts the
agent, the API and the gate see (kind "twin", ids unique to this boot), forecasts keep
their kind, the status shows it, and the demo feed prints it."""

from __future__ import annotations

from pathlib import Path

from gateway.daemon import Daemon
from gateway.demo import Tally, describe
from gateway.detect.alerts import AlertPolicy
from gateway.store.ports import AuditRecord
from gateway.twin.fidelity import FidelityReport
from gateway.twin.forecast import Crossing
from tests.support import skid_config


def low_fidelity(score: float = 0.5) -> FidelityReport:
    return FidelityReport(
        t=0.0,
        score=score,
        threshold=0.8,
        trusted=False,
        weakest="bearing_temp",
        per_output={"bearing_temp": score, "vibration_rms": 0.7},
        per_lookahead={60.0: score},
        nrmse={},
        samples=100,
        unresolved=0,
    )


def test_a_twin_divergence_is_an_active_alert_of_kind_twin(tmp_path: Path) -> None:
    daemon = Daemon(skid_config(4840, 5020), tmp_path / "state")
    assert daemon._active_alerts() == []
    events = [
        e
        for t in range(10)
        for e in daemon.twin_alerts.observe(1000.0 + t, low_fidelity(), {"bearing_rise": 5.0})
    ]
    assert [e.kind for e in events] == ["raised"]
    (active,) = daemon._active_alerts()
    assert active["kind"] == "twin"
    assert active["alert_id"] == f"twin-{daemon.boot_id}-1"
    assert active["severity"] == "medium"  # fidelity 0.5: RMS error twice what 0.8 allows
    assert active["signature"][0]["fault"] == "bearing_degradation"


def test_a_forecast_alert_keeps_its_kind(tmp_path: Path) -> None:
    """The alert's own record has a "kind" of its own (raised/updated): the list must still
    say it is a forecast, for the agent's incident and the API."""
    daemon = Daemon(skid_config(4840, 5020), tmp_path / "state")
    crossing = Crossing("tank_level", "high", 2.4, "m", 200.0, 250.0, 8, 8)
    for t in range(3):
        daemon.predictive.observe(1000.0 + 10 * t, [crossing])
    (active,) = daemon._active_alerts()
    assert active["kind"] == "forecast"
    assert active["output"] == "tank_level"


def test_the_demo_feed_prints_raised_and_updated_twin_alerts_only() -> None:
    def record(kind: str) -> AuditRecord:
        payload = {"kind": kind, "alert_id": "twin-x-1", "message": f"twin divergence {kind}"}
        return AuditRecord(1, 0.0, "twin_alert", None, payload, "0" * 64, "0" * 64)

    assert describe(record("raised"), config="c.toml", tokens={}) == [
        "  TWIN    twin-x-1: twin divergence raised"
    ]
    assert describe(record("updated"), config="c.toml", tokens={})
    assert describe(record("cleared"), config="c.toml", tokens={}) == []


def test_alert_policy_label_names_the_alert_in_its_messages() -> None:
    assert AlertPolicy().label == "anomaly"


def test_the_demo_summary_counts_raised_alerts_by_kind() -> None:
    tally = Tally()
    for seq, (kind, event) in enumerate(
        [
            ("twin_alert", "raised"),
            ("twin_alert", "updated"),
            ("alert", "raised"),
            ("forecast_alert", "cleared"),
            ("twin_alert", "raised"),
        ]
    ):
        payload = {"kind": event, "alert_id": f"x-{seq}"}
        tally.see(AuditRecord(seq, 0.0, kind, None, payload, "0" * 64, "0" * 64))
    assert tally.alerts == {"twin divergence": 2, "anomaly": 1}
