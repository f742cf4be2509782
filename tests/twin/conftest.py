"""Shared twin fixtures: the skid model and a simulator for it (compiled once per session)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.twin.integrate import Simulator
from gateway.twin.model import TwinModel
from gateway.twin.skid import skid_model


@pytest.fixture(scope="session")
def skid() -> TwinModel:
    """The skid's reduced-order model."""
    return skid_model()


@pytest.fixture(scope="session")
def skid_sim(skid: TwinModel) -> Simulator:
    """A serial simulator for the skid, 0.5 s steps, kernels already compiled."""
    sim = Simulator(skid, dt_s=0.5, horizon_s=600.0)
    sim.warm_up()
    return sim


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, so parameter samples are the same on every run."""
    return np.random.default_rng(20240601)
