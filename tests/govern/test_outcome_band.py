"""The outcome check's reference: what the verdict predicted for the moment of the check,
not the whole horizon's envelope. A level raised from 1.5 m to 1.7 m spans [1.5, 1.7]
over the horizon; two minutes after the ramp the twin expects ~1.7 m, and a plant still
at 1.5 m has not done what was predicted."""

from __future__ import annotations

import pytest

from gateway.control import predicted_band
from gateway.govern.gate import GovernSettings, evaluate
from gateway.govern.proposal import Proposal
from gateway.signals import SignalValue
from tests.govern.conftest import NOW, TwinFactory, config, view


def test_the_verdict_keeps_the_band_over_time_inside_its_envelope(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    cfg = config("L3")
    p = Proposal.create(
        id="p-1",
        proposer="operator:t",
        targets={"level_sp": 1.7},
        rationale="",
        created_at=NOW,
        expires_in_s=600,
    )
    verdict = evaluate(cfg, GovernSettings(), p, view(cfg, plant_table, twin(cfg)))
    level = verdict.predicted["tank_level"]
    band = level["band"]
    assert band["every_s"] == pytest.approx(10.0)
    assert len(band["low"]) == len(band["high"]) == 600 // 10 + 1
    assert min(band["low"]) >= level["low"] - 1e-3
    assert max(band["high"]) <= level["high"] + 1e-3
    # Starts where the plant is, ends where the level loop takes it.
    assert band["low"][0] == pytest.approx(plant_table["tank_level"].value, abs=0.05)
    assert band["high"][-1] == pytest.approx(1.7, abs=0.05)
    # Two minutes after the ramp (10 writes over ~20 s) the level is near 1.7, not 1.5.
    low, high = predicted_band(level, elapsed_s=140.0, window_s=15.0)
    assert low is not None
    assert high is not None
    assert low > 1.6
    assert high < 1.8
    assert level["low"] < 1.55  # the whole-horizon envelope would have accepted 1.5 m


BAND = {"every_s": 10.0, "low": [1.0, 2.0, 3.0, 4.0], "high": [1.5, 2.5, 3.5, 4.5]}


@pytest.mark.parametrize(
    ("elapsed", "window", "expected"),
    [
        (10.0, 0.0, (2.0, 2.5)),
        (14.0, 0.0, (2.0, 3.5)),  # between two records: both
        (20.0, 10.0, (2.0, 4.5)),
        (0.0, 5.0, (1.0, 2.5)),
        (-30.0, 5.0, (1.0, 1.5)),  # clock skew: the first record
        (500.0, 15.0, (4.0, 4.5)),  # past the horizon: the last record
    ],
)
def test_the_band_is_read_around_the_elapsed_time(
    elapsed: float, window: float, expected: tuple[float, float]
) -> None:
    predicted = {"low": 0.0, "high": 9.0, "band": BAND}
    assert predicted_band(predicted, elapsed, window) == expected


def test_without_a_band_the_envelope_is_the_reference() -> None:
    assert predicted_band({"low": 0.5, "high": 2.0}, 100.0, 15.0) == (0.5, 2.0)


def test_a_diverged_record_makes_the_band_unknown() -> None:
    predicted = {"low": 0.0, "high": 9.0, "band": {**BAND, "low": [1.0, None, 3.0, 4.0]}}
    assert predicted_band(predicted, 10.0, 0.0) == (None, None)
    assert predicted_band(predicted, 30.0, 0.0) == (4.0, 4.5)
