"""Config loading: the shipped file is valid, and each broken file is refused with a message
that names the file, the key path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SKID = REPO / "config" / "skid.toml"

BASE = """
[gateway]
name = "t"
autonomy = "L3"

[source.plc]
protocol = "opcua"
endpoint = "opc.tcp://127.0.0.1:4840/x/"
namespace_uri = "urn:t"

[source.mb]
protocol = "modbus"
host = "127.0.0.1"
port = 5020

[signal.tank_level]
source = "plc"
address = "s=Tank.Level"
unit = "m"
range = [0.0, 3.0]
max_age_s = 5.0

[signal.level_sp]
source = "plc"
address = "s=Tank.LevelSp"
unit = "m"
range = [0.0, 3.0]
max_age_s = 30.0

[signal.hb]
source = "mb"
address = "hr:10"
type = "uint16"
unit = ""
range = [0.0, 65535.0]
max_age_s = 30.0

[signal.mb_level]
source = "mb"
address = "ir:0"
unit = "m"
range = [0.0, 3.0]
max_age_s = 5.0

[writable.level_sp]
signal = "level_sp"
limits = [0.5, 2.4]
max_step = 0.5
max_rate_up = 0.02
max_rate_down = 0.02
risk = "low"

[[interlock]]
name = "tank_low"
signal = "tank_level"
when = "below"
threshold = 0.5
forbid = [{ tag = "level_sp", direction = "down" }]

[envelope.tank_level]
low = 0.3
high = 2.7
margin = 0.1

