"""Signal quality rules: what is good, bad and stale, judged the same for every protocol."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config.schema import Signal
from gateway.signals import LiveTable, Quality, RawSample, aged, judge

LEVEL = Signal(source="plc", address="s=L", unit="m", range=(0.0, 3.0), max_age_s=5.0)


def raw(
    value: float | None,
    *,
    status: Quality = Quality.GOOD,
    reason: str | None = None,
    ts: float = 100.0,
) -> RawSample:
    return RawSample(value=value, source_ts=ts, received_ts=ts, status=status, reason=reason)


@pytest.mark.parametrize(
    ("sample", "quality", "reason"),
    [
        (raw(1.5), Quality.GOOD, None),
        (raw(0.0), Quality.GOOD, None),
        (raw(3.0), Quality.GOOD, None),
        (raw(3.01), Quality.BAD, "3.01 m outside physical range [0, 3]"),
        (raw(-0.2), Quality.BAD, "-0.2 m outside physical range [0, 3]"),
        (raw(math.nan), Quality.BAD, "non-finite value nan"),
        (raw(math.inf), Quality.BAD, "non-finite value inf"),
        (raw(None, status=Quality.BAD, reason="decode error"), Quality.BAD, "decode error"),
        (raw(1.0, status=Quality.BAD, reason="BadSensorFailure"), Quality.BAD, "BadSensorFailure"),
        (
            raw(1.0, status=Quality.UNCERTAIN, reason="UncertainLastUsableValue"),
            Quality.UNCERTAIN,
            "UncertainLastUsableValue",
        ),
        (raw(9.0, status=Quality.UNCERTAIN), Quality.BAD, "9 m outside physical range [0, 3]"),
    ],
)
def test_judge_table(sample: RawSample, quality: Quality, reason: str | None) -> None:
    """Each raw sample gets the quality and the reason the table says; values are not clipped."""
    value = judge("tank_level", LEVEL, sample)
    assert (value.quality, value.reason) == (quality, reason)
    if sample.value is not None and math.isfinite(sample.value):
        assert value.value == sample.value


def test_value_turns_stale_after_max_age_and_confirmation_refreshes_it() -> None:
    """A value that stops being confirmed is stale after max_age_s; a confirmation renews it."""
    table = LiveTable({"tank_level": LEVEL})
    table.update("tank_level", raw(1.2, ts=100.0))
    assert table.get("tank_level", now=105.0).quality is Quality.GOOD  # type: ignore[union-attr]
    stale = table.get("tank_level", now=105.5)
    assert stale is not None
    assert stale.quality is Quality.STALE
    assert stale.reason == "last confirmed 5.5 s ago (max age 5 s)"
    table.confirm(["tank_level"], when=104.0)
    assert table.get("tank_level", now=105.5).quality is Quality.GOOD  # type: ignore[union-attr]
    assert table.snapshot(now=200.0)["tank_level"].quality is Quality.STALE


def test_unknown_signal_reads_none() -> None:
    """A signal never read has no value at all, rather than a default that looks real."""
    assert LiveTable({"tank_level": LEVEL}).get("tank_level", now=0.0) is None


@given(
    value=st.floats(allow_nan=True, allow_infinity=True),
    status=st.sampled_from(list(Quality)),
    age=st.floats(min_value=0, max_value=1e6),
)
def test_only_finite_in_range_fresh_good_values_are_usable(
    value: float, status: Quality, age: float
) -> None:
    """Whatever arrives, a value is usable only if finite, in range, fresh and reported good."""
    judged = aged(judge("x", LEVEL, raw(value, status=status)), LEVEL.max_age_s, 100.0 + age)
    expected = (
        status is Quality.GOOD and math.isfinite(value) and 0.0 <= value <= 3.0 and age <= 5.0
    )
    assert judged.usable is expected
