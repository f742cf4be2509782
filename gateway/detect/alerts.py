"""Anomaly alerts with hysteresis and a rate limit: one incipient fault, one alert that updates.

ISA-18.2 calls about 6 alerts per operator-hour acceptable and 12 the most an operator can
manage, and names chattering (an alert that raises and clears as a value hovers at its
limit) and floods as the failures to design out. So:

* **Hysteresis.** An alert raises only after ``raise_after`` consecutive windows score above
  the model's threshold, and clears only after ``clear_after`` consecutive windows below the
  lower clear threshold. A score that wanders between the two changes nothing.
* **One alert per incipient fault.** While an alert is active, a growing fault does not
  raise new alerts: the active one is *updated* when its severity escalates (at once) or
  its leading signature changes (at once when it goes from "unknown" to a named fault,
  otherwise at most every ``min_update_interval_s``). Severity never de-escalates while
  the alert is active, so it cannot chatter either.
* **Rate limit.** At most ``max_alerts_per_hour`` alerts are raised in any sliding hour.
  A raise that would exceed it is held back (it is raised later if the condition still
  holds when the budget allows) and announced by one "suppressed" event per hour.
* A window with no score (bad or missing data) breaks both consecutive counts but never
  clears an active alert: missing data is not evidence of health.

Pure: no clock, no I/O, no logging. Time comes in with each window (``now``, seconds on
any monotonic scale), and events go out as frozen dataclasses ready for the log and the
audit trail.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

from gateway.detect.score import AnomalyScore
from gateway.detect.signatures import UNKNOWN, Hypothesis

Severity = Literal["low", "medium", "high"]
AlertKind = Literal["raised", "updated", "cleared", "suppressed"]

_RANK: Final[dict[Severity, int]] = {"low": 0, "medium": 1, "high": 2}
HOUR_S: Final = 3600.0


@dataclass(frozen=True)
class AlertPolicy:
    """How anomaly scores become alerts.

    Attributes:
        raise_after: Consecutive windows above the threshold before an alert raises.
        clear_after: Consecutive windows below the clear threshold before it clears.
        max_alerts_per_hour: Most alerts raised in any sliding hour.
        min_update_interval_s: Least time between signature-change updates of one alert.
        medium_ratio: Score/threshold at which severity becomes "medium".
        high_ratio: Score/threshold at which severity becomes "high".
        id_prefix: Alert ids are ``{id_prefix}-{n}``.
        label: What the alert is about, first word of its messages ("anomaly",
            "twin divergence").
    """

    raise_after: int = 3
    clear_after: int = 6
    max_alerts_per_hour: int = 6
    min_update_interval_s: float = 300.0
    medium_ratio: float = 4.0
    high_ratio: float = 16.0
    id_prefix: str = "anomaly"
    label: str = "anomaly"

    def __post_init__(self) -> None:
        problems = []
        if self.raise_after < 1:
            problems.append(f"raise_after must be >= 1, got {self.raise_after}")
        if self.clear_after < 1:
            problems.append(f"clear_after must be >= 1, got {self.clear_after}")
        if self.max_alerts_per_hour < 1:
            problems.append(f"max_alerts_per_hour must be >= 1, got {self.max_alerts_per_hour}")
        if not (math.isfinite(self.min_update_interval_s) and self.min_update_interval_s >= 0):
            problems.append(f"min_update_interval_s must be >= 0, got {self.min_update_interval_s}")
        if not 1.0 < self.medium_ratio < self.high_ratio < math.inf:
            problems.append(
                f"need 1 < medium_ratio < high_ratio, got {self.medium_ratio}, {self.high_ratio}"
            )
        if problems:
            raise ValueError("invalid alert policy: " + "; ".join(problems))

    def severity(self, ratio: float) -> Severity:
        """Severity of a score that is ``ratio`` times the threshold."""
        if ratio >= self.high_ratio:
            return "high"
        if ratio >= self.medium_ratio:
            return "medium"
        return "low"


@dataclass(frozen=True)
class AlertEvent:
    """One alert transition, ready for the log and the audit trail.

    Attributes:
        kind: "raised", "updated", "cleared", or "suppressed" (a raise held back by the
            rate limit; ``alert_id`` is then empty).
        alert_id: Stable id of the alert across its raised/updated/cleared events.
        at: Time of the window that caused the event, s.
        severity: Severity at this event.
        score: Score of that window.
        threshold: The model's threshold.
        peak_score: Highest score seen while the alert was active.
        signature: Likely faults, most confident first.
        message: One line for an operator.
    """

    kind: AlertKind
    alert_id: str
    at: float
    severity: Severity
    score: float
    threshold: float
    peak_score: float
    signature: tuple[Hypothesis, ...]
    message: str

    @property
    def fault(self) -> str:
        """The leading hypothesis' fault name ("unknown" if none)."""
        return self.signature[0].fault if self.signature else UNKNOWN

    def to_record(self) -> dict[str, object]:
        """A JSON-ready dict (for structlog and the audit trail)."""
        return {
            "kind": self.kind,
            "alert_id": self.alert_id,
            "at": self.at,
            "severity": self.severity,
            "score": self.score,
            "threshold": self.threshold,
            "peak_score": self.peak_score,
            "signature": [
                {"fault": h.fault, "confidence": h.confidence, "evidence": list(h.evidence)}
                for h in self.signature
            ],
            "message": self.message,
        }


