"""Acquisition against the real simulated plant (asyncua and pymodbus servers on 127.0.0.1).

Every test runs the gateway's readers with an ``Acquisition`` sink, the way the daemon does,
and judges what the live table says. Link faults the plant cannot fake (a silent drop, a
server that refuses connections) go through a loopback proxy.
"""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from gateway.acquire import Acquisition
from gateway.config import GatewayConfig
from gateway.daemon import build_readers
from gateway.io.ports import LinkState
from gateway.plantsim.runner import PlantRuntime
from gateway.signals import Quality
from tests.support import Proxy, eventually, free_port, skid_config

pytestmark = pytest.mark.slow

OPCUA = "plc"
MODBUS = "plc_modbus"


@asynccontextmanager
async def acquiring(cfg: GatewayConfig) -> AsyncIterator[Acquisition]:
    """Run every reader of ``cfg`` into a fresh Acquisition until the block ends."""
    acq = Acquisition(cfg)
    readers = build_readers(cfg, acq)
    tasks = [asyncio.create_task(r.run(), name=f"source:{n}") for n, r in readers.items()]
    try:
        yield acq
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def signals_of(cfg: GatewayConfig, source: str) -> list[str]:
    return [n for n, s in cfg.signal.items() if s.source == source]


def all_good(acq: Acquisition, names: list[str]) -> bool:
    snap = acq.snapshot()
    return all(n in snap and snap[n].quality is Quality.GOOD for n in names)


def good_while_down(acq: Acquisition, source: str, names: list[str]) -> list[str]:
    """Signals reported good although their source is known to be down."""
    if acq.links[source].state is LinkState.CONNECTED:
        return []
    snap = acq.snapshot()
    return [n for n in names if n in snap and snap[n].quality is Quality.GOOD]


def plant(cfg: GatewayConfig, opcua_port: int, modbus_port: int, tmp: Path) -> PlantRuntime:
    return PlantRuntime(
        cfg, opcua_port=opcua_port, modbus_port=modbus_port, write_log=tmp / "w.jsonl"
    )


@pytest.mark.parametrize("mode", ["subscription", "polling"])
async def test_both_protocols_read_what_the_plant_serves(tmp_path: Path, mode: str) -> None:
    """Every signal of both sources turns good, with the plant's values, units and times."""
    ports = free_port(), free_port()
    cfg = skid_config(*ports, edits=(('mode = "subscription"', f'mode = "{mode}"'),))
    async with plant(cfg, *ports, tmp_path) as rt, acquiring(cfg) as acq:
        await eventually(lambda: all_good(acq, list(cfg.signal)), timeout_s=15, what="all good")
        snap = acq.snapshot()
        truth = rt.plant.read()
        now = time.time()
        for name, spec in cfg.signal.items():
            value = snap[name]
            assert value.unit == spec.unit
            assert abs(value.received_ts - now) < 5.0
            assert abs(value.source_ts - now) < 5.0
            point = spec.point or name
            tolerance = max(0.02 * abs(truth[point].value), 0.05)
            if point not in ("heartbeat", "vibration_rms", "motor_current"):
                assert math.isclose(value.value, truth[point].value, abs_tol=tolerance), name
        # the same point over both protocols agrees
        assert abs(snap["tank_level"].value - snap["mb_tank_level"].value) < 0.02
        assert snap["level_sp"].value == pytest.approx(1.5)
        assert snap["mb_level_sp"].value == pytest.approx(1.5)
        assert snap["remote_mode"].value == snap["mb_remote_mode"].value


