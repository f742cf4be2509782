"""Twin fidelity: how well the twin's look-ahead predictions matched what the plant did.

Every cycle the twin predicts, at time t, each output's value at t + L for a few look-aheads
L (``twin.lookahead_s``). When the plant's measurement for t + L arrives, the prediction is
scored against it. The score gates automation (DESIGN.md, invariant 4: below the
configured fidelity threshold nothing auto-executes), so it is built to fail safe:

* **Tolerance.** Each output has a tolerance in its own units: the RMS prediction error
  the operator accepts as "the twin is right". An error e = (predicted − measured) /
  tolerance is therefore unitless and comparable across outputs.
* **Score.** Per (output, look-ahead), over a rolling window by due time:
  nrmse = sqrt(mean(e²)) and score = 1 / (1 + nrmse²). Perfect predictions score 1, an
  RMS error equal to the tolerance scores exactly 0.5, ten tolerances about 0.01; it never
  reaches 0 and never rises as the error grows.
* **Weakest link.** An output's score is its worst look-ahead's, and the overall score is
  the worst output's, not the mean: a fault usually shows in one or two of thirteen outputs,
  and a mean would dilute it below notice while the twin is plainly wrong about the very
  signal a proposal may act on.
* **Unknown is not trusted.** A pair with fewer than ``min_samples`` scored predictions in
  the window has no score and is left out; with no scored pair at all the overall score is
  None and the report is not ``trusted``. Missing data never counts as a good prediction,
  nor as a bad one: a prediction whose measurement never came (stale, bad quality, a data
  gap) is dropped as *unresolved* and only counted.

A measurement resolves a prediction when it is within ``match_s`` of the due time; of the
good measurements in that interval the one closest to the due time is used (the first at
or after the due time settles it, since later ones can only be farther). Work per sample is
O(1) amortised: pending predictions and scored errors sit in deques ordered by due time,
and each (output, look-ahead) keeps a running sum of e².

Pure: no clock, no I/O, no logging. Time comes in with every call (seconds on any
monotonic scale shared by predictions and measurements).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

MAX_ERROR: Final = 1e3
"""Errors are clipped to this many tolerances: beyond it the score is already ~1e-6, and the
running sums of e² stay far from overflow and from cancellation when a huge error leaves
the window."""

_RESYNC_RATIO: Final = 1e3
"""Recompute a running sum exactly when the value removed exceeds this times what is left."""

DEFAULT_MAX_PENDING: Final = 4096
"""Pending predictions kept per look-ahead (an hour at 1 Hz beyond the look-ahead itself)."""


def lookahead_key(lookahead_s: float) -> str:
    """The look-ahead as a JSON key: ``10.0`` -> ``"10s"``, ``0.5`` -> ``"0.5s"``."""
    return f"{lookahead_s:g}s"


def _round_score(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _round_sig(value: float | None) -> float | None:
    # nrmse spans decades (1e-4 for a perfect twin, 1e2 for a faulty one): 4 significant
    # digits keep both readable, where a fixed number of decimals would print 0.0.
    return None if value is None else float(f"{value:.4g}")


@dataclass(frozen=True)
class FidelityReport:
    """The twin's fidelity over the window ending at ``t``.

    Attributes:
        t: Time of the report, s.
        score: Overall score in (0, 1] (the weakest output's), None when no pair has
            enough scored predictions in the window.
        threshold: The configured fidelity threshold.
        trusted: ``score`` is known and at least ``threshold``. Unknown fidelity is not
            trusted.
        weakest: The output with the lowest score (None when ``score`` is None).
        per_output: Each output's score (its worst look-ahead), None if unscored.
        per_lookahead: Each look-ahead's score (its worst output), None if unscored.
        nrmse: ``nrmse[output][lookahead]``, RMS error in tolerances, None if fewer than
            ``min_samples`` predictions were scored.
        samples: Predictions scored in the window (all pairs).
        unresolved: Predictions that no good measurement resolved, given up in the window.
        ignored: Non-finite predictions recorded in the window (never scored).
        dropped: Pending predictions dropped in the window because too many were pending
            (measurements stopped arriving while predictions went on).
    """

    t: float
    score: float | None
    threshold: float
    trusted: bool
    weakest: str | None
    per_output: Mapping[str, float | None]
    per_lookahead: Mapping[float, float | None]
    nrmse: Mapping[str, Mapping[float, float | None]]
    samples: int
    unresolved: int
    ignored: int = 0
    dropped: int = 0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict: scores to 4 decimals, nrmse to 4 significant digits, and
        look-ahead keys as strings such as ``"10s"``."""
        return {
            "t": round(self.t, 3),
            "score": _round_score(self.score),
            "threshold": self.threshold,
            "trusted": self.trusted,
            "weakest": self.weakest,
            "per_output": {name: _round_score(s) for name, s in self.per_output.items()},
            "per_lookahead": {
                lookahead_key(la): _round_score(s) for la, s in self.per_lookahead.items()
            },
            "nrmse": {
                name: {lookahead_key(la): _round_sig(v) for la, v in by_la.items()}
                for name, by_la in self.nrmse.items()
            },
            "samples": self.samples,
            "unresolved": self.unresolved,
            "ignored": self.ignored,
            "dropped": self.dropped,
        }


@dataclass
class _Open:
    """One output's prediction waiting for its measurement."""

    predicted: float
    best_dt: float = math.inf
    best_value: float = math.nan


@dataclass
class _Pending:
    """The predictions made at one time for one look-ahead, due at ``due``."""

    due: float
    open: dict[str, _Open]


@dataclass
class _Squares:
    """Scored e² of one (output, look-ahead) in the window, with their running sum.

    The sum is recomputed exactly (``math.fsum``) once as many updates as the window holds
    have gone by, and when a removed value dominated it, so rounding from adding and
    removing never accumulates: O(1) amortised.
    """

    items: deque[tuple[float, float]] = field(default_factory=deque)
    total: float = 0.0
    updates: int = 0

    def add(self, due: float, e2: float) -> None:
        self.items.append((due, e2))
        self.total += e2
        self._count_update()

    def prune(self, cutoff: float) -> None:
        items = self.items
        while items and items[0][0] <= cutoff:
            e2 = items.popleft()[1]
            self.total -= e2
            # Removing a value that dominated the sum (a fault's errors leaving the window)
            # leaves mostly rounding noise: recompute then, which is rare (only the last
            # of a run of large errors does it).
            self._count_update(force=e2 > _RESYNC_RATIO * self.total)

    def _count_update(self, *, force: bool = False) -> None:
        self.updates += 1
        if force or self.updates >= max(64, len(self.items)):
            self.total = math.fsum(e2 for _, e2 in self.items)
            self.updates = 0

    def clear(self) -> None:
        self.items.clear()
        self.total = 0.0
        self.updates = 0


@dataclass
class _Counts:
    """Counts over the window, by the time they were counted (which only moves forward
    within one kind: ``record`` counts ignored and dropped, ``observe`` unresolved)."""

    items: deque[tuple[float, int]] = field(default_factory=deque)
    total: int = 0

    def add(self, at: float, n: int = 1) -> None:
        if n:
            self.items.append((at, n))
            self.total += n

    def prune(self, cutoff: float) -> None:
        items = self.items
        while items and items[0][0] <= cutoff:
            self.total -= items.popleft()[1]

    def clear(self) -> None:
        self.items.clear()
        self.total = 0


class FidelityTracker:
    """Scores the twin's look-ahead predictions against later measurements.

    Args:
        tolerances: Output name -> tolerance in the output's units (> 0, finite): the RMS
            error that scores 0.5. Only these outputs are scored; predictions of others
            are ignored.
        lookaheads_s: The look-aheads predicted, s (> 0, distinct).
        threshold: Fidelity threshold in [0, 1]; the report is trusted at or above it.
        window_s: Rolling window over due times, s.
        match_s: A measurement resolves a prediction when within this of its due time, s.
        min_samples: Scored predictions a pair needs in the window to have a score.
        max_pending: Most pending predictions kept per look-ahead; the oldest beyond it are
            dropped (and counted) so memory stays bounded when measurements stop.

    Raises:
        ValueError: Any argument out of range (the message lists every problem).
    """

    def __init__(
        self,
        tolerances: Mapping[str, float],
        lookaheads_s: Sequence[float],
        threshold: float,
        *,
        window_s: float = 600.0,
        match_s: float = 1.5,
        min_samples: int = 10,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        problems: list[str] = []
        if not tolerances:
            problems.append("tolerances must name at least one output")
        for name, tol in tolerances.items():
            if not (math.isfinite(tol) and tol > 0):
                problems.append(f"tolerance of {name!r} must be finite and > 0, got {tol!r}")
        if not lookaheads_s:
            problems.append("lookaheads_s must hold at least one look-ahead")
        for la in lookaheads_s:
            if not (math.isfinite(la) and la > 0):
                problems.append(f"look-ahead must be finite and > 0 s, got {la!r}")
        if len(set(lookaheads_s)) != len(lookaheads_s):
            problems.append(f"look-aheads must be distinct, got {list(lookaheads_s)}")
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            problems.append(f"threshold must be in [0, 1], got {threshold!r}")
        if not (math.isfinite(window_s) and window_s > 0):
            problems.append(f"window_s must be finite and > 0, got {window_s!r}")
        if not (math.isfinite(match_s) and match_s >= 0):
            problems.append(f"match_s must be finite and >= 0, got {match_s!r}")
        if min_samples < 1:
            problems.append(f"min_samples must be >= 1, got {min_samples}")
        if max_pending < 1:
            problems.append(f"max_pending must be >= 1, got {max_pending}")
        if problems:
            raise ValueError("invalid fidelity tracker: " + "; ".join(problems))

        self.tolerances: Mapping[str, float] = dict(tolerances)
        self.lookaheads_s: tuple[float, ...] = tuple(float(la) for la in lookaheads_s)
        self.threshold = float(threshold)
        self.window_s = float(window_s)
        self.match_s = float(match_s)
        self.min_samples = int(min_samples)
        self.max_pending = int(max_pending)
        self.last_reset_reason: str | None = None
        self.last_void_reason: str | None = None
        self.voided = 0
        self._pending: dict[float, deque[_Pending]] = {la: deque() for la in self.lookaheads_s}
        self._squares: dict[tuple[str, float], _Squares] = {
            (name, la): _Squares() for name in self.tolerances for la in self.lookaheads_s
        }
        self._unresolved = _Counts()
        self._ignored = _Counts()
        self._dropped = _Counts()
        self._last_record = -math.inf
        self._last_observe = -math.inf

    @property
    def pending(self) -> int:
        """Predictions (one output at one look-ahead) still waiting for a measurement."""
        return sum(len(p.open) for q in self._pending.values() for p in q)

    def record(self, t: float, predictions: Mapping[float, Mapping[str, float]]) -> None:
        """Keep the twin's predictions made at ``t``: ``predictions[L][output]`` is the
        predicted value at ``t + L``.

        Non-finite predictions (a diverged member, a NaN output) are ignored and counted:
        they cannot be scored, and scoring them as huge errors would blame the plant's
        data for the twin's numerics, which the divergence checks already report.

        Raises:
            ValueError: ``t`` is not finite or earlier than the last recorded time, or a
                look-ahead was not configured.
        """
        if not math.isfinite(t):
            raise ValueError(f"prediction time must be finite, got {t!r}")
        if t < self._last_record:
            raise ValueError(f"prediction time went backwards: {t} after {self._last_record}")
        unknown = [la for la in predictions if la not in self._pending]
        if unknown:
            raise ValueError(
                f"look-ahead(s) {unknown} not configured (configured: {list(self.lookaheads_s)})"
            )
        self._last_record = t
        for la, values in predictions.items():
            due = t + la
            opened: dict[str, _Open] = {}
            for name, value in values.items():
                if name not in self.tolerances:
                    continue
                if math.isfinite(value):
                    opened[name] = _Open(float(value))
                else:
                    self._ignored.add(t)
            if not opened:
                continue
            queue = self._pending[la]
            queue.append(_Pending(due, opened))
            while len(queue) > self.max_pending:
                self._dropped.add(t, len(queue[0].open))
                queue.popleft()

    def observe(self, t: float, measured: Mapping[str, float | None]) -> None:
        """Score pending predictions against the plant's measurement at ``t``.

        A None, missing or non-finite value is not good data: it resolves nothing and is
        not an error. Predictions more than ``match_s`` past due that no good measurement
        resolved are dropped as unresolved.

        Raises:
            ValueError: ``t`` is not finite or earlier than the last measurement's time.
        """
        if not math.isfinite(t):
            raise ValueError(f"measurement time must be finite, got {t!r}")
        if t < self._last_observe:
            raise ValueError(f"measurement time went backwards: {t} after {self._last_observe}")
        self._last_observe = t
        good = {
            name: float(v)
            for name, v in measured.items()
            if name in self.tolerances and v is not None and math.isfinite(v)
        }
        for la, queue in self._pending.items():
            # Entries are in due order: those this measurement is too late for come first,
            # then those it may resolve, then those not yet in reach.
            while queue and queue[0].due < t - self.match_s:
                self._finish(la, queue.popleft(), t)
            for entry in queue:
                if entry.due - self.match_s > t:
                    break
                dt = abs(t - entry.due)
                for name, slot in entry.open.items():
                    value = good.get(name)
                    if value is not None and dt < slot.best_dt:
                        slot.best_dt = dt
                        slot.best_value = value
                if t >= entry.due:
                    self._finish(la, entry, None)
            while queue and not queue[0].open:
                queue.popleft()
        self._prune(t)

    def report(self, t: float) -> FidelityReport:
        """The fidelity now: scores over predictions due in ``(t - window_s, t]``, counts
        over what was counted in that interval."""
        self._prune(t)
        nrmse: dict[str, dict[float, float | None]] = {}
        per_output: dict[str, float | None] = {}
        per_lookahead: dict[float, float | None] = dict.fromkeys(self.lookaheads_s)
        samples = 0
        for name in self.tolerances:
            by_la: dict[float, float | None] = {}
            worst: float | None = None
            for la in self.lookaheads_s:
                squares = self._squares[(name, la)]
                n = len(squares.items)
                samples += n
                if n < self.min_samples:
                    by_la[la] = None
                    continue
                mean_e2 = squares.total / n
                by_la[la] = math.sqrt(mean_e2)
                score = 1.0 / (1.0 + mean_e2)
                worst = score if worst is None else min(worst, score)
                prev = per_lookahead[la]
                per_lookahead[la] = score if prev is None else min(prev, score)
            nrmse[name] = by_la
            per_output[name] = worst
        scored = [(s, name) for name, s in per_output.items() if s is not None]
        overall, weakest = min(scored) if scored else (None, None)
        return FidelityReport(
            t=t,
            score=overall,
            threshold=self.threshold,
            trusted=overall is not None and overall >= self.threshold,
            weakest=weakest,
            per_output=per_output,
            per_lookahead=per_lookahead,
            nrmse=nrmse,
            samples=samples,
            unresolved=self._unresolved.total,
            ignored=self._ignored.total,
            dropped=self._dropped.total,
        )

    def discard_pending(self, reason: str) -> int:
        """Drop every prediction still waiting for its measurement, keeping the scores.

        For when the predictions were made under conditions no longer in force, such as
        setpoints an operator has since changed: their errors would measure the operator,
        not the twin. Returns how many (output, look-ahead) predictions were dropped;
        ``voided`` counts them over the tracker's life.
        """
        dropped = sum(len(p.open) for q in self._pending.values() for p in q)
        for queue in self._pending.values():
            queue.clear()
        self.voided += dropped
        self.last_void_reason = reason
        return dropped

    def reset(self, reason: str) -> None:
        """Forget pending predictions, windows and counts (e.g. after a long data gap or a
        model change, when old errors say nothing about the twin now). Fidelity is then
        unknown, so untrusted, until ``min_samples`` new predictions have been scored."""
        self.last_reset_reason = reason
        for queue in self._pending.values():
            queue.clear()
        for squares in self._squares.values():
            squares.clear()
        self._unresolved.clear()
        self._ignored.clear()
        self._dropped.clear()
        self._last_record = -math.inf
        self._last_observe = -math.inf

    # ------------------------------------------------------------------ internals

    def _finish(self, la: float, entry: _Pending, final_at: float | None) -> None:
        """Score the outputs of ``entry`` that have a measurement; with ``final_at`` (the
        entry's last chance has passed), count the rest as unresolved at that time."""
        done = [name for name, slot in entry.open.items() if slot.best_dt < math.inf]
        for name in done:
            slot = entry.open.pop(name)
            e = (slot.predicted - slot.best_value) / self.tolerances[name]
            e = max(-MAX_ERROR, min(MAX_ERROR, e))
            self._squares[(name, la)].add(entry.due, e * e)
        if final_at is not None and entry.open:
            self._unresolved.add(final_at, len(entry.open))
            entry.open.clear()

    def _prune(self, t: float) -> None:
        cutoff = t - self.window_s
        for squares in self._squares.values():
            squares.prune(cutoff)
        self._unresolved.prune(cutoff)
        self._ignored.prune(cutoff)
        self._dropped.prune(cutoff)
