"""``[text.*]`` entries: plant text is read from an OPC UA source at a node written like a
signal's address; anything else is refused with the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.errors import ConfigError

SKID = Path(__file__).resolve().parents[2] / "config" / "skid.toml"

BASE = """
[gateway]
name = "t"

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

[text.note]
source = "plc"
node = "s=Skid.OperatorNote"
"""


def _edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_base_with_a_text_is_valid_and_has_the_defaults() -> None:
    """A text needs only its source and node; it keeps 200 characters, read every 5 s."""
    text = parse_config(BASE, "t.toml").text["note"]
    assert (text.source, text.node, text.max_chars, text.poll_interval_s) == (
        "plc",
        "s=Skid.OperatorNote",
        200,
        5.0,
    )


def test_shipped_skid_config_reads_the_operator_note_and_the_alarm_message() -> None:
    """config/skid.toml declares both plant strings of the simulated PLC, on its OPC UA source."""
    cfg = load_config(SKID)
    assert {n: (t.source, t.node) for n, t in cfg.text.items()} == {
        "operator_note": ("plc", "s=Skid.OperatorNote"),
        "alarm_message": ("plc", "s=Skid.AlarmMessage"),
    }


BROKEN = [
    pytest.param(
        _edit('source = "plc"\nnode', 'source = "plx"\nnode'),
        "t.toml: text.note.source: unknown source 'plx'; use an OPC UA source: plc",
        id="unknown-source",
    ),
    pytest.param(
        _edit('source = "plc"\nnode', 'source = "mb"\nnode'),
        "t.toml: text.note.source: source 'mb' is modbus; plant text is read over OPC UA "
        "only; use an OPC UA source: plc",
        id="modbus-source",
    ),
    pytest.param(
        _edit('node = "s=Skid.OperatorNote"', 'node = "ns=2;s=Skid.OperatorNote"'),
        "t.toml: text.note.node: OPC UA address 'ns=2;s=Skid.OperatorNote' must not carry a "
        "namespace; write only the identifier (e.g. 's=Skid.Tank.Level') and set the "
        "source's namespace_uri",
        id="namespace-in-node",
    ),
    pytest.param(
        _edit('node = "s=Skid.OperatorNote"', 'node = "Skid.OperatorNote"'),
        "t.toml: text.note.node: OPC UA address 'Skid.OperatorNote' is not a node identifier; "
        "use i=<number>, s=<string>, g=<guid> or b=<base64>",
        id="node-not-an-id",
    ),
    pytest.param(
        _edit('node = "s=Skid.OperatorNote"', 'node = "s=Skid.OperatorNote"\nmax_chars = 0'),
        "t.toml: text.note.max_chars: Input should be greater than or equal to 1 (got 0)",
        id="max-chars-zero",
    ),
    pytest.param(
        _edit('node = "s=Skid.OperatorNote"', 'node = "s=Skid.OperatorNote"\nmaxchars = 10'),
        "t.toml: text.note.maxchars: unknown key; valid keys here are: description, max_chars, "
        "node, poll_interval_s, source",
        id="misspelt-key",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN)
def test_broken_text_is_refused_with_exact_message(text: str, expected: str) -> None:
    """Each broken [text.*] entry is refused naming the file, the key path and the fix."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    assert caught.value.problems[0] == expected


def test_text_without_any_opcua_source_says_to_declare_one() -> None:
    """With no OPC UA source at all, the fix is to declare one, not to pick from none."""
    text = (
        BASE.replace('protocol = "opcua"', 'protocol = "modbus"')
        .replace(
            'endpoint = "opc.tcp://127.0.0.1:4840/x/"\nnamespace_uri = "urn:t"',
            'host = "127.0.0.1"\nport = 5021',
        )
        .replace("[signal.tank_level]", "[signal.unused]")
        .replace('address = "s=Tank.Level"', 'address = "ir:0"')
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    assert caught.value.problems == [
        "t.toml: text.note.source: source 'plc' is modbus; plant text is read over OPC UA "
        "only; declare an OPC UA source"
    ]
