"""The simulated skid: physics, PLC loops, modes, trips, write acceptance and faults.

Everything runs in simulated time; no test sleeps. A ``Gateway`` helper plays the part
of a live gateway (it bumps the heartbeat every simulated second) so the PLC stays in
remote mode unless a test stops it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.plantsim.faults import FAULTS, PROCESS_FAULTS, FaultSpec
from gateway.plantsim.plant import Plant, Reading, WriteOutcome
from gateway.plantsim.plc import (
    BEARING_CLEAR_C,
    DRY_RUN_RESET_S,
    LOCAL_DEFAULTS,
    PLC,
    REMOTE_DEFAULTS,
)
from gateway.plantsim.plc import (
    WriteOutcome as PlcWriteOutcome,
)
from gateway.plantsim.points import (
    MEASUREMENTS,
    POINTS,
    SETPOINTS,
    TRIP_HEATER_LOW_LEVEL,
    TRIP_HEATER_OVER_TEMP,
    TRIP_PUMP_BEARING_TEMP,
    TRIP_PUMP_DRY_RUN,
    PointSpec,
)
from gateway.plantsim.process import CP, RHO


@dataclass
class Gateway:
    """Drives a plant the way a healthy gateway would: a heartbeat change every second."""

    plant: Plant
    beat: int = 0
    heartbeat: bool = True
    history: list[dict[str, float]] = field(default_factory=list)

    def run(self, seconds: float, *, record: bool = False) -> None:
        for _ in range(round(seconds)):
            if self.heartbeat:
                self.beat = (self.beat + 1) % 65536
                assert self.plant.write("heartbeat", self.beat).accepted
            self.plant.step(1.0)
            if record:
                self.history.append(self.plant.truth())

    def run_until(self, condition: Callable[[], bool], *, limit_s: float) -> float:
        """Run in 1 s steps until ``condition`` holds; return the simulated time taken."""
        start = self.plant.time
        while not condition():
            assert self.plant.time - start < limit_s, "condition not reached in time"
            self.run(1.0)
        return self.plant.time - start


def value(plant: Plant, point: str) -> float:
    return plant.read()[point].value


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


# --------------------------------------------------------------------------- vocabulary


def test_points_are_a_read_only_mapping_of_specs() -> None:
    """POINTS maps each name to its spec, cannot be mutated, and writable points are
    exactly the three remote setpoints plus the heartbeat."""
    assert all(isinstance(s, PointSpec) and s.name == n for n, s in POINTS.items())
    assert all(s.low < s.high for s in POINTS.values())
    with pytest.raises(TypeError):
        POINTS["x"] = POINTS["tank_level"]  # type: ignore[index]
    assert {n for n, s in POINTS.items() if s.writable} == {*SETPOINTS, "heartbeat"}
    assert len(MEASUREMENTS) == 13
    assert (POINTS["level_sp"].low, POINTS["level_sp"].high) == (0.2, 2.8)
    assert (POINTS["temp_sp"].low, POINTS["temp_sp"].high) == (10.0, 90.0)
    assert POINTS["trip_word"].kind == "uint16"
    assert POINTS["remote_mode"].kind == "bool"


def test_fault_catalogue_names_layers_and_descriptions() -> None:
    """Every fault has a layer and a description; the two network faults are protocol-layer."""
    assert all(
        isinstance(f, FaultSpec) and f.name == n and f.description for n, f in FAULTS.items()
    )
    assert {n for n, f in FAULTS.items() if f.layer == "protocol"} == {
        "server_restart",
        "modbus_silent",
    }
    assert set(PROCESS_FAULTS) == {
        "impeller_wear",
        "bearing_degradation",
        "valve_stiction",
        "level_sensor_drift",
        "sensor_freeze",
        "leak",
        "heater_degradation",
        "sensor_loss",
        "write_ignore",
    }
    assert all(set(f.affects) <= set(POINTS) for f in FAULTS.values())


def test_read_reports_every_point_and_truth_every_measurement() -> None:
    """read() returns a good Reading for every point; truth() covers every measurement and
    the balance terms."""
    plant = Plant()
    readings = plant.read()
    assert list(readings) == list(POINTS)
    assert all(isinstance(r, Reading) and r.good and r.reason is None for r in readings.values())
    truth = plant.truth()
    assert set(MEASUREMENTS) <= set(truth)
    assert {"q_leak_m3h", "heat_delivered_kw", "heat_loss_kw", "pump_heat_kw"} <= set(truth)
    for name, reading in readings.items():
        spec = POINTS[name]
        assert spec.low <= reading.value <= spec.high, name


# --------------------------------------------------------------------------- steady state


@pytest.fixture(scope="module")
def steady() -> list[dict[str, float]]:
    """Truth samples (1 s apart) over the last 120 s of a 600 s run at the defaults."""
    gw = Gateway(Plant(seed=7))
    gw.run(480)
    gw.run(120, record=True)
    return gw.history


def test_steady_state_holds_setpoints(steady: list[dict[str, float]]) -> None:
    """After 600 s at the default setpoints, with drift and noise acting, the loops hold
    the true level within 1 cm of 1.5 m and the temperature within 0.3 K of 45 degC."""
    assert all(abs(s["tank_level"] - 1.5) < 0.01 for s in steady)
    assert all(abs(s["tank_temp"] - 45.0) < 0.3 for s in steady)
    assert all(s["trip_word"] == 0 and s["remote_mode"] == 1 for s in steady)


def test_nominal_operating_point(steady: list[dict[str, float]]) -> None:
    """The nominal point: pump 50–75 % speed, flows 8–15 m³/h, heater well inside
    0–60 kW, bearing 50–60 degC, vibration 2–3 mm/s."""
    m = {k: mean([s[k] for s in steady]) for k in steady[0]}
    assert 1500 < m["pump_speed"] < 2250
    assert 8 < m["pump_flow"] < 15
    assert 8 < m["outlet_flow"] < 15
    assert 10 < m["heater_power"] < 50
    assert 50 < m["bearing_temp"] < 60
    assert 2 < m["vibration_rms"] < 3


def test_steady_state_mass_balance(steady: list[dict[str, float]]) -> None:
    """At steady state the pump's inflow equals the outflow plus leak within 0.2 m³/h."""
    imbalance = mean([s["pump_flow"] - s["outlet_flow"] - s["q_leak_m3h"] for s in steady])
    assert abs(imbalance) < 0.2
    assert all(s["q_leak_m3h"] == 0 and s["q_overflow_m3h"] == 0 for s in steady)


