"""``edgetwin demo``: the simulated skid with a scripted fault scenario, shown live.

The real daemon runs against the plant: both readers, the live table, the historian, the
audit trail, the heartbeat, the twin (observer, fidelity, forecasts) and the anomaly
detector. The terminal shows the gateway's own view of the signals, the twin's fidelity,
and every alert and forecast as it is raised, so each injected fault is seen the way the
gateway sees it. Later issues put the agent and the gate in this loop.

The plant runs in real time by default: the twin and the detector step once a second of
wall time and assume the process does the same (``--speed`` above 1 is for watching the
plant only; the twin's fidelity then drops, honestly, because the plant runs faster than
the model believes).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.config.schema import GatewayConfig, ModbusSource, OpcUaSource
from gateway.daemon import Daemon
from gateway.plantsim.runner import PlantRuntime
from gateway.signals import Quality

#: Signals shown in the live table, with their display format.
SHOWN: tuple[tuple[str, str], ...] = (
    ("tank_level", "{:5.2f} m"),
    ("tank_temp", "{:5.1f} °C"),
    ("pump_speed", "{:5.0f} rpm"),
    ("pump_flow", "{:5.1f} m³/h"),
    ("outlet_flow", "{:5.1f} m³/h"),
    ("bearing_temp", "{:5.1f} °C"),
    ("vibration_rms", "{:5.2f} mm/s"),
    ("remote_mode", "{:1.0f}"),
    ("trip_word", "{:1.0f}"),
)


@dataclass(frozen=True)
class Step:
    """One scripted scenario step, at a simulated time."""

    at_s: float
    fault: str | None
    severity: float
    note: str


SCENARIO: tuple[Step, ...] = (
    Step(0, None, 0.0, "normal operation; the gateway's heartbeat keeps the PLC in remote"),
    Step(60, "bearing_degradation", 0.7, "pump bearing starts to degrade"),
    Step(180, "level_sensor_drift", 0.6, "level transmitter drifts"),
    Step(300, "leak", 0.5, "a leak opens downstream of the pump"),
    Step(420, None, 0.0, "maintenance: all faults cleared"),
)


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


def _new_alerts(daemon: Daemon, seen: set[str]) -> list[str]:
    """Alerts (anomaly and forecast) raised since the last look, as lines to print."""
    lines = []
    detect = daemon.detection.status() if daemon.detection is not None else {}
    for alert in detect.get("active") or []:
        key = f"{alert.get('alert_id')}:{alert.get('message')}"
        if key not in seen:
            seen.add(key)
            lines.append(f"  ALERT {alert.get('alert_id')}: {alert.get('message')}")
    for event in daemon.predictive.active.values():
        key = f"{event.alert_id}:{event.message}"
        if key not in seen:
            seen.add(key)
            lines.append(f"  FORECAST {event.alert_id}: {event.message}")
    return lines


async def run_demo(
    cfg: GatewayConfig,
    *,
    speed: float = 1.0,
    duration_s: float | None = None,
    opcua_port: int | None = None,
    modbus_port: int | None = None,
    state_dir: Path | None = None,
    scenario: Sequence[Step] = SCENARIO,
    print_every_s: float = 2.0,
) -> None:
    """Run the plant, the gateway daemon and the scenario, printing what the gateway sees."""
    state = state_dir or Path(cfg.gateway.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    write_log = state / "plant-writes.jsonl"
    plant_opcua, plant_modbus = _served_ports(cfg)
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
        print(f"speed x{speed:g}; every write the plant receives goes to {write_log}")
        print(f"gateway state (historian, audit trail, status) in {state}/")
        pending = list(scenario)
        seen: set[str] = set()
        started = time.monotonic()
        async with asyncio.TaskGroup() as tg:
            gateway = tg.create_task(daemon.run(), name="gateway")
            while duration_s is None or time.monotonic() - started < duration_s:
                while pending and rt.plant.time >= pending[0].at_s:
                    step = pending.pop(0)
                    if step.fault is None:
                        rt.clear_faults()
                    else:
                        rt.inject_fault(step.fault, step.severity)
                    print(f"\n[t={rt.plant.time:6.0f} s] {step.note}")
                print(f"[t={rt.plant.time:6.0f} s] {_row(daemon)}  {_twin_cell(daemon)}")
                for line in _new_alerts(daemon, seen):
                    print(line)
                await asyncio.sleep(print_every_s)
            gateway.cancel()
        print(
            f"demo finished: {daemon.actuator.heartbeats_written} heartbeats written; audit trail "
            f"{state / 'audit.db'} (check it: edgetwin audit verify {state / 'audit.db'})"
        )


def _served_ports(cfg: GatewayConfig) -> tuple[int, int]:
    """The plant listens where the config's sources point, so the gateway finds it."""
    opcua = next(s for s in cfg.source.values() if isinstance(s, OpcUaSource))
    modbus = next(s for s in cfg.source.values() if isinstance(s, ModbusSource))
    port = urlsplit(opcua.endpoint).port or 4840
    return port, modbus.port
