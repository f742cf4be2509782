"""The gate: pure, synchronous, no I/O. A proposal and a view of the plant in, a Verdict out.

Six steps, in this order, each adding machine-readable :class:`Check` results
(DESIGN.md invariants 2–6):

1. **policy**: autonomy allows proposals; known, writable tags; within limits, step and
   rate (the ramp plan is built here and checked independently of how it was built);
2. **data**: every signal the checks need is good (fresh, finite, in range); the PLC is
   in remote; no interlock on these tags is bypassed; the twin is tracking;
3. **simulation**: the ramp, run in the twin from its current estimate for the whole
   parameter ensemble over the horizon; every member keeps every envelope output inside
   its bounds *with margin*;
4. **fidelity**: below threshold (or unknown) nothing auto-executes: escalate or reject;
5. **interlocks**: on live values, independent of the twin and of the proposer;
6. **risk and autonomy**: execute, or how many human approvals are needed.

A step that fails with "reject" ends the evaluation; later steps are recorded as not
run. The simulation is compute, not I/O; callers run :func:`evaluate` in a worker thread.

Only this module creates a :class:`Verdict` (a private issuer token is checked on
construction, and a test forbids ``Verdict(`` anywhere else). A verdict is bound to the
proposal's content hash and expires.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Final, Literal

import numpy as np

from gateway.config.schema import GatewayConfig, Interlock
from gateway.govern.proposal import Proposal
from gateway.govern.ramp import RampStep, plan_ramp, ramp_rate_ok
from gateway.signals import SignalValue

Step = Literal["policy", "data", "simulation", "fidelity", "interlock", "risk"]
STEPS: Final[tuple[Step, ...]] = ("policy", "data", "simulation", "fidelity", "interlock", "risk")
_LEVELS: Final = ("L0", "L1", "L2", "L3", "L4")
_RISKS: Final = ("low", "medium", "high")


class Decision(StrEnum):
    EXECUTE = "execute"
    """Passed every step and the policy lets it run without a human."""
    APPROVAL = "approval"
    """Passed every safety step; a human (or two) must approve before it is written."""
    REJECT = "reject"
    """Failed a step; never written."""


@dataclass(frozen=True)
class Check:
    """One check's result.

    Attributes:
        step: Which gate step.
        code: Machine-readable, e.g. "outside_limits", "envelope_exit", "not_run".
        ok: Passed.
        message: For people.
        detail: Machine-readable specifics (JSON-able).
    """

    step: Step
    code: str
    ok: bool
    message: str
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "code": self.code,
            "ok": self.ok,
            "message": self.message,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class GovernSettings:
    """The gate's and the writer's knobs (``[govern]`` in the config; these defaults).

    Attributes:
        remote_signal: Signal that is 1 while the PLC takes the gateway's setpoints; None
            when the PLC has no such flag (then the check is not made).
        ramp_interval_s: Time between the writes of a ramp.
        verdict_ttl_s: How long an "execute" verdict may wait before it is void.
        default_expiry_s: A proposal's life when the proposer gives none.
        outcome_check_s: How long after the last write the plant's response is compared
            with the prediction.
        conflict: A second open proposal on a tag: "reject" it, or "replace" the first.
    """

    remote_signal: str | None = "remote_mode"
    ramp_interval_s: float = 2.0
    verdict_ttl_s: float = 30.0
    default_expiry_s: float = 900.0
    outcome_check_s: float = 120.0
    conflict: Literal["reject", "replace"] = "reject"


def settings_for(cfg: GatewayConfig, **overrides: Any) -> GovernSettings:
    """The settings written in the config's ``[govern]`` (and ``risk.approval_timeout_s``
    as a proposal's default life), with ``overrides`` (tests) on top."""
    g = cfg.govern
    base = GovernSettings(
        remote_signal=g.remote_signal,
        ramp_interval_s=g.ramp_interval_s,
        verdict_ttl_s=g.verdict_ttl_s,
        default_expiry_s=cfg.risk.approval_timeout_s,
        outcome_check_s=g.outcome_check_s,
        conflict=g.conflict,
    )
    return replace(base, **overrides)


