"""Residual signatures: which fault a pattern of feature deviations most likely means.

Pure rules on a model's per-feature signed deviations (standardised, so "3" means three
normal standard deviations) and contributions (how much of the anomaly score each feature
carries). A rule names a fault when all its primary residuals deviate in the stated
direction and none of its contradicting ones do; its confidence is the share of the score
that the rule's deviating features explain. No pattern → the honest answer, "unknown",
with the features that drive the score as evidence.

The rules are data (:data:`RULES`): residuals from the twin are more named features, and
rules for them are more entries, with no change to the code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from gateway.detect.score import AnomalyScore

Direction = Literal[1, -1]

Z_MIN: Final = 3.0
"""A feature 'deviates' when its signed standardised deviation passes this, in the rule's
direction."""


@dataclass(frozen=True)
class Evidence:
    """A feature moving one way, and what that means physically.

    ``z_min`` overrides the global deviation bar for evidence that must be strong to
    mean anything (a few repeated readings happen by chance; a frozen image is extreme).
    """

    feature: str
    direction: Direction
    meaning: str
    z_min: float | None = None


@dataclass(frozen=True)
class SignatureRule:
    """A fault's residual pattern.

    Attributes:
        fault: Name of the likely fault (the plant's fault names where they apply).
        primary: All must deviate for the rule to match.
        supporting: Raise the confidence when they deviate too.
        contradicted_by: Any of these deviating rules the fault out.
    """

    fault: str
    primary: tuple[Evidence, ...]
    supporting: tuple[Evidence, ...] = ()
    contradicted_by: tuple[Evidence, ...] = ()


@dataclass(frozen=True)
class Hypothesis:
    """A named likely fault with the evidence for it.

    Attributes:
        fault: Fault name, or "unknown".
        confidence: Share of the anomaly score the evidence explains, 0..1.
        evidence: Human-readable lines: feature, value, and what it means.
        features: The features those lines are about, in the same order (for messages
            that name them without re-reading the lines).
    """

    fault: str
    confidence: float
    evidence: tuple[str, ...]
    features: tuple[str, ...] = ()


UNKNOWN: Final = "unknown"

FROZEN_Z_MIN: Final = 8.0
"""One frozen transmitter of the four watched already gives z ≈ 10 and a frozen image
z ≈ 40; chance repeats stayed below z ≈ 4.1 in training, so a weaker flatline must neither
name a freeze nor veto the other rules."""

_FROZEN: Final = Evidence(
    "flatline_fraction",
    1,
    "noisy transmitters repeat their readings (frozen image)",
    z_min=FROZEN_Z_MIN,
)

RULES: Final[tuple[SignatureRule, ...]] = (
    SignatureRule(
        fault="sensor_freeze",
        primary=(_FROZEN,),
    ),
    SignatureRule(
        fault="bearing_degradation",
        primary=(
            Evidence("bearing_temp_excess", 1, "bearing hotter than speed and ambient explain"),
        ),
        supporting=(
            Evidence("vibration_excess", 1, "vibration above normal for this speed"),
            Evidence("motor_current_residual", 1, "more current than the hydraulic duty needs"),
        ),
        contradicted_by=(_FROZEN,),
    ),
    SignatureRule(
        fault="impeller_wear",
        primary=(Evidence("pump_head_residual", -1, "discharge pressure below the pump curve"),),
        supporting=(
            Evidence("vibration_excess", 1, "vibration above normal for this speed"),
            Evidence("motor_current_residual", 1, "more current than the hydraulic duty needs"),
        ),
        contradicted_by=(_FROZEN,),
    ),
    SignatureRule(
        fault="valve_stiction",
        primary=(Evidence("valve_tracking", 1, "valve position stays off its command"),),
        contradicted_by=(_FROZEN,),
    ),
    SignatureRule(
        fault="leak",
        primary=(
            Evidence("mass_balance", 1, "more flows in than out and into storage (unmetered loss)"),
        ),
        contradicted_by=(_FROZEN,),
    ),
    SignatureRule(
        fault="level_sensor_drift",
        primary=(
            Evidence("mass_balance", -1, "more flows out than in while the level reading holds"),
        ),
        supporting=(
            Evidence("valve_flow_residual", -1, "less outflow than the level reading implies"),
        ),
        contradicted_by=(_FROZEN,),
    ),
    SignatureRule(
        fault="heater_degradation",
        primary=(Evidence("heater_residual", 1, "heater draws more power than the tank takes up"),),
        contradicted_by=(_FROZEN,),
    ),
    SignatureRule(
        # Vibration alone cannot tell a bearing from an impeller imbalance.
        fault="pump_mechanical",
        primary=(Evidence("vibration_excess", 1, "vibration above normal for this speed"),),
        contradicted_by=(
            _FROZEN,
            Evidence("bearing_temp_excess", 1, ""),
            Evidence("pump_head_residual", -1, ""),
        ),
    ),
)


MISFIT_PREFIX: Final = "twin_misfit_"
"""Feature name prefix of an output the twin predicts badly (gateway.detect.twin_alerts)."""
DRIFT_PREFIX: Final = "twin_drift_"
"""Feature name prefix of an estimated parameter's drift (gateway.detect.twin_alerts)."""


def _misfit(output: str, meaning: str, z_min: float | None = None) -> Evidence:
    return Evidence(MISFIT_PREFIX + output, 1, meaning, z_min)


def _drift(
    parameter: str, direction: Direction, meaning: str, z_min: float | None = None
) -> Evidence:
    return Evidence(DRIFT_PREFIX + parameter, direction, meaning, z_min)


_HEAD_FELL: Final = _drift(
    "pump_shutoff_head",
    -1,
    "the estimated pump head fell below the pump's datasheet",
    # Impeller wear of severity 0.3 moved it 2.9-3.0 declared std in the plant tests.
    z_min=2.5,
)
_BEARING_HOTTER: Final = _drift(
    "bearing_rise", 1, "the estimated bearing temperature rise over ambient went up"
)
_VIBRATION: Final = _misfit("vibration_rms", "vibration off the twin's healthy-pump value")

TWIN_RULES: Final[tuple[SignatureRule, ...]] = (
    # Rules on the twin's residuals (gateway.detect.twin_alerts): outputs it predicts
    # badly (misfit, unsigned; 3 = that output alone brings the fidelity to its threshold)
    # and estimated parameters that moved (drift, signed, in declared std). A drift names
    # a physical change; a misfit alone does not: a frozen measurement image makes the
    # valve position miss its command exactly as a sticking valve does, and a leak and a
    # drifting level transmitter disturb the level loop's outputs alike. Those stay
    # "unknown" here, with the outputs most off as evidence, and the anomaly model names them.
    SignatureRule(
        fault="bearing_degradation",
        primary=(_BEARING_HOTTER,),
        supporting=(
            _VIBRATION,
            _misfit("bearing_temp", "bearing temperature off the twin's prediction"),
        ),
    ),
    SignatureRule(
        fault="impeller_wear",
        primary=(_HEAD_FELL,),
        supporting=(
            _VIBRATION,
            _misfit("discharge_pressure", "discharge pressure off the pump curve's prediction"),
            _misfit("pump_flow", "pump flow off the pump curve's prediction"),
        ),
    ),
)


def _line(ev: Evidence, score: AnomalyScore) -> str:
    z = score.deviations[ev.feature]
    return f"{ev.feature} z={z:+.1f}: {ev.meaning}"


def _deviates(ev: Evidence, deviations: Mapping[str, float], z_min: float) -> bool:
    z = deviations.get(ev.feature)
    return z is not None and z * ev.direction >= (ev.z_min if ev.z_min is not None else z_min)


def diagnose(
    score: AnomalyScore,
    rules: Sequence[SignatureRule] = RULES,
    *,
    z_min: float = Z_MIN,
    top: int = 3,
) -> tuple[Hypothesis, ...]:
    """Likely faults for an anomalous score, most confident first; never empty.

    Args:
        score: The model's verdict, with per-feature deviations and contributions.
        rules: Signature rules to try.
        z_min: Deviation a feature needs to count as evidence.
        top: At most this many hypotheses.
    """
    dev = score.deviations
    if not dev:
        return (Hypothesis(UNKNOWN, 0.0, ("the model reports no per-feature deviations",)),)
    total = sum(max(c, 0.0) for c in score.contributions.values()) or 1.0
    found: list[Hypothesis] = []
    for rule in rules:
        if not all(_deviates(ev, dev, z_min) for ev in rule.primary):
            continue
        if any(_deviates(ev, dev, z_min) for ev in rule.contradicted_by):
            continue
        used = [*rule.primary, *(ev for ev in rule.supporting if _deviates(ev, dev, z_min))]
        share = sum(max(score.contributions.get(ev.feature, 0.0), 0.0) for ev in used) / total
        found.append(
            Hypothesis(
                rule.fault,
                round(min(share, 1.0), 3),
                tuple(_line(ev, score) for ev in used),
                tuple(ev.feature for ev in used),
            )
        )
    if found:
        found.sort(key=lambda h: -h.confidence)
        return tuple(found[:top])
    drivers = [n for n in sorted(dev, key=lambda n: -abs(dev[n]))[:top] if abs(dev[n]) >= z_min]
    return (
        Hypothesis(
            UNKNOWN,
            0.0,
            tuple(f"{n} z={dev[n]:+.1f}" for n in drivers)
            or ("no single feature deviates strongly",),
            tuple(drivers),
        ),
    )
