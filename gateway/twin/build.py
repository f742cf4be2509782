"""From the config's ``[twin]`` section to a model and a simulator, or a ConfigError.

The config loader checks the twin's wiring against the configured signals; only here,
where the model is known, can the names be checked against what the model declares. All
problems are reported together, each naming the file and the key, like the loader's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gateway.config.schema import TwinSection
from gateway.errors import ConfigError
from gateway.twin.integrate import Simulator
from gateway.twin.model import MODELS, TwinModel


class _HasUnit(Protocol):
    @property
    def unit(self) -> str: ...


def build_twin(
    twin: TwinSection,
    *,
    source: str = "config",
    signals: Mapping[str, _HasUnit] | None = None,
) -> tuple[TwinModel, Simulator]:
    """Build the configured model (with the config's parameter overrides) and its simulator.

    Args:
        twin: The validated ``[twin]`` section (``cfg.twin``).
        source: The config file's name, used at the start of every message.
        signals: The configured signals (``cfg.signal``); when given, each mapped input or
            output must carry the model's unit for it.

    Returns:
        ``(model, simulator)``; the simulator uses ``twin.dt_s``, ``twin.horizon_s`` and
        ``twin.parallel``. Building the model compiles its functions (or loads them from
        numba's cache), so call this off the event loop.

    Raises:
        ConfigError: Unknown model, or names or units that do not match the model, or a
            horizon or look-ahead that is not a whole number of steps; every problem listed.
    """
    factory = MODELS.get(twin.model)
    if factory is None:
        raise ConfigError(
            [
                f"{source}: twin.model: unknown model {twin.model!r}; "
                f"available: {', '.join(sorted(MODELS))}"
            ]
        )
    model = factory()
    problems: list[str] = []

    declared = {
        "inputs": ("input", {v.name: v.unit for v in model.inputs}),
        "outputs": ("output", {o.name: o.unit for o in model.outputs}),
    }
    for table, mapping in (("inputs", twin.inputs), ("outputs", twin.outputs)):
        kind, units = declared[table]
        for name, signal in mapping.items():
            key = f"{source}: twin.{table}.{name}"
            if name not in units:
                problems.append(
                    f"{key}: the model {model.name!r} has no {kind} {name!r}; "
                    f"it has: {', '.join(units)}"
                )
            elif signals is not None and signal in signals:
                have = signals[signal].unit
                if have != units[name]:
                    problems.append(
                        f"{key}: the model's {kind} is in {units[name]!r} but signal "
                        f"{signal!r} is in {have!r}; map a signal in {units[name]!r}"
                    )

    for name in twin.parameters:
        if name not in model.parameter_names:
            problems.append(
                f"{source}: twin.parameters.{name}: the model {model.name!r} has no parameter "
                f"{name!r}; it has: {', '.join(model.parameter_names)}"
            )

    for key, seconds in [("twin.horizon_s", twin.horizon_s)] + [
        (f"twin.lookahead_s[{i}]", s) for i, s in enumerate(twin.lookahead_s)
    ]:
        steps = round(seconds / twin.dt_s)
        if steps < 1 or abs(steps * twin.dt_s - seconds) > 1e-9 * max(1.0, seconds):
            problems.append(
                f"{source}: {key}: {seconds:g} s is not a whole number of twin.dt_s = "
                f"{twin.dt_s:g} s steps"
            )
    if twin.lookahead_s and max(twin.lookahead_s) > twin.horizon_s:
        problems.append(
            f"{source}: twin.lookahead_s: {max(twin.lookahead_s):g} s looks beyond "
            f"twin.horizon_s = {twin.horizon_s:g} s"
        )
    if problems:
        raise ConfigError(problems)

    overrides = {name: (p.nominal, p.std) for name, p in twin.parameters.items()}
    if overrides:
        model = model.with_parameters(overrides)
    simulator = Simulator(model, dt_s=twin.dt_s, horizon_s=twin.horizon_s, parallel=twin.parallel)
    return model, simulator
