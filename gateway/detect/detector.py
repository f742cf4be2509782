"""The detect step of the loop: samples in, alert events out.

One :class:`Detector` per model. Each sample period the caller hands it the current signal
values (from the live table); every ``hop`` samples a window is due and the detector

1. computes the built-in features (:mod:`.features`, cheap, on the caller's thread) and
   merges the external ones the caller supplies (e.g. twin residuals), by name;
2. scores the vector with the ONNX model (:mod:`.anomaly`; off the event loop in
   :meth:`Detector.observe_async`);
3. names the likely fault (:mod:`.signatures`) and updates the alert state (:mod:`.alerts`).

A due window without a complete, good feature vector is scored as "no score": it never
reaches the model, and the alert manager treats it as missing data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.detect.alerts import AlertEvent, AlertManager, AlertPolicy
from gateway.detect.anomaly import AnomalyModel, AnomalyScore
from gateway.detect.features import FeatureExtractor, FeatureVector, values_from_snapshot
from gateway.detect.signatures import RULES, Hypothesis, SignatureRule, diagnose
from gateway.signals import SignalValue


@dataclass(frozen=True)
class DetectionStep:
    """What one due window produced.

    Attributes:
        t: Time of the window's newest sample, s.
        features: The complete feature vector, or None when it could not be formed.
        score: The model's verdict (None without a vector).
        signature: Likely faults when the score is anomalous, else empty.
        events: Alert events this window caused.
        reason: Why there is no score (None when there is one).
    """

    t: float
    features: FeatureVector | None
    score: AnomalyScore | None
    signature: tuple[Hypothesis, ...]
    events: tuple[AlertEvent, ...]
    reason: str | None = None


class Detector:
    """Features → anomaly score → signature → alert events, for one model.

    Args:
        model: The loaded anomaly model (its metadata fixes the features and window).
        policy: Alert hysteresis and rate limit.
        rules: Signature rules.
        signal_map: Signal role (plant point name) → configured signal name, where the
            config names them differently.
    """

    def __init__(
        self,
        model: AnomalyModel,
        policy: AlertPolicy | None = None,
        *,
        rules: Sequence[SignatureRule] = RULES,
        signal_map: Mapping[str, str] | None = None,
    ) -> None:
        meta = model.metadata
        self.model = model
        self.extractor = FeatureExtractor(meta.names, meta.calibration, meta.window)
        self.alerts = AlertManager(policy)
        self.rules = tuple(rules)
        self.signal_map = dict(signal_map or {})

    @property
    def signals(self) -> tuple[str, ...]:
        """Signal roles the detector needs every sample period."""
        return self.extractor.signals

    @property
    def external(self) -> tuple[str, ...]:
        """Feature names the caller must supply with each sample (e.g. twin residuals)."""
        return self.model.metadata.external

    def sample_snapshot(self, snapshot: Mapping[str, SignalValue]) -> dict[str, float | None]:
        """The values this detector needs from a live-table snapshot (None if unusable)."""
        return values_from_snapshot(snapshot, self.signals, self.signal_map)

    def _vector(
        self, t: float, values: Mapping[str, float | None], external: Mapping[str, float]
    ) -> tuple[bool, FeatureVector | None, str | None]:
        """(window due, complete vector or None, reason there is none)."""
        result = self.extractor.push(t, values)
        if result is None:
            return False, None, None
        if result.vector is None:
            return True, None, result.reason
        missing = [n for n in self.external if not math.isfinite(external.get(n, math.nan))]
        if missing:
            return True, None, f"external features missing or not finite: {', '.join(missing)}"
        merged = dict(result.vector.values)
        merged.update({n: float(external[n]) for n in self.external})
        return True, FeatureVector(t, merged), None

    def _assess(
        self, t: float, vector: FeatureVector | None, score: AnomalyScore | None, reason: str | None
    ) -> DetectionStep:
        signature = diagnose(score, self.rules) if score is not None and score.anomalous else ()
        events = self.alerts.observe(t, score, signature)
        return DetectionStep(t, vector, score, signature, events, reason)

    def observe(
        self,
        t: float,
        values: Mapping[str, float | None],
        external: Mapping[str, float] | None = None,
    ) -> DetectionStep | None:
        """Take one sample (blocking when a window is scored). None when no window is due.

        Args:
            t: Sample time, s (monotonic, one sample per ``window.period_s``).
            values: Value per signal role; None for a missing or not-good value.
            external: Values of the external features, by name.
        """
        due, vector, reason = self._vector(t, values, external or {})
        if not due:
            return None
        score = self.model.score(vector.values) if vector is not None else None
        return self._assess(t, vector, score, reason)

    async def observe_async(
        self,
        t: float,
        values: Mapping[str, float | None],
        external: Mapping[str, float] | None = None,
    ) -> DetectionStep | None:
        """:meth:`observe` with the model run in a worker thread (never blocks the loop)."""
        due, vector, reason = self._vector(t, values, external or {})
        if not due:
            return None
        score = await self.model.score_async(vector.values) if vector is not None else None
        return self._assess(t, vector, score, reason)
