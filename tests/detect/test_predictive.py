"""Predictive alerts: confirmation before raising, hysteresis before clearing, one alert per
bound that updates at a limited rate, missing runs as no evidence, and unique ids."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.detect.predictive import PredictiveAlerts, PredictiveEvent, PredictivePolicy
from gateway.twin.forecast import Crossing

HOP_S = 10.0


def crossing(earliest: float = 300.0, output: str = "tank_level", side: str = "high") -> Crossing:
    return Crossing(output, side, 2.4, "m", earliest, None, 3, 8)  # type: ignore[arg-type]


Run = Sequence[Crossing] | None
"""One forecast run's crossings, or None for a run that could not be made."""


def drive(
    alerts: PredictiveAlerts, runs: Sequence[Run], start: float = 0.0
) -> list[PredictiveEvent]:
    events: list[PredictiveEvent] = []
    for i, run in enumerate(runs):
        t = start + i * HOP_S
        if run is None:
            alerts.missing(t)
        else:
            events.extend(alerts.observe(t, run))
    return events


def kinds(events: Sequence[PredictiveEvent]) -> list[str]:
    return [e.kind for e in events]


P = [crossing()]
A: list[Crossing] = []


def test_raises_after_confirm_runs_consecutive_forecasts() -> None:
    """One forecast is not enough; confirm_runs consecutive ones raise one alert, with the
    crossing's message."""
    alerts = PredictiveAlerts(PredictivePolicy(confirm_runs=2), id_prefix="boot1")
    assert drive(alerts, [P, A, P, A, P, A]) == []
    events = drive(alerts, [P, P, P], start=1_000)
    assert kinds(events) == ["raised"]
    assert events[0].at == 1_000 + HOP_S
    assert events[0].alert_id == "boot1-1"
    assert events[0].message == "forecast: tank_level reaches 2.4 m in 5 min 00 s (3/8 members)"
    assert alerts.active == {("tank_level", "high"): events[0]}


def test_flapping_forecast_raises_at_most_one_alert() -> None:
    """A forecast that comes and goes (never absent clear_runs times in a row) gives one
    alert that stays active, not a stream of raises and clears."""
    alerts = PredictiveAlerts(PredictivePolicy(confirm_runs=2, clear_runs=3), id_prefix="b")
    pattern = [P, P] + [A, P, A, A, P, P, A, P, P, A] * 50
    events = drive(alerts, pattern)
    assert kinds(events) == ["raised"]
    assert ("tank_level", "high") in alerts.active


def test_clears_after_clear_runs_and_next_alert_has_a_new_id() -> None:
    """clear_runs consecutive runs without the forecast clear the alert (same id); a later
    forecast raises a new alert with a new id."""
    alerts = PredictiveAlerts(PredictivePolicy(confirm_runs=2, clear_runs=3), id_prefix="b")
    events = drive(alerts, [P, P, A, A, A, P, P])
    assert kinds(events) == ["raised", "cleared", "raised"]
    raised, cleared, again = events
    assert cleared.alert_id == raised.alert_id
    assert cleared.at == 4 * HOP_S
    assert cleared.crossing is None
    assert "no longer forecast" in cleared.message
    assert again.alert_id != raised.alert_id


def test_updates_are_rate_limited() -> None:
    """An earliest-crossing time that jumps on every run updates the alert at most once
    per update_min_interval_s, always under the same id."""
    policy = PredictivePolicy(confirm_runs=1, update_min_interval_s=60.0, update_min_change=0.25)
    alerts = PredictiveAlerts(policy, id_prefix="b")
    runs: list[Run] = [[crossing(100.0 if i % 2 else 500.0)] for i in range(360)]
    events = drive(alerts, runs)
    updates = [e for e in events if e.kind == "updated"]
    assert kinds(events)[0] == "raised"
    assert len(updates) >= 2
    assert len(updates) <= 360 * HOP_S / 60.0
    assert all(b.at - a.at >= 60.0 for a, b in itertools.pairwise([events[0], *updates]))
    assert {e.alert_id for e in events} == {"b-1"}


def test_small_changes_do_not_update() -> None:
    """A crossing time drifting by less than update_min_change (relative to the last
    reported one) never updates; a large move does, with the new figure."""
    policy = PredictivePolicy(confirm_runs=1, update_min_interval_s=0.0, update_min_change=0.25)
    alerts = PredictiveAlerts(policy, id_prefix="b")
    events = drive(alerts, [[crossing(300.0 - 2.0 * i)] for i in range(30)])
    assert kinds(events) == ["raised"]  # 300 -> 242 s: under 25 %
    (update,) = alerts.observe(1_000.0, [crossing(120.0)])
    assert update.kind == "updated"
    assert update.crossing is not None
    assert update.crossing.earliest_s == 120.0
    assert alerts.active[("tank_level", "high")] is update


def test_within_s_gates_raising_only() -> None:
    """With within_s, a distant crossing does not raise; once raised (near), the alert
    stays active while any crossing is forecast, so it cannot chatter around within_s."""
    policy = PredictivePolicy(confirm_runs=2, clear_runs=2, within_s=120.0)
    alerts = PredictiveAlerts(policy, id_prefix="b")
    assert drive(alerts, [[crossing(500.0)]] * 10) == []
    events = drive(alerts, [[crossing(100.0)], [crossing(130.0)], [crossing(110.0)]], start=200)
    assert events == []  # the 130 s run broke the count
    events = drive(
        alerts, [[crossing(100.0)]] * 2 + [[crossing(400.0)], [crossing(110.0)]] * 10, start=400
    )
    assert kinds(events).count("raised") == 1
    assert "cleared" not in kinds(events)


