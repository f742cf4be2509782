"""Twin divergence alerts: the twin's own residuals as a fault detector.

The fidelity score (:mod:`gateway.twin.fidelity`) says how well the twin's look-ahead
predictions matched what the plant then did. Below the configured threshold the gate
already refuses automatic execution (DESIGN.md, invariant 4); an operator must also be
told, once, that the twin no longer explains the plant, which outputs it gets wrong and
which of its estimated parameters moved. Where that pattern names a fault, the alert says
so.

The fidelity is turned into an :class:`~gateway.detect.score.AnomalyScore` so the anomaly
detector's machinery applies unchanged: the :class:`~gateway.detect.alerts.AlertManager`
(hysteresis, one alert per episode that updates, at most 6 raised per hour) and the
signature rules (:func:`~gateway.detect.signatures.diagnose` with
:data:`~gateway.detect.signatures.TWIN_RULES`):

* **score** = 1/fidelity − 1, which is the weakest output's nrmse² (its mean squared
  prediction error in tolerances); **threshold** = 1/fidelity_threshold − 1, so
  "score 4x threshold" means the weakest output's RMS error is twice what the threshold
  allows. The alert clears below the score of ``fidelity_threshold + clear_margin``.
* **deviations**: ``twin_misfit_<output>`` = Z_MIN · nrmse / nrmse at the threshold (the
  signature bar is exactly where that output alone brings the fidelity to its threshold),
  and ``twin_drift_<parameter>`` = (estimate − declared) / declared std, signed.
* **contributions**: (deviation / Z_MIN)² · threshold for both kinds, so a parameter at
  the signature bar weighs as much as an output at the fidelity threshold.

Unknown fidelity (after a restart of the estimate, before the window has filled) is not
evidence either way: it breaks the consecutive counts and never clears an alert.

Pure: no clock, no I/O, no logging.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

from gateway.detect.alerts import AlertEvent, AlertManager, AlertPolicy
from gateway.detect.score import AnomalyScore
from gateway.detect.signatures import (
    DRIFT_PREFIX,
    MISFIT_PREFIX,
    TWIN_RULES,
    Z_MIN,
    SignatureRule,
    diagnose,
)
from gateway.twin.fidelity import FidelityReport

CLEAR_MARGIN: Final = 0.05
"""The alert clears once the fidelity is this far above its threshold (for
the policy's ``clear_after`` ticks): a score wandering around the threshold
cannot chatter."""


def twin_policy(id_prefix: str = "twin") -> AlertPolicy:
    """The alert policy for fidelity sampled once a second.

    The fidelity is already a rolling score over its window, so 10 s below the threshold
    is a real divergence, and 60 s clearly above it is a real recovery.
    """
    return AlertPolicy(
        raise_after=10,
        clear_after=60,
        max_alerts_per_hour=6,
        min_update_interval_s=300.0,
        medium_ratio=4.0,
        high_ratio=16.0,
        id_prefix=id_prefix,
        label="twin divergence",
    )


def _misfit_score(fidelity: float) -> float:
    return 1.0 / max(fidelity, 1e-12) - 1.0


def twin_score(
    report: FidelityReport,
    drift: Mapping[str, float],
    *,
    clear_margin: float = CLEAR_MARGIN,
) -> AnomalyScore | None:
    """The fidelity report and the parameter drift as an anomaly score; None when the
    fidelity is unknown.

    The clear threshold is the score of ``threshold + clear_margin``, or of halfway
    between the threshold and 1 when the margin would reach 1 (a threshold of 0.97 is a
    valid setting; the alert must still be able to clear).

    Raises:
        ValueError: The report's threshold is not in (0, 1), or the clear margin is
            negative or not finite.
    """
    if not 0.0 < report.threshold < 1.0:
        raise ValueError(f"fidelity threshold must be in (0, 1), got {report.threshold}")
    if not (math.isfinite(clear_margin) and clear_margin >= 0.0):
        raise ValueError(f"clear margin must be finite and >= 0, got {clear_margin}")
    clear_at = min(report.threshold + clear_margin, (1.0 + report.threshold) / 2.0)
    if report.score is None:
        return None
    threshold = _misfit_score(report.threshold)
    deviations: dict[str, float] = {}
    for output, score in report.per_output.items():
        if score is not None:
            deviations[MISFIT_PREFIX + output] = Z_MIN * math.sqrt(_misfit_score(score) / threshold)
    for name, z in drift.items():
        if math.isfinite(z):
            deviations[DRIFT_PREFIX + name] = z
    contributions = {name: (z / Z_MIN) ** 2 * threshold for name, z in deviations.items()}
    return AnomalyScore(
        score=_misfit_score(report.score),
        threshold=threshold,
        clear_threshold=_misfit_score(clear_at),
        contributions=contributions,
        deviations=deviations,
    )


class TwinAlerts:
    """Fidelity reports (one per twin step) in, alert events out.

    Args:
        policy: Hysteresis, rate limit and severity bands (default :func:`twin_policy`).
        rules: Signature rules on the twin's residuals.
        clear_margin: See :data:`CLEAR_MARGIN`.
    """

    def __init__(
        self,
        policy: AlertPolicy | None = None,
        rules: Sequence[SignatureRule] = TWIN_RULES,
        *,
        clear_margin: float = CLEAR_MARGIN,
    ) -> None:
        self.manager = AlertManager(policy or twin_policy())
        self.rules = tuple(rules)
        self.clear_margin = clear_margin
        self.last: AnomalyScore | None = None
        self._now = -math.inf

    @property
    def active(self) -> AlertEvent | None:
        """The active twin alert's latest state, if any."""
        return self.manager.active

    def observe(
        self, now: float, report: FidelityReport, drift: Mapping[str, float]
    ) -> tuple[AlertEvent, ...]:
        """Take one twin step's fidelity report and parameter drift.

        ``now`` is the gateway's wall clock, which may step back (NTP on a box without a
        real-time clock): the alert clock then holds until it catches up, so the hour of
        the rate limit is never shortened and nothing raises.

        Raises:
            ValueError: The report's threshold is unusable.
        """
        now = self._now = max(now, self._now)
        score = twin_score(report, drift, clear_margin=self.clear_margin)
        self.last = score
        if score is None:
            return self.manager.observe(now, None)
        # Diagnosed only while the fidelity is low: a healthy twin has nothing to explain.
        signature = diagnose(score, self.rules) if score.anomalous else ()
        return self.manager.observe(now, score, signature)
