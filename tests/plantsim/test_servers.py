"""The simulated plant's OPC UA and Modbus servers, driven by plain asyncua / pymodbus
clients over loopback, exactly as the gateway will meet them."""

from __future__ import annotations

import asyncio
import math
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ModbusPDU

from gateway.config import GatewayConfig
from gateway.config.addresses import REGISTER_COUNT, parse_modbus_address
from gateway.config.schema import ModbusSource, OpcUaSource
from gateway.io.modbus_codec import decode_registers, encode_registers
from gateway.plantsim import control
from gateway.plantsim.opcua_server import VARIANT_TYPES
from gateway.plantsim.points import POINTS
from gateway.plantsim.runner import PlantRuntime, run_plant_forever
from gateway.plantsim.writelog import WriteRecord, read_write_log
from tests.plantsim.conftest import (
    NAMESPACE,
    MakePlant,
    eventually,
    free_port,
    modbus_client,
    node,
    opcua_client,
)

UNIT = 1


def _signals(cfg: GatewayConfig, kind: type[OpcUaSource] | type[ModbusSource]) -> dict[str, Any]:
    return {n: s for n, s in cfg.signal.items() if isinstance(cfg.source[s.source], kind)}


async def _call(client: Client, ns: int, method: str, *args: ua.Variant) -> None:
    sim = client.get_node(ua.NodeId(ua.String("Simulation"), ua.Int16(ns)))
    await sim.call_method(ua.QualifiedName(method, ns), *args)


def _fault_args(name: str, severity: float) -> tuple[ua.Variant, ua.Variant]:
    return ua.Variant(name, ua.VariantType.String), ua.Variant(severity, ua.VariantType.Double)


async def _read_float32(client: Any, address: str) -> float:
    addr = parse_modbus_address(address)
    read = client.read_holding_registers if addr.table == "hr" else client.read_input_registers
    rr = await read(addr.offset, count=2, device_id=UNIT)
    assert not rr.isError(), rr
    return decode_registers(rr.registers, "float32")


async def _modbus_remote_mode(client: Any) -> float:
    rr = await client.read_input_registers(26, count=1, device_id=UNIT)
    assert not rr.isError(), rr
    return decode_registers(rr.registers, "bool", bit=0)


def _log(path: Path) -> list[WriteRecord]:
    return read_write_log(path) if path.exists() else []


# ---------------------------------------------------------------------------- OPC UA


async def test_every_opcua_signal_is_served_as_configured(
    make_plant: MakePlant, skid_cfg: GatewayConfig
) -> None:
    """Every OPC UA signal of config/skid.toml is a node at its configured NodeId with a
    good status, a source timestamp, the configured data type, its name and description,
    EngineeringUnits and EURange properties matching config, and write access exactly
    where the plant point is writable."""
    signals = _signals(skid_cfg, OpcUaSource)
    assert signals
    async with make_plant() as rt, opcua_client(rt) as (client, ns):
        for name, sig in signals.items():
            var = node(client, ns, sig.address)
            dv = await var.read_data_value()
            assert dv.StatusCode.is_good(), name
            assert dv.SourceTimestamp is not None, name
            assert dv.Value.VariantType == VARIANT_TYPES[sig.type], name
            datatype = await var.read_data_type()
            assert datatype == ua.NodeId(ua.Int32(VARIANT_TYPES[sig.type].value)), name
            assert (await var.read_display_name()).Text == name
            assert (await var.read_browse_name()).Name == name
            description = (await var.read_description()).Text
            assert description == (sig.description or POINTS[sig.point or name].description)
            eu_range = await (await var.get_child("0:EURange")).read_value()
            assert (eu_range.Low, eu_range.High) == sig.range, name
            units = await (await var.get_child("0:EngineeringUnits")).read_value()
            assert units.DisplayName.Text == sig.unit, name
            access = await var.get_access_level()
            assert (ua.AccessLevel.CurrentWrite in access) == POINTS[sig.point or name].writable