def test_missing_runs_neither_raise_nor_clear() -> None:
    """A run that could not be made breaks the consecutive counts and changes nothing
    else: forecasts on either side of it do not add up to a raise, absences on either side
    do not add up to a clear."""
    alerts = PredictiveAlerts(PredictivePolicy(confirm_runs=2, clear_runs=3), id_prefix="b")
    assert drive(alerts, [P, None, P, None, P, None] * 10) == []
    assert kinds(drive(alerts, [P, P], start=1_000)) == ["raised"]
    assert drive(alerts, [None] * 50 + [A, A, None, A, A, None], start=2_000) == []
    assert ("tank_level", "high") in alerts.active
    assert kinds(drive(alerts, [A, A, A], start=3_000)) == ["cleared"]
    assert alerts.active == {}


def test_each_bound_has_its_own_alert() -> None:
    """Different (output, side) pairs raise and clear independently, with unique ids."""
    alerts = PredictiveAlerts(PredictivePolicy(confirm_runs=1, clear_runs=1), id_prefix="b")
    both = [crossing(60.0), crossing(30.0, "tank_temp", "low")]
    events = drive(alerts, [both, [both[0]]])
    assert [(e.kind, e.output, e.side) for e in events] == [
        ("raised", "tank_level", "high"),
        ("raised", "tank_temp", "low"),
        ("cleared", "tank_temp", "low"),
    ]
    assert len({e.alert_id for e in events if e.kind == "raised"}) == 2
    assert set(alerts.active) == {("tank_level", "high")}


def test_to_record_is_json_ready() -> None:
    """Events go to the audit trail as plain JSON, crossing included."""
    alerts = PredictiveAlerts(PredictivePolicy(confirm_runs=1, clear_runs=1), id_prefix="b")
    (raised,) = alerts.observe(0.0, P)
    (cleared,) = alerts.observe(10.0, A)
    for event in (raised, cleared):
        record = event.to_record()
        assert json.loads(json.dumps(record)) == record
    assert raised.to_record()["crossing"] == P[0].to_record()
    assert cleared.to_record()["crossing"] is None


def test_bad_input_is_refused() -> None:
    """Time going backwards, a bound twice in one run, or an empty id prefix are bugs."""
    alerts = PredictiveAlerts(id_prefix="b")
    alerts.observe(10.0, A)
    with pytest.raises(ValueError, match="backwards"):
        alerts.observe(5.0, A)
    with pytest.raises(ValueError, match="backwards"):
        alerts.missing(5.0)
    with pytest.raises(ValueError, match="twice"):
        alerts.observe(20.0, [crossing(10.0), crossing(20.0)])
    with pytest.raises(ValueError, match="id_prefix"):
        PredictiveAlerts(id_prefix="")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"confirm_runs": 0}, "confirm_runs"),
        ({"clear_runs": 0}, "clear_runs"),
        ({"update_min_interval_s": -1.0}, "update_min_interval_s"),
        ({"update_min_change": float("nan")}, "update_min_change"),
        ({"within_s": 0.0}, "within_s"),
    ],
)
def test_invalid_policy_is_refused(kwargs: dict[str, float], message: str) -> None:
    """Each out-of-range setting is named in the error."""
    with pytest.raises(ValueError, match=message):
        PredictivePolicy(**kwargs)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    presence=st.lists(st.sampled_from([True, False, None]), max_size=200),
    confirm=st.integers(min_value=1, max_value=4),
    clear=st.integers(min_value=1, max_value=4),
    interval=st.sampled_from([0.0, 30.0, 60.0]),
)
def test_alert_lifecycle_invariants(
    presence: list[bool | None], confirm: int, clear: int, interval: float
) -> None:
    """For any sequence of runs (forecast present, absent, or missing): raises need
    confirm + clear runs between them, so there are at most 1 + (n - confirm) //
    (confirm + clear); events go raised -> updated* -> cleared under one id; updates are
    at least update_min_interval_s apart; and `active` agrees with the events."""
    policy = PredictivePolicy(
        confirm_runs=confirm, clear_runs=clear, update_min_interval_s=interval
    )
    alerts = PredictiveAlerts(policy, id_prefix="h")
    runs: list[Run] = [
        None if p is None else ([crossing(50.0 + 400.0 * (i % 2))] if p else [])
        for i, p in enumerate(presence)
    ]
    events = drive(alerts, runs)
    n = len(runs)
    raised = kinds(events).count("raised")
    assert raised <= (0 if n < confirm else 1 + (n - confirm) // (confirm + clear))

    active_id: str | None = None
    last_at = -1e9
    ids: list[str] = []
    for e in events:
        if e.kind == "raised":
            assert active_id is None
            active_id, last_at = e.alert_id, e.at
            ids.append(e.alert_id)
        elif e.kind == "updated":
            assert e.alert_id == active_id
            assert e.at - last_at >= interval
            last_at = e.at
        else:
            assert e.alert_id == active_id
            active_id = None
    assert len(set(ids)) == len(ids)
    active = alerts.active
    if active_id is None:
        assert active == {}
    else:
        assert active[("tank_level", "high")].alert_id == active_id