@dataclass(frozen=True)
class SimulationResult:
    """What the twin says the ramp would do, for every ensemble member.

    Attributes:
        outputs: Output names, in the order of the arrays' last axis.
        low_high: ``[M, n_outputs, 2]`` min and max of each output over the horizon.
        first_exit_s: ``[M, n_outputs]`` first time outside the bounds, +inf if never.
        diverged: ``[M]`` True where a member stopped being finite.
        bounds: ``[n_outputs, 2]`` the bounds used (envelope with margin; ±inf if none).
        horizon_s: Simulated time.
        band: ``[n_records, n_outputs, 2]`` the ensemble's min and max of each output at
            0, ``band_every_s``, 2 ``band_every_s``, ... (what the plant should do when,
            for the outcome check); None if not recorded.
        band_every_s: Spacing of ``band``'s records, s.
    """

    outputs: tuple[str, ...]
    low_high: np.ndarray[Any, np.dtype[np.float64]]
    first_exit_s: np.ndarray[Any, np.dtype[np.float64]]
    diverged: np.ndarray[Any, np.dtype[np.bool_]]
    bounds: np.ndarray[Any, np.dtype[np.float64]]
    horizon_s: float
    band: np.ndarray[Any, np.dtype[np.float64]] | None = None
    band_every_s: float = 0.0


Simulate = Callable[[Mapping[str, Sequence[RampStep]]], SimulationResult]
"""Runs the twin from its current estimate with the given ramps (by model input), for the
configured ensemble and horizon, bounded by the envelope with margin."""


@dataclass(frozen=True)
class TwinView:
    """What the gate needs from the twin, captured at one instant.

    Attributes:
        tracking: The observer has a current estimate.
        fidelity: The current fidelity score (None: unknown).
        fidelity_threshold: The configured threshold.
        input_of_signal: Signal name -> model input name (the twin's wiring).
        output_of_signal: Signal name -> model output name.
        simulate: See :data:`Simulate`.
    """

    tracking: bool
    fidelity: float | None
    fidelity_threshold: float
    input_of_signal: Mapping[str, str]
    output_of_signal: Mapping[str, str]
    simulate: Simulate


@dataclass(frozen=True)
class PlantView:
    """The live state the gate judges a proposal against.

    Attributes:
        now: Unix time of the view.
        signals: The live table (every configured signal with its quality).
        autonomy: The gateway's effective autonomy level now (the configured level, or L2
            while autonomy is suspended after a failed read-back or outcome check).
        last_writes: Tag -> unix time the gateway last wrote it (for the rate limit).
        twin: The twin, or None when there is none (then nothing can pass).
        in_flight: Tag -> the writes still to come of proposals being executed now
            (offsets from ``now``): a proposal is simulated together with them, so two
            changes approved at the same time are judged as the plant will get them.
    """

    now: float
    signals: Mapping[str, SignalValue]
    autonomy: str
    last_writes: Mapping[str, float]
    twin: TwinView | None
    in_flight: Mapping[str, tuple[RampStep, ...]] = field(default_factory=dict)


_ISSUER: Final = object()
_ESCALATING: Final = frozenset({"fidelity_low", "fidelity_unknown"})


