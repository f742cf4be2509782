"""The gate, step by step, on the real skid model: what passes, what is escalated, what is
rejected and why; and a property test attacking it with random proposals and plant states."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.govern.gate import (
    STEPS,
    Decision,
    GovernSettings,
    PlantView,
    Verdict,
    evaluate,
    interlock_violations,
    settings_for,
)
from gateway.govern.proposal import Proposal, ProposalError
from gateway.govern.ramp import plan_ramp, ramp_rate_ok
from gateway.signals import Quality, SignalValue
from tests.govern.conftest import NOW, TwinFactory, config, view

SETTINGS = GovernSettings()


def proposal(targets: dict[str, float], *, expires_in_s: float = 600.0, n: int = 1) -> Proposal:
    return Proposal.create(
        id=f"p-{n}",
        proposer="operator:alice",
        targets=targets,
        rationale="test",
        created_at=NOW,
        expires_in_s=expires_in_s,
    )


def codes(verdict: Verdict) -> list[str]:
    return [c.code for c in verdict.reasons]


def test_a_safe_low_risk_change_executes_at_l3(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    cfg = config("L3")
    verdict = evaluate(
        cfg, SETTINGS, proposal({"level_sp": 1.7}), view(cfg, plant_table, twin(cfg))
    )
    assert verdict.decision is Decision.EXECUTE, codes(verdict)
    assert verdict.approvals_required == 0
    assert [c.step for c in verdict.checks] == list(STEPS)
    plan = verdict.plan["level_sp"]
    assert plan[-1].value == 1.7
    spec = cfg.writable["level_sp"]
    current = plant_table["level_sp"].value
    assert ramp_rate_ok(
        current,
        plan,
        max_rate_up=spec.max_rate_up,
        max_rate_down=spec.max_rate_down,
        interval_s=SETTINGS.ramp_interval_s,
    )
    level = verdict.predicted["tank_level"]
    assert level["high"] is not None
    assert 1.65 < level["high"] < 1.8  # the twin's prediction is kept with the verdict
    assert verdict.expires_at == NOW + SETTINGS.verdict_ttl_s


@pytest.mark.parametrize(
    ("autonomy", "targets", "decision", "approvals"),
    [
        ("L2", {"level_sp": 1.6}, Decision.APPROVAL, 1),
        ("L3", {"temp_sp": 47.0}, Decision.APPROVAL, 1),
        ("L3", {"valve_cmd": 55.0}, Decision.APPROVAL, 2),
        ("L3", {"level_sp": 1.6, "valve_cmd": 55.0}, Decision.APPROVAL, 2),
        ("L4", {"valve_cmd": 55.0}, Decision.EXECUTE, 0),
    ],
)
def test_risk_class_and_autonomy_decide_who_must_sign(
    plant_table: dict[str, SignalValue],
    twin: TwinFactory,
    autonomy: str,
    targets: dict[str, float],
    decision: Decision,
    approvals: int,
) -> None:
    cfg = config(autonomy)
    verdict = evaluate(cfg, SETTINGS, proposal(targets), view(cfg, plant_table, twin(cfg)))
    assert verdict.decision is decision, codes(verdict)
    assert verdict.approvals_required == approvals
    if decision is Decision.APPROVAL:
        assert math.isinf(verdict.expires_at - NOW) or verdict.expires_at == NOW + 600.0


@pytest.mark.parametrize(
    ("targets", "code"),
    [
        ({"pump_speed": 1000.0}, "unknown_tag"),
        ({"level_sp": 2.5}, "outside_limits"),
        ({"level_sp": 0.4}, "outside_limits"),
        ({"temp_sp": 60.0}, "step_too_large"),
    ],
)
def test_policy_rejects_and_nothing_later_runs(
    plant_table: dict[str, SignalValue], twin: TwinFactory, targets: dict[str, float], code: str
) -> None:
    cfg = config("L4")
    verdict = evaluate(cfg, SETTINGS, proposal(targets), view(cfg, plant_table, twin(cfg)))
    assert verdict.decision is Decision.REJECT
    assert codes(verdict) == [code]
    assert {c.step for c in verdict.checks if c.code == "not_run"} == set(STEPS[1:])


def test_below_l2_takes_no_proposals(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    cfg = config("L1")
    verdict = evaluate(
        cfg, SETTINGS, proposal({"level_sp": 1.6}), view(cfg, plant_table, twin(cfg))
    )
    assert codes(verdict) == ["autonomy_forbids"]


@pytest.mark.parametrize(
    ("quality_of", "code"),
    [
        ("level_sp", "signal_not_good"),  # the current value of the tag
        ("tank_level", "signal_not_good"),  # an interlock's and the envelope's signal
        ("remote_mode", "signal_not_good"),
        ("inlet_temp", "signal_not_good"),  # a twin input
    ],
)
@pytest.mark.parametrize("quality", [Quality.STALE, Quality.BAD, Quality.UNCERTAIN])
def test_stale_or_bad_data_never_drives_a_write(
    plant_table: dict[str, SignalValue],
    twin: TwinFactory,
    quality_of: str,
    code: str,
    quality: Quality,
) -> None:
    cfg = config("L4")
    v = view(cfg, plant_table, twin(cfg), qualities={quality_of: quality})
    verdict = evaluate(cfg, SETTINGS, proposal({"level_sp": 1.6}), v)
    assert verdict.decision is Decision.REJECT
    assert code in codes(verdict)


def test_a_plc_in_local_is_not_written(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    cfg = config("L4")
    v = view(cfg, plant_table, twin(cfg), overrides={"remote_mode": 0.0})
    assert codes(evaluate(cfg, SETTINGS, proposal({"level_sp": 1.6}), v)) == ["not_remote"]


def test_no_twin_estimate_no_write(plant_table: dict[str, SignalValue], twin: TwinFactory) -> None:
    cfg = config("L4")
    verdict = evaluate(
        cfg,
        SETTINGS,
        proposal({"level_sp": 1.6}),
        view(cfg, plant_table, twin(cfg, tracking=False)),
    )
    assert verdict.decision is Decision.REJECT
    assert "twin_not_tracking" in codes(verdict)


def test_the_twin_rejects_a_change_that_leaves_the_envelope(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    """With the tank's envelope tightened to 1.75 m (margin 0.1), a level setpoint of 1.7 m
    is within the tag's limits and step, but the twin predicts the level above 1.65 m."""
    cfg = config("L4", edits=(("high = 2.7\nmargin = 0.1", "high = 1.75\nmargin = 0.1"),))
    verdict = evaluate(
        cfg, SETTINGS, proposal({"level_sp": 1.7}), view(cfg, plant_table, twin(cfg))
    )
    assert verdict.decision is Decision.REJECT
    exits = [c for c in verdict.reasons if c.code == "envelope_exit"]
    assert [c.detail["output"] for c in exits] == ["tank_level"]
    assert exits[0].detail["side"] == "high"
    assert exits[0].detail["members"] == exits[0].detail["of"] == 8
    assert verdict.predicted["tank_level"]["bound_high"] == pytest.approx(1.65)
    assert [c.code for c in verdict.checks if c.step in ("fidelity", "interlock", "risk")] == [
        "not_run"
    ] * 3


