"""Twin fidelity: the score's meaning (tolerance -> 0.5), the weakest-link rule, faults and
recovery, missing data never counting, unresolved and dropped predictions, bounded memory,
and the score's invariants under hypothesis."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.twin.fidelity import MAX_ERROR, FidelityReport, FidelityTracker

TOL = {"tank_level": 0.02, "tank_temp": 0.5, "pump_flow": 0.3}
LOOKAHEADS = (10.0, 60.0)
THRESHOLD = 0.8


def plant(name: str, t: float) -> float:
    """A plant whose outputs move, so a twin that lagged the due time would show an error."""
    return {
        "tank_level": 1.5 + 0.1 * math.sin(t / 50.0),
        "tank_temp": 45.0 + 2.0 * math.cos(t / 80.0),
        "pump_flow": 5.0 + 0.5 * math.sin(t / 30.0),
    }[name]


Bias = Callable[[str, float], float]


def no_bias(name: str, due: float) -> float:
    return 0.0


def run(
    tracker: FidelityTracker,
    start: float,
    stop: float,
    bias: Bias = no_bias,
    *,
    measured: Callable[[str, float], float | None] = plant,
) -> None:
    """Drive the tracker at 1 Hz: observe the plant at t, then record predictions at t."""
    for t in np.arange(start, stop, 1.0):
        t = float(t)
        tracker.observe(t, {name: measured(name, t) for name in TOL})
        tracker.record(
            t,
            {la: {n: plant(n, t + la) + bias(n, t + la) for n in TOL} for la in LOOKAHEADS},
        )


def make(**kwargs: float) -> FidelityTracker:
    return FidelityTracker(TOL, LOOKAHEADS, THRESHOLD, **kwargs)  # type: ignore[arg-type]


def test_perfect_predictions_score_one() -> None:
    """A twin that predicts the plant exactly scores 1 on every output and look-ahead, and
    is trusted."""
    tracker = make()
    run(tracker, 0.0, 700.0)
    report = tracker.report(699.0)
    assert report.score == pytest.approx(1.0)
    assert report.trusted
    assert all(s == pytest.approx(1.0) for s in report.per_output.values())
    assert all(s == pytest.approx(1.0) for s in report.per_lookahead.values())
    assert report.unresolved == 0
    # Every output, both look-aheads, one per second over the 600 s window.
    assert report.samples == pytest.approx(len(TOL) * 2 * 600, abs=len(TOL) * 2)


def test_rms_error_equal_to_the_tolerance_scores_one_half() -> None:
    """A constant bias of exactly one tolerance gives nrmse 1 and score 0.5 on that output;
    the overall score is that output's (weakest link), not the mean."""
    tracker = make()
    run(tracker, 0.0, 300.0, lambda n, due: TOL[n] if n == "tank_temp" else 0.0)
    report = tracker.report(299.0)
    assert report.per_output["tank_temp"] == pytest.approx(0.5)
    assert report.nrmse["tank_temp"][10.0] == pytest.approx(1.0)
    assert report.nrmse["tank_temp"][60.0] == pytest.approx(1.0)
    assert report.per_output["tank_level"] == pytest.approx(1.0)
    assert report.score == pytest.approx(0.5)
    assert report.weakest == "tank_temp"
    assert not report.trusted


def test_per_lookahead_is_the_worst_output_and_per_output_the_worst_lookahead() -> None:
    """A bias only in the 60 s predictions of one output lowers that look-ahead and that
    output, and leaves the 10 s look-ahead at 1."""
    tracker = FidelityTracker(TOL, LOOKAHEADS, THRESHOLD)
    for t in np.arange(0.0, 300.0, 1.0):
        t = float(t)
        tracker.observe(t, {n: plant(n, t) for n in TOL})
        tracker.record(
            t,
            {
                10.0: {n: plant(n, t + 10.0) for n in TOL},
                60.0: {
                    n: plant(n, t + 60.0) + (2 * TOL[n] if n == "pump_flow" else 0.0) for n in TOL
                },
            },
        )
    report = tracker.report(299.0)
    assert report.per_lookahead[10.0] == pytest.approx(1.0)
    assert report.per_lookahead[60.0] == pytest.approx(1 / (1 + 4))
    assert report.per_output["pump_flow"] == pytest.approx(0.2)
    assert report.nrmse["pump_flow"][10.0] == pytest.approx(0.0, abs=1e-9)


