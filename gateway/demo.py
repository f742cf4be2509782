"""``edgetwin demo``: the simulated skid, a scripted fault scenario, the whole loop shown live.

The real daemon runs against the plant at L3 (supervised autonomy): both readers, the
live table, the historian, the audit trail, the heartbeat, the twin (observer, fidelity,
forecasts), the anomaly detector, the agent (a local LLM in its own process), the gate,
the one writer and the control API. The terminal shows the gateway's view of the signals
and, from the audit trail as it is written, every step: alert, forecast, the agent's
diagnosis and proposal, the verdict with the predicted envelope and its reasons, the
approval a risky change waits for (approve it from a second terminal with the command
printed), the write, the read-back and the outcome check. It ends with a summary.

The plant runs in real time by default: the twin and the detector step once a second of
wall time and assume the process does the same (``--speed`` above 1 is for watching the
plant only; the twin's fidelity then drops, honestly, and the gate refuses more).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from gateway.api.auth import add_token
from gateway.api.ports import ControlError, Role
from gateway.config.schema import GatewayConfig, ModbusSource, OpcUaSource
from gateway.daemon import Daemon
from gateway.plantsim.runner import PlantRuntime
from gateway.plantsim.writelog import read_write_log
from gateway.signals import Quality
from gateway.store.audit import SqliteAuditTrail
from gateway.store.ports import AuditRecord

#: The demo's autonomy: low-risk changes execute after the gate, the rest wait for people.
DEMO_AUTONOMY = "L3"

#: Signals shown in the live table, with their display format.
SHOWN: tuple[tuple[str, str], ...] = (
    ("tank_level", "{:5.2f} m"),
    ("tank_temp", "{:5.1f} °C"),
    ("pump_speed", "{:5.0f} rpm"),
    ("outlet_flow", "{:5.1f} m³/h"),
    ("bearing_temp", "{:5.1f} °C"),
    ("vibration_rms", "{:5.2f} mm/s"),
    ("level_sp", "{:4.2f}"),
    ("temp_sp", "{:4.1f}"),
    ("valve_cmd", "{:4.0f}"),
    ("trip_word", "{:1.0f}"),
)


@dataclass(frozen=True)
class Step:
    """One scripted scenario step, at a simulated time.

    ``fault`` injects a plant fault (``severity``); ``clear`` clears them all;
    ``operator`` submits an operator's proposal through the same gate as the agent's.
    """

    at_s: float
    note: str
    fault: str | None = None
    severity: float = 0.0
    clear: bool = False
    operator: Mapping[str, float] = field(default_factory=dict)


SCENARIO: tuple[Step, ...] = (
    Step(
        0,
        "normal operation. The twin earns its trust in about a minute; the anomaly detector "
        "needs 5 minutes of normal data before it scores (its window)",
    ),
    Step(300, "pump bearing starts to degrade", fault="bearing_degradation", severity=0.3),
    Step(450, "maintenance replaces the bearing", clear=True),
    Step(470, "level transmitter drifts", fault="level_sensor_drift", severity=0.6),
    Step(570, "a leak opens downstream of the pump", fault="leak", severity=0.5),
    Step(
        630,
        "the shift operator asks for more outlet flow (a high-risk change: two approvals)",
        operator={"valve_cmd": 60.0},
    ),
    Step(720, "maintenance: transmitter recalibrated, leak fixed", clear=True),
)
DEFAULT_DURATION_S = 840.0


def _row(daemon: Daemon) -> str:
    """One line of the gateway's live table: value, or the quality when it is not good."""
    snapshot = daemon.acquisition.snapshot()
    cells = []
    for name, fmt in SHOWN:
        value = snapshot.get(name)
        if value is None:
            shown = "---"
        elif value.quality is not Quality.GOOD:
            shown = f"<{value.quality}>"
        else:
            shown = fmt.format(value.value)
        cells.append(f"{name}={shown}")
    down = [n for n, link in daemon.acquisition.links.items() if link.state != "connected"]
    return "  ".join(cells) + (f"  DOWN: {', '.join(down)}" if down else "")


def _twin_cell(daemon: Daemon) -> str:
    if daemon.twin is None:
        return f"twin: {daemon.twin_state.get('state')}"
    fidelity = daemon.twin.status().get("fidelity") or {}
    score = fidelity.get("score")
    if score is None:
        return "twin fidelity: (scoring)"
    weakest = f", weakest {fidelity['weakest']}" if not fidelity.get("trusted") else ""
    return f"twin fidelity {score:.2f}{weakest}"


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and math.isfinite(value) else "?"