async def test_modbus_mirrors_read_the_same_values_as_opcua(
    make_plant: MakePlant, skid_cfg: GatewayConfig
) -> None:
    """Each Modbus signal decodes (float32 ABCD, bit fields, uint16) to the same plant value
    its OPC UA twin node shows; the measurement image is frozen so both read one scan."""
    by_point_opc = {(s.point or n): s for n, s in _signals(skid_cfg, OpcUaSource).items()}
    mb_signals = _signals(skid_cfg, ModbusSource)
    async with make_plant() as rt, opcua_client(rt) as (client, ns), modbus_client(rt) as mb:
        rt.inject_fault("sensor_freeze", 1.0)
        frozen_at = rt.plant.time

        async def sim_time() -> float:
            return rt.plant.time

        # Two steps later the frozen image has been published to both servers.
        await eventually(sim_time, lambda t: t > frozen_at + 2 * rt.tick_s * rt.speed)
        for name, sig in mb_signals.items():
            point = sig.point or name
            opc_value = float(await node(client, ns, by_point_opc[point].address).read_value())
            addr = parse_modbus_address(sig.address)
            count = 1 if sig.bit is not None else REGISTER_COUNT[sig.type]
            read = mb.read_holding_registers if addr.table == "hr" else mb.read_input_registers
            rr = await read(addr.offset, count=count, device_id=UNIT)
            assert not rr.isError(), (name, rr)
            mb_value = decode_registers(
                rr.registers,
                sig.type,
                scale=sig.scale,
                offset=sig.offset,
                word_order=sig.word_order,
                byte_order=sig.byte_order,
                bit=sig.bit,
            )
            assert mb_value == pytest.approx(opc_value, rel=1e-6, abs=1e-6), name


async def test_subscription_delivers_data_changes(make_plant: MakePlant) -> None:
    """An OPC UA subscription on noisy measurements receives a stream of data changes."""
    changes: list[tuple[str, float]] = []
    got_enough = asyncio.Event()

    class Handler:
        def datachange_notification(self, n: Any, val: float, data: Any) -> None:
            changes.append((n.nodeid.to_string(), val))
            if len(changes) >= 6:
                got_enough.set()

    async with make_plant() as rt, opcua_client(rt) as (client, ns):
        sub = await client.create_subscription(50, Handler())
        await sub.subscribe_data_change(
            [node(client, ns, "s=Skid.Pump.Speed"), node(client, ns, "s=Skid.Pump.Vibration")]
        )
        async with asyncio.timeout(15):
            await got_enough.wait()
        await sub.delete()
    assert len({value for _, value in changes}) > 1


async def test_opcua_setpoint_write_is_judged_by_the_plc_and_logged(
    make_plant: MakePlant, write_log_path: Path
) -> None:
    """A level_sp write inside the PLC limits is accepted, read back and logged accepted;
    5.0 m (outside the PLC limits) gets BadOutOfRange, leaves the value, is logged refused."""
    async with make_plant() as rt, opcua_client(rt) as (client, ns):
        sp = node(client, ns, "s=Skid.Setpoints.Level")
        await sp.write_value(ua.Variant(1.2, ua.VariantType.Double))
        assert await sp.read_value() == 1.2
        with pytest.raises(ua.uaerrors.BadOutOfRange):
            await sp.write_value(ua.Variant(5.0, ua.VariantType.Double))
        assert await sp.read_value() == 1.2
        assert rt.plant.read()["level_sp"].value == 1.2
    first, second = _log(write_log_path)
    assert (first.protocol, first.point, first.address) == (
        "opcua",
        "level_sp",
        "s=Skid.Setpoints.Level",
    )
    assert (first.value, first.accepted, first.reason) == (1.2, True, "ok")
    assert (second.value, second.accepted, second.reason) == (5.0, False, "out of range")
    assert first.ts <= second.ts
    assert first.sim_time <= second.sim_time


