"""Drive the twin from the reference plant without a network: the plant stepped once a
second, its readings turned into the live table's SignalValues, as acquisition would.

The plant (``gateway.plantsim``) is a separate, richer implementation than the twin:
noise, drift, pump heat, UA growing with level, back-pressure drift. Nothing here tells
the twin the plant's true parameters.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from gateway.plantsim.plant import Plant
from gateway.signals import Quality, SignalValue
from gateway.twin.model import F64Array, TwinModel

Action = Callable[[Plant, float], None]


@dataclass
class Operator:
    """Moves the valve every few minutes and the level setpoint now and then, seeded."""

    seed: int
    valve_every_s: float = 240.0
    level_every_s: float = 1500.0
    rng: random.Random = field(init=False)
    valve: float = 50.0

    def __post_init__(self) -> None:
        self.rng = random.Random(f"twin-test-operator-{self.seed}")

    def __call__(self, plant: Plant, t: float) -> None:
        if t > 0 and self.rng.random() < 1.0 / self.valve_every_s:
            self.valve = min(70.0, max(30.0, self.valve + self.rng.uniform(-8, 8)))
            plant.write("valve_cmd", round(self.valve, 1))
        if t > 0 and self.rng.random() < 1.0 / self.level_every_s:
            plant.write("level_sp", round(self.rng.uniform(1.2, 1.8), 2))


def snapshot(plant: Plant, now: float) -> dict[str, SignalValue]:
    """The plant's readings as the live table would hold them (signal name = point name)."""
    out = {}
    for name, reading in plant.read().items():
        quality = Quality.GOOD if reading.good else Quality.BAD
        out[name] = SignalValue(name, reading.value, "", now, now, now, quality)
    return out


def run_plant(
    seconds: int,
    *,
    seed: int = 11,
    actions: dict[int, Action] | None = None,
    operator: Action | None = None,
    start: Plant | None = None,
) -> Iterator[tuple[float, Plant, dict[str, SignalValue]]]:
    """Step the plant a second at a time, writing its heartbeat; yield ``(t, plant, table)``.

    ``actions[k]`` runs before step ``k`` (fault injections, setpoint writes).
    """
    plant = start or Plant(seed=seed)
    t0 = plant.time
    for k in range(seconds):
        if operator is not None:
            operator(plant, float(k))
        if actions and k in actions:
            actions[k](plant, float(k))
        plant.step(1.0)
        plant.write("heartbeat", int(t0 + k + 1) % 65536)
        t = t0 + k + 1.0
        yield t, plant, snapshot(plant, t)


def vectors(model: TwinModel, table: dict[str, SignalValue]) -> tuple[F64Array, dict[str, float]]:
    """(inputs, measured outputs) by the model's own names (they equal the plant's)."""
    u = np.array([table[name].value for name in model.input_names])
    measured = {n: table[n].value for n in model.output_names if n in table and table[n].usable}
    return u, measured
