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


# ---------------------------------------------------------------------------- [detect]

DETECT = BASE + '\n[detect]\nmodel = "m.onnx"\n'


def test_shipped_skid_detect_section_points_at_the_built_model() -> None:
    """config/skid.toml runs the detector on the model `make models` builds, resolved from
    the config file's directory (so it does not depend on the working directory), with the
    signal roles equal to its signal names (no mapping needed)."""
    cfg = load_config(SKID)
    assert cfg.detect is not None
    assert cfg.detect.enabled
    assert cfg.detect.model == str(REPO / "models" / "anomaly.onnx")
    assert cfg.detect.metadata_path == str(REPO / "models" / "anomaly.json")
    assert cfg.detect.signals == {}


def test_detect_is_off_without_the_section() -> None:
    """No [detect] table, no detector: nothing is run that the file does not ask for."""
    assert parse_config(BASE, "t.toml").detect is None


def test_detect_defaults_are_the_alert_policys() -> None:
    """An empty [detect.alerts] table behaves exactly like AlertPolicy's defaults, so
    writing the section out in config/skid.toml changed nothing."""
    from dataclasses import fields

    from gateway.detect.alerts import AlertPolicy

    cfg = parse_config(DETECT, "t.toml")
    assert cfg.detect is not None
    policy = AlertPolicy()
    # id_prefix and label name the alert's source; code sets them, the operator does not.
    knobs = {f.name for f in fields(AlertPolicy)} - {"id_prefix", "label"}
    assert knobs == set(type(cfg.detect.alerts).model_fields)
    for name in knobs:
        assert getattr(cfg.detect.alerts, name) == getattr(policy, name), name


@pytest.mark.parametrize(
    ("text", "model", "metadata"),
    [
        pytest.param('model = "m.onnx"', "{dir}/m.onnx", "{dir}/m.json", id="relative"),
        pytest.param(
            'model = "../models/a.onnx"\nmetadata = "meta/a-meta.json"',
            "{parent}/models/a.onnx",
            "{dir}/meta/a-meta.json",
            id="relative-up-and-explicit-metadata",
        ),
        pytest.param('model = "/opt/m/x.onnx"', "/opt/m/x.onnx", "/opt/m/x.json", id="absolute"),
    ],
)
def test_detect_paths_are_taken_from_the_config_files_directory(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    model: str,
    metadata: str,
) -> None:
    """Relative model paths are resolved against the config file's directory, not the
    working directory (systemd starts the daemon in /); the metadata defaults to the model
    with .json, the pair the build script writes."""
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    path = config_dir / "gw.toml"
    path.write_text(BASE + f"\n[detect]\n{text}\n")
    monkeypatch.chdir(tmp_path.root)
    cfg = load_config(path)
    assert cfg.detect is not None
    where = {"dir": str(config_dir.resolve()), "parent": str(tmp_path.resolve())}
    assert cfg.detect.model == model.format(**where)
    assert cfg.detect.metadata_path == metadata.format(**where)


def test_parse_config_without_a_directory_leaves_paths_as_written() -> None:
    """Text parsed without a file (tests, tools) keeps relative paths relative to the
    working directory; with base_dir they are taken from there."""
    cfg = parse_config(DETECT, "t.toml")
    assert cfg.detect is not None
    assert cfg.detect.model == "m.onnx"
    based = parse_config(DETECT, "t.toml", base_dir="/srv/gw")
    assert based.detect is not None
    assert based.detect.model == "/srv/gw/m.onnx"