def test_fault_in_one_output_drops_below_threshold_and_recovers_after_the_window() -> None:
    """A fault biasing one of three outputs pulls the overall score down to that output's,
    below the threshold, while the others stay at 1; once predictions are good again, the
    score recovers exactly when the last faulty prediction has left the window."""
    window = 300.0
    tracker = make(window_s=window)
    run(tracker, 0.0, 400.0)
    assert tracker.report(399.0).trusted

    def fault(name: str, due: float) -> float:
        return 5 * TOL[name] if name == "tank_level" and 400 <= due < 700 else 0.0

    run(tracker, 400.0, 800.0, fault)
    during = tracker.report(799.0)
    assert during.score is not None
    assert during.score < THRESHOLD
    assert during.score == during.per_output["tank_level"]
    assert during.weakest == "tank_level"
    assert during.per_output["tank_temp"] == pytest.approx(1.0)
    # Good predictions again from due time 700 s: while the faulty ones still fill half the
    # window the twin stays untrusted; the last one (due 699 s) leaves (t - 300, t] at 999 s.
    run(tracker, 800.0, 851.0)
    assert not tracker.report(850.0).trusted
    run(tracker, 851.0, 999.0)
    lingering = tracker.report(998.0).score
    assert lingering is not None
    assert lingering < 0.95
    run(tracker, 999.0, 1000.0)
    recovered = tracker.report(999.0)
    assert recovered.trusted
    assert recovered.score == pytest.approx(1.0)


def test_missing_and_bad_measurements_resolve_nothing_and_are_no_error() -> None:
    """None, NaN and absent values neither score a prediction as good nor as bad: the
    output has no samples, no score, and its predictions end up unresolved."""
    tracker = make()

    def measured(name: str, t: float) -> float | None:
        if name == "tank_temp":
            return None
        if name == "pump_flow":
            return math.nan
        return plant(name, t)

    run(tracker, 0.0, 200.0, lambda n, due: 100.0, measured=measured)
    report = tracker.report(199.0)
    assert report.per_output["tank_temp"] is None
    assert report.per_output["pump_flow"] is None
    assert report.nrmse["tank_temp"] == {10.0: None, 60.0: None}
    assert report.weakest == "tank_level"
    # Predictions due at 10..197.5 s for two outputs at 10 s, 60..197.5 s at 60 s.
    assert report.unresolved == 2 * ((197 - 10 + 1) + (197 - 60 + 1))


def test_unknown_fidelity_is_not_trusted() -> None:
    """With no measurements at all (or fewer than min_samples scored) the score is None
    and the report is not trusted; everything due has become unresolved."""
    tracker = make(min_samples=10)
    for t in range(100):
        tracker.record(float(t), {la: {n: 1.0 for n in TOL} for la in LOOKAHEADS})
        tracker.observe(float(t), {})
    report = tracker.report(99.0)
    assert report.score is None
    assert report.weakest is None
    assert not report.trusted
    assert report.samples == 0
    assert report.unresolved == len(TOL) * ((97 - 10 + 1) + (97 - 60 + 1))

    few = make(min_samples=10)
    run(few, 0.0, 18.0)  # 8 predictions of the 10 s look-ahead resolved
    assert few.report(17.0).score is None
    run(few, 18.0, 21.0)
    assert few.report(20.0).per_lookahead == {10.0: pytest.approx(1.0), 60.0: None}
    assert few.report(20.0).trusted


def test_closest_measurement_to_the_due_time_resolves() -> None:
    """Of the good measurements within match_s of the due time, the closest one is used:
    an early measurement is superseded by one nearer the due time."""
    tracker = FidelityTracker({"x": 1.0}, [10.0], 0.5, min_samples=1, match_s=1.5)
    tracker.record(0.0, {10.0: {"x": 5.0}})
    tracker.observe(8.0, {"x": 100.0})  # too early: not within 1.5 s
    tracker.observe(8.7, {"x": 50.0})  # within, 1.3 s early
    tracker.observe(9.9, {"x": 5.0})  # within, 0.1 s early: best
    tracker.observe(10.4, {"x": 70.0})  # at/after due but 0.4 s away: settles with 9.9
    report = tracker.report(11.0)
    assert report.samples == 1
    assert report.score == pytest.approx(1.0)
    assert tracker.pending == 0


