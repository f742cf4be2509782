"""Safety invariant 1, enforced on the source: one writer.

Only ``gateway.act`` imports the write path, and no module outside the write path (and the
simulated plant's own server side) calls a protocol write. Read from the source with
``ast`` so that a new module cannot slip past it by not being imported in a test.
"""

from __future__ import annotations

import ast
from pathlib import Path

GATEWAY = Path(__file__).resolve().parents[1] / "gateway"
WRITE_PATH = "gateway.io.write_path"
#: Method names that put a value into a PLC over asyncua or pymodbus.
PROTOCOL_WRITES = {
    "write_value",
    "write_values",
    "write_attribute",
    "write_attributes",
    "set_value",
    "write_register",
    "write_registers",
    "write_coil",
    "write_coils",
    "readwrite_registers",
    "mask_write_register",
    "call_method",
}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(GATEWAY.parent).with_suffix("").parts)


def _sources() -> list[tuple[str, ast.Module]]:
    return [(_module(p), ast.parse(p.read_text(), str(p))) for p in sorted(GATEWAY.rglob("*.py"))]


def _imports(tree: ast.Module) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_only_act_imports_the_write_path() -> None:
    """No module outside gateway.act imports gateway.io.write_path."""
    offenders = [
        name
        for name, tree in _sources()
        if not name.startswith("gateway.act")
        and name != WRITE_PATH
        and any(i == WRITE_PATH or i.startswith(WRITE_PATH + ".") for i in _imports(tree))
    ]
    assert offenders == []


def test_no_protocol_write_outside_the_write_path() -> None:
    """Protocol write calls appear only in the write path and in the simulated plant.

    The plant (gateway.plantsim) is the PLC side: its servers set their own variables and
    its control helpers call the plant's fault-injection methods. The demo is allowed to
    call methods of the simulated plant only.
    """
    allowed = {WRITE_PATH}
    offenders = []
    for name, tree in _sources():
        if name in allowed or name.startswith("gateway.plantsim"):
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in PROTOCOL_WRITES
            ):
                offenders.append(f"{name}:{node.lineno} {node.func.attr}")
    assert offenders == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The scanner is not vacuous: it flags a write call and a write-path import."""
    tree = ast.parse("from gateway.io.write_path import PointWriter\nnode.write_value(1)\n")
    assert WRITE_PATH + ".PointWriter" in _imports(tree)
    calls = [
        n.func.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    ]
    assert "write_value" in calls


def test_only_the_gate_constructs_verdicts() -> None:
    """Invariant 1's other half: a writer that takes only Verdicts is only as strict as the
    code that can make one. Only gateway.govern.gate calls ``Verdict(...)`` or touches the
    issuer token (which the Verdict checks on construction)."""
    offenders = []
    for name, tree in _sources():
        if name == "gateway.govern.gate":
            continue
        for node in ast.walk(tree):
            called = isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Name) and node.func.id == "Verdict")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "Verdict")
            )
            token = (isinstance(node, ast.Name) and node.id == "_ISSUER") or (
                isinstance(node, ast.Attribute) and node.attr == "_ISSUER"
            )
            if called or token:
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []
