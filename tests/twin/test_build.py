"""build_twin: the shipped [twin] section builds the skid's model and simulator, and every
name, unit or step that does not fit the model is refused with a message naming the file,
the key and what the model has."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewayConfig, parse_config
from gateway.errors import ConfigError
from gateway.twin.build import build_twin
from gateway.twin.skid import INPUTS, OUTPUTS, PARAMETERS

SKID = Path(__file__).resolve().parents[2] / "config" / "skid.toml"
SHOWN = "config/skid.toml"


def _config(*edits: tuple[str, str]) -> GatewayConfig:
    text = SKID.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    return parse_config(text, SHOWN)


def _problems(cfg: GatewayConfig) -> list[str]:
    assert cfg.twin is not None
    with pytest.raises(ConfigError) as err:
        build_twin(cfg.twin, source=SHOWN, signals=cfg.signal)
    return err.value.problems


def test_the_shipped_config_builds_the_skid_twin() -> None:
    """config/skid.toml's [twin] maps every model input and measured output, in matching
    units, and its parameters are the model's own nominal values and std."""
    cfg = _config()
    assert cfg.twin is not None
    model, sim = build_twin(cfg.twin, source=SHOWN, signals=cfg.signal)
    assert model.name == "skid"
    assert (sim.dt_s, sim.horizon_s, sim.parallel) == (0.5, 600.0, False)
    assert set(cfg.twin.inputs) == {v.name for v in INPUTS}
    assert set(cfg.twin.outputs) <= {o.name for o in OUTPUTS}
    assert model.parameters == PARAMETERS
    assert {name: (p.nominal, p.std) for name, p in cfg.twin.parameters.items()} == {
        p.name: (p.nominal, p.std) for p in PARAMETERS
    }


def test_configured_parameters_override_the_models() -> None:
    """A parameter's nominal and std in the config replace the model's."""
    cfg = _config(
        ("nominal = 21.3    # m3/h", "nominal = 20.0    # m3/h"), ("std = 0.5", "std = 1.0")
    )
    assert cfg.twin is not None
    model, _ = build_twin(cfg.twin)
    valve = model.parameters[model.index("parameter", "valve_cv")]
    assert (valve.nominal, valve.std) == (20.0, 1.0)
    assert model.parameter_vector()[model.index("parameter", "valve_cv")] == 20.0


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        (
            [("[twin.inputs]\n", '[twin.inputs]\nlevel_setpoint = "level_sp"\n')],
            "config/skid.toml: twin.inputs.level_setpoint: the model 'skid' has no input "
            "'level_setpoint'; it has: level_sp, temp_sp, valve_cmd, inlet_temp, ambient_temp",
        ),
        (
            [("[twin.outputs]\n", '[twin.outputs]\nlevel = "tank_level"\n')],
            "config/skid.toml: twin.outputs.level: the model 'skid' has no output 'level'; "
            "it has: tank_level, tank_temp, pump_speed, pump_flow, outlet_flow, "
            "discharge_pressure, valve_position, heater_power, motor_current, bearing_temp, "
            "vibration_rms, pump_demand, heater_demand",
        ),
        (
            [('tank_level = "tank_level"', 'tank_level = "pump_flow"')],
            "config/skid.toml: twin.outputs.tank_level: the model's output is in 'm' but "
            "signal 'pump_flow' is in 'm3/h'; map a signal in 'm'",
        ),
        (
            [("[twin.parameters.valve_cv]", "[twin.parameters.valve_kv]")],
            "config/skid.toml: twin.parameters.valve_kv: the model 'skid' has no parameter "
            "'valve_kv'; it has: pump_shutoff_head, valve_cv, heat_loss_ua, "
            "heater_efficiency, bearing_rise",
        ),
        (
            [("lookahead_s = [10.0, 60.0]", "lookahead_s = [10.25, 60.0]")],
            "config/skid.toml: twin.lookahead_s[0]: 10.25 s is not a whole number of "
            "twin.dt_s = 0.5 s steps",
        ),
        (
            [("horizon_s = 600.0", "horizon_s = 600.2")],
            "config/skid.toml: twin.horizon_s: 600.2 s is not a whole number of "
            "twin.dt_s = 0.5 s steps",
        ),
        (
            [("lookahead_s = [10.0, 60.0]", "lookahead_s = [10.0, 900.0]")],
            "config/skid.toml: twin.lookahead_s: 900 s looks beyond twin.horizon_s = 600 s",
        ),
        (
            [('model = "skid"', 'model = "boiler"')],
            "config/skid.toml: twin.model: unknown model 'boiler'; available: skid",
        ),
    ],
)
def test_names_units_and_steps_that_do_not_fit_the_model_are_refused(
    edits: list[tuple[str, str]], expected: str
) -> None:
    """Each misfit is a ConfigError whose message names the file, the key, the problem and
    what the model offers."""
    assert _problems(_config(*edits)) == [expected]


def test_every_problem_is_reported_at_once() -> None:
    """Several misfits in one file are listed together, not one per start."""
    cfg = _config(
        ("[twin.inputs]\n", '[twin.inputs]\nflow = "pump_flow"\n'),
        ("[twin.outputs]\n", '[twin.outputs]\nlevel = "tank_level"\n'),
        ("lookahead_s = [10.0, 60.0]", "lookahead_s = [10.1, 60.0]"),
    )
    problems = _problems(cfg)
    assert [p.split(":")[1].strip() for p in problems] == [
        "twin.inputs.flow",
        "twin.outputs.level",
        "twin.lookahead_s[0]",
    ]