def test_late_measurement_within_match_resolves_and_beyond_is_unresolved() -> None:
    """A measurement up to match_s after the due time still resolves; after that the
    prediction is dropped as unresolved, never as an error."""
    tracker = FidelityTracker({"x": 1.0}, [10.0], 0.5, min_samples=1, match_s=1.5)
    tracker.record(0.0, {10.0: {"x": 5.0}})
    tracker.record(1.0, {10.0: {"x": 5.0}})
    tracker.observe(11.4, {"x": 6.0})  # 1.4 s late for the first, 0.4 s late for the second
    report = tracker.report(12.0)
    assert report.samples == 2
    assert report.nrmse["x"][10.0] == pytest.approx(1.0)

    tracker.record(2.0, {10.0: {"x": 5.0}})
    tracker.observe(13.6, {"x": 5.0})  # 1.6 s late
    report = tracker.report(14.0)
    assert report.samples == 2
    assert report.unresolved == 1
    assert tracker.pending == 0


def test_non_finite_predictions_are_ignored_and_counted() -> None:
    """A NaN or inf prediction is not scored (the twin's divergence is reported
    elsewhere), but it is counted; predictions of untracked outputs are ignored."""
    tracker = FidelityTracker({"x": 1.0}, [10.0], 0.5, min_samples=1)
    tracker.record(0.0, {10.0: {"x": math.nan, "other": 3.0}})
    tracker.record(1.0, {10.0: {"x": math.inf}})
    tracker.record(2.0, {10.0: {"x": 1.0}})
    assert tracker.pending == 1
    tracker.observe(12.0, {"x": 1.0})
    report = tracker.report(12.0)
    assert report.ignored == 2
    assert report.samples == 1
    assert report.score == pytest.approx(1.0)


def test_pending_stays_bounded_when_measurements_stop() -> None:
    """Predictions keep coming while no measurement does: at most max_pending per
    look-ahead are kept, and the oldest beyond that are dropped and counted."""
    tracker = make(max_pending=50)
    for t in range(1000):
        tracker.record(float(t), {la: {n: 1.0 for n in TOL} for la in LOOKAHEADS})
    assert tracker.pending == 50 * len(LOOKAHEADS) * len(TOL)
    report = tracker.report(999.0)
    assert report.dropped == (1000 - 50) * len(LOOKAHEADS) * len(TOL) - (
        # drops counted before the window (t <= 399) have left it
        (400 - 50) * len(LOOKAHEADS) * len(TOL)
    )


def test_reset_forgets_everything() -> None:
    """After a reset (e.g. a long data gap) the fidelity is unknown again: no pending
    predictions, no samples, not trusted."""
    tracker = make()
    run(tracker, 0.0, 200.0)
    assert tracker.report(199.0).trusted
    tracker.reset("data gap of 900 s")
    report = tracker.report(199.0)
    assert (report.score, report.samples, report.unresolved, tracker.pending) == (None, 0, 0, 0)
    assert not report.trusted
    assert tracker.last_reset_reason == "data gap of 900 s"


def test_report_to_dict_is_json_ready() -> None:
    """to_dict() gives plain JSON types, rounded, with look-ahead keys like "10s"."""
    tracker = make()
    run(tracker, 0.0, 100.0, lambda n, due: TOL[n] / 3)
    d: dict[str, Any] = tracker.report(99.0).to_dict()
    assert json.loads(json.dumps(d)) == d
    assert set(d["per_lookahead"]) == {"10s", "60s"}
    assert d["nrmse"]["tank_level"]["10s"] == pytest.approx(1 / 3, rel=1e-3)
    assert d["score"] == round(1 / (1 + 1 / 9), 4)
    assert d["trusted"] is True