@dataclass(frozen=True)
class Verdict:
    """The gate's decision on one proposal; only :func:`evaluate` makes one.

    Attributes:
        proposal_id: The proposal's id.
        proposal_hash: The proposal's content hash: the verdict fits nothing else.
        decision: Execute, approval (with ``approvals_required``), or reject.
        approvals_required: Distinct human approvals needed before writing (0 to execute).
        checks: Every check, in gate order (steps not run are marked "not_run").
        plan: Tag -> the ramp the writer will execute.
        predicted: Output -> {"low", "high", "bound_low", "bound_high"} over all members
            and the horizon, and "band": {"every_s", "low": [...], "high": [...]}, the
            members' range at each time (the outcome check's reference).
        fidelity: The twin's fidelity when judged (None if unknown).
        issued_at: Unix time.
        expires_at: After this the verdict is void.
        recheck_of: For a re-check before writing, the hash of the verdict it re-checks.
    """

    proposal_id: str
    proposal_hash: str
    decision: Decision
    approvals_required: int
    checks: tuple[Check, ...]
    plan: Mapping[str, tuple[RampStep, ...]]
    predicted: Mapping[str, Mapping[str, Any]]
    fidelity: float | None
    issued_at: float
    expires_at: float
    recheck_of: str | None = None
    _issuer: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._issuer is not _ISSUER:
            raise TypeError("only gateway.govern.gate.evaluate() issues verdicts")

    @property
    def reasons(self) -> tuple[Check, ...]:
        """The failed checks (why it is rejected or escalated)."""
        return tuple(c for c in self.checks if not c.ok and c.code != "not_run")

    def fits(self, proposal: Proposal, now: float) -> bool:
        """This verdict is for exactly ``proposal`` and has not expired."""
        return (
            proposal.id == self.proposal_id
            and proposal.content_hash() == self.proposal_hash
            and now < self.expires_at
            and now < proposal.expires_at
        )

    def to_record(self) -> dict[str, Any]:
        """JSON-able, for the audit trail and the API."""
        return {
            "proposal_id": self.proposal_id,
            "proposal_hash": self.proposal_hash,
            "decision": str(self.decision),
            "approvals_required": self.approvals_required,
            "checks": [c.to_record() for c in self.checks],
            "plan": {
                tag: [[round(s.offset_s, 3), s.value] for s in steps]
                for tag, steps in self.plan.items()
            },
            "predicted": {k: dict(v) for k, v in self.predicted.items()},
            "fidelity": self.fidelity,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "recheck_of": self.recheck_of,
        }


# ---------------------------------------------------------------------------------------
# The steps


class _Rejected(Exception):
    """A step failed in a way that ends the evaluation."""


@dataclass
class _Run:
    cfg: GatewayConfig
    settings: GovernSettings
    proposal: Proposal
    view: PlantView
    checks: list[Check] = field(default_factory=list)
    plan: dict[str, tuple[RampStep, ...]] = field(default_factory=dict)
    predicted: dict[str, dict[str, Any]] = field(default_factory=dict)
    escalate: bool = False

    def add(self, step: Step, code: str, ok: bool, message: str, **detail: Any) -> None:
        self.checks.append(Check(step, code, ok, message, detail))

    def fail(self, step: Step, code: str, message: str, **detail: Any) -> None:
        self.add(step, code, False, message, **detail)

    def value(self, signal: str) -> SignalValue | None:
        return self.view.signals.get(signal)

    def escalate_only(self, since: int) -> bool:
        """The checks failed since ``since`` only escalate (low fidelity under the
        "escalate" policy): the evaluation goes on, but nothing auto-executes."""
        failed = [c for c in self.checks[since:] if not c.ok]
        return self.escalate and all(c.code in _ESCALATING for c in failed)


