"""Every fault the reference plant can inject is caught by some layer of the gateway, and
a test shows it within a stated time. A fault added to the plant without a detector (and
a test for it) fails here.

- process faults (all but sensor_loss and write_ignore): the ONNX anomaly model and its
  signatures, each within its stated bound (tests/detect/test_detection.py, CASES);
- the model-breaking ones among them, again: the twin divergence alert, within the fault's
  600 s (tests/twin/test_runtime.py, MODEL_BREAKING);
- sensor_loss: signal quality (the bad status), not an anomaly;
- write_ignore: the read-back after each write;
- server_restart, modbus_silent: link supervision (reconnects, request timeouts).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from gateway.plantsim.faults import FAULTS, PROCESS_FAULTS
from tests.detect.test_detection import CASES
from tests.twin.test_runtime import MODEL_BREAKING

ROOT = Path(__file__).parent

OTHER_LAYERS: dict[str, tuple[str, ...]] = {
    "sensor_loss": (
        "plantsim/test_servers.py::test_sensor_loss_marks_tank_temp_bad_until_cleared",
        "detect/test_detection.py::test_sensor_loss_is_left_to_the_quality_rules",
    ),
    "write_ignore": (
        "test_governance_live.py::test_a_write_the_plc_ignores_drops_the_gateway_to_l2",
    ),
    "server_restart": (
        "io/test_acquisition_live.py::test_opcua_server_restart_recovers_with_subscription",
    ),
    "modbus_silent": (
        "io/test_acquisition_live.py::test_silent_modbus_device_goes_stale_then_recovers",
    ),
}
"""Faults that are not process anomalies: what catches them is not a model of the
process but the data's quality, the write path's read-back or the link supervision."""

BY_ANOMALY_MODEL = {fault for fault, _severity, _within_s in CASES}
BY_TWIN = {fault for fault, _severity, _named in MODEL_BREAKING}


def test_every_plant_fault_has_a_detector_and_a_test() -> None:
    uncovered = set(FAULTS) - BY_ANOMALY_MODEL - BY_TWIN - set(OTHER_LAYERS)
    assert not uncovered, f"plant faults no test shows detected: {sorted(uncovered)}"
    assert not (BY_ANOMALY_MODEL | BY_TWIN | set(OTHER_LAYERS)) - set(FAULTS)


def test_every_process_anomaly_is_named_by_the_anomaly_model() -> None:
    """The twin's alert is a second opinion; the anomaly model must catch each process
    fault that is an anomaly of the process on its own."""
    process_anomalies = set(PROCESS_FAULTS) - set(OTHER_LAYERS)
    assert process_anomalies <= BY_ANOMALY_MODEL
    assert process_anomalies >= BY_TWIN


@pytest.mark.parametrize(
    "node", [n for nodes in OTHER_LAYERS.values() for n in nodes], ids=lambda n: n.split("::")[1]
)
def test_the_named_tests_exist(node: str) -> None:
    path, name = node.split("::")
    tree = ast.parse((ROOT / path).read_text())
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    assert name in functions, f"{name} is not a test in tests/{path}"
