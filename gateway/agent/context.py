"""From the daemon's live state to the agent's data: what it is shown and what it may ask.

Everything here is read-only: the agent's context is a copy of the plant at one moment,
and its what-if tool runs the twin from the current estimate without touching it. The
prompt builder (``gateway.agent.prompt``) decides how this is written down.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from gateway.agent.prompt import PlantContext, untrusted
from gateway.config.schema import GatewayConfig
from gateway.signals import SignalValue
from gateway.twin.runtime import TwinRuntime
from gateway.twin.whatif import WhatIfError, from_snapshot, parse_changes, run_whatif

#: Proposal fields shown as recent actions (the rest is for the audit trail).
RECENT_ACTIONS = 5


class TextLike(Protocol):
    """A plant-provided string as acquisition delivers it."""

    @property
    def text(self) -> str: ...

    @property
    def quality(self) -> Any: ...


def _round(value: float) -> float | None:
    return float(f"{value:.5g}") if math.isfinite(value) else None


def plant_context(
    cfg: GatewayConfig,
    snapshot: Mapping[str, SignalValue],
    *,
    twin_status: Mapping[str, Any] | None,
    alerts: Sequence[Mapping[str, Any]],
    proposals: Sequence[Mapping[str, Any]] = (),
    texts: Mapping[str, TextLike] | None = None,
    max_text_chars: int = 200,
) -> PlantContext:
    """The plant as the agent sees it now.

    Args:
        cfg: The config (writable tags, envelope).
        snapshot: The live table.
        twin_status: ``TwinRuntime.status()`` (None without a twin).
        alerts: The active alerts (the daemon's ``_active_alerts``), anomaly and forecast.
        proposals: Proposal documents from the store, newest last.
        texts: Plant-provided strings (``Acquisition.plant_texts()``); only good ones are
            shown, each through :func:`untrusted`.
        max_text_chars: The cap for each plant string.
    """
    # A second protocol's copy of a point (``point = "tank_level"``) and the gateway's own
    # heartbeat counter tell the model nothing new and cost prompt tokens: left out.
    hidden = {
        name
        for name, spec in cfg.signal.items()
        if spec.point is not None and spec.point != name and spec.point in cfg.signal
    }
    if cfg.heartbeat is not None:
        hidden.add(cfg.heartbeat.signal)
    signals = {
        name: {"value": _round(v.value), "unit": v.unit, "quality": str(v.quality)}
        for name, v in snapshot.items()
        if name not in hidden
    }
    writable: dict[str, dict[str, Any]] = {}
    for tag, w in cfg.writable.items():
        now = snapshot.get(w.signal)
        writable[tag] = {
            "now": _round(now.value) if now is not None and now.usable else None,
            "unit": cfg.signal[w.signal].unit,
            "low": w.limits[0],
            "high": w.limits[1],
            "max_step": w.max_step,
            "risk": w.risk,
        }
    envelope = {name: [b.low, b.high] for name, b in cfg.envelope.items()}
    twin: dict[str, Any] = {"running": twin_status is not None}
    if twin_status is not None:
        fidelity = twin_status.get("fidelity") or {}
        twin["tracking"] = bool(twin_status.get("tracking"))
        twin["fidelity"] = fidelity.get("score")
        params = twin_status.get("parameters") or {}
        twin["parameters"] = {
            name: {"value": p.get("value"), "unit": p.get("unit")}
            for name, p in params.items()
            if p.get("estimated")
        }
    shown_alerts = [
        {
            "id": a.get("alert_id"),
            "kind": a.get("kind"),
            "severity": a.get("severity"),
            "message": untrusted(str(a.get("message", "")), 240),
            "likely": [h.get("fault") for h in a.get("signature", []) if isinstance(h, Mapping)],
        }
        for a in alerts
    ]
    recent = [
        {
            "id": doc["proposal"]["id"],
            "by": doc["proposal"]["proposer"],
            "setpoints": doc["proposal"]["targets"],
            "status": doc.get("status"),
            "reasons": [r.get("code") for r in (doc.get("verdict") or {}).get("reasons", [])],
        }
        for doc in list(proposals)[-RECENT_ACTIONS:]
    ]
    # A node whose display name is just the signal's own name says nothing: left out.
    shown_texts = {
        name: untrusted(value.text, max_text_chars)
        for name, value in sorted((texts or {}).items())
        if str(value.quality) == "good"
        and value.text.strip()
        and value.text.strip() != name.removeprefix("display_name.")
    }
    return PlantContext(
        signals=signals,
        writable=writable,
        envelope=envelope,
        twin=twin,
        alerts=shown_alerts,
        recent_actions=recent,
        plant_text=shown_texts,
    )


def whatif(
    cfg: GatewayConfig,
    runtime: TwinRuntime | None,
    targets: Mapping[str, float],
    *,
    members: int = 16,
    horizon_s: float | None = None,
) -> dict[str, Any]:
    """The twin's answer to "what if these setpoints were written now", as data.

    Runs the twin from the running estimate (not from a copy the model could tamper
    with), for a small ensemble. Blocking: call in a worker thread. An answer is always
    returned; when the twin cannot answer, it says why (the model is told, the gate
    will refuse anyway).
    """
    # The tag's declared limits first: the model should learn at once that the gate will
    # refuse a value outside them, whatever the simulation says.
    outside = [
        f"{tag} = {value:g} is outside its limits [{w.limits[0]:g}, {w.limits[1]:g}]"
        for tag, value in targets.items()
        if (w := cfg.writable.get(tag)) is not None and not w.limits[0] <= value <= w.limits[1]
    ]
    if outside:
        return {"ok": False, "error": "; ".join(outside) + ": the gate will refuse it"}
    if runtime is None or cfg.twin is None:
        return {"ok": False, "error": "the twin is not running"}
    snapshot = runtime.snapshot()
    if snapshot is None:
        return {"ok": False, "error": "the twin is not tracking the plant yet"}
    model, simulator = runtime.model, runtime.simulator
    horizon = cfg.twin.horizon_s if horizon_s is None else horizon_s
    try:
        changes = parse_changes(cfg, model, targets)
        start = from_snapshot(model, snapshot, 0.0)
        answer = run_whatif(
            cfg, model, simulator, start, changes, horizon_s=horizon, members=members
        )
    except (WhatIfError, ValueError) as err:
        return {"ok": False, "error": str(err)}
    outputs: dict[str, Any] = {}
    signal_of = dict(cfg.twin.outputs)
    traj = answer.trajectories.outputs[0]
    for j, name in enumerate(model.output_names):
        series = traj[:, :, j]
        signal = signal_of.get(name, name)
        bound = cfg.envelope.get(signal)
        low, high = float(np.nanmin(series)), float(np.nanmax(series))
        outputs[signal] = {
            "predicted_min": _round(low),
            "predicted_max": _round(high),
            "final": _round(float(np.nanmedian(series[:, -1]))),
            **({"envelope": [bound.low, bound.high]} if bound is not None else {}),
        }
    return {
        "ok": True,
        "setpoints": dict(targets),
        "horizon_s": horizon,
        "members": members,
        "outputs": outputs,
        "crossings": [c.message() for c in answer.crossings],
        "stays_inside_envelope": not answer.crossings,
    }
