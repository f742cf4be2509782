"""A second process model plugs in through the registry alone: a first-order tank,
defined here, is selected by ``config.twin.model``, built, simulated and checked against
its exact solution, with no change to the integrator or the config code."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.twin.build import build_twin
from gateway.twin.model import (
    MODELS,
    F64Array,
    Output,
    Parameter,
    TwinModel,
    Variable,
    model_function,
)

TANK_AREA_M2 = 2.0
SKID = Path(__file__).resolve().parents[2] / "config" / "skid.toml"


@model_function
def tank_rhs(x: F64Array, u: F64Array, p: F64Array, dxdt: F64Array) -> None:
    """A·dh/dt = (Q_in − k·h)/3600: linear outlet, flows in m³/h."""
    dxdt[0] = (u[0] - p[0] * x[0]) / (3600.0 * TANK_AREA_M2)


@model_function
def tank_outputs(x: F64Array, u: F64Array, p: F64Array, y: F64Array) -> None:
    y[0] = x[0]
    y[1] = p[0] * x[0]


def tank_model() -> TwinModel:
    """First-order tank: level state, inflow input, outlet coefficient parameter."""
    return TwinModel(
        name="tank",
        description="A tank with a linear outlet.",
        states=(Variable("level", "m", 1.0, "Level."),),
        inputs=(Variable("inflow", "m3/h", 10.0, "Inflow."),),
        parameters=(Parameter("outlet_k", "m3/h/m", 8.0, 0.5, "Outflow per m of level."),),
        outputs=(Output("tank_level", "m", "Level."), Output("outlet_flow", "m3/h", "Outflow.")),
        rhs=tank_rhs,
        output_fn=tank_outputs,
    )


TANK_TWIN = """
[twin]
model = "tank"
dt_s = 2.0
horizon_s = 3600.0
lookahead_s = [60.0]

[twin.inputs]
inflow = "pump_flow"

[twin.outputs]
tank_level = "tank_level"
outlet_flow = "outlet_flow"

[twin.parameters.outlet_k]
nominal = 8.0
std = 0.5
"""


def test_a_registered_second_model_is_built_from_config_and_simulated_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Registering a factory under a name is all it takes: build_twin selects it from the
    config, and the generic integrator reproduces the tank's exact exponential response
    (h → Q/k with time constant 3600·A/k) for several parameter samples."""
    monkeypatch.setitem(MODELS, "tank", tank_model)
    text = SKID.read_text(encoding="utf-8").split("\n[twin]\n")[0] + TANK_TWIN
    cfg = parse_config(text, "config/tank.toml")
    assert cfg.twin is not None
    model, sim = build_twin(cfg.twin, source="config/tank.toml", signals=cfg.signal)
    assert model.name == "tank"

    ks = np.array([[7.0], [8.0], [9.0]])
    inflows = np.array([[[10.0]], [[12.0]]])
    traj = sim.simulate([1.0], inflows, ks, record_every=30)
    t = traj.times_s
    for i, q in enumerate((10.0, 12.0)):
        for j, k in enumerate(ks[:, 0]):
            exact = q / k + (1.0 - q / k) * np.exp(-k * t / (3600.0 * TANK_AREA_M2))
            np.testing.assert_allclose(traj.output("tank_level")[i, j], exact, rtol=1e-9)
    final = traj.output("outlet_flow")[:, :, -1]
    assert final[1, 0] == pytest.approx(12.0 - 5.0 * math.exp(-7.0 / 2.0), rel=1e-6)


def test_the_second_models_names_are_checked_like_the_skids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The name checks come from the model's declarations, whichever model it is."""
    monkeypatch.setitem(MODELS, "tank", tank_model)
    text = SKID.read_text(encoding="utf-8").split("\n[twin]\n")[0] + TANK_TWIN
    text = text.replace('inflow = "pump_flow"', 'level_sp = "level_sp"')
    cfg = parse_config(text, "config/tank.toml")
    assert cfg.twin is not None
    with pytest.raises(
        ConfigError, match="the model 'tank' has no input 'level_sp'; it has: inflow"
    ):
        build_twin(cfg.twin, source="config/tank.toml")