async def test_opcua_server_restart_recovers_with_subscription(tmp_path: Path) -> None:
    """After an OPC UA server restart the reader reconnects within the backoff cap plus a few
    seconds, the subscription delivers again, and no signal was good while the link was down."""
    ports = free_port(), free_port()
    cfg = skid_config(*ports, edits=(("timeout_s = 4.0", "timeout_s = 1.0"),))
    names = signals_of(cfg, OPCUA)
    async with plant(cfg, *ports, tmp_path) as rt, acquiring(cfg) as acq:
        await eventually(lambda: all_good(acq, names), timeout_s=15, what="opcua good")
        rt.inject_fault("server_restart", 0.01)  # down for about 2 s
        await eventually(
            lambda: acq.links[OPCUA].state is not LinkState.CONNECTED,
            timeout_s=5,
            what="link seen down",
        )
        down_at = time.time()
        violations: list[str] = []

        def recovered() -> bool:
            violations.extend(good_while_down(acq, OPCUA, names))
            snap = acq.snapshot()
            return acq.links[OPCUA].state is LinkState.CONNECTED and all(
                snap[n].quality is Quality.GOOD and snap[n].received_ts > down_at for n in names
            )

        cap = cfg.source[OPCUA].reconnect_max_s
        took = await eventually(recovered, timeout_s=2 + cap + 5, what="fresh data again")
        assert violations == []
        assert took < 2 + cap + 5


async def test_silent_drop_is_detected_and_recovered(tmp_path: Path) -> None:
    """A link that goes silent without closing is detected by the probe, reported down (no
    good values), and the reader recovers once the link carries traffic again."""
    ports = free_port(), free_port()
    proxy = Proxy(ports[0])
    await proxy.start()
    cfg = skid_config(proxy.port, ports[1], edits=(("timeout_s = 4.0", "timeout_s = 1.0"),))
    names = signals_of(cfg, OPCUA)
    try:
        async with plant(cfg, *ports, tmp_path), acquiring(cfg) as acq:
            await eventually(lambda: all_good(acq, names), timeout_s=15, what="opcua good")
            proxy.silence()
            await eventually(
                lambda: acq.links[OPCUA].state is LinkState.DISCONNECTED,
                timeout_s=6,
                what="silent drop detected",
            )
            assert good_while_down(acq, OPCUA, names) == []
            await asyncio.sleep(2.0)
            assert good_while_down(acq, OPCUA, names) == []
            await proxy.restore()
            await eventually(lambda: all_good(acq, names), timeout_s=15, what="recovered")
    finally:
        await proxy.close()


async def test_modbus_server_down_and_back(tmp_path: Path) -> None:
    """A Modbus server that goes away is reported down with nothing good, and read again
    after it returns; the OPC UA source is unaffected throughout."""
    ports = free_port(), free_port()
    proxy = Proxy(ports[1])
    await proxy.start()
    cfg = skid_config(ports[0], proxy.port)
    mb_names = signals_of(cfg, MODBUS)
    try:
        async with plant(cfg, *ports, tmp_path), acquiring(cfg) as acq:
            await eventually(lambda: all_good(acq, list(cfg.signal)), timeout_s=15, what="good")
            await proxy.refuse()
            await eventually(
                lambda: acq.links[MODBUS].state is not LinkState.CONNECTED,
                timeout_s=5,
                what="modbus down",
            )
            assert good_while_down(acq, MODBUS, mb_names) == []
            assert all_good(acq, signals_of(cfg, OPCUA))
            await proxy.restore()
            await eventually(lambda: all_good(acq, mb_names), timeout_s=15, what="modbus back")
    finally:
        await proxy.close()


async def test_silent_modbus_device_goes_stale_then_recovers(tmp_path: Path) -> None:
    """A Modbus device that stops answering (plant fault) leaves its signals stale, never good
    past their max age, and they are good again after the fault clears."""
    ports = free_port(), free_port()
    cfg = skid_config(*ports)
    mb_names = [n for n in signals_of(cfg, MODBUS) if cfg.signal[n].max_age_s <= 5.0]
    async with plant(cfg, *ports, tmp_path) as rt, acquiring(cfg) as acq:
        await eventually(lambda: all_good(acq, mb_names), timeout_s=15, what="good")
        rt.inject_fault("modbus_silent", 1.0)
        await eventually(
            lambda: all(acq.snapshot()[n].quality is Quality.STALE for n in mb_names),
            timeout_s=10,
            what="stale",
        )
        rt.clear_faults()
        await eventually(lambda: all_good(acq, mb_names), timeout_s=15, what="good again")