def test_steady_state_energy_balance(steady: list[dict[str, float]]) -> None:
    """At steady state the heat in (heater, pump losses, inflow enthalpy) matches the wall
    loss within 1 kW, against a heater duty of tens of kW."""

    def net_kw(s: dict[str, float]) -> float:
        inflow = RHO * CP * s["pump_flow"] / 3600 * (s["inlet_temp"] - s["tank_temp"]) / 1000
        return inflow + s["heat_delivered_kw"] + s["pump_heat_kw"] - s["heat_loss_kw"]

    assert abs(mean([net_kw(s) for s in steady])) < 1.0
    assert mean([s["heat_delivered_kw"] for s in steady]) > 20


def test_level_setpoint_step_response() -> None:
    """level_sp 1.5 → 2.0 m: the level rises at once, is within 2 cm of 2.0 m within
    five minutes, and stays there without overshooting by more than 2 cm."""
    gw = Gateway(Plant(seed=1))
    gw.run(10)
    assert gw.plant.write("level_sp", 2.0) == WriteOutcome(True, "ok")
    gw.run(30)
    assert gw.plant.truth()["tank_level"] > 1.55
    taken = gw.run_until(lambda: abs(gw.plant.truth()["tank_level"] - 2.0) < 0.02, limit_s=300)
    assert taken < 300
    gw.run(120, record=True)
    assert all(abs(s["tank_level"] - 2.0) < 0.02 for s in gw.history)
    assert abs(value(gw.plant, "tank_level") - 2.0) < 0.02