[heartbeat]
signal = "hb"
"""


def _edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_shipped_skid_config_is_valid() -> None:
    """config/skid.toml loads, and declares both protocols, setpoints and interlocks."""
    cfg = load_config(SKID)
    assert {s.protocol for s in cfg.source.values()} == {"opcua", "modbus"}
    assert set(cfg.writable) == {"level_sp", "temp_sp", "valve_cmd"}
    assert cfg.interlock
    assert cfg.envelope
    assert cfg.heartbeat is not None


def test_base_fixture_is_valid() -> None:
    """The table below edits a config that is itself valid, so each case tests one fault."""
    parse_config(BASE, "t.toml")


BROKEN = [
    pytest.param(
        _edit("range = [0.0, 3.0]\nmax_age_s = 5.0", "range = [3.0, 2.5]\nmax_age_s = 5.0"),
        "t.toml: signal.tank_level.range: lower bound 3.0 is not below upper bound 2.5",
        id="range-inverted",
    ),
    pytest.param(
        _edit('when = "below"', 'when = "below"\ntreshold = 0.4'),
        "t.toml: interlock[0](tank_low).treshold: unknown key; valid keys here are: bypass, "
        "description, forbid, name, signal, threshold, when",
        id="misspelt-interlock-key",
    ),
    pytest.param(
        _edit('signal = "tank_level"\nwhen', 'signal = "tank_levl"\nwhen'),
        "t.toml: interlock[0].signal: unknown signal 'tank_levl'; declared: hb, level_sp, "
        "mb_level, tank_level",
        id="interlock-unknown-signal",
    ),
    pytest.param(
        _edit("limits = [0.5, 2.4]", "limits = [0.5, 3.4]"),
        "t.toml: writable.level_sp.limits: limits [0.5, 3.4] lie outside signal 'level_sp' "
        "range [0.0, 3.0]; narrow the limits",
        id="writable-outside-range",
    ),
    pytest.param(
        _edit('autonomy = "L3"', 'autonomy = "L5"'),
        "t.toml: gateway.autonomy: Input should be 'L0', 'L1', 'L2', 'L3' or 'L4' (got 'L5')",
        id="autonomy-unknown",
    ),
    pytest.param(
        _edit('address = "ir:0"', 'address = "ir:9"').replace(
            "[writable.level_sp]",
            '[signal.dup]\nsource = "mb"\naddress = "ir:10"\nunit = "m"\nrange = [0.0, 1.0]\n'
            "max_age_s = 1.0\n\n[writable.level_sp]",
        ),
        "t.toml: signal.dup.address: float32 at ir:10 (unit 1) overlaps signal 'mb_level' "
        "(ir:9..10)",
        id="modbus-overlap",
    ),
    pytest.param(
        _edit('address = "ir:0"', 'address = "40001"'),
        "t.toml: signal.mb_level.address: Modbus address '40001' is not of the form "
        "TABLE:OFFSET with TABLE one of hr, ir, co, di and OFFSET 0..65535 (e.g. 'hr:100')",
        id="modbus-address-form",
    ),
    pytest.param(
        _edit('address = "s=Tank.Level"', 'address = "ns=2;s=Tank.Level"'),
        "t.toml: signal.tank_level.address: OPC UA address 'ns=2;s=Tank.Level' must not carry "
        "a namespace; write only the identifier (e.g. 's=Skid.Tank.Level') and set the "
        "source's namespace_uri",
        id="opcua-namespace-in-address",
    ),
    pytest.param(
        _edit('signal = "hb"', 'signal = "mb_level"'),
        "t.toml: heartbeat.signal: signal 'mb_level' cannot be written: its address ir:0 is "
        "read-only in Modbus (use hr: or co:)",
        id="heartbeat-readonly",
    ),
    pytest.param(
        _edit("margin = 0.1", "margin = 1.5"),
        "t.toml: envelope.tank_level: low 0.3 + margin 1.5 is not below high 2.7 - margin 1.5: "
        "nothing could pass",
        id="envelope-margin-too-wide",
    ),
    pytest.param(
        _edit('protocol = "modbus"', 'protocol = "profinet"'),
        "t.toml: source.mb: protocol must be 'opcua' or 'modbus'",
        id="unknown-protocol",
    ),
    pytest.param(
        _edit('namespace_uri = "urn:t"', ""),
        "t.toml: source.plc.namespace_uri: required key is missing",
        id="missing-namespace",
    ),
    pytest.param(
        _edit("[signal.mb_level]", "[signal.Mb-Level]"),
        "t.toml: signal.Mb-Level.[key]: 'Mb-Level' is not a valid name: use lower-case "
        "letters, digits and '_', starting with a letter",
        id="bad-signal-name",
    ),
    pytest.param(
        _edit("max_age_s = 5.0\n\n[signal.level_sp]", "max_age_s = nan\n\n[signal.level_sp]"),
        "t.toml: signal.tank_level.max_age_s: Input should be a finite number (got nan)",
        id="nan-max-age",
    ),
    pytest.param(
        _edit("[heartbeat]", '[signal.tank_level]\nsource = "plc"\n[heartbeat]'),
        "t.toml: not valid TOML: Cannot declare ('signal', 'tank_level') twice (at line 65, "
        "column 19)",
        id="duplicate-table",
    ),
    pytest.param(
        _edit('risk = "low"', 'risk = "high"'),
        None,
        id="high-risk-is-fine",
    ),
    pytest.param(
        _edit(
            "[heartbeat]", '[risk]\nauto_execute = ["high"]\ntwo_approvers = ["high"]\n[heartbeat]'
        ),
        "t.toml: risk.auto_execute: risk class(es) high cannot both auto-execute and need two "
        "approvers",
        id="risk-contradiction",
    ),
    pytest.param(
        _edit('type = "uint16"', 'type = "uint16"\nbit = 3\n[source.x]\nprotocol = "opcua"'),
        "t.toml: source.x.endpoint: required key is missing",
        id="several-problems-first",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN)
def test_broken_config_is_refused_with_exact_message(text: str, expected: str | None) -> None:
    """Each broken config is refused, and the first problem reads exactly as a user needs it."""
    if expected is None:
        parse_config(text, "t.toml")
        return
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    assert caught.value.problems[0] == expected


def test_all_problems_reported_together() -> None:
    """Several contradictions in one file are all reported, so one run shows every fix."""
    text = _edit("limits = [0.5, 2.4]", "limits = [0.5, 3.4]").replace(
        'signal = "tank_level"\nwhen', 'signal = "nope"\nwhen'
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    keys = [p.split(": ")[1] for p in caught.value.problems]
    assert keys == ["writable.level_sp.limits", "interlock[0].signal"]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming the path, not a traceback."""
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml: cannot read the file"):
        load_config(path)


def test_config_objects_are_frozen() -> None:
    """Loaded config cannot be changed at run time (the agent must not move an interlock)."""
    cfg = parse_config(BASE, "t.toml")
    with pytest.raises(ValueError, match="frozen"):
        cfg.interlock[0].threshold = 0.0  # type: ignore[misc]
