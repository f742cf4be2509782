"""What ``edgetwin status`` shows: the running daemon's view, or the store's last word.

The daemon rewrites a small JSON file in its state directory every second (atomically, by
rename), so ``status`` needs no API and works even when the process is wedged: a file that
stops being refreshed is itself the sign. When the file is missing or old, the latest
samples from the historian are shown instead, marked as such.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config.schema import GatewayConfig
from gateway.signals import SignalValue

STATUS_FILE = "status.json"
#: A status file older than this means the daemon is not running (or is stuck).
FRESH_S = 10.0


def status_document(
    cfg: GatewayConfig,
    signals: Mapping[str, SignalValue],
    links: Mapping[str, Mapping[str, Any]],
    extra: Mapping[str, Any],
    now: float,
) -> dict[str, Any]:
    return {
        "written": now,
        "pid": os.getpid(),
        "gateway": cfg.gateway.name,
        "autonomy": cfg.gateway.autonomy,
        "links": dict(links),
        "signals": {
            name: {
                "value": v.value if math.isfinite(v.value) else None,
                "unit": v.unit,
                "quality": str(v.quality),
                "reason": v.reason,
                "source_ts": v.source_ts,
                "received_ts": v.received_ts,
                "confirmed_ts": v.confirmed_ts,
            }
            for name, v in signals.items()
        },
        **extra,
    }


def write_status(path: Path, document: Mapping[str, Any]) -> None:
    """Replace the status file atomically (readers never see half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def render_status(cfg: GatewayConfig, state_dir: Path, now: float | None = None) -> str:
    """A readable table of every configured signal and each source's connection state."""
    now = time.time() if now is None else now
    doc = read_status(state_dir / STATUS_FILE)
    lines: list[str] = []
    rows: dict[str, tuple[float | None, str, float | None]] = {}
    if doc is not None and now - float(doc.get("written", 0)) <= FRESH_S:
        lines.append(
            f"gateway {cfg.gateway.name}: running (pid {doc.get('pid')}), autonomy "
            f"{doc.get('autonomy')}"
        )
        for name, link in doc.get("links", {}).items():
            detail = f" ({link['detail']})" if link.get("detail") else ""
            since = _age(now - float(link.get("since", now)))
            lines.append(f"  source {name:<14} {link['state']:<13} for {since}{detail}")
        for name, s in doc.get("signals", {}).items():
            quality = s["quality"] + (f": {s['reason']}" if s.get("reason") else "")
            rows[name] = (s["value"], quality, float(s["confirmed_ts"]))
    else:
        lines.append(
            f"gateway {cfg.gateway.name}: not running (no fresh {STATUS_FILE} in {state_dir}); "
            "last values from the historian"
        )
        rows = _from_historian(state_dir)
    if doc is not None and now - float(doc.get("written", 0)) <= FRESH_S:
        detect = doc.get("detect")
        if isinstance(detect, dict):
            lines.extend(render_detect(detect))
    if cfg.twin is not None:
        running = doc is not None and now - float(doc.get("written", 0)) <= FRESH_S
        twin = doc.get("twin") if running and doc is not None else None
        lines.extend(render_twin(twin if isinstance(twin, dict) else None, state_dir, now))
    lines.append("")
    lines.append(f"  {'signal':<22}{'value':>12} {'unit':<7}{'age':>10}  quality")
    for name, spec in cfg.signal.items():
        value, quality, ts = rows.get(name, (None, "never read", None))
        shown = "---" if value is None else f"{value:.4g}"
        age = "---" if ts is None else _age(max(0.0, now - ts))
        lines.append(f"  {name:<22}{shown:>12} {spec.unit:<7}{age:>10}  {quality}")
    return "\n".join(lines)


def render_twin(twin: Mapping[str, Any] | None, state_dir: Path, now: float) -> list[str]:
    """The twin's block: fidelity now and over the last hour, estimated parameters and
    forecasts. The hour comes from the historian, so it shows with the daemon stopped."""
    lines = [""]
    if twin is None:
        lines.append("  twin: no live state (daemon not running)")
    elif twin.get("state") in ("starting", "failed", "not configured"):
        detail = f": {twin['error']}" if twin.get("error") else ""
        lines.append(f"  twin: {twin['state']}{detail}")
    elif not twin.get("tracking"):
        lines.append(
            f"  twin {twin.get('model')}: not tracking ({twin.get('last_skip') or 'no data yet'})"
        )
    else:
        fidelity = twin.get("fidelity") or {}
        score, threshold = fidelity.get("score"), fidelity.get("threshold")
        if score is None:
            verdict = "unknown (not enough scored predictions yet): not trusted"
        else:
            trusted = "trusted" if fidelity.get("trusted") else "NOT trusted, below threshold"
            verdict = f"{score:.3f} (threshold {threshold}) {trusted}"
            if fidelity.get("weakest"):
                verdict += f"; weakest output {fidelity['weakest']}"
        lines.append(f"  twin {twin.get('model')}: fidelity {verdict}")
        per_output = fidelity.get("per_output") or {}
        scored = [f"{name} {v:.2f}" for name, v in per_output.items() if v is not None]
        if scored:
            lines.append("    by output: " + ", ".join(scored))
        params = twin.get("parameters") or {}
        estimated = [
            f"{name} {p['value']:.4g} ± {p['std']:.2g} {p['unit']}"
            for name, p in params.items()
            if p.get("estimated")
        ]
        if estimated:
            lines.append("    estimated: " + ", ".join(estimated))
        forecasts = twin.get("forecasts") or []
        if forecasts:
            for f in forecasts:
                lines.append(f"    forecast: {f.get('message')}")
        else:
            lines.append("    forecast: no envelope bound crossed within the horizon")
        for alert in twin.get("forecast_alerts") or []:
            lines.append(f"    ALERT {alert.get('alert_id')}: {alert.get('message')}")
        divergence = twin.get("divergence_alert")
        if divergence:
            lines.append(f"    ALERT {divergence.get('alert_id')}: {divergence.get('message')}")
    lines.extend(_fidelity_history(state_dir, now))
    return lines


def render_detect(detect: Mapping[str, Any]) -> list[str]:
    """The anomaly detector's block: whether it runs, its last score, its active alerts."""
    state = detect.get("state")
    if state in ("off", None):
        return ["", "  detect: off"]
    if state != "running":
        return ["", f"  detect: {state}" + (f": {detect['error']}" if detect.get("error") else "")]
    score, threshold = detect.get("last_score"), detect.get("threshold")
    shown = "no window scored yet" if score is None else f"last score {score:.3g}"
    if score is not None and threshold is not None:
        shown += f" (alert above {threshold:.3g})"
    lines = ["", f"  detect: running, {shown}; {detect.get('alerts_raised', 0)} alerts raised"]
    for alert in detect.get("active") or []:
        lines.append(
            f"    ALERT {alert.get('alert_id') or alert.get('id')}: {alert.get('message')}"
        )
    return lines


def _fidelity_history(state_dir: Path, now: float, span_s: float = 3600.0) -> list[str]:
    path = state_dir / "history.db"
    if not path.exists():
        return []
    from gateway.store.historian import SqliteHistorian

    with SqliteHistorian(path) as historian:
        samples = historian.query("twin.fidelity", now - span_s)
    scores = [(s.ts, s.value) for s in samples if math.isfinite(s.value)]
    if not scores:
        return []
    low_ts, low = min(scores, key=lambda p: p[1])
    mean = sum(v for _, v in scores) / len(scores)
    return [
        f"    fidelity over the last {span_s / 60:.0f} min: mean {mean:.3f}, lowest {low:.3f} "
        f"{_age(max(0.0, now - low_ts))} ago ({len(scores)} stored scores)"
    ]


def _from_historian(state_dir: Path) -> dict[str, tuple[float | None, str, float | None]]:
    path = state_dir / "history.db"
    if not path.exists():
        return {}
    from gateway.store.historian import SqliteHistorian

    with SqliteHistorian(path) as historian:
        latest = historian.latest()
    return {
        name: (s.value if math.isfinite(s.value) else None, f"{s.quality} (stored)", s.received)
        for name, s in latest.items()
    }