def test_actuator_lags_and_instrument_quantisation() -> None:
    """The valve follows valve_cmd with a lag of seconds, not at once; readings are
    quantised (level to 1 mm, temperatures to 0.1 K)."""
    gw = Gateway(Plant(seed=2))
    gw.plant.write("valve_cmd", 70.0)
    gw.run(1)
    assert 50 < gw.plant.truth()["valve_position"] < 60
    gw.run(15)
    assert gw.plant.truth()["valve_position"] == pytest.approx(70, abs=0.2)
    r = gw.plant.read()
    assert r["tank_level"].value * 1000 == pytest.approx(round(r["tank_level"].value * 1000))
    assert r["tank_temp"].value * 10 == pytest.approx(round(r["tank_temp"].value * 10))


# --------------------------------------------------------------------------- faults


def test_impeller_wear_lowers_flow_at_speed_and_raises_speed() -> None:
    """A worn impeller delivers less flow and pressure at the same speed; the level loop
    then runs the pump faster, and vibration rises."""
    gw = Gateway(Plant(seed=3))
    gw.run(10)
    before = gw.plant.truth()
    gw.plant.inject_fault("impeller_wear", 1.0)
    gw.plant.step(0.05)  # one tick: the same speed, the worn curve
    now = gw.plant.truth()
    assert now["pump_speed"] == pytest.approx(before["pump_speed"], rel=0.01)
    assert now["pump_flow"] < before["pump_flow"] - 1.5
    assert now["discharge_pressure"] < before["discharge_pressure"] - 0.1
    gw.run(120)
    after = gw.plant.read()
    assert after["pump_speed"].value > before["pump_speed"] + 200
    assert after["vibration_rms"].value > before["vibration_rms"] + 1
    assert abs(after["tank_level"].value - 1.5) < 0.03


def test_bearing_degradation_raises_vibration_and_bearing_temp() -> None:
    """A degraded bearing vibrates more at once and runs hotter within tens of seconds."""
    gw = Gateway(Plant(seed=4))
    gw.run(10)
    before = gw.plant.read()
    gw.plant.inject_fault("bearing_degradation", 0.3)
    gw.run(60)
    after = gw.plant.read()
    assert after["vibration_rms"].value > before["vibration_rms"].value + 1.0
    assert after["bearing_temp"].value > before["bearing_temp"].value + 10
    assert after["trip_word"].value == 0


def test_valve_stiction_makes_the_valve_stick() -> None:
    """With stiction the stem ignores a valve_cmd step smaller than the stick band and
    lags a larger one; a healthy valve follows both."""

    def positions(fault: bool) -> tuple[float, float]:
        gw = Gateway(Plant(seed=5))
        if fault:
            gw.plant.inject_fault("valve_stiction", 1.0)
        gw.run(5)
        gw.plant.write("valve_cmd", 55.0)
        gw.run(20)
        small = value(gw.plant, "valve_position")
        gw.plant.write("valve_cmd", 75.0)
        gw.run(20)
        return small, value(gw.plant, "valve_position")

    healthy_small, healthy_big = positions(False)
    stuck_small, stuck_big = positions(True)
    assert healthy_small == pytest.approx(55, abs=0.5)
    assert healthy_big == pytest.approx(75, abs=0.5)
    assert stuck_small == pytest.approx(50, abs=0.5)
    assert stuck_big < 72


def test_level_sensor_drift_departs_from_truth() -> None:
    """A drifting level transmitter reads high and keeps growing; the loop holds the
    reading at the setpoint, so the true level sinks below it."""
    gw = Gateway(Plant(seed=6))
    gw.plant.inject_fault("level_sensor_drift", 1.0)
    gw.run(120)
    read, true = value(gw.plant, "tank_level"), gw.plant.truth()["tank_level"]
    assert read - true > 0.04
    assert abs(read - 1.5) < 0.02
    assert true < 1.47


