"""Alert manager: hysteresis, one updating alert per incipient fault, and the rate limit."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.detect.alerts import HOUR_S, AlertEvent, AlertManager, AlertPolicy
from gateway.detect.anomaly import AnomalyScore
from gateway.detect.signatures import Hypothesis

THRESHOLD = 10.0
CLEAR = 5.0
HOP_S = 10.0


def score(value: float) -> AnomalyScore:
    return AnomalyScore(value, THRESHOLD, CLEAR, {}, {})


def run(
    manager: AlertManager,
    values: Sequence[float | None],
    signature: Sequence[Hypothesis] = (),
    start: float = 0.0,
) -> list[AlertEvent]:
    events: list[AlertEvent] = []
    for i, v in enumerate(values):
        events.extend(
            manager.observe(start + i * HOP_S, None if v is None else score(v), signature)
        )
    return events


def kinds(events: Sequence[AlertEvent]) -> list[str]:
    return [e.kind for e in events]


def test_raises_after_n_consecutive_windows_only() -> None:
    """Fewer than raise_after windows above the threshold in a row raise nothing; the
    raise_after-th does, once."""
    m = AlertManager(AlertPolicy(raise_after=3))
    assert run(m, [11, 11, 4, 11, 11, 4] * 20) == []
    events = run(m, [11, 11, 11, 11, 11], start=10_000)
    assert kinds(events) == ["raised"]
    assert events[0].at == 10_000 + 2 * HOP_S
    assert events[0].alert_id == "anomaly-1"


def test_no_chatter_around_the_threshold() -> None:
    """Once raised, a score hovering between the clear threshold and above the alert
    threshold neither clears nor re-raises; it clears only after clear_after windows
    below the clear threshold, and a brief dip does not count."""
    m = AlertManager(AlertPolicy(raise_after=3, clear_after=6))
    events = run(m, [12, 12, 12] + [9, 11, 6, 10.5, 5.5, 12] * 50)
    assert kinds(events) == ["raised"]
    events = run(m, [4, 4, 4, 4, 4, 9, 4, 4, 4, 4, 4], start=100_000)
    assert kinds(events) == []
    events = run(m, [4], start=200_000)
    assert kinds(events) == ["cleared"]
    assert events[0].alert_id == "anomaly-1"


def test_missing_scores_break_the_count_but_never_clear() -> None:
    """A window without a score resets the consecutive counts; an active alert stays."""
    m = AlertManager(AlertPolicy(raise_after=3, clear_after=2))
    assert run(m, [11, 11, None, 11, 11, None]) == []
    assert kinds(run(m, [11, 11, 11], start=1_000)) == ["raised"]
    assert run(m, [None] * 100 + [4, None, 4, None], start=2_000) == []
    assert m.active is not None


def test_growing_fault_gives_one_alert_that_updates() -> None:
    """A fault whose score grows from the threshold to 100x gives one raised alert and
    a few updates (severity escalations, the signature getting a name), never a second
    alert; updates carry the same id."""
    m = AlertManager(AlertPolicy(min_update_interval_s=300))
    unknown = (Hypothesis("unknown", 0.0, ()),)
    named = (Hypothesis("bearing_degradation", 0.9, ("bearing_temp_excess z=+9",)),)
    growth = [THRESHOLD * 1.05**i for i in range(100)]
    events = run(m, growth[:10], unknown) + run(m, growth[10:], named, start=10 * HOP_S)
    assert kinds(events).count("raised") == 1
    assert set(kinds(events)) == {"raised", "updated"}
    assert len({e.alert_id for e in events}) == 1
    updates = [e for e in events if e.kind == "updated"]
    assert [e.severity for e in updates if e.fault == "bearing_degradation"][-1] == "high"
    assert events[0].fault == "unknown"
    assert updates[0].fault == "bearing_degradation"  # named at once, not rate-limited
    assert len(updates) <= 3


def test_undiagnosed_windows_keep_the_signature() -> None:
    """Windows without a signature (score between the clear and alert thresholds) do not
    turn a named alert back to "unknown"."""
    m = AlertManager(AlertPolicy(min_update_interval_s=0))
    named = (Hypothesis("leak", 0.9, ()),)
    assert kinds(run(m, [12, 12, 12], named)) == ["raised"]
    assert run(m, [8] * 100, (), start=1_000) == []
    assert m.active is not None
    assert m.active.fault == "leak"


def test_signature_flip_flops_are_rate_limited() -> None:
    """A leading fault that alternates every window updates the alert at most once per
    min_update_interval_s."""
    m = AlertManager(AlertPolicy(min_update_interval_s=300))
    a = (Hypothesis("leak", 0.5, ()),)
    b = (Hypothesis("level_sensor_drift", 0.5, ()),)
    events: list[AlertEvent] = []
    for i in range(360):  # one hour of windows
        events += m.observe(i * HOP_S, score(12.0), a if i % 2 else b)
    updates = [e for e in events if e.kind == "updated"]
    assert kinds(events).count("raised") == 1
    assert len(updates) <= HOUR_S / 300
    assert all(u2.at - u1.at >= 300 for u1, u2 in itertools.pairwise(updates))


def test_rate_limit_holds_back_and_announces_once() -> None:
    """With a limit of 2 per hour, a third raise within the hour is held back with one
    'suppressed' event, and raised later if the condition persists."""
    m = AlertManager(AlertPolicy(raise_after=1, clear_after=1, max_alerts_per_hour=2))
    events = run(m, [11, 4, 11, 4] + [11] * 400)
    assert kinds(events)[:4] == ["raised", "cleared", "raised", "cleared"]
    assert kinds(events)[4:] == ["suppressed", "raised"]
    # The budget frees once the first raise is an hour old (window (t - 1 h, t]).
    assert events[5].at - events[0].at == pytest.approx(HOUR_S)


def test_time_must_not_go_backwards() -> None:
    """The injected time is monotonic; a step back is a caller bug and is refused."""
    m = AlertManager()
    m.observe(100.0, score(1.0))
    with pytest.raises(ValueError, match="backwards"):
        m.observe(50.0, score(1.0))


def test_events_are_frozen_and_recordable() -> None:
    """Events are immutable and serialise to plain data for the log and audit trail."""
    m = AlertManager(AlertPolicy(raise_after=1))
    sig = (Hypothesis("leak", 0.8, ("mass_balance z=+12.0: more flows in than out",)),)
    (event,) = m.observe(0.0, score(50.0), sig)
    with pytest.raises(AttributeError):
        event.kind = "cleared"  # type: ignore[misc]
    record = event.to_record()
    assert record["signature"] == [
        {
            "fault": "leak",
            "confidence": 0.8,
            "evidence": ["mass_balance z=+12.0: more flows in than out"],
        }
    ]
    assert record["severity"] == "medium"
    assert "likely leak" in str(record["message"])


def test_policy_is_validated() -> None:
    """Nonsensical policies are refused with every problem named."""
    with pytest.raises(ValueError, match=r"raise_after.*max_alerts_per_hour"):
        AlertPolicy(raise_after=0, max_alerts_per_hour=0)


@settings(max_examples=200, deadline=None)
@given(
    scores=st.lists(
        st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e4, allow_nan=False)),
        min_size=1,
        max_size=2000,
    ),
    limit=st.integers(min_value=1, max_value=12),
    raise_after=st.integers(min_value=1, max_value=4),
    clear_after=st.integers(min_value=1, max_value=4),
    hop_s=st.sampled_from([1.0, 10.0, 60.0]),
)
def test_raised_alerts_per_hour_never_exceed_the_limit(
    scores: list[float | None], limit: int, raise_after: int, clear_after: int, hop_s: float
) -> None:
    """For any score sequence, at most max_alerts_per_hour alerts are raised in any
    sliding hour, at most one alert is active at a time, and suppressed notices come at
    most once an hour."""
    m = AlertManager(
        AlertPolicy(raise_after=raise_after, clear_after=clear_after, max_alerts_per_hour=limit)
    )
    events: list[AlertEvent] = []
    for i, v in enumerate(scores):
        events += m.observe(i * hop_s, None if v is None else score(v))
    raised = [e.at for e in events if e.kind == "raised"]
    for t in raised:
        assert sum(1 for r in raised if t - HOUR_S < r <= t) <= limit
    suppressed = [e.at for e in events if e.kind == "suppressed"]
    assert all(b - a >= HOUR_S for a, b in itertools.pairwise(suppressed))
    active = 0
    for e in events:
        if e.kind == "raised":
            active += 1
        elif e.kind == "cleared":
            active -= 1
        assert active in (0, 1)
