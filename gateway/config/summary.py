"""The one-screen summary ``edgetwin check-config`` prints for a valid file.

A field engineer reads this to confirm the file says what they meant, so it shows the
safety-relevant parts in full (writable limits, interlocks, envelope, autonomy) and the
signal list compactly.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from gateway.config.schema import (
    API_HOST,
    ApiSection,
    DetectSection,
    GatewayConfig,
    ModbusSource,
    OpcUaSource,
)


def _num(value: float) -> str:
    return f"{value:g}"


def _path(path: str) -> str:
    """A path as short as it can be said: relative to the working directory when inside it
    (the loader made it absolute)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _detect_lines(detect: DetectSection | None) -> list[str]:
    if detect is None:
        return ["detect      none: no anomaly alerts"]
    state = "" if detect.enabled else "OFF (enabled = false); "
    a = detect.alerts
    lines = [
        f"detect      {state}model {_path(detect.model)}, metadata {_path(detect.metadata_path)}",
        f"{'':<12}alerts raise after {a.raise_after} windows above threshold, clear after "
        f"{a.clear_after} below, at most {a.max_alerts_per_hour}/h; medium at "
        f"{_num(a.medium_ratio)}x, high at {_num(a.high_ratio)}x",
    ]
    if detect.signals:
        wiring = ", ".join(f"{role} <- {sig}" for role, sig in detect.signals.items())
        lines.extend(
            textwrap.wrap(
                f"roles: {wiring}", width=100, initial_indent=" " * 12, subsequent_indent=" " * 12
            )
        )
    return lines


def _api_line(api: ApiSection | None) -> str:
    if api is None:
        return "api         none: no local control API (edgetwin propose/approve cannot reach it)"
    state = "" if api.enabled else "OFF (enabled = false); "
    return f"api         {state}http://{API_HOST}:{api.port}, tokens from {_path(api.tokens_file)}"


def summarize(cfg: GatewayConfig, shown: str) -> str:
    g = cfg.gateway
    lines = [
        f"{shown}: OK",
        f"gateway     {g.name}, autonomy {g.autonomy}, state in {g.state_dir}/",
    ]
    for i, (name, src) in enumerate(cfg.source.items()):
        count = sum(1 for s in cfg.signal.values() if s.source == name)
        if isinstance(src, OpcUaSource):
            where = (
                f"opcua  {src.endpoint} ({src.mode}, security {src.security.policy}/"
                f"{src.security.mode})"
            )
        else:
            assert isinstance(src, ModbusSource)
            link = (
                f"{src.host}:{src.port}"
                if src.transport == "tcp"
                else f"{src.serial.device if src.serial else '?'}"
            )
            where = f"modbus {src.transport} {link} unit {src.unit}"
        head = "sources" if i == 0 else ""
        lines.append(f"{head:<12}{name:<14}{where}, {count} signals")
    names = f"{len(cfg.signal)}: " + ", ".join(cfg.signal)
    lines.extend(
        textwrap.wrap(names, width=100, initial_indent="signals     ", subsequent_indent=" " * 12)
    )
    for i, (name, text) in enumerate(cfg.text.items()):
        head = "plant text" if i == 0 else ""
        lines.append(
            f"{head:<12}{name:<14}{text.source} {text.node}, up to {text.max_chars} chars "
            f"every {_num(text.poll_interval_s)} s (untrusted: shown, never acted on)"
        )
    for i, (tag, w) in enumerate(cfg.writable.items()):
        unit = cfg.signal[w.signal].unit
        head = "writable" if i == 0 else ""
        lines.append(
            f"{head:<12}{tag:<14}[{_num(w.limits[0])}, {_num(w.limits[1])}] {unit}, "
            f"step {_num(w.max_step)}, rate +{_num(w.max_rate_up)}/-{_num(w.max_rate_down)} "
            f"{unit}/s, risk {w.risk}" + (f", autonomy {w.autonomy}" if w.autonomy else "")
        )
    if not cfg.writable:
        lines.append("writable    none (the gateway writes nothing but its heartbeat)")
    for i, lock in enumerate(cfg.interlock):
        forbids = ", ".join(f"{f.tag} {f.direction}" for f in lock.forbid)
        bypass = f" (bypass: {lock.bypass})" if lock.bypass else ""
        head = "interlocks" if i == 0 else ""
        lines.append(
            f"{head:<12}{lock.name}: {lock.signal} {lock.when} {_num(lock.threshold)} "
            f"forbids {forbids}{bypass}"
        )
    for i, (name, b) in enumerate(cfg.envelope.items()):
        head = "envelope" if i == 0 else ""
        lines.append(
            f"{head:<12}{name:<14}[{_num(b.low)}, {_num(b.high)}] margin {_num(b.margin)} "
            f"{cfg.signal[name].unit}"
        )
    r = cfg.risk
    lines.append(
        f"risk        auto-execute: {', '.join(r.auto_execute) or 'none'}; two approvers: "
        f"{', '.join(r.two_approvers) or 'none'}; approvals expire after "
        f"{_num(r.approval_timeout_s)} s; low twin fidelity: {r.low_fidelity}"
    )
    if cfg.heartbeat is not None:
        lines.append(f"heartbeat   {cfg.heartbeat.signal} every {_num(cfg.heartbeat.interval_s)} s")
    else:
        lines.append("heartbeat   none: the PLC cannot tell if the gateway dies")
    # Before detect: check-config prints the loaded model's line right after the summary.
    lines.append(_api_line(cfg.api))
    lines.extend(_detect_lines(cfg.detect))
    return "\n".join(lines)