def test_sensor_freeze_holds_readings_while_truth_moves() -> None:
    """Frozen measurements keep the value they had at injection (still 'good') while the
    process moves; status points and setpoint read-backs keep updating."""
    gw = Gateway(Plant(seed=8))
    gw.run(5)
    frozen = gw.plant.read()
    gw.plant.inject_fault("sensor_freeze", 1.0)
    assert gw.plant.write("valve_cmd", 80.0).accepted
    gw.run(30)
    now = gw.plant.read()
    assert all(now[m] == frozen[m] for m in MEASUREMENTS)
    assert gw.plant.truth()["outlet_flow"] > frozen["outlet_flow"].value + 5
    assert now["valve_cmd"].value == 80.0
    assert now["heartbeat"].value != frozen["heartbeat"].value


def test_leak_raises_pump_speed_with_true_leak_flow() -> None:
    """A leak drains unmetered flow (truth q_leak > 0); the level loop answers with more
    pump speed and pump flow than the outlet flow."""
    gw = Gateway(Plant(seed=9))
    gw.run(10)
    before = gw.plant.read()
    gw.plant.inject_fault("leak", 0.3)
    gw.run(120)
    after, truth = gw.plant.read(), gw.plant.truth()
    assert truth["q_leak_m3h"] > 2
    assert after["pump_speed"].value > before["pump_speed"].value + 200
    assert after["pump_flow"].value - after["outlet_flow"].value > 2


def test_heater_degradation_raises_heater_power() -> None:
    """A degraded heater delivers less heat per kW; the temperature loop draws more
    electrical power to hold the setpoint."""
    gw = Gateway(Plant(seed=10))
    gw.run(10)
    before = gw.plant.read()["heater_power"].value
    gw.plant.inject_fault("heater_degradation", 0.5)
    gw.run(300)
    assert value(gw.plant, "heater_power") > before + 8
    truth = gw.plant.truth()
    assert truth["heat_delivered_kw"] == pytest.approx(0.75 * truth["heater_power"], rel=1e-9)


def test_sensor_loss_marks_tank_temp_bad_and_fails_safe() -> None:
    """A failed temperature sensor reads not-good with a reason; the PLC, blind to the
    temperature, turns the heater off."""
    gw = Gateway(Plant(seed=11))
    gw.plant.inject_fault("sensor_loss", 1.0)
    gw.run(1)
    reading = gw.plant.read()["tank_temp"]
    assert reading == Reading(POINTS["tank_temp"].low, False, "sensor failure")
    gw.run(40)
    assert gw.plant.truth()["heater_power"] == pytest.approx(0, abs=0.1)
    assert all(r.good for n, r in gw.plant.read().items() if n != "tank_temp")


def test_write_ignore_acknowledges_but_does_not_apply() -> None:
    """Under write_ignore a setpoint write is reported accepted but the read-back and the
    loop keep the old value; heartbeat writes still count."""
    gw = Gateway(Plant(seed=12))
    gw.plant.inject_fault("write_ignore", 1.0)
    assert gw.plant.write("level_sp", 2.0) == WriteOutcome(True, "ok")
    gw.run(1)
    assert value(gw.plant, "level_sp") == 1.5
    assert gw.plant.truth()["level_sp_active"] == 1.5
    gw.run(30)
    assert value(gw.plant, "remote_mode") == 1.0