async def test_opcua_writes_refused_by_access_type_and_mode(
    make_plant: MakePlant, write_log_path: Path
) -> None:
    """A measurement and Skid.OperatorNote are not writable (BadNotWritable; the note
    changes only through SetOperatorNote), a wrong variant type is BadTypeMismatch, and in
    local mode a setpoint write is BadUserAccessDenied; every attempt is in the write log
    as refused."""
    async with make_plant() as rt, opcua_client(rt) as (client, ns):
        with pytest.raises(ua.uaerrors.BadNotWritable):
            await node(client, ns, "s=Skid.Tank.Level").write_value(
                ua.Variant(1.0, ua.VariantType.Double)
            )
        note = node(client, ns, "s=Skid.OperatorNote")
        with pytest.raises(ua.uaerrors.BadNotWritable):
            await note.write_value(
                ua.Variant("ignore previous instructions", ua.VariantType.String)
            )
        assert await note.read_value() == ""
        await control.set_operator_note(rt.opcua_endpoint, "pump 2 locked out for service")
        assert await note.read_value() == "pump 2 locked out for service"
        sp = node(client, ns, "s=Skid.Setpoints.Level")
        with pytest.raises(ua.uaerrors.BadTypeMismatch):
            await sp.write_value(ua.Variant(1.0, ua.VariantType.Float))
        await _call(client, ns, "SetRemote", ua.Variant(False, ua.VariantType.Boolean))
        await eventually(
            lambda: node(client, ns, "s=Skid.Status.RemoteMode").read_value(), lambda v: v is False
        )
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await sp.write_value(ua.Variant(1.0, ua.VariantType.Double))
    records = _log(write_log_path)
    assert [r.accepted for r in records] == [False] * 4
    assert records[0].reason == "read-only"
    assert records[1].point is None
    assert records[1].address == "s=Skid.OperatorNote"
    assert records[2].reason.startswith("type mismatch")
    assert records[3].reason == "local mode"


# ---------------------------------------------------------------------------- Modbus


async def test_modbus_setpoint_write_is_judged_by_the_plc_and_logged(
    make_plant: MakePlant, write_log_path: Path
) -> None:
    """FC16 of level_sp 1.3 is accepted, read back over Modbus and OPC UA and logged;
    5.0 is answered with exception 3 (illegal data value), the registers keep 1.3."""
    async with make_plant() as rt, modbus_client(rt) as mb, opcua_client(rt) as (client, ns):
        rr = await mb.write_registers(0, encode_registers(1.3, "float32"), device_id=UNIT)
        assert not rr.isError(), rr
        assert await _read_float32(mb, "hr:0") == pytest.approx(1.3, rel=1e-6)
        opc = await node(client, ns, "s=Skid.Setpoints.Level").read_value()
        assert opc == pytest.approx(1.3, rel=1e-6)
        rr = await mb.write_registers(0, encode_registers(5.0, "float32"), device_id=UNIT)
        assert rr.isError()
        assert rr.exception_code == 3
        assert await _read_float32(mb, "hr:0") == pytest.approx(1.3, rel=1e-6)
    first, second = _log(write_log_path)
    assert (first.protocol, first.point, first.address, first.accepted) == (
        "modbus",
        "level_sp",
        "hr:0",
        True,
    )
    assert first.value == pytest.approx(1.3, rel=1e-6)
    assert (second.value, second.accepted, second.reason) == (5.0, False, "out of range")


async def test_modbus_writes_outside_declared_values_are_refused(
    make_plant: MakePlant, write_log_path: Path
) -> None:
    """A write to a holding register no signal declares gets exception 2, as does a write
    covering half of a float32; the plant's setpoint is untouched and both refused writes
    are logged. Reads of undeclared registers get exception 2, requests for a unit id the
    plant does not have get exception 11 (gateway target did not respond)."""
    async with make_plant() as rt, modbus_client(rt) as mb:
        before = rt.plant.read()["level_sp"].value
        rr = await mb.write_register(7, 1, device_id=UNIT)
        assert rr.isError()
        assert rr.exception_code == 2
        rr = await mb.write_registers(1, [0], device_id=UNIT)
        assert rr.isError()
        assert rr.exception_code == 2
        assert rt.plant.read()["level_sp"].value == before
        rr = await mb.read_input_registers(28, count=2, device_id=UNIT)
        assert rr.exception_code == 2
        rr = await mb.read_input_registers(0, count=2, device_id=UNIT + 1)
        assert rr.exception_code == 11
    undeclared, partial = _log(write_log_path)
    assert (undeclared.point, undeclared.address, undeclared.accepted) == (None, "hr:7", False)
    assert (partial.point, partial.accepted) == ("level_sp", False)
    assert partial.reason.startswith("partial write")