async def test_one_dead_unit_does_not_stall_the_other(tmp_path: Path) -> None:
    """With a second Modbus unit that never answers on the same link, unit 1's signals keep
    being refreshed while unit 2's signals never turn good."""
    ports = free_port(), free_port()
    plant_cfg = skid_config(*ports)
    extra = (
        "[signal.mb_heartbeat]",
        '[signal.vfd2_speed]\nsource = "plc_modbus"\naddress = "ir:0"\nunit_id = 2\n'
        'unit = "rpm"\nrange = [0.0, 3000.0]\nmax_age_s = 5.0\n\n'
        "[signal.mb_heartbeat]",
    )
    gw_cfg = skid_config(*ports, edits=(extra,))
    unit1 = [n for n in signals_of(gw_cfg, MODBUS) if n != "vfd2_speed"]
    async with plant(plant_cfg, *ports, tmp_path), acquiring(gw_cfg) as acq:
        await eventually(lambda: all_good(acq, unit1), timeout_s=15, what="unit 1 good")
        first = {n: acq.snapshot()[n].received_ts for n in unit1}
        await asyncio.sleep(6.0)
        snap = acq.snapshot()
        assert all(snap[n].received_ts > first[n] for n in unit1)
        assert all(snap[n].quality is Quality.GOOD for n in unit1)
        assert "vfd2_speed" not in snap or snap["vfd2_speed"].quality is not Quality.GOOD


async def test_nan_and_out_of_range_registers_turn_bad(tmp_path: Path) -> None:
    """A float register holding NaN and one holding a value outside the physical range are
    reported bad with the reason; their neighbour in the same request stays good."""
    port = free_port()

    def f32(x: float) -> list[int]:
        hi, lo = struct.unpack(">HH", struct.pack(">f", x))
        return [hi, lo]

    registers = [*f32(math.nan), *f32(250.0), *f32(1.25)]
    # shared register block: input registers read the same words
    device = SimDevice(1, simdata=[SimData(0, values=registers, datatype=SimType.REGISTERS)])
    server = ModbusTcpServer(device, address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    cfg = skid_config(free_port(), port)
    names = ["mb_tank_level", "mb_tank_temp", "mb_inlet_temp"]  # ir:0, ir:2, ir:4
    only_modbus = cfg.model_copy(
        update={
            "source": {MODBUS: cfg.source[MODBUS]},
            "signal": {n: cfg.signal[n] for n in names},
            "writable": {},
            "interlock": [],
            "envelope": {},
            "heartbeat": None,
        }
    )
    try:
        await asyncio.sleep(0.2)
        async with acquiring(only_modbus) as acq:
            await eventually(lambda: set(names) <= set(acq.snapshot()), timeout_s=10, what="read")
            snap = acq.snapshot()
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
    assert snap["mb_tank_level"].quality is Quality.BAD
    assert snap["mb_tank_level"].reason == "non-finite value nan"
    assert snap["mb_tank_temp"].quality is Quality.BAD
    assert snap["mb_tank_temp"].reason == "250 degC outside physical range [0, 120]"
    assert snap["mb_inlet_temp"].quality is Quality.GOOD


async def test_frozen_sensor_turns_stale_over_opcua(tmp_path: Path) -> None:
    """A frozen transmitter (its source timestamp stops advancing) turns stale at its max
    age over OPC UA, while the PLC's own points stay good; unfrozen, it is good again."""
    ports = free_port(), free_port()
    cfg = skid_config(*ports)
    measured = [n for n in signals_of(cfg, OPCUA) if cfg.signal[n].max_age_s <= 5.0]
    plc_points = ["level_sp", "remote_mode"]
    async with plant(cfg, *ports, tmp_path) as rt, acquiring(cfg) as acq:
        await eventually(lambda: all_good(acq, measured), timeout_s=15, what="good")
        rt.inject_fault("sensor_freeze", 1.0)
        await eventually(
            lambda: all(acq.snapshot()[n].quality is Quality.STALE for n in measured),
            timeout_s=12,
            what="frozen measurements stale",
        )
        assert all_good(acq, plc_points)
        assert acq.links[OPCUA].state is LinkState.CONNECTED
        rt.clear_faults()
        await eventually(lambda: all_good(acq, measured), timeout_s=15, what="good again")
