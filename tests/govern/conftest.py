"""Gate fixtures: the skid config at a chosen autonomy, a live table read off the
reference plant at its steady state, and a twin view over the real compiled skid model."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pytest

from gateway.config.schema import GatewayConfig
from gateway.govern.gate import PlantView, TwinView
from gateway.govern.twin_view import view_from_start
from gateway.plantsim.plant import Plant
from gateway.signals import Quality, SignalValue
from gateway.twin.integrate import Simulator
from gateway.twin.model import TwinModel
from gateway.twin.skid import skid_model
from gateway.twin.whatif import nominal_start
from tests.support import skid_config

NOW = 1_800_000_000.0


def config(autonomy: str = "L3", edits: tuple[tuple[str, str], ...] = ()) -> GatewayConfig:
    return skid_config(4840, 5020, edits=(('autonomy = "L0"', f'autonomy = "{autonomy}"'), *edits))


@pytest.fixture(scope="session")
def plant_table() -> dict[str, SignalValue]:
    """Every plant point as a good, fresh signal (the plant after 60 s at steady state)."""
    plant = Plant(seed=3)
    for k in range(60):
        plant.step(1.0)
        plant.write("heartbeat", k + 1)
    return {
        name: SignalValue(name, r.value, "", NOW, NOW, NOW, Quality.GOOD)
        for name, r in plant.read().items()
    }


@pytest.fixture(scope="session")
def model() -> TwinModel:
    return skid_model()


@pytest.fixture(scope="session")
def simulator(model: TwinModel) -> Simulator:
    sim = Simulator(model, dt_s=0.5, horizon_s=600.0)
    sim.warm_up()
    return sim


TwinFactory = Callable[..., TwinView]


@pytest.fixture
def twin(model: TwinModel, simulator: Simulator) -> TwinFactory:
    """A twin view from the nominal steady state with the given fidelity."""

    def make(
        cfg: GatewayConfig,
        *,
        fidelity: float | None = 0.95,
        tracking: bool = True,
        members: int = 8,
    ) -> TwinView:
        start = nominal_start(model)
        return view_from_start(
            cfg,
            model,
            simulator,
            start,
            fidelity=fidelity,
            tracking=tracking,
            rng=np.random.default_rng(7),
            members=members,
        )

    return make


def view(
    cfg: GatewayConfig,
    table: Mapping[str, SignalValue],
    twin: TwinView | None,
    *,
    overrides: Mapping[str, float] | None = None,
    qualities: Mapping[str, Quality] | None = None,
    autonomy: str | None = None,
    last_writes: Mapping[str, float] | None = None,
) -> PlantView:
    signals = dict(table)
    for name, value in (overrides or {}).items():
        old = signals[name]
        signals[name] = SignalValue(name, value, old.unit, NOW, NOW, NOW, Quality.GOOD)
    for name, quality in (qualities or {}).items():
        old = signals[name]
        signals[name] = SignalValue(name, old.value, old.unit, NOW, NOW, NOW, quality, "test")
    return PlantView(
        now=NOW,
        signals=signals,
        autonomy=autonomy or cfg.gateway.autonomy,
        last_writes=dict(last_writes or {}),
        twin=twin,
    )