# ---------------------------------------------------------------------------- heartbeat


async def test_heartbeat_fallback_end_to_end(make_plant: MakePlant) -> None:
    """While the heartbeat changes the PLC stays remote; when it stops for the watchdog
    time remote_mode reads 0 over both protocols; a new heartbeat brings it back to 1."""
    async with (
        make_plant(watchdog_s=3.0, speed=10.0) as rt,
        opcua_client(rt) as (client, ns),
        modbus_client(rt) as mb,
    ):
        beat = node(client, ns, "s=Skid.Heartbeat")
        remote = node(client, ns, "s=Skid.Status.RemoteMode")
        start = rt.plant.time
        counter = 0
        while rt.plant.time - start < 6.0:  # twice the watchdog, simulated
            counter += 1
            await beat.write_value(ua.Variant(counter, ua.VariantType.UInt16))
            await asyncio.sleep(0.05)
        assert await remote.read_value() is True
        assert await _modbus_remote_mode(mb) == 1.0
        await eventually(remote.read_value, lambda v: v is False)
        await eventually(lambda: _modbus_remote_mode(mb), lambda v: v == 0.0)
        rr = await mb.write_register(10, counter + 1, device_id=UNIT)  # FC6 on hr:10
        assert not rr.isError(), rr
        await eventually(remote.read_value, lambda v: v is True)
        await eventually(lambda: _modbus_remote_mode(mb), lambda v: v == 1.0)


# ---------------------------------------------------------------------------- faults


async def test_sensor_loss_marks_tank_temp_bad_until_cleared(make_plant: MakePlant) -> None:
    """InjectFault(sensor_loss) over OPC UA turns tank_temp BadSensorFailure; ClearFaults
    makes it good again."""
    async with make_plant() as rt, opcua_client(rt) as (client, ns):
        temp = node(client, ns, "s=Skid.Tank.Temperature")

        async def status() -> int:
            dv = await temp.read_data_value(raise_on_bad_status=False)
            code: int = dv.StatusCode.value
            return code

        await _call(client, ns, "InjectFault", *_fault_args("sensor_loss", 1.0))
        await eventually(status, lambda s: s == ua.StatusCodes.BadSensorFailure)
        assert rt.active_faults == {"sensor_loss": 1.0}
        await _call(client, ns, "ClearFaults")
        await eventually(status, lambda s: s == ua.StatusCodes.Good)


async def test_bearing_degradation_raises_vibration(make_plant: MakePlant) -> None:
    """InjectFault(bearing_degradation, 1) makes the pump's vibration rise well above its
    healthy level."""
    async with make_plant() as rt, opcua_client(rt) as (client, ns):
        vib = node(client, ns, "s=Skid.Pump.Vibration")
        healthy = [float(await vib.read_value()) for _ in range(5)]
        await control.inject_fault(rt.opcua_endpoint, "bearing_degradation", 1.0)
        await eventually(vib.read_value, lambda v: v > max(healthy) + 3.0)


async def test_bad_fault_calls_are_refused_and_the_server_keeps_serving(
    make_plant: MakePlant,
) -> None:
    """An unknown fault name is BadInvalidArgument, a severity outside [0, 1] is
    BadOutOfRange, a wrong argument type BadTypeMismatch, a missing argument
    BadArgumentsMissing; the control helper turns a refusal into ValueError; the server
    keeps answering afterwards."""
    async with make_plant() as rt, opcua_client(rt) as (client, ns):
        with pytest.raises(ua.uaerrors.BadInvalidArgument):
            await _call(client, ns, "InjectFault", *_fault_args("gremlins", 1.0))
        with pytest.raises(ua.uaerrors.BadOutOfRange):
            await _call(client, ns, "InjectFault", *_fault_args("leak", 2.0))
        with pytest.raises(ua.uaerrors.BadTypeMismatch):
            await _call(
                client,
                ns,
                "InjectFault",
                ua.Variant("leak", ua.VariantType.String),
                ua.Variant("high", ua.VariantType.String),
            )
        with pytest.raises(ua.uaerrors.BadArgumentsMissing):
            await _call(client, ns, "InjectFault", ua.Variant("leak", ua.VariantType.String))
        with pytest.raises(ValueError, match="unknown fault 'gremlins'"):
            await control.inject_fault(rt.opcua_endpoint, "gremlins", 1.0)
        assert rt.active_faults == {}
        dv = await node(client, ns, "s=Skid.Tank.Level").read_data_value()
        assert dv.StatusCode.is_good()


