"""Fixtures for running the simulated plant: free loopback ports, a plant factory, clients.

Every plant is a real :class:`PlantRuntime` (asyncua + pymodbus servers on 127.0.0.1) on
ports the OS just handed out. Tests enter it with ``async with make_plant(...) as rt`` so
the runtime's TaskGroup lives in the test's own task.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from asyncua import Client, ua
from pymodbus.client import AsyncModbusTcpClient

from gateway.config import GatewayConfig, load_config
from gateway.plantsim.runner import PlantRuntime

CONFIG = Path(__file__).resolve().parents[2] / "config" / "skid.toml"
NAMESPACE = "urn:edgetwin:plantsim"

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def skid_cfg() -> GatewayConfig:
    return load_config(CONFIG)


class MakePlant(Protocol):
    def __call__(self, **overrides: Any) -> PlantRuntime: ...


@pytest.fixture
def write_log_path(tmp_path: Path) -> Path:
    return tmp_path / "plant-writes.jsonl"


@pytest.fixture
def make_plant(skid_cfg: GatewayConfig, write_log_path: Path) -> MakePlant:
    """A factory of plant runtimes on free ports, logging writes to ``write_log_path``.

    Defaults: speed 4 (simulated seconds per wall second), tick 0.05 s.
    """

    def make(**overrides: Any) -> PlantRuntime:
        kwargs: dict[str, Any] = {
            "host": "127.0.0.1",
            "opcua_port": free_port(),
            "modbus_port": free_port(),
            "write_log": write_log_path,
            "speed": 4.0,
            "tick_s": 0.05,
        }
        kwargs.update(overrides)
        return PlantRuntime(skid_cfg, **kwargs)

    return make


@asynccontextmanager
async def opcua_client(
    rt: PlantRuntime, timeout_s: float = 4.0
) -> AsyncIterator[tuple[Client, int]]:
    """A connected asyncua client of the plant and the plant namespace's index."""
    client = Client(rt.opcua_endpoint, timeout=timeout_s)
    client.session_timeout = 60_000
    await client.connect()
    try:
        yield client, await client.get_namespace_index(NAMESPACE)
    finally:
        await client.disconnect()


@asynccontextmanager
async def modbus_client(
    rt: PlantRuntime, timeout_s: float = 2.0
) -> AsyncIterator[AsyncModbusTcpClient]:
    """A connected pymodbus TCP client of the plant (no retries: a timeout is a timeout)."""
    host, port = rt.modbus_address
    client = AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)
    assert await client.connect()
    try:
        yield client
    finally:
        client.close()


def node(client: Client, ns: int, address: str) -> Any:
    """The client-side node of a config address such as ``s=Skid.Tank.Level``."""
    return client.get_node(ua.NodeId.from_string(f"ns={ns};{address}"))


async def eventually(
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    within_s: float = 15.0,
    interval: float = 0.05,
) -> T:
    """Poll ``probe`` until ``accept`` holds for its result; fail after ``within_s``.

    The timeout only bounds a broken test; no test asserts how long anything took.
    """
    last: T | None = None
    try:
        async with asyncio.timeout(within_s):
            while True:
                last = await probe()
                if accept(last):
                    return last
                await asyncio.sleep(interval)
    except TimeoutError:
        pytest.fail(f"condition not reached; last value {last!r}")