def test_clear_faults_restores_the_plant() -> None:
    """clear_faults removes every fault: readings are live and good again, the level
    transmitter is recalibrated, writes apply and the valve moves freely."""
    gw = Gateway(Plant(seed=13))
    for name in ("level_sensor_drift", "sensor_freeze", "sensor_loss", "write_ignore"):
        gw.plant.inject_fault(name, 1.0)
    gw.plant.inject_fault("valve_stiction", 1.0)
    gw.run(60)
    assert gw.plant.active_faults == dict.fromkeys(
        ("level_sensor_drift", "sensor_freeze", "sensor_loss", "write_ignore", "valve_stiction"),
        1.0,
    )
    gw.plant.clear_faults()
    assert gw.plant.active_faults == {}
    assert gw.plant.write("valve_cmd", 55.0) == WriteOutcome(True, "ok")
    gw.run(20)
    r, t = gw.plant.read(), gw.plant.truth()
    assert all(x.good for x in r.values())
    assert t["level_sensor_offset_m"] == 0.0
    assert abs(r["tank_level"].value - t["tank_level"]) < 0.01
    assert r["valve_cmd"].value == 55.0
    assert r["valve_position"].value == pytest.approx(55, abs=0.5)


def test_inject_fault_severity_zero_removes_and_severity_updates() -> None:
    """Injecting again changes the severity; severity 0 removes the fault."""
    plant = Plant()
    plant.inject_fault("leak", 0.5)
    plant.inject_fault("leak", 0.2)
    assert plant.active_faults == {"leak": 0.2}
    plant.inject_fault("leak", 0.0)
    assert plant.active_faults == {}


@pytest.mark.parametrize(
    ("name", "severity", "match"),
    [
        ("no_such_fault", 0.5, "unknown fault"),
        ("server_restart", 0.5, "protocol"),
        ("modbus_silent", 1.0, "protocol"),
        ("leak", -0.1, "severity"),
        ("leak", 1.01, "severity"),
        ("leak", math.nan, "severity"),
    ],
)
def test_inject_fault_refuses_bad_requests(name: str, severity: float, match: str) -> None:
    """inject_fault raises ValueError for an unknown or protocol-layer fault and for a
    severity outside [0, 1]; nothing is injected."""
    plant = Plant()
    with pytest.raises(ValueError, match=match):
        plant.inject_fault(name, severity)
    assert plant.active_faults == {}


# --------------------------------------------------------------------------- trips


def test_draining_trips_the_heater_on_low_level() -> None:
    """A full leak with the valve wide open drains the tank past the pump's capacity;
    below 0.3 m the heater trips (bit0) and its power goes to zero."""
    gw = Gateway(Plant(seed=14))
    gw.plant.inject_fault("leak", 1.0)
    gw.plant.write("valve_cmd", 100.0)
    gw.run_until(
        lambda: int(value(gw.plant, "trip_word")) & TRIP_HEATER_LOW_LEVEL != 0, limit_s=600
    )
    assert gw.plant.truth()["tank_level"] < 0.3
    gw.run(2)
    assert gw.plant.truth()["heater_power"] == 0.0
    assert value(gw.plant, "heater_power") < 0.5


def test_bearing_degradation_trips_the_pump() -> None:
    """A fully degraded bearing overheats past 90 degC: the pump trips (bit2) and stops;
    the trip clears by itself once the bearing has cooled below 75 degC."""
    gw = Gateway(Plant(seed=15))
    gw.plant.inject_fault("bearing_degradation", 1.0)
    taken = gw.run_until(
        lambda: int(value(gw.plant, "trip_word")) & TRIP_PUMP_BEARING_TEMP != 0, limit_s=120
    )
    assert taken > 10
    gw.run(5)
    assert gw.plant.truth()["pump_speed"] < 1000
    gw.run_until(
        lambda: int(value(gw.plant, "trip_word")) & TRIP_PUMP_BEARING_TEMP == 0, limit_s=120
    )
    assert gw.plant.truth()["bearing_temp"] < BEARING_CLEAR_C + 0.5


def _scan(plc: PLC, now: float, **overrides: float) -> int:
    inputs = {
        "level_pv": 1.5,
        "temp_pv": 45.0,
        "safety_level": 1.5,
        "safety_temp": 45.0,
        "bearing_temp": 50.0,
        "pump_speed_pct": 55.0,
        "pump_flow": 10.0,
    } | overrides
    plc.scan(now, **inputs)
    return plc.trip_word


