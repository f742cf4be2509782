"""Signature rules: residual deviation patterns name the likely fault, or "unknown"."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.detect.anomaly import AnomalyScore
from gateway.detect.features import FEATURES
from gateway.detect.signatures import diagnose


def verdict(**deviations: float) -> AnomalyScore:
    """A score whose contributions are the squared deviations (an uncorrelated model)."""
    dev = {name: 0.0 for name in FEATURES} | deviations
    contributions = {n: z * z for n, z in dev.items()}
    return AnomalyScore(sum(contributions.values()), 50.0, 25.0, contributions, dev)


@pytest.mark.parametrize(
    ("deviations", "fault"),
    [
        ({"bearing_temp_excess": 9.0, "vibration_excess": 14.0}, "bearing_degradation"),
        ({"bearing_temp_excess": 5.0}, "bearing_degradation"),
        ({"pump_head_residual": -20.0, "vibration_excess": 10.0}, "impeller_wear"),
        ({"vibration_excess": 8.0}, "pump_mechanical"),
        ({"valve_tracking": 50.0}, "valve_stiction"),
        ({"mass_balance": 25.0}, "leak"),
        ({"mass_balance": -15.0, "valve_flow_residual": -3.5}, "level_sensor_drift"),
        ({"heater_residual": 6.0}, "heater_degradation"),
        # A frozen image also throws the valve tracking and balances off: not stiction.
        (
            {"flatline_fraction": 40.0, "valve_tracking": 200.0, "mass_balance": -7.0},
            "sensor_freeze",
        ),
    ],
)
def test_patterns_name_the_fault(deviations: dict[str, float], fault: str) -> None:
    """Each fault's residual pattern names it first, with evidence lines per feature."""
    hypotheses = diagnose(verdict(**deviations))
    assert hypotheses[0].fault == fault
    assert 0.0 < hypotheses[0].confidence <= 1.0
    assert all("z=" in line for line in hypotheses[0].evidence)


def test_chance_repeats_do_not_veto_a_fault() -> None:
    """A mildly high flatline fraction (chance repeats) neither names a freeze nor hides
    the bearing fault that drives the score."""
    hypotheses = diagnose(
        verdict(bearing_temp_excess=6.0, vibration_excess=14.0, flatline_fraction=4.0)
    )
    assert [h.fault for h in hypotheses] == ["bearing_degradation"]


def test_direction_matters() -> None:
    """A pump delivering *more* head than its curve is not impeller wear."""
    assert diagnose(verdict(pump_head_residual=20.0))[0].fault == "unknown"


def test_unknown_names_the_driving_features() -> None:
    """No rule matches → "unknown", with the strongest deviations as evidence."""
    (h,) = diagnose(verdict(motor_current_residual=12.0))
    assert h.fault == "unknown"
    assert h.confidence == 0.0
    assert h.evidence == ("motor_current_residual z=+12.0",)


def test_two_faults_are_ranked_by_the_share_they_explain() -> None:
    """Two patterns at once give two hypotheses, the larger share of the score first."""
    hypotheses = diagnose(verdict(mass_balance=20.0, heater_residual=5.0))
    assert [h.fault for h in hypotheses] == ["leak", "heater_degradation"]
    assert hypotheses[0].confidence > hypotheses[1].confidence


def test_model_without_deviations_cannot_name_a_fault() -> None:
    """A user model with no per-feature outputs gets "unknown", saying why."""
    (h,) = diagnose(AnomalyScore(99.0, 50.0, 25.0, {}, {}))
    assert h.fault == "unknown"
    assert "no per-feature deviations" in h.evidence[0]


def test_pure_steps_do_not_import_the_runtime() -> None:
    """Features, signatures and alerts are pure: importing them loads no onnxruntime
    (only the model loader runs inference)."""
    code = (
        "import sys\n"
        "import gateway.detect.alerts, gateway.detect.features, gateway.detect.signatures\n"
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