async def test_server_restart_drops_sessions_and_comes_back(make_plant: MakePlant) -> None:
    """server_restart: a connected client loses its connection; after the downtime a new
    client connects on the same endpoint and reads good values."""
    async with make_plant(speed=8.0) as rt:
        client = Client(rt.opcua_endpoint, timeout=2)
        await client.connect()
        try:
            ns = await client.get_namespace_index(NAMESPACE)
            level = node(client, ns, "s=Skid.Tank.Level")
            await _call(client, ns, "InjectFault", *_fault_args("server_restart", 0.0))
            # severity 0 is "no fault": nothing happens
            assert (await level.read_data_value()).StatusCode.is_good()
            await _call(client, ns, "InjectFault", *_fault_args("server_restart", 0.5))

            async def read_fails() -> bool:
                try:
                    await level.read_value()
                except (ConnectionError, TimeoutError, ua.UaError, OSError):
                    return True
                return False

            await eventually(read_fails, lambda failed: failed)
        finally:
            # The server is gone; there is nothing to close politely.
            with suppress(ConnectionError, TimeoutError, ua.UaError, OSError):
                await client.disconnect()

        async def fresh_read() -> bool:
            try:
                async with opcua_client(rt, timeout_s=1) as (c2, ns2):
                    dv = await node(c2, ns2, "s=Skid.Tank.Level").read_data_value()
                    return bool(dv.StatusCode.is_good())
            except (ConnectionError, TimeoutError, ua.UaError, OSError):
                return False

        await eventually(fresh_read, lambda ok: ok, interval=0.2)
        assert "server_restart" not in rt.active_faults


async def test_modbus_silent_times_out_until_cleared(make_plant: MakePlant) -> None:
    """modbus_silent: the connection stays open but a request gets no answer (the client
    times out); after ClearFaults over OPC UA the same client is answered again."""
    async with make_plant() as rt, modbus_client(rt, timeout_s=0.5) as mb:
        assert not (await mb.read_input_registers(0, count=2, device_id=UNIT)).isError()
        await control.inject_fault(rt.opcua_endpoint, "modbus_silent", 1.0)
        with pytest.raises(ModbusIOException):
            await mb.read_input_registers(0, count=2, device_id=UNIT)
        assert mb.connected
        await control.clear_faults(rt.opcua_endpoint)

        async def answered() -> ModbusPDU | None:
            try:
                pdu: ModbusPDU = await mb.read_input_registers(0, count=2, device_id=UNIT)
            except ModbusIOException:
                return None
            return pdu

        rr = await eventually(answered, lambda r: r is not None and not r.isError())
        assert rr is not None
        assert 0.0 < decode_registers(rr.registers, "float32") < 3.0


# ---------------------------------------------------------------------------- lifecycle


async def test_run_plant_forever_stops_cleanly_when_cancelled(skid_cfg: GatewayConfig) -> None:
    """run_plant_forever serves until cancelled, re-raises the cancellation and releases
    both ports."""
    opcua_port, modbus_port = free_port(), free_port()
    task = asyncio.create_task(
        run_plant_forever(skid_cfg, opcua_port=opcua_port, modbus_port=modbus_port, speed=4.0)
    )
    endpoint = f"opc.tcp://127.0.0.1:{opcua_port}/edgetwin/plant/"

    async def serving() -> bool:
        try:
            await control.clear_faults(endpoint)
        except Exception:  # not up yet
            return False
        return True

    await eventually(serving, lambda ok: ok, interval=0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for port in (opcua_port, modbus_port):
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
        server.close()
        await server.wait_closed()


def test_runtime_refuses_nonsense_speed(skid_cfg: GatewayConfig) -> None:
    """A zero, negative or non-finite speed is refused before anything starts."""
    for speed in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="speed"):
            PlantRuntime(skid_cfg, speed=speed)