@pytest.mark.parametrize(
    ("bit", "signal", "sequence"),
    [
        # (value, expected bit state) in scan order: trip, hold in the band, clear.
        (TRIP_HEATER_LOW_LEVEL, "safety_level", [(1.5, 0), (0.29, 1), (0.45, 1), (0.51, 0)]),
        (TRIP_HEATER_OVER_TEMP, "safety_temp", [(90, 0), (95.5, 1), (86, 1), (84.9, 0)]),
        (TRIP_PUMP_BEARING_TEMP, "bearing_temp", [(85, 0), (90.5, 1), (76, 1), (74.9, 0)]),
    ],
)
def test_trips_latch_with_hysteresis(
    bit: int, signal: str, sequence: list[tuple[float, int]]
) -> None:
    """Each trip sets above/below its threshold, holds inside the hysteresis band and
    clears only past the clear threshold; the tripped actuator is disabled meanwhile."""
    plc = PLC()
    for i, (x, expected) in enumerate(sequence):
        word = _scan(plc, i * PLC.SCAN_S, **{signal: x})
        assert bool(word & bit) == bool(expected), (signal, x)
        if bit in (TRIP_HEATER_LOW_LEVEL, TRIP_HEATER_OVER_TEMP):
            assert plc.demand.heater_enabled == (not expected)
        else:
            assert plc.demand.pump_enabled == (not expected)


def test_dry_run_trip_after_delay_and_reset_after_30_s() -> None:
    """Speed above 30 % with no flow trips the pump after 5 s (not before); the trip
    clears 30 s later."""
    plc = PLC()
    t = 0.0
    for _ in range(49):  # 4.9 s
        assert _scan(plc, t, pump_flow=0.0) & TRIP_PUMP_DRY_RUN == 0
        t += PLC.SCAN_S
    assert _scan(plc, t, pump_flow=0.0) & TRIP_PUMP_DRY_RUN
    tripped_at = t
    assert not plc.demand.pump_enabled
    while t < tripped_at + DRY_RUN_RESET_S - 0.5:
        t += PLC.SCAN_S
        assert _scan(plc, t, pump_speed_pct=0.0, pump_flow=0.0) & TRIP_PUMP_DRY_RUN
    t = tripped_at + DRY_RUN_RESET_S
    assert _scan(plc, t, pump_speed_pct=0.0, pump_flow=0.0) & TRIP_PUMP_DRY_RUN == 0


# --------------------------------------------------------------------------- modes


def test_heartbeat_watchdog_drops_and_restores_remote_mode() -> None:
    """With no heartbeat change for longer than watchdog_s the PLC drops to local mode,
    the loops follow the local setpoints and setpoint writes are refused; a new
    heartbeat value restores remote mode and the remote setpoints."""
    gw = Gateway(Plant(seed=16, watchdog_s=10.0))
    gw.run(20)
    assert value(gw.plant, "remote_mode") == 1.0
    gw.heartbeat = False
    gw.run(8)  # the last change was 1 s before the loop stopped: 9 s ago now
    assert value(gw.plant, "remote_mode") == 1.0
    gw.plant.write("heartbeat", gw.beat)  # the same value again is not a heartbeat
    gw.run(2)
    assert value(gw.plant, "remote_mode") == 0.0
    assert gw.plant.write("level_sp", 2.0) == WriteOutcome(False, "local mode")
    assert gw.plant.write("heartbeat", gw.beat).accepted
    gw.run(240)
    truth = gw.plant.truth()
    assert truth["level_sp_active"] == LOCAL_DEFAULTS["level_sp"]
    assert truth["valve_cmd_active"] == LOCAL_DEFAULTS["valve_cmd"]
    assert abs(truth["tank_level"] - LOCAL_DEFAULTS["level_sp"]) < 0.03
    assert truth["valve_position"] == pytest.approx(LOCAL_DEFAULTS["valve_cmd"], abs=0.5)
    assert value(gw.plant, "level_sp") == REMOTE_DEFAULTS["level_sp"]  # remote SP kept

    gw.heartbeat = True
    gw.run(1)
    assert value(gw.plant, "remote_mode") == 1.0
    assert gw.plant.truth()["level_sp_active"] == REMOTE_DEFAULTS["level_sp"]


