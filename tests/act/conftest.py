"""The writer's tests judge verdicts made by the real gate: reuse its fixtures."""

from tests.govern.conftest import model, plant_table, simulator, twin

__all__ = ["model", "plant_table", "simulator", "twin"]