def _reasons(checks: Sequence[Mapping[str, Any]]) -> str:
    failed = [c for c in checks if not c.get("ok", True)]
    shown = failed or [c for c in checks if c.get("step") == "risk"]
    return "; ".join(f"{c.get('code')}: {c.get('message')}" for c in shown) or "all checks pass"


def _envelope(predicted: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [
        f"      {name}: predicted {_num(p.get('low'))} .. {_num(p.get('high'))} "
        f"within limits {_num(p.get('bound_low'))} .. {_num(p.get('bound_high'))}"
        for name, p in predicted.items()
    ]


def describe(record: AuditRecord, *, config: str, tokens: Mapping[str, Path]) -> list[str]:
    """The lines the demo prints for one audit record (none for kinds it does not show)."""
    p = record.payload
    pid = record.proposal_id
    kind = record.kind
    if kind == "alert":
        return [f"  ALERT   {p.get('alert_id')}: {p.get('message')}"]
    if kind == "twin_alert" and p.get("kind") in ("raised", "updated"):
        return [f"  TWIN    {p.get('alert_id')}: {p.get('message')}"]
    if kind == "forecast_alert" and p.get("kind") != "cleared":
        return [f"  FORECAST {p.get('alert_id')}: {p.get('message')}"]
    if kind == "agent_started":
        return [f"  AGENT   thinking about {p.get('incident')} ({p.get('message', p.get('kind'))})"]
    if kind == "agent_reply":
        reply = p.get("reply", {})
        return [
            f"  AGENT   {reply.get('action')}: {reply.get('diagnosis')} "
            f"(confidence {reply.get('confidence')}) {reply.get('setpoints') or ''}"
            f"  [{p.get('prompt_tokens')} prompt + {p.get('completion_tokens')} generated tokens, "
            f"{_num(p.get('prompt_s'))} + {_num(p.get('gen_s'))} s]"
        ]
    if kind == "agent_simulation":
        answer = p.get("answer", {})
        if not answer.get("ok"):
            return [f"  TWIN    what-if {p.get('setpoints')}: {answer.get('error')}"]
        verdict = "stays inside" if answer.get("stays_inside_envelope") else "leaves"
        return [f"  TWIN    what-if {p.get('setpoints')}: {verdict} the envelope"]
    if kind == "agent_failed":
        return [f"  AGENT   no proposal ({p.get('reason')}): {p.get('error', '')}"[:200]]
    if kind == "agent_gave_up":
        return [f"  AGENT   gave up on {p.get('incident')} after {p.get('attempts')} attempts"]
    if kind == "agent_no_action":
        return [f"  AGENT   no change proposed: {p.get('diagnosis')}"]
    if kind == "proposal":
        return [f"  PROPOSAL {pid} by {p.get('proposer')}: {p.get('targets')}"]
    if kind in ("verdict", "recheck"):
        label = "VERDICT" if kind == "verdict" else "RE-CHECK"
        lines = [
            f"  {label} {pid}: {str(p.get('decision')).upper()} - {_reasons(p.get('checks', []))}"
        ]
        lines += _envelope(p.get("predicted", {}))
        if kind == "verdict" and p.get("decision") == "approval":
            needed = int(p.get("approvals_required") or 1)
            lines.append(
                f"  >>> WAITING FOR APPROVAL ({needed} approver(s)). In a second terminal:"
            )
            for name, path in list(tokens.items())[:needed]:
                lines.append(
                    f"        edgetwin approve {pid} --config {config} --token-file {path}"
                    f"   # as {name}"
                )
        return lines
    if kind == "conflict":
        return [f"  CONFLICT {pid}: {p.get('message')}"]
    if kind == "approval":
        return [f"  APPROVED {pid} by {p.get('by', p.get('approver'))}"]
    if kind == "rejection":
        return [f"  REJECTED {pid} by {p.get('by')}: {p.get('reason')}"]
    if kind == "expired":
        return [f"  EXPIRED {pid}: nobody approved it in time"]
    if kind == "write":
        return [f"  WRITE   {pid}: {p.get('tag')} = {_num(p.get('value'))} (step {p.get('step')})"]
    if kind == "readback":
        ok = "ok" if p.get("ok") else f"MISMATCH {p.get('message')}"
        return [f"  READBACK {pid}: {p.get('tag')} {ok}"]
    if kind == "write_refused":
        return [f"  REFUSED {pid}: {p.get('reason')}"]
    if kind == "write_done":
        return [f"  DONE    {pid}: {p.get('status')} {p.get('reason') or ''}"]
    if kind == "outcome":
        verdict = "as predicted" if p.get("ok") else f"DIVERGED: {p.get('diverged')}"
        return [f"  OUTCOME {pid}: {verdict}"]
    if kind == "autonomy_suspended":
        return [f"  AUTONOMY SUSPENDED: {p.get('reason')} (edgetwin resume-autonomy)"]
    return []


class AuditFeed:
    """New audit records as the daemon writes them (read in a worker thread)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.after = 0
        self._audit: SqliteAuditTrail | None = None

    def _read(self) -> list[AuditRecord]:
        if self._audit is None:
            if not self.path.exists():
                return []
            self._audit = SqliteAuditTrail(self.path)
        records = list(self._audit.records(since_seq=self.after))
        if records:
            self.after = records[-1].seq
        return records

    async def new(self) -> list[AuditRecord]:
        return await asyncio.to_thread(self._read)

    def close(self) -> None:
        if self._audit is not None:
            self._audit.close()


def _demo_config(cfg: GatewayConfig, state: Path) -> GatewayConfig:
    """The config at the demo's autonomy, with the API's tokens in the demo's state dir."""
    update: dict[str, Any] = {
        "gateway": cfg.gateway.model_copy(update={"autonomy": DEMO_AUTONOMY}),
    }
    if cfg.api is not None:
        update["api"] = cfg.api.model_copy(
            update={"enabled": True, "tokens_file": str(state / "demo_tokens.toml")}
        )
    return cfg.model_copy(update=update)


def _demo_tokens(cfg: GatewayConfig, state: Path) -> dict[str, Path]:
    """Two approvers for the second terminal, each token in a file readable only by us."""
    if cfg.api is None:
        return {}
    tokens_file = Path(cfg.api.tokens_file)
    tokens_file.unlink(missing_ok=True)
    out: dict[str, Path] = {}
    for name, role in (("shift_operator", Role.OPERATOR), ("plant_engineer", Role.ENGINEER)):
        token = add_token(tokens_file, name, role)
        path = state / f"{name}.token"
        path.unlink(missing_ok=True)
        path.touch(mode=0o600)
        path.write_text(token + "\n", encoding="utf-8")
        out[name] = path
    return out


_ALERT_KINDS: Final = {
    "alert": "anomaly",
    "twin_alert": "twin divergence",
    "forecast_alert": "forecast",
}
"""Audit kinds of alerts, and what the summary calls them."""


@dataclass
class Tally:
    """What the summary reports, gathered as the audit records go by."""

    proposals: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, str] = field(default_factory=dict)
    reasons: Counter[str] = field(default_factory=Counter)
    agent: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    trips: int = 0
    tripped: bool = False

    def see(self, record: AuditRecord) -> None:
        p, pid = record.payload, record.proposal_id
        if record.kind == "proposal" and pid:
            self.proposals[str(p.get("proposer", "?")).split(":")[0]] += 1
        elif record.kind == "verdict" and pid:
            self.outcomes[pid] = str(p.get("decision"))
            for check in p.get("checks", []):
                if not check.get("ok", True) and check.get("code") != "not_run":
                    self.reasons[str(check.get("code"))] += 1
        elif record.kind == "conflict" and pid:
            self.outcomes[pid] = "reject"
            self.reasons["conflict"] += 1
        elif record.kind in ("write_done",) and pid:
            self.outcomes[pid] = f"written ({p.get('status')})"
        elif record.kind in ("expired", "rejection") and pid:
            self.outcomes[pid] = record.kind
        elif record.kind.startswith("agent_"):
            self.agent[record.kind.removeprefix("agent_")] += 1
        elif record.kind in _ALERT_KINDS and p.get("kind") == "raised":
            self.alerts[_ALERT_KINDS[record.kind]] += 1