def evaluate(
    cfg: GatewayConfig,
    settings: GovernSettings,
    proposal: Proposal,
    view: PlantView,
    *,
    recheck_of: Mapping[str, Any] | None = None,
) -> Verdict:
    """Judge ``proposal`` against ``view``; never raises for a bad proposal or bad data
    (those are reject verdicts), only for a bug.

    With ``recheck_of`` (the record of the verdict an approval was given on, as
    :meth:`Verdict.to_record` made it and the store kept it), this is the re-check
    just before writing: every step runs again on current values, except that the
    autonomy and risk decision of the original verdict stands (the humans have approved
    it), and the result is EXECUTE or REJECT.
    """
    run = _Run(cfg, settings, proposal, view)
    steps: tuple[Callable[[_Run], None], ...] = (
        _policy,
        _data,
        _simulation,
        _fidelity,
        _interlocks,
    )
    rejected = False
    for i, step in enumerate(steps):
        before = len(run.checks)
        step(run)
        if any(not c.ok for c in run.checks[before:]) and not run.escalate_only(before):
            rejected = True
            for later in STEPS[i + 1 :]:
                run.add(later, "not_run", False, "not run: an earlier step rejected")
            break
    if (
        not rejected
        and recheck_of is not None
        and run.escalate
        and not any(c.get("code") in _ESCALATING for c in recheck_of.get("checks", []))
    ):
        # The approvers saw a trusted twin; it is not trusted any more.
        run.fail(
            "fidelity",
            "fidelity_dropped_since_approval",
            "the twin's fidelity fell below threshold after the approval; propose again",
        )
        rejected = True
    if rejected:
        decision, approvals = Decision.REJECT, 0
    elif recheck_of is not None:
        decision, approvals = Decision.EXECUTE, 0
        run.add("risk", "approved", True, "approved before; re-checked on current values")
    else:
        decision, approvals = _risk(run)
    fidelity = view.twin.fidelity if view.twin is not None else None
    ttl = settings.verdict_ttl_s if decision is Decision.EXECUTE else math.inf
    expires = min(proposal.expires_at, view.now + ttl)
    return Verdict(
        proposal_id=proposal.id,
        proposal_hash=proposal.content_hash(),
        decision=decision,
        approvals_required=approvals,
        checks=tuple(run.checks),
        plan=dict(run.plan),
        predicted=run.predicted,
        fidelity=fidelity,
        issued_at=view.now,
        expires_at=expires,
        recheck_of=None if recheck_of is None else record_key(recheck_of),
        _issuer=_ISSUER,
    )