def test_a_long_full_speed_fill_is_refused_for_the_bearing(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    """The twin knows what the tag's own limits do not: lifting the level 0.5 m runs the
    pump flat out for minutes, and some plausible bearings would pass 83 degC."""
    cfg = config("L4")
    verdict = evaluate(
        cfg, SETTINGS, proposal({"level_sp": 2.0}), view(cfg, plant_table, twin(cfg, members=32))
    )
    assert verdict.decision is Decision.REJECT
    assert {c.detail["output"] for c in verdict.reasons} == {"bearing_temp"}


@pytest.mark.parametrize(
    ("score", "decision"), [(0.5, Decision.APPROVAL), (None, Decision.APPROVAL)]
)
def test_low_or_unknown_fidelity_escalates_even_low_risk(
    plant_table: dict[str, SignalValue], twin: TwinFactory, score: float | None, decision: Decision
) -> None:
    cfg = config("L4")
    verdict = evaluate(
        cfg,
        SETTINGS,
        proposal({"level_sp": 1.6}),
        view(cfg, plant_table, twin(cfg, fidelity=score)),
    )
    assert verdict.decision is decision
    assert codes(verdict) == ["fidelity_low" if score is not None else "fidelity_unknown"]


def test_low_fidelity_rejects_when_the_policy_says_so(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    cfg = config("L4", edits=(('low_fidelity = "escalate"', 'low_fidelity = "reject"'),))
    verdict = evaluate(
        cfg, SETTINGS, proposal({"level_sp": 1.6}), view(cfg, plant_table, twin(cfg, fidelity=0.5))
    )
    assert verdict.decision is Decision.REJECT


def test_a_holding_interlock_forbids_its_direction_only(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    cfg = config("L4")
    hot = view(cfg, plant_table, twin(cfg), overrides={"bearing_temp": 81.0})
    up = evaluate(cfg, SETTINGS, proposal({"level_sp": 1.6}), hot)
    assert up.decision is Decision.REJECT
    assert [c.detail.get("interlock") for c in up.reasons] == ["bearing_hot"]
    down = evaluate(cfg, SETTINGS, proposal({"level_sp": 1.4}), hot)
    assert down.decision is Decision.EXECUTE, codes(down)


def test_interlocks_do_not_depend_on_the_twin_or_the_proposer(
    plant_table: dict[str, SignalValue],
) -> None:
    """The writer's per-write check takes only config, moves and live values."""
    cfg = config("L4")
    signals = dict(plant_table)
    signals["tank_level"] = SignalValue("tank_level", 0.55, "m", NOW, NOW, NOW, Quality.GOOD)
    failed = interlock_violations(cfg, {"temp_sp": +1.0}, signals)
    assert [c.detail["interlock"] for c in failed] == ["heater_needs_level"]
    assert interlock_violations(cfg, {"temp_sp": -1.0}, signals) == []
    signals["tank_level"] = SignalValue("tank_level", 1.5, "m", NOW, NOW, NOW, Quality.STALE)
    assert [c.code for c in interlock_violations(cfg, {"temp_sp": -1.0}, signals)] == [
        "interlock_unknown"
    ]


def test_a_bypassed_interlock_blocks_automatic_changes(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    tank_high = 'name = "tank_high"\n'
    cfg = config("L4", edits=((tank_high, tank_high + 'bypass = "trip_word"\n'),))
    assert cfg.interlock[-1].bypass == "trip_word"
    v = view(cfg, plant_table, twin(cfg), overrides={"trip_word": 1.0})
    assert "interlock_bypassed" in codes(evaluate(cfg, SETTINGS, proposal({"level_sp": 1.6}), v))


def test_only_the_gate_issues_verdicts_and_they_fit_one_proposal(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    cfg = config("L3")
    p = proposal({"level_sp": 1.7})
    verdict = evaluate(cfg, SETTINGS, p, view(cfg, plant_table, twin(cfg)))
    with pytest.raises(TypeError, match=r"only gateway\.govern\.gate"):
        Verdict(**{**verdict.__dict__, "_issuer": object()})
    assert verdict.fits(p, NOW + 1)
    other = proposal({"level_sp": 1.71})
    assert not verdict.fits(other, NOW + 1)
    assert not verdict.fits(p, verdict.expires_at)


def test_a_malformed_proposal_never_reaches_the_gate() -> None:
    for bad in ({"level_sp": math.nan}, {"level_sp": math.inf}, {}, {"Level SP": 1.0}):
        with pytest.raises(ProposalError):
            proposal(bad)
    with pytest.raises(ProposalError):
        Proposal.create(
            id="x",
            proposer="someone",
            targets={"level_sp": 1.0},
            rationale="",
            created_at=0,
            expires_in_s=1,
        )


# ---------------------------------------------------------------------------------------
# Property: whatever the proposal and the plant's state, a verdict that lets anything
# through (execute or approval) satisfies every invariant, checked here independently.

SIGNALS_TO_SPOIL = [
    "level_sp",
    "temp_sp",
    "valve_cmd",
    "tank_level",
    "tank_temp",
    "bearing_temp",
    "remote_mode",
    "inlet_temp",
    "ambient_temp",
    "motor_current",
]

MOVES = st.dictionaries(
    st.sampled_from(["level_sp", "temp_sp", "valve_cmd"] * 4 + ["pump_speed"]),
    # Mostly moves relative to the tag's max step (a few too large), some absolute values.
    st.tuples(
        st.sampled_from(["rel"] * 7 + ["abs"]),
        st.floats(min_value=0.02, max_value=1.1).flatmap(lambda r: st.sampled_from([r, -r])),
        st.floats(min_value=-100, max_value=200),
    ).map(lambda k: (k[0], k[1] if k[0] == "rel" else k[2])),
    min_size=1,
    max_size=2,
)


def _targets(
    cfg, table: dict[str, SignalValue], moves: dict[str, tuple[str, float]]
) -> dict[str, float]:  # type: ignore[no-untyped-def]
    out = {}
    for tag, (kind, x) in moves.items():
        spec = cfg.writable.get(tag)
        if kind == "abs" or spec is None:
            out[tag] = x if kind == "abs" else 1.0
        else:
            out[tag] = round(table[spec.signal].value + x * spec.max_step, 3)
    return out


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    moves=MOVES,
    autonomy=st.sampled_from(["L3", "L4", "L2"] * 3 + ["L1"]),
    fidelity=st.sampled_from([0.95, 0.99, 0.85, 0.8, None, 0.5, 0.79]),
    spoiled=st.one_of(
        st.just({}),
        st.dictionaries(
            st.sampled_from(SIGNALS_TO_SPOIL),
            st.sampled_from([Quality.STALE, Quality.BAD, Quality.UNCERTAIN]),
            max_size=2,
        ),
    ),
    overrides=st.dictionaries(
        st.sampled_from(["tank_level", "tank_temp", "bearing_temp", "remote_mode"]),
        st.one_of(
            st.floats(min_value=0.0, max_value=100.0),
            st.sampled_from([0.0, 0.45, 0.55, 1.0, 2.55, 79.0, 81.0]),
        ),
        max_size=2,
    ),
    since_last=st.one_of(st.none(), st.floats(min_value=0.0, max_value=10.0)),
)
def test_nothing_unsafe_gets_through(
    plant_table: dict[str, SignalValue],
    twin: TwinFactory,
    moves: dict[str, tuple[str, float]],
    autonomy: str,
    fidelity: float | None,
    spoiled: dict[str, Quality],
    overrides: dict[str, float],
    since_last: float | None,
) -> None:
    cfg = config(autonomy)
    targets = _targets(cfg, plant_table, moves)
    p = proposal(targets)
    last = {} if since_last is None else {t: NOW - since_last for t in targets}
    v = view(
        cfg,
        plant_table,
        twin(cfg, fidelity=fidelity, members=4),
        overrides=overrides,
        qualities=spoiled,
        last_writes=last,
    )
    verdict = evaluate(cfg, SETTINGS, p, v)
    event(str(verdict.decision))
    assert verdict.proposal_hash == p.content_hash()
    if verdict.decision is Decision.REJECT:
        assert verdict.reasons  # a rejection always says why
        event(f"rejected at {verdict.reasons[0].step}: {verdict.reasons[0].code}")
        return
    _assert_admissible(cfg, p, v, verdict)


def _assert_admissible(cfg, p: Proposal, v: PlantView, verdict: Verdict) -> None:  # type: ignore[no-untyped-def]
    assert v.autonomy in ("L2", "L3", "L4")
    for t in p.targets:
        spec = cfg.writable[t.tag]  # unknown tags never pass
        low, high = spec.limits
        assert low <= t.value <= high
        current = v.signals[spec.signal]
        assert current.usable
        assert abs(t.value - current.value) <= spec.max_step
        since = None if t.tag not in v.last_writes else v.now - v.last_writes[t.tag]
        assert ramp_rate_ok(
            current.value,
            verdict.plan[t.tag],
            max_rate_up=spec.max_rate_up,
            max_rate_down=spec.max_rate_down,
            interval_s=SETTINGS.ramp_interval_s,
            since_last_write_s=since,
        )
        assert verdict.plan[t.tag][-1].value == t.value
    for name in ("remote_mode", *cfg.envelope, *(lock.signal for lock in cfg.interlock)):
        if name in (
            "tank_level",
            "tank_temp",
            "bearing_temp",
            "motor_current",
            "remote_mode",
        ) or any(
            f.tag in p.tags for lock in cfg.interlock if lock.signal == name for f in lock.forbid
        ):
            assert v.signals[name].usable, name
    assert v.signals["remote_mode"].value == 1.0
    moves = {t.tag: t.value - v.signals[cfg.writable[t.tag].signal].value for t in p.targets}
    assert interlock_violations(cfg, moves, v.signals) == []
    for name, predicted in verdict.predicted.items():
        if predicted["bound_high"] is not None and predicted["high"] is not None:
            assert predicted["high"] <= predicted["bound_high"] + 1e-9, name
        if predicted["bound_low"] is not None and predicted["low"] is not None:
            assert predicted["low"] >= predicted["bound_low"] - 1e-9, name
    trusted = v.twin is not None and v.twin.fidelity is not None and v.twin.fidelity >= 0.8
    if verdict.decision is Decision.EXECUTE:
        assert trusted
        risks = {cfg.writable[t].risk for t in p.tags}
        if v.autonomy == "L3":
            assert risks <= set(cfg.risk.auto_execute)
        else:
            assert v.autonomy == "L4"
    else:
        assert verdict.approvals_required >= 1
        if any(cfg.writable[t].risk in cfg.risk.two_approvers for t in p.tags):
            assert verdict.approvals_required == 2
    assert np.isfinite(verdict.issued_at)


def test_a_proposal_is_simulated_together_with_the_writes_still_to_come(
    plant_table: dict[str, SignalValue], twin: TwinFactory
) -> None:
    """Alone, raising the level 0.1 m passes; while another proposal is still ramping the
    level setpoint to 1.7 m (tank envelope tightened to 1.75 m with margin 0.1), the
    temperature change that comes with it is judged on the plant both will make, and the
    twin sees the level leave its envelope."""
    cfg = config("L4", edits=(("high = 2.7\nmargin = 0.1", "high = 1.75\nmargin = 0.1"),))
    alone = evaluate(cfg, SETTINGS, proposal({"temp_sp": 46.0}), view(cfg, plant_table, twin(cfg)))
    assert alone.decision is Decision.EXECUTE, codes(alone)
    ramp = plan_ramp(1.5, 1.7, max_rate_up=0.02, max_rate_down=0.02, interval_s=2.0)
    busy = view(cfg, plant_table, twin(cfg))
    busy = dataclasses.replace(busy, in_flight={"level_sp": ramp})
    together = evaluate(cfg, SETTINGS, proposal({"temp_sp": 46.0}), busy)
    assert together.decision is Decision.REJECT
    assert [c.detail["output"] for c in together.reasons] == ["tank_level"]
    assert "with_in_flight" in [c.code for c in together.checks]


def test_settings_come_from_the_config() -> None:
    cfg = config(
        "L3",
        edits=(
            ("outcome_check_s = 120.0", "outcome_check_s = 30.0"),
            ('conflict = "reject"', 'conflict = "replace"'),
            ("approval_timeout_s = 900.0", "approval_timeout_s = 300.0"),
        ),
    )
    s = settings_for(cfg)
    assert (s.remote_signal, s.outcome_check_s, s.conflict, s.default_expiry_s) == (
        "remote_mode",
        30.0,
        "replace",
        300.0,
    )
    assert settings_for(cfg, ramp_interval_s=1.0).ramp_interval_s == 1.0