async def run_demo(
    cfg: GatewayConfig,
    *,
    speed: float = 1.0,
    duration_s: float | None = DEFAULT_DURATION_S,
    opcua_port: int | None = None,
    modbus_port: int | None = None,
    state_dir: Path | None = None,
    scenario: Sequence[Step] = SCENARIO,
    print_every_s: float = 10.0,
    config_path: str = "config/skid.toml",
) -> Tally:
    """Run the plant, the gateway and the scenario, printing what the gateway does."""
    state = (state_dir or Path(cfg.gateway.state_dir)).resolve()
    state.mkdir(parents=True, exist_ok=True)
    configured = cfg.gateway.autonomy
    cfg = _demo_config(cfg, state)
    tokens = _demo_tokens(cfg, state)
    write_log = state / "plant-writes.jsonl"
    write_log.unlink(missing_ok=True)
    audit_path = state / "audit.db"
    plant_opcua, plant_modbus = _served_ports(cfg)
    tally = Tally()
    async with PlantRuntime(
        cfg,
        opcua_port=opcua_port or plant_opcua,
        modbus_port=modbus_port or plant_modbus,
        write_log=write_log,
        speed=speed,
        # The PLC's watchdog counts simulated seconds; keep it 10 s of wall time, as a real
        # PLC's would be, so a sped-up demo does not outrun the gateway's heartbeat.
        watchdog_s=10.0 * speed,
    ) as rt:
        daemon = Daemon(cfg, state)
        print(f"plant serving OPC UA at {rt.opcua_endpoint} and Modbus TCP on {rt.modbus_address}")
        print(f"gateway at {DEMO_AUTONOMY} for the demo (the config says {configured})")
        print(f"every write the plant receives goes to {write_log}")
        print(f"gateway state (historian, audit trail, proposals, status) in {state}/")
        if tokens:
            print(
                "approver tokens for a second terminal: "
                + ", ".join(f"{name} in {path}" for name, path in tokens.items())
            )
        feed = AuditFeed(audit_path)
        await feed.new()  # earlier runs' records are not this demo's
        pending = list(scenario)
        started = time.monotonic()
        next_row = 0.0
        async with asyncio.TaskGroup() as tg:
            gateway = tg.create_task(daemon.run(), name="gateway")
            while duration_s is None or time.monotonic() - started < duration_s:
                while pending and rt.plant.time >= pending[0].at_s:
                    await _play(pending.pop(0), rt, daemon)
                trip = daemon.acquisition.snapshot().get("trip_word")
                tripped = trip is not None and trip.usable and trip.value != 0
                if tripped and not tally.tripped:
                    tally.trips += 1
                    print(f"  PLANT TRIP: {_row(daemon)}")
                tally.tripped = tripped
                if time.monotonic() >= next_row:
                    next_row = time.monotonic() + print_every_s
                    print(f"[t={rt.plant.time:5.0f} s] {_row(daemon)}  {_twin_cell(daemon)}")
                for record in await feed.new():
                    tally.see(record)
                    for line in describe(record, config=config_path, tokens=tokens):
                        print(line)
                if daemon.agent_state.get("state") == "disabled" and "agent" not in tally.agent:
                    tally.agent["disabled"] += 1
                    print(f"  AGENT   not running: {daemon.agent_state.get('error')}")
                await asyncio.sleep(0.5)
            gateway.cancel()
        feed.close()
    _summary(tally, state, write_log)
    return tally