def _lead(signature: Sequence[Hypothesis]) -> str:
    return signature[0].fault if signature else UNKNOWN


def _describe(
    label: str,
    kind: AlertKind,
    event_score: float,
    threshold: float,
    signature: Sequence[Hypothesis],
) -> str:
    lead = signature[0] if signature else None
    if lead is None or lead.fault == UNKNOWN:
        drivers = lead.features if lead else ()
        what = "cause unknown" + (f" (most off: {', '.join(drivers)})" if drivers else "")
    else:
        what = f"likely {lead.fault} ({lead.confidence:.0%} of the score)"
    return f"{label} {kind}: {what}; score {event_score / threshold:.1f}x threshold"


class AlertManager:
    """Turns a stream of per-window scores into alert events; see the module docstring.

    Args:
        policy: Hysteresis, rate limit and severity bands.
    """

    def __init__(self, policy: AlertPolicy | None = None) -> None:
        self.policy = policy or AlertPolicy()
        self._above = 0
        self._below = 0
        self._active: AlertEvent | None = None
        self._active_since = -math.inf
        self._last_update_at = -math.inf
        self._raised_at: deque[float] = deque()
        self._suppressed_at = -math.inf
        self._seq = 0
        self._now = -math.inf

    @property
    def active(self) -> AlertEvent | None:
        """The active alert's latest state (its last raised/updated event), if any."""
        return self._active

    def observe(
        self, now: float, score: AnomalyScore | None, signature: Sequence[Hypothesis] = ()
    ) -> tuple[AlertEvent, ...]:
        """Take one window's score (None: no score for this window) and its signature
        (empty when the window was not diagnosed; it then leaves the alert's as it is).

        Returns:
            The events this window causes (usually none).

        Raises:
            ValueError: ``now`` is earlier than the previous window's time.
        """
        if now < self._now:
            raise ValueError(f"time went backwards: {now} after {self._now}")
        self._now = now
        if score is None:
            self._above = self._below = 0
            return ()
        self._above = self._above + 1 if score.score > score.threshold else 0
        self._below = self._below + 1 if score.score < score.clear_threshold else 0
        if self._active is None:
            return self._maybe_raise(now, score, tuple(signature))
        return self._follow(now, score, tuple(signature))

    def _maybe_raise(
        self, now: float, score: AnomalyScore, signature: tuple[Hypothesis, ...]
    ) -> tuple[AlertEvent, ...]:
        policy = self.policy
        if self._above < policy.raise_after:
            return ()
        while self._raised_at and self._raised_at[0] <= now - HOUR_S:
            self._raised_at.popleft()
        severity = policy.severity(score.ratio)
        if len(self._raised_at) >= policy.max_alerts_per_hour:
            if now - self._suppressed_at < HOUR_S:
                return ()
            self._suppressed_at = now
            message = (
                f"{policy.label} alert held back: {policy.max_alerts_per_hour} alerts "
                "already raised in the last hour; it is raised when the budget allows "
                "if still present"
            )
            return (
                AlertEvent(
                    "suppressed",
                    "",
                    now,
                    severity,
                    score.score,
                    score.threshold,
                    score.score,
                    signature,
                    message,
                ),
            )
        self._seq += 1
        self._raised_at.append(now)
        self._active_since = now
        self._last_update_at = now
        event = AlertEvent(
            "raised",
            f"{policy.id_prefix}-{self._seq}",
            now,
            severity,
            score.score,
            score.threshold,
            score.score,
            signature,
            _describe(policy.label, "raised", score.score, score.threshold, signature),
        )
        self._active = event
        return (event,)

    def _follow(
        self, now: float, score: AnomalyScore, signature: tuple[Hypothesis, ...]
    ) -> tuple[AlertEvent, ...]:
        active = self._active
        assert active is not None
        peak = max(active.peak_score, score.score)
        if self._below >= self.policy.clear_after:
            self._active = None
            self._above = 0
            return (
                replace(
                    active,
                    kind="cleared",
                    at=now,
                    score=score.score,
                    peak_score=peak,
                    message=f"{self.policy.label} cleared after {now - self._active_since:.0f} s; "
                    f"peak {peak / score.threshold:.1f}x threshold",
                ),
            )
        severity = self.policy.severity(score.ratio)
        escalated = _RANK[severity] > _RANK[active.severity]
        # No signature (the window was not diagnosed) says nothing new about the cause.
        signature = signature or active.signature
        old_lead, new_lead = active.fault, _lead(signature)
        named_now = old_lead == UNKNOWN and new_lead != UNKNOWN
        changed = new_lead != old_lead and (
            named_now or now - self._last_update_at >= self.policy.min_update_interval_s
        )
        if not (escalated or changed):
            self._active = replace(active, peak_score=peak)
            return ()
        self._last_update_at = now
        # A rate-limited change of lead keeps the old signature; otherwise the newest.
        kept = signature if changed or new_lead == old_lead else active.signature
        updated = replace(
            active,
            kind="updated",
            at=now,
            severity=severity if escalated else active.severity,
            score=score.score,
            peak_score=peak,
            signature=kept,
            message=_describe(self.policy.label, "updated", score.score, score.threshold, kept),
        )
        self._active = updated
        return (updated,)