def record_key(record: Mapping[str, Any]) -> str:
    """SHA-256 of a verdict record's canonical JSON: what a re-check points back to."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _level(name: str) -> int:
    return _LEVELS.index(name)


def _effective_autonomy(run: _Run, tag: str) -> str:
    """The gateway's level, lowered (never raised) by the tag's own override."""
    level = run.view.autonomy
    override = run.cfg.writable[tag].autonomy
    if override is not None and _level(override) < _level(level):
        level = override
    return level


def _policy(run: _Run) -> None:
    cfg, proposal = run.cfg, run.proposal
    for t in proposal.targets:
        spec = cfg.writable.get(t.tag)
        if spec is None:
            run.fail(
                "policy",
                "unknown_tag",
                f"{t.tag!r} is not a writable tag; writable: {', '.join(sorted(cfg.writable))}",
                tag=t.tag,
            )
            continue
        level = _effective_autonomy(run, t.tag)
        if _level(level) < _level("L2"):
            run.fail(
                "policy",
                "autonomy_forbids",
                f"{t.tag}: autonomy {level} takes no proposals (L2 and above do)",
                tag=t.tag,
                autonomy=level,
            )
            continue
        low, high = spec.limits
        if not low <= t.value <= high:
            run.fail(
                "policy",
                "outside_limits",
                f"{t.tag} = {t.value:g} is outside its limits [{low:g}, {high:g}]",
                tag=t.tag,
                value=t.value,
                low=low,
                high=high,
            )
            continue
        current = run.value(spec.signal)
        if current is None or not current.usable:
            continue  # the data step reports it; step and rate need a good current value
        move = t.value - current.value
        if move == 0:
            run.fail(
                "policy",
                "no_change",
                f"{t.tag} is already {current.value:g}: propose only what changes",
                tag=t.tag,
            )
            continue
        if abs(move) > spec.max_step:
            run.fail(
                "policy",
                "step_too_large",
                f"{t.tag}: {current.value:g} -> {t.value:g} moves {abs(move):g}, more than "
                f"its max step {spec.max_step:g}",
                tag=t.tag,
                current=current.value,
                value=t.value,
                max_step=spec.max_step,
            )
            continue
        last = run.view.last_writes.get(t.tag)
        since = None if last is None else max(0.0, run.view.now - last)
        interval = run.settings.ramp_interval_s
        plan = plan_ramp(
            current.value,
            t.value,
            max_rate_up=spec.max_rate_up,
            max_rate_down=spec.max_rate_down,
            interval_s=interval,
            since_last_write_s=since,
        )
        if not ramp_rate_ok(
            current.value,
            plan,
            max_rate_up=spec.max_rate_up,
            max_rate_down=spec.max_rate_down,
            interval_s=interval,
            since_last_write_s=since,
        ):
            run.fail(
                "policy", "rate_exceeded", f"{t.tag}: the ramp would exceed its rate", tag=t.tag
            )
            continue
        run.plan[t.tag] = plan
    if all(c.ok for c in run.checks):
        run.add(
            "policy",
            "ok",
            True,
            "tags writable, within limits, step and rate",
            ramps={tag: len(p) for tag, p in run.plan.items()},
        )


def needed_signals(
    cfg: GatewayConfig,
    settings: GovernSettings,
    tags: Sequence[str],
    twin_inputs: Iterable[str] = (),
) -> dict[str, str]:
    """Signal -> why the checks need it, for a change of ``tags`` (DESIGN.md invariant 5:
    any of them stale or bad blocks the write). ``twin_inputs``: the signals the twin
    simulates from."""
    needed: dict[str, str] = {}
    for tag in tags:
        needed[cfg.writable[tag].signal] = f"current value of {tag}"
    for lock in _interlocks_on(cfg.interlock, tags):
        needed.setdefault(lock.signal, f"interlock {lock.name}")
        if lock.bypass is not None:
            needed.setdefault(lock.bypass, f"bypass of interlock {lock.name}")
    if settings.remote_signal is not None:
        needed.setdefault(settings.remote_signal, "the PLC's remote mode")
    for signal in twin_inputs:
        needed.setdefault(signal, "an input of the twin's simulation")
    for signal in cfg.envelope:
        needed.setdefault(signal, "the safety envelope")
    return needed


def data_problems(
    cfg: GatewayConfig,
    settings: GovernSettings,
    tags: Sequence[str],
    signals: Mapping[str, SignalValue],
    twin_inputs: Iterable[str] = (),
) -> list[Check]:
    """The data step on a live table: every needed signal good, the PLC in remote, no
    interlock on ``tags`` bypassed. The gate runs it on the proposal; the writer runs it
    again before every write of a ramp, so a sensor that freezes or a bypass switched on
    mid-ramp stops the ramp. Returns the failed checks (empty: the data may drive a write)."""
    failed: list[Check] = []
    bad = []
    for signal, why in needed_signals(cfg, settings, tags, twin_inputs).items():
        value = signals.get(signal)
        if value is None or not value.usable or not math.isfinite(value.value):
            quality = "missing" if value is None else str(value.quality)
            reason = "" if value is None or value.reason is None else f": {value.reason}"
            bad.append(signal)
            failed.append(
                Check(
                    "data",
                    "signal_not_good",
                    False,
                    f"{signal} ({why}) is {quality}{reason}",
                    {"signal": signal, "quality": quality},
                )
            )
    remote = settings.remote_signal
    if remote is not None and remote not in bad:
        value = signals.get(remote)
        if value is not None and value.value != 1.0:
            failed.append(
                Check(
                    "data",
                    "not_remote",
                    False,
                    f"the PLC is not in remote ({remote} = {value.value:g}): it ignores the "
                    "gateway",
                    {"signal": remote},
                )
            )
    for lock in _interlocks_on(cfg.interlock, tags):
        if lock.bypass is None or lock.bypass in bad:
            continue
        value = signals.get(lock.bypass)
        if value is not None and value.value != 0.0:
            failed.append(
                Check(
                    "data",
                    "interlock_bypassed",
                    False,
                    f"interlock {lock.name} is bypassed ({lock.bypass} = {value.value:g}); no "
                    "automatic change to the tags it protects while it is",
                    {"interlock": lock.name},
                )
            )
    return failed


def _data(run: _Run) -> None:
    twin = run.view.twin
    twin_inputs = twin.input_of_signal if twin is not None else ()
    run.checks.extend(
        data_problems(run.cfg, run.settings, run.proposal.tags, run.view.signals, twin_inputs)
    )
    if twin is None or not twin.tracking:
        run.fail("data", "twin_not_tracking", "the twin has no current estimate of the plant")
    if all(c.ok for c in run.checks if c.step == "data"):
        run.add("data", "ok", True, "every signal the checks need is good; PLC in remote")


def _simulation(run: _Run) -> None:
    twin = run.view.twin
    assert twin is not None  # the data step rejected otherwise
    cfg = run.cfg
    ramps: dict[str, tuple[RampStep, ...]] = {}
    for tag, plan in run.plan.items():
        signal = cfg.writable[tag].signal
        model_input = twin.input_of_signal.get(signal)
        if model_input is None:
            run.fail(
                "simulation",
                "not_modelled",
                f"{tag}: its signal {signal} drives no twin input; the twin cannot judge it",
                tag=tag,
            )
            return
        ramps[model_input] = plan
    together = []
    for tag, steps in run.view.in_flight.items():
        if tag in run.plan or not steps:
            continue
        model_input = twin.input_of_signal.get(cfg.writable[tag].signal)
        if model_input is not None:
            ramps[model_input] = steps
            together.append(tag)
    if together:
        run.add(
            "simulation",
            "with_in_flight",
            True,
            f"simulated together with the writes still to come of {', '.join(together)}",
            tags=together,
        )
    try:
        result = twin.simulate(ramps)
    except (ValueError, FloatingPointError) as err:
        run.fail("simulation", "twin_failed", f"the twin could not simulate it: {err}")
        return
    for j, name in enumerate(result.outputs):
        low_b, high_b = result.bounds[j]
        if not (math.isfinite(low_b) or math.isfinite(high_b)):
            continue
        run.predicted[name] = {
            "low": _finite(float(np.nanmin(result.low_high[:, j, 0]))),
            "high": _finite(float(np.nanmax(result.low_high[:, j, 1]))),
            "bound_low": _finite(float(low_b)),
            "bound_high": _finite(float(high_b)),
        }
        if result.band is not None:
            run.predicted[name]["band"] = {
                "every_s": result.band_every_s,
                "low": [_finite(round(float(v), 4)) for v in result.band[:, j, 0]],
                "high": [_finite(round(float(v), 4)) for v in result.band[:, j, 1]],
            }
    members = len(result.diverged)
    if result.diverged.any():
        run.fail(
            "simulation",
            "twin_diverged",
            f"{int(result.diverged.sum())} of {members} members diverged",
            members=members,
        )
    for j, name in enumerate(result.outputs):
        exits = result.first_exit_s[:, j]
        crossing = np.isfinite(exits)
        if crossing.any():
            low_b, high_b = result.bounds[j]
            side = "high" if np.nanmax(result.low_high[:, j, 1]) > high_b else "low"
            bound = high_b if side == "high" else low_b
            run.fail(
                "simulation",
                "envelope_exit",
                f"{name} leaves its envelope ({side} bound {bound:g} with margin) after "
                f"{float(exits[crossing].min()):.0f} s in {int(crossing.sum())} of {members} "
                "members",
                output=name,
                side=side,
                bound=float(bound),
                first_s=float(exits[crossing].min()),
                members=int(crossing.sum()),
                of=members,
            )
    if all(c.ok for c in run.checks if c.step == "simulation"):
        run.add(
            "simulation",
            "ok",
            True,
            f"all {members} members stay inside the envelope with margin over "
            f"{result.horizon_s:g} s",
            members=members,
        )


def _fidelity(run: _Run) -> None:
    twin = run.view.twin
    assert twin is not None
    score = twin.fidelity
    if score is not None and score >= twin.fidelity_threshold:
        run.add(
            "fidelity",
            "ok",
            True,
            f"twin fidelity {score:.3f} >= threshold {twin.fidelity_threshold:g}",
            score=score,
        )
        return
    policy = run.cfg.risk.low_fidelity
    code = "fidelity_unknown" if score is None else "fidelity_low"
    shown = "unknown" if score is None else f"{score:.3f}"
    if policy == "escalate":
        run.escalate = True
    run.fail(
        "fidelity",
        code,
        f"twin fidelity {shown} below threshold {twin.fidelity_threshold:g}: "
        + ("a human must decide" if policy == "escalate" else "rejected by policy"),
        score=score,
        policy=policy,
    )


def _interlocks_on(interlocks: Sequence[Interlock], tags: Sequence[str]) -> list[Interlock]:
    return [lock for lock in interlocks if any(f.tag in tags for f in lock.forbid)]


def interlock_violations(
    cfg: GatewayConfig, moves: Mapping[str, float], signals: Mapping[str, SignalValue]
) -> list[Check]:
    """The interlock step on its own, for the writer's check before every write.

    Args:
        cfg: The config (its interlocks and writables).
        moves: Tag -> signed change about to be written (sign = direction).
        signals: The live table.

    Returns:
        Failed checks: a forbidding interlock that holds, or one whose signal is not good
        (an interlock that cannot be evaluated forbids). Empty when the moves may go ahead.
    """
    failed = []
    for lock in _interlocks_on(cfg.interlock, tuple(moves)):
        value = signals.get(lock.signal)
        if value is None or not value.usable or not math.isfinite(value.value):
            failed.append(
                Check(
                    "interlock",
                    "interlock_unknown",
                    False,
                    f"interlock {lock.name}: {lock.signal} is not good; it forbids until it is",
                    {"interlock": lock.name},
                )
            )
            continue
        holds = (
            value.value < lock.threshold if lock.when == "below" else value.value > lock.threshold
        )
        if not holds:
            continue
        for rule in lock.forbid:
            move = moves.get(rule.tag)
            if move is None or move == 0:
                continue
            direction = "up" if move > 0 else "down"
            if rule.direction in (direction, "any"):
                failed.append(
                    Check(
                        "interlock",
                        "interlock_forbids",
                        False,
                        f"interlock {lock.name}: {lock.signal} = {value.value:g} is {lock.when} "
                        f"{lock.threshold:g}, which forbids moving {rule.tag} {direction}",
                        {"interlock": lock.name, "tag": rule.tag, "direction": direction},
                    )
                )
    return failed


def _interlocks(run: _Run) -> None:
    moves = {}
    for t in run.proposal.targets:
        current = run.value(run.cfg.writable[t.tag].signal)
        assert current is not None  # the data step rejected otherwise
        moves[t.tag] = t.value - current.value
    failed = interlock_violations(run.cfg, moves, run.view.signals)
    run.checks.extend(failed)
    if not failed:
        run.add("interlock", "ok", True, "no interlock forbids these moves on live values")


def _risk(run: _Run) -> tuple[Decision, int]:
    cfg = run.cfg
    risk = max((cfg.writable[t].risk for t in run.proposal.tags), key=_RISKS.index)
    level = min((_effective_autonomy(run, t) for t in run.proposal.tags), key=_level)
    if level == "L4":
        auto = True
    elif level == "L3":
        auto = risk in cfg.risk.auto_execute
    else:
        auto = False
    approvals = 2 if risk in cfg.risk.two_approvers else 1
    if auto and not run.escalate:
        run.add("risk", "auto_execute", True, f"{risk} risk at {level}: executes", risk=risk)
        return Decision.EXECUTE, 0
    why = "the twin's fidelity is below threshold" if run.escalate else f"{risk} risk at {level}"
    run.add(
        "risk",
        "needs_approval",
        True,
        f"{why}: needs {approvals} approval{'s' if approvals > 1 else ''}",
        risk=risk,
        autonomy=level,
        approvals=approvals,
    )
    return Decision.APPROVAL, approvals


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