async def _play(step: Step, rt: PlantRuntime, daemon: Daemon) -> None:
    print(f"\n[t={rt.plant.time:5.0f} s] SCENARIO: {step.note}")
    if step.fault is not None:
        rt.inject_fault(step.fault, step.severity)
    if step.clear:
        rt.clear_faults()
    if step.operator and daemon.governance is not None:
        try:
            await daemon.governance.propose(
                "operator:shift_operator", step.operator, "downstream asks for more flow"
            )
        except ControlError as err:
            print(f"  the operator's proposal was not accepted as a request: {err}")


def _summary(tally: Tally, state: Path, write_log: Path) -> None:
    writes = [
        w
        for w in (read_write_log(write_log) if write_log.exists() else [])
        if w.point != "heartbeat"
    ]
    accepted = [w for w in writes if w.accepted]
    decided = Counter(tally.outcomes.values())
    print("\n=== demo summary ===")
    print(
        f"proposals: {sum(tally.proposals.values())} "
        f"({', '.join(f'{n} by {k}' for k, n in tally.proposals.items()) or 'none'})"
    )
    print(f"outcomes: {dict(decided) or 'none'}")
    if tally.reasons:
        print(
            "why the gate said no: "
            + ", ".join(f"{c} x{n}" for c, n in tally.reasons.most_common())
        )
    print(
        "alerts raised: "
        + (", ".join(f"{k} x{n}" for k, n in sorted(tally.alerts.items())) or "none")
    )
    if tally.agent:
        print("agent: " + ", ".join(f"{k} x{n}" for k, n in sorted(tally.agent.items())))
    refused = len(writes) - len(accepted)
    print(f"setpoint writes the plant received: {len(accepted)} accepted, {refused} refused")
    print(f"plant trips: {tally.trips}")
    print(f"audit trail: {state / 'audit.db'}")
    print("  one proposal's story: edgetwin audit show ID --config CONFIG")
    print(f"  check the chain:      edgetwin audit verify {state / 'audit.db'}")


def _served_ports(cfg: GatewayConfig) -> tuple[int, int]:
    """The plant listens where the config's sources point, so the gateway finds it."""
    opcua = next(s for s in cfg.source.values() if isinstance(s, OpcUaSource))
    modbus = next(s for s in cfg.source.values() if isinstance(s, ModbusSource))
    port = urlsplit(opcua.endpoint).port or 4840
    return port, modbus.port
