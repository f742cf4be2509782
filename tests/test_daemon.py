"""The daemon against the simulated plant: systemd notifications, heartbeat, records, shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.daemon import FIDELITY_SIGNAL, TWIN_STATE_FILE, Daemon
from gateway.io.ports import LinkState
from gateway.plantsim.runner import PlantRuntime
from gateway.sdnotify import Notifier
from gateway.status import STATUS_FILE, render_status
from gateway.store.audit import SqliteAuditTrail, verify_audit_file
from gateway.store.historian import SqliteHistorian
from tests.support import SKID, eventually, free_port, skid_config

pytestmark = pytest.mark.slow


class NotifySocket:
    """A real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages


async def test_daemon_notifies_beats_records_and_stops_cleanly(tmp_path: Path) -> None:
    """The daemon sends READY=1 once both sources are connected and WATCHDOG=1 while reading;
    its heartbeat keeps the PLC in remote beyond the PLC's watchdog; samples reach the
    historian and startup/shutdown reach the audit trail; on cancel it flushes and removes
    its status file."""
    ports = free_port(), free_port()
    cfg = skid_config(*ports, edits=(("interval_s = 2.0", "interval_s = 0.5"),))
    notify = NotifySocket(tmp_path / "notify.sock")
    notifier = Notifier(str(notify.path))
    notifier.watchdog_s = 3.0
    state = tmp_path / "state"
    async with PlantRuntime(cfg, opcua_port=ports[0], modbus_port=ports[1], watchdog_s=2.0) as rt:
        daemon = Daemon(cfg, state, notifier=notifier)
        task = asyncio.create_task(daemon.run())
        try:
            await _watch_running_daemon(daemon, rt, notify, cfg, state)
        finally:
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert "STOPPING=1" in notify.drain()
    assert not (state / STATUS_FILE).exists()
    with SqliteHistorian(state / "history.db") as historian:
        latest = historian.latest()
    assert {n for n in latest if not n.startswith("twin.")} == set(cfg.signal)
    assert FIDELITY_SIGNAL in latest  # the twin's score is history too
    with SqliteAuditTrail(state / "audit.db") as audit:
        kinds = [r.kind for r in audit.records()]
    assert kinds == ["startup", "shutdown"]
    assert verify_audit_file(state / "audit.db").ok


async def _watch_running_daemon(
    daemon: Daemon, rt: PlantRuntime, notify: NotifySocket, cfg: GatewayConfig, state: Path
) -> None:
    await eventually(lambda: daemon.ready.is_set(), timeout_s=15, what="ready")
    assert all(s.state is LinkState.CONNECTED for s in daemon.acquisition.links.values())
    await asyncio.sleep(5.0)  # more than twice the PLC's watchdog
    assert rt.plant.read()["remote_mode"].value == 1.0
    assert daemon.actuator.heartbeats_written >= 5
    assert (state / STATUS_FILE).exists()
    shown = render_status(cfg, state)
    assert "running" in shown
    assert "tank_level" in shown
    # The twin is built after READY and then follows the plant off the event loop.
    await eventually(
        lambda: daemon.twin is not None and daemon.twin.status()["tracking"],
        timeout_s=30,
        what="twin tracking",
    )
    await eventually(lambda: (state / TWIN_STATE_FILE).exists(), timeout_s=10, what="twin.json")
    saved = json.loads((state / TWIN_STATE_FILE).read_text())
    assert saved["observer"]["model"] == "skid"
    assert 1.3 < saved["observer"]["state"]["level"] < 1.7
    await eventually(
        lambda: json.loads((state / STATUS_FILE).read_text())["twin"].get("tracking") is True,
        timeout_s=5,
        what="twin in status.json",
    )
    assert "twin skid: fidelity" in render_status(cfg, state)
    messages = notify.drain()
    ready = [m for m in messages if m.startswith("READY=1")]
    assert ready == ["READY=1\nSTATUS=all sources connected"]
    assert messages.count("WATCHDOG=1") >= 3


async def test_no_watchdog_ping_without_progress(tmp_path: Path) -> None:
    """If acquisition stops making progress, WATCHDOG=1 stops, so systemd restarts us."""
    cfg = skid_config(free_port(), free_port())
    notify = NotifySocket(tmp_path / "notify.sock")
    notifier = Notifier(str(notify.path))
    notifier.watchdog_s = 0.6
    daemon = Daemon(cfg, tmp_path / "state", notifier=notifier)
    daemon.progress = lambda: 42  # type: ignore[method-assign]
    loop = asyncio.create_task(daemon._systemd_loop())
    await asyncio.sleep(1.5)
    loop.cancel()
    with pytest.raises(asyncio.CancelledError):
        await loop
    assert notify.drain().count("WATCHDOG=1") == 1  # the first look only, then silence


def test_edgetwin_run_stops_on_sigterm_with_records(tmp_path: Path) -> None:
    """`edgetwin run` as a process: SIGTERM ends it with exit 0, the history flushed and
    the shutdown recorded, even with its PLC unreachable (it keeps running meanwhile)."""
    config = tmp_path / "skid.toml"
    text = SKID.read_text().replace("4840", str(free_port())).replace("5020", str(free_port()))
    config.write_text(text)
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(state),
            "--log-level",
            "info",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while not (state / STATUS_FILE).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (state / STATUS_FILE).exists()
        doc = json.loads((state / STATUS_FILE).read_text())
        assert {link["state"] for link in doc["links"].values()} <= {"connecting", "disconnected"}
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out.decode()
    lines = [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert "daemon_started" in events
    assert events[-1] == "daemon_stopped"
    with SqliteAuditTrail(state / "audit.db") as audit:
        assert [r.kind for r in audit.records()] == ["startup", "shutdown"]
