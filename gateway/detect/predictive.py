"""Predictive alerts: the twin forecasts an envelope crossing before it happens.

Each forecast run (:func:`gateway.twin.forecast.forecast_crossings`) lists the bounds the
ensemble crosses. Turned straight into alarms, successive runs would flood the operator:
a crossing near the end of the horizon appears and disappears as the state estimate
wobbles. ISA-18.2 asks for one alert per incipient problem that updates, not a stream, so
each (output, side) gets at most one active alert and:

* **Confirmation.** An alert raises only after the crossing is forecast in
  ``confirm_runs`` consecutive runs (and, with ``within_s``, within that time).
* **Hysteresis.** Once raised, a forecast anywhere in the horizon keeps it active (only
  raising looks at ``within_s``), and it clears only after ``clear_runs`` consecutive runs
  without one. A crossing time hovering around ``within_s`` therefore cannot chatter.
* **Rate-limited updates.** An active alert is updated when its earliest crossing time
  moved by at least ``update_min_change`` (relative), and at most once per
  ``update_min_interval_s``; smaller or more frequent moves leave the last event standing.
* **A missing run is not evidence.** When no forecast could be made (no state estimate,
  the twin timed out), :meth:`PredictiveAlerts.missing` breaks both consecutive counts
  but neither raises nor clears: an alert clears on evidence of health, not on silence.

Pure: no clock, no I/O, no logging. Time comes in with each run (seconds on any monotonic
scale); events go out as frozen dataclasses for the log and the audit trail.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.twin.forecast import Crossing, format_duration

PredictiveKind = Literal["raised", "updated", "cleared"]
Key = tuple[str, str]
"""(output, side) of one envelope bound: the identity of a predictive alert."""


@dataclass(frozen=True)
class PredictivePolicy:
    """How forecast crossings become alerts.

    Attributes:
        confirm_runs: Consecutive runs forecasting a crossing before an alert raises.
        clear_runs: Consecutive runs without it before the alert clears.
        update_min_interval_s: Least time between two updates of one alert, s.
        update_min_change: Least relative change of ``earliest_s`` worth an update
            (|new − old| / max(old, 1 s)).
        within_s: Raise only when the earliest crossing is at most this far ahead, s
            (None: anywhere in the horizon).
    """

    confirm_runs: int = 2
    clear_runs: int = 3
    update_min_interval_s: float = 60.0
    update_min_change: float = 0.25
    within_s: float | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.confirm_runs < 1:
            problems.append(f"confirm_runs must be >= 1, got {self.confirm_runs}")
        if self.clear_runs < 1:
            problems.append(f"clear_runs must be >= 1, got {self.clear_runs}")
        if not (math.isfinite(self.update_min_interval_s) and self.update_min_interval_s >= 0):
            problems.append(
                f"update_min_interval_s must be finite and >= 0, got {self.update_min_interval_s}"
            )
        if not (math.isfinite(self.update_min_change) and self.update_min_change >= 0):
            problems.append(
                f"update_min_change must be finite and >= 0, got {self.update_min_change}"
            )
        if self.within_s is not None and not (math.isfinite(self.within_s) and self.within_s > 0):
            problems.append(f"within_s must be None or finite and > 0, got {self.within_s}")
        if problems:
            raise ValueError("invalid predictive alert policy: " + "; ".join(problems))


@dataclass(frozen=True)
class PredictiveEvent:
    """One predictive alert transition, ready for the log and the audit trail.

    Attributes:
        kind: "raised", "updated" or "cleared".
        alert_id: Stable id across the alert's raised/updated/cleared events.
        at: Time of the run that caused the event, s.
        output: The output forecast to cross a limit.
        side: "low" or "high".
        message: One line for an operator.
        crossing: The forecast behind the event (None for "cleared").
    """

    kind: PredictiveKind
    alert_id: str
    at: float
    output: str
    side: str
    message: str
    crossing: Crossing | None

    def to_record(self) -> dict[str, object]:
        """A JSON-ready dict (for structlog and the audit trail)."""
        return {
            "kind": self.kind,
            "alert_id": self.alert_id,
            "at": self.at,
            "output": self.output,
            "side": self.side,
            "message": self.message,
            "crossing": None if self.crossing is None else self.crossing.to_record(),
        }


@dataclass
class _Track:
    """Per-bound counters, and the alert when one is active."""

    present: int = 0
    absent: int = 0
    event: PredictiveEvent | None = None
    raised_at: float = math.nan
    updated_at: float = math.nan


class PredictiveAlerts:
    """Turns successive forecast runs into alert events; see the module docstring.

    Args:
        policy: Confirmation, hysteresis and update rate limit.
        id_prefix: Alert ids are ``{id_prefix}-{n}``; give each daemon start its own
            prefix (e.g. with its start time) so ids stay unique across restarts.

    Raises:
        ValueError: ``id_prefix`` is empty.
    """

    def __init__(self, policy: PredictivePolicy | None = None, *, id_prefix: str) -> None:
        if not id_prefix:
            raise ValueError("id_prefix must not be empty: alert ids must be unique")
        self.policy = policy or PredictivePolicy()
        self.id_prefix = id_prefix
        self._tracks: dict[Key, _Track] = {}
        self._seq = 0
        self._now = -math.inf

    @property
    def active(self) -> Mapping[Key, PredictiveEvent]:
        """The latest raised/updated event of each active alert, by (output, side)."""
        return {key: tr.event for key, tr in self._tracks.items() if tr.event is not None}

    def observe(self, t: float, crossings: Sequence[Crossing]) -> list[PredictiveEvent]:
        """Take one forecast run's crossings (all of them: an absent bound is evidence
        that it is no longer forecast).

        Returns:
            The events this run causes (usually none), ordered by output and side.

        Raises:
            ValueError: ``t`` is earlier than the previous run's, or a bound appears twice.
        """
        self._advance(t)
        by_key: dict[Key, Crossing] = {}
        for c in crossings:
            key: Key = (c.output, c.side)
            if key in by_key:
                raise ValueError(f"bound {key} appears twice in one forecast run")
            by_key[key] = c
        events: list[PredictiveEvent] = []
        for key in sorted(self._tracks.keys() | by_key.keys()):
            track = self._tracks.setdefault(key, _Track())
            event = self._step(t, key, track, by_key.get(key))
            if event is not None:
                events.append(event)
            if track.event is None and track.present == 0:
                del self._tracks[key]  # nothing to remember: keeps the table bounded
        return events

    def missing(self, t: float) -> None:
        """Note a run that could not be made: it breaks every consecutive count, so the
        runs on either side of it do not add up to a raise or a clear, but it neither
        raises nor clears (silence is not evidence either way).

        Raises:
            ValueError: ``t`` is earlier than the previous run's.
        """
        self._advance(t)
        for key, track in list(self._tracks.items()):
            track.present = track.absent = 0
            if track.event is None:
                del self._tracks[key]

    # ------------------------------------------------------------------ internals

    def _advance(self, t: float) -> None:
        if not math.isfinite(t):
            raise ValueError(f"run time must be finite, got {t!r}")
        if t < self._now:
            raise ValueError(f"time went backwards: {t} after {self._now}")
        self._now = t

    def _step(
        self, t: float, key: Key, track: _Track, crossing: Crossing | None
    ) -> PredictiveEvent | None:
        policy = self.policy
        active = track.event
        if active is None:
            near = crossing is not None and (
                policy.within_s is None or crossing.earliest_s <= policy.within_s
            )
            track.present = track.present + 1 if near else 0
            if crossing is None or track.present < policy.confirm_runs:
                return None
            self._seq += 1
            track.absent = 0
            track.raised_at = track.updated_at = t
            track.event = PredictiveEvent(
                "raised",
                f"{self.id_prefix}-{self._seq}",
                t,
                key[0],
                key[1],
                f"forecast: {crossing.message()}",
                crossing,
            )
            return track.event

        if crossing is None:
            track.present = 0
            track.absent += 1
            if track.absent < policy.clear_runs:
                return None
            track.event = None
            return PredictiveEvent(
                "cleared",
                active.alert_id,
                t,
                key[0],
                key[1],
                f"forecast cleared: {key[0]} no longer forecast to cross its {key[1]} limit "
                f"(active {format_duration(t - track.raised_at)})",
                None,
            )

        track.present += 1
        track.absent = 0
        assert active.crossing is not None
        old = active.crossing.earliest_s
        change = abs(crossing.earliest_s - old) / max(old, 1.0)
        if change < policy.update_min_change or t - track.updated_at < (
            policy.update_min_interval_s
        ):
            return None
        track.updated_at = t
        track.event = PredictiveEvent(
            "updated",
            active.alert_id,
            t,
            key[0],
            key[1],
            f"forecast updated: {crossing.message()}",
            crossing,
        )
        return track.event