def test_heartbeat_grace_after_start() -> None:
    """Before any heartbeat write the PLC stays in remote mode for watchdog_s, then drops."""
    plant = Plant(watchdog_s=5.0)
    plant.step(4.9)
    assert value(plant, "remote_mode") == 1.0
    plant.step(0.2)
    assert value(plant, "remote_mode") == 0.0


def test_remote_enable_switch_forces_local_mode() -> None:
    """The operator's remote-enable switch off forces local mode despite a healthy
    heartbeat; setpoint writes are refused but heartbeats still accepted."""
    gw = Gateway(Plant(seed=17))
    gw.plant.set_remote_enabled(False)
    gw.run(1)
    assert value(gw.plant, "remote_mode") == 0.0
    assert gw.plant.write("temp_sp", 44.0) == WriteOutcome(False, "local mode")
    gw.plant.set_remote_enabled(True)
    gw.run(1)
    assert value(gw.plant, "remote_mode") == 1.0
    assert gw.plant.write("temp_sp", 44.0) == WriteOutcome(True, "ok")


def test_custom_local_setpoints_and_validation() -> None:
    """Local setpoints can be configured; unknown names and values outside the PLC's
    limits are refused at construction."""
    plant = Plant(local_setpoints={"temp_sp": 46.0})
    plant.set_remote_enabled(False)
    plant.step(0.1)
    assert plant.truth()["temp_sp_active"] == 46.0
    assert plant.truth()["level_sp_active"] == LOCAL_DEFAULTS["level_sp"]
    with pytest.raises(ValueError, match="unknown setpoint"):
        Plant(local_setpoints={"flow_sp": 1.0})
    with pytest.raises(ValueError, match="outside"):
        Plant(local_setpoints={"level_sp": 2.9})
    with pytest.raises(ValueError, match="watchdog"):
        Plant(watchdog_s=0.0)


def test_restart_plc_resets_setpoints_integrators_and_grace() -> None:
    """A PLC restart puts the remote setpoints back to the local values, zeroes the loop
    integrators (the pump command drops) and restarts the heartbeat grace."""
    gw = Gateway(Plant(seed=18, watchdog_s=10.0))
    gw.run(5)
    gw.plant.write("level_sp", 1.6)
    gw.run(5)
    pump_before = gw.plant.truth()["pump_cmd_pct"]
    gw.heartbeat = False
    gw.run(8)
    gw.plant.restart_plc()
    gw.plant.step(0.1)
    read = gw.plant.read()
    assert {n: read[n].value for n in SETPOINTS} == dict(LOCAL_DEFAULTS)
    assert read["heartbeat"].value == 0
    assert gw.plant.truth()["pump_cmd_pct"] < pump_before - 20
    gw.run(8)  # 16 s without a heartbeat change, but only 8 s since the restart
    assert value(gw.plant, "remote_mode") == 1.0
    gw.run(3)
    assert value(gw.plant, "remote_mode") == 0.0


# --------------------------------------------------------------------------- writes