DETECT_BROKEN = [
    pytest.param(
        DETECT + "enabeld = false\n",
        "t.toml: detect.enabeld: unknown key; valid keys here are: alerts, enabled, metadata, "
        "model, signals",
        id="misspelt-detect-key",
    ),
    pytest.param(
        BASE + "\n[detect]\nenabled = true\n",
        "t.toml: detect.model: required key is missing",
        id="model-missing",
    ),
    pytest.param(
        BASE + '\n[detect]\nmodel = "."\n',
        "t.toml: detect.model: '.' names a directory; give the file's path",
        id="model-is-a-directory",
    ),
    pytest.param(
        DETECT + "[detect.alerts]\nraise_after = 0\n",
        "t.toml: detect.alerts.raise_after: Input should be greater than or equal to 1 (got 0)",
        id="raise-after-zero",
    ),
    pytest.param(
        DETECT + "[detect.alerts]\nmedium_ratio = 1.0\n",
        "t.toml: detect.alerts.medium_ratio: Input should be greater than 1 (got 1.0)",
        id="medium-ratio-not-above-threshold",
    ),
    pytest.param(
        DETECT + "[detect.alerts]\nhigh_ratio = 3.0\n",
        "t.toml: detect.alerts: high_ratio 3 is not above medium_ratio 4, so no alert could "
        "ever be 'medium'; make high_ratio the larger",
        id="severity-bands-inverted",
    ),
    pytest.param(
        DETECT + "[detect.alerts]\nmin_update_interval_s = inf\n",
        "t.toml: detect.alerts.min_update_interval_s: Input should be a finite number (got inf)",
        id="update-interval-infinite",
    ),
    pytest.param(
        DETECT + "[detect.alerts]\nid_prefix = 'x'\n",
        "t.toml: detect.alerts.id_prefix: unknown key; valid keys here are: clear_after, "
        "high_ratio, max_alerts_per_hour, medium_ratio, min_update_interval_s, raise_after",
        id="id-prefix-is-not-configurable",
    ),
    pytest.param(
        BASE + '\n[govern]\nremote_signal = "remote"\n',
        "t.toml: govern.remote_signal: unknown signal 'remote'; declared: hb, level_sp, "
        "mb_level, tank_level",
        id="govern-remote-signal-unknown",
    ),
    pytest.param(
        BASE + '\n[govern]\nconflict = "merge"\n',
        "t.toml: govern.conflict: Input should be 'reject' or 'replace' (got 'merge')",
        id="govern-conflict-policy-unknown",
    ),
    pytest.param(
        BASE + '\n[govern]\nremote_signal = "tank_level"\nramp_interval_s = 0.5\n',
        None,
        id="govern-section-is-fine",
    ),
    pytest.param(
        DETECT + '[detect.signals]\ntank_level = "mb_levl"\n',
        "t.toml: detect.signals.tank_level: unknown signal 'mb_levl'; declared: hb, level_sp, "
        "mb_level, tank_level",
        id="role-mapped-to-unknown-signal",
    ),
    pytest.param(
        DETECT + '[detect.signals]\nTank = "tank_level"\n',
        "t.toml: detect.signals.Tank.[key]: 'Tank' is not a valid name: use lower-case "
        "letters, digits and '_', starting with a letter",
        id="bad-role-name",
    ),
    pytest.param(
        DETECT + '[detect.signals]\ntank_level = "mb_level"\n',
        None,
        id="role-mapped-to-modbus-copy-is-fine",
    ),
    pytest.param(
        DETECT.replace('model = "m.onnx"', 'model = "m.onnx"\nenabled = false'),
        None,
        id="disabled-is-fine",
    ),
]


@pytest.mark.parametrize(("text", "expected"), DETECT_BROKEN)
def test_broken_detect_section_is_refused_with_exact_message(
    text: str, expected: str | None
) -> None:
    """Each broken [detect] section is refused, naming the file, the key and the fix."""
    if expected is None:
        parse_config(text, "t.toml")
        return
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    assert caught.value.problems == [expected]


def test_summary_shows_the_detector() -> None:
    """check-config's summary says which model runs and how it alerts, or that none does."""
    from gateway.config.summary import summarize

    text = DETECT + '[detect.alerts]\nraise_after = 4\n[detect.signals]\ntank_level = "mb_level"\n'
    lines = summarize(parse_config(text, "t.toml"), "t.toml").splitlines()
    detect = [line for line in lines if line.startswith("detect")]
    assert detect == ["detect      model m.onnx, metadata m.json"]
    following = lines[lines.index(detect[0]) + 1 :]
    assert following[0].startswith("            alerts raise after 4 windows above threshold")
    assert following[1] == "            roles: tank_level <- mb_level"
    off = summarize(parse_config(DETECT + "enabled = false\n", "t.toml"), "t.toml")
    assert "detect      OFF (enabled = false); model m.onnx" in off
    assert "detect      none: no anomaly alerts" in summarize(parse_config(BASE, "t.toml"), "t")


def test_summary_lists_the_plant_text_as_untrusted() -> None:
    from gateway.config.summary import summarize
    from tests.support import skid_config

    lines = summarize(skid_config(4840, 5020), "skid.toml").splitlines()
    texts = [line for line in lines if "untrusted" in line]
    assert texts[0].startswith("plant text  operator_note plc s=Skid.OperatorNote, up to 200")
    assert texts[1].startswith("            alarm_message plc s=Skid.AlarmMessage")
