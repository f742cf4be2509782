"""Shared test helpers: free loopback ports, the skid config on given ports, polling waits,
and a TCP proxy that can go silent (a dropped link that does not close its sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from gateway.config import GatewayConfig, parse_config

SKID = Path(__file__).resolve().parents[1] / "config" / "skid.toml"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def skid_config(
    opcua_port: int,
    modbus_port: int,
    *,
    edits: tuple[tuple[str, str], ...] = (),
    agent: bool = False,
) -> GatewayConfig:
    """config/skid.toml with the gateway pointed at the given ports, plus text edits.

    The agent is off unless asked for: a test about acquisition or the gate must not
    start a language model (and must not depend on the default one being installed).
    """
    text = SKID.read_text(encoding="utf-8")
    if not agent:
        text = text.replace("[agent]\nenabled = true", "[agent]\nenabled = false")
    text = text.replace("127.0.0.1:4840/", f"127.0.0.1:{opcua_port}/")
    text = text.replace("port = 5020", f"port = {modbus_port}")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return parse_config(text, "skid.toml (test)")


async def eventually(
    predicate: Callable[[], bool], *, timeout_s: float, what: str, every_s: float = 0.05
) -> float:
    """Wait until ``predicate()`` holds; return the seconds it took, fail with ``what``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for: {what}")
        await asyncio.sleep(every_s)
    return time.monotonic() - start


class Proxy:
    """A loopback TCP proxy in front of a server, for link faults a server cannot fake.

    ``silence()``: stop forwarding in both directions but keep every socket open, like a
    cable pulled behind a switch. ``refuse()``: close all connections and refuse new ones,
    like a server that went down. ``restore()``: forward again (old connections are closed,
    their protocol state is garbage).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._silent = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def close(self) -> None:
        self._drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def silence(self) -> None:
        self._silent = True

    async def refuse(self) -> None:
        await self.close()

    async def restore(self) -> None:
        self._drop_all()
        self._silent = False
        if self._server is None:
            await self.start()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.read(65536):
                if self._silent:
                    continue  # swallowed: the peer waits forever
                dst.write(data)
                await dst.drain()
        dst.close()


BUILD_SCRIPT = SKID.parents[1] / "models" / "build_anomaly_model.py"


def load_model_builder() -> ModuleType:
    """models/build_anomaly_model.py as a module (``models/`` is not a package), loaded
    once per session: the detect tests and the CLI tests share it."""
    builder = sys.modules.get("build_anomaly_model")
    if builder is None:
        spec = importlib.util.spec_from_file_location("build_anomaly_model", BUILD_SCRIPT)
        assert spec is not None
        assert spec.loader is not None
        builder = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = builder  # dataclasses resolve their module by name
        spec.loader.exec_module(builder)
    return builder