@pytest.mark.parametrize(
    ("point", "val", "expected"),
    [
        ("level_sp", 2.0, (True, "ok")),
        ("level_sp", 0.2, (True, "ok")),
        ("level_sp", 2.8, (True, "ok")),
        ("level_sp", 0.19, (False, "out of range")),
        ("level_sp", 2.81, (False, "out of range")),
        ("temp_sp", 50.0, (True, "ok")),
        ("temp_sp", 95.0, (False, "out of range")),
        ("temp_sp", 9.9, (False, "out of range")),
        ("valve_cmd", 0.0, (True, "ok")),
        ("valve_cmd", 100.0, (True, "ok")),
        ("valve_cmd", -0.1, (False, "out of range")),
        ("valve_cmd", math.nan, (False, "not finite")),
        ("valve_cmd", math.inf, (False, "not finite")),
        ("temp_sp", -math.inf, (False, "not finite")),
        ("heartbeat", 0.0, (True, "ok")),
        ("heartbeat", 65535.0, (True, "ok")),
        ("heartbeat", 65536.0, (False, "out of range")),
        ("heartbeat", -1.0, (False, "out of range")),
        ("heartbeat", 1.5, (False, "not an integer")),
        ("heartbeat", math.nan, (False, "not finite")),
        ("tank_level", 1.0, (False, "read-only")),
        ("remote_mode", 1.0, (False, "read-only")),
        ("trip_word", 0.0, (False, "read-only")),
        ("pump_speed", 1000.0, (False, "read-only")),
        ("no_such_point", 1.0, (False, "unknown point")),
    ],
)
def test_write_acceptance(point: str, val: float, expected: tuple[bool, str]) -> None:
    """The PLC accepts a write only to a known writable point with a finite value inside
    its acceptance limits (heartbeat: an integer 0..65535); an accepted setpoint reads back."""
    plant = Plant()
    before = plant.read()
    outcome = plant.write(point, val)
    assert outcome == WriteOutcome(*expected)
    after = plant.read()
    if point in POINTS and POINTS[point].writable:
        assert after[point].value == (val if outcome.accepted else before[point].value)


def test_write_outcome_is_the_plc_type() -> None:
    """plant.WriteOutcome is the PLC's type (one class, re-exported)."""
    assert WriteOutcome is PlcWriteOutcome


@settings(max_examples=200, deadline=None)
@given(
    point=st.sampled_from(SETPOINTS),
    val=st.floats(allow_nan=True, allow_infinity=True, width=64),
    remote=st.booleans(),
)
def test_setpoint_write_property(point: str, val: float, remote: bool) -> None:
    """For any float, a setpoint write is accepted iff it is finite, within the point's
    limits and the PLC is in remote mode; the setpoint never leaves its limits."""
    plc = PLC()
    plc.remote_enabled = remote
    outcome = plc.write(point, val, now=0.0)
    spec = POINTS[point]
    assert outcome.accepted == (math.isfinite(val) and spec.low <= val <= spec.high and remote)
    assert spec.low <= plc.remote_setpoints[point] <= spec.high


# --------------------------------------------------------------------------- determinism


def _script(seed: int, chunk: float = 1.0) -> tuple[dict[str, Reading], dict[str, float]]:
    plant = Plant(seed=seed)
    for i in range(40):
        if i == 5:
            plant.write("valve_cmd", 60.0)
            plant.inject_fault("bearing_degradation", 0.5)
        for _ in range(round(1.0 / chunk)):
            plant.step(chunk)
    return plant.read(), plant.truth()


def test_same_seed_same_run_other_seed_differs() -> None:
    """Two plants with the same seed and the same inputs give identical readings and
    truth; another seed gives different noise."""
    assert _script(3) == _script(3)
    assert _script(3)[0] != _script(4)[0]


def test_result_does_not_depend_on_step_chunking() -> None:
    """Stepping 1 s at a time or 0.1 s / 0.25 s at a time gives the same trajectory."""
    reference = _script(5, 1.0)
    assert _script(5, 0.1) == reference
    assert _script(5, 0.25) == reference


def test_time_and_step_validation() -> None:
    """time is the sum of the steps (sub-tick remainders included); bad dt is refused."""
    plant = Plant()
    plant.step(0.03)
    plant.step(0.03)
    assert plant.time == pytest.approx(0.06)
    plant.step(1.0)
    assert plant.time == pytest.approx(1.06)
    for bad in (-0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="dt"):
            plant.step(bad)
