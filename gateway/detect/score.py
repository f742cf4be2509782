"""The anomaly model's verdict on one feature vector, as plain data.

Kept apart from :mod:`gateway.detect.anomaly` so the pure steps (signatures, alerts) do
not import onnxruntime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class AnomalyScore:
    """The model's verdict on one feature vector.

    Attributes:
        score: Anomaly score, higher is more anomalous.
        threshold: The model's alert threshold.
        clear_threshold: Below this an active alert may clear.
        contributions: Per-feature share of the score (empty if the model has none).
        deviations: Per-feature signed standardised deviation (empty if none).
    """

    score: float
    threshold: float
    clear_threshold: float
    contributions: Mapping[str, float]
    deviations: Mapping[str, float]

    @property
    def ratio(self) -> float:
        """Score over threshold: > 1 is anomalous."""
        return self.score / self.threshold

    @property
    def anomalous(self) -> bool:
        return self.score > self.threshold