def test_time_must_not_go_backwards() -> None:
    """Predictions and measurements each come in time order; a step back is refused."""
    tracker = make()
    tracker.record(10.0, {})
    tracker.observe(10.0, {})
    with pytest.raises(ValueError, match="backwards"):
        tracker.record(9.0, {})
    with pytest.raises(ValueError, match="backwards"):
        tracker.observe(9.0, {})
    with pytest.raises(ValueError, match="not configured"):
        tracker.record(11.0, {30.0: {"tank_level": 1.0}})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tolerances": {}}, "at least one output"),
        ({"tolerances": {"x": 0.0}}, "tolerance of 'x'"),
        ({"tolerances": {"x": math.inf}}, "tolerance of 'x'"),
        ({"lookaheads_s": []}, "at least one look-ahead"),
        ({"lookaheads_s": [10.0, 10.0]}, "distinct"),
        ({"lookaheads_s": [-1.0]}, "look-ahead must be"),
        ({"threshold": 1.5}, "threshold"),
        ({"window_s": 0.0}, "window_s"),
        ({"match_s": -1.0}, "match_s"),
        ({"min_samples": 0}, "min_samples"),
        ({"max_pending": 0}, "max_pending"),
    ],
)
def test_invalid_arguments_are_refused(kwargs: Mapping[str, object], message: str) -> None:
    """Each out-of-range argument is named in the error."""
    args: dict[str, object] = {"tolerances": TOL, "lookaheads_s": LOOKAHEADS, "threshold": 0.8}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        FidelityTracker(**args)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------
# Invariants


def score_of(errors: list[float], tol: float = 1.0) -> FidelityReport:
    """Report after one prediction per second with the given errors (in output units)."""
    tracker = FidelityTracker({"x": tol}, [1.0], 0.5, min_samples=1, window_s=1e9)
    for i, e in enumerate(errors):
        tracker.record(float(i), {1.0: {"x": e}})
        tracker.observe(float(i + 1), {"x": 0.0})
    return tracker.report(float(len(errors)))


errors_st = st.lists(
    st.floats(min_value=-1e300, max_value=1e300, allow_nan=False), min_size=1, max_size=40
)


@settings(max_examples=200, deadline=None)
@given(errors=errors_st)
def test_score_is_in_zero_one(errors: list[float]) -> None:
    """Whatever the errors (even astronomically large), the score is in (0, 1]."""
    report = score_of(errors)
    assert report.score is not None
    assert 0.0 < report.score <= 1.0


@settings(max_examples=200, deadline=None)
@given(errors=errors_st, factor=st.floats(min_value=1.0, max_value=1e6))
def test_score_never_rises_with_the_error(errors: list[float], factor: float) -> None:
    """Scaling every error up by a factor >= 1 never raises the score."""
    base = score_of([e / factor for e in errors]).score
    scaled = score_of(errors).score
    assert base is not None
    assert scaled is not None
    assert scaled <= base


@settings(max_examples=100, deadline=None)
@given(
    errors=st.lists(
        st.one_of(st.floats(min_value=-50, max_value=50), st.just(1e6)), min_size=1, max_size=300
    ),
    window=st.integers(min_value=1, max_value=120),
)
def test_running_sums_match_a_recomputation(errors: list[float], window: int) -> None:
    """The incrementally kept nrmse equals one computed from scratch over the window,
    also after huge errors (clipped at MAX_ERROR tolerances) have left it."""
    tracker = FidelityTracker({"x": 1.0}, [1.0], 0.5, min_samples=1, window_s=float(window))
    for i, e in enumerate(errors):
        tracker.record(float(i), {1.0: {"x": e}})
        tracker.observe(float(i + 1), {"x": 0.0})
    t = float(len(errors))
    in_window = np.clip(np.array(errors[max(0, len(errors) - window) :]), -MAX_ERROR, MAX_ERROR)
    expected = math.sqrt(float(np.mean(in_window**2)))
    got = tracker.report(t).nrmse["x"][1.0]
    assert got is not None
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_discarded_predictions_are_never_scored() -> None:
    """Predictions voided by a setpoint change leave the scores as they were."""
    tracker = FidelityTracker({"level": 0.1}, [10.0], 0.8, min_samples=1)
    tracker.record(0.0, {10.0: {"level": 1.0}})
    assert tracker.discard_pending("setpoint changed: level_sp") == 1
    tracker.observe(10.0, {"level": 5.0})  # would be a huge error
    report = tracker.report(10.0)
    assert report.samples == 0
    assert report.score is None
    assert tracker.voided == 1
    assert tracker.pending == 0
