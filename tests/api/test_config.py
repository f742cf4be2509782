"""The [api] config section: defaults, the tokens file's path, and each broken table
refused with the file, the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load_config, parse_config
from gateway.config.summary import summarize
from gateway.errors import ConfigError
from tests.config.test_load import BASE

REPO = Path(__file__).resolve().parents[2]
SKID = REPO / "config" / "skid.toml"
API = BASE + '\n[api]\ntokens_file = "tokens.toml"\n'


def test_shipped_skid_serves_the_api_on_8484_with_tokens_in_state() -> None:
    """config/skid.toml enables the API on the default port, its tokens file in the
    git-ignored state/ directory beside config/, resolved from the file's directory."""
    cfg = load_config(SKID)
    assert cfg.api is not None
    assert (cfg.api.enabled, cfg.api.port) == (True, 8484)
    assert cfg.api.tokens_file == str(REPO / "state" / "api_tokens.toml")


def test_no_api_section_means_no_api() -> None:
    """Nothing listens that the file does not ask for; the summary says so."""
    cfg = parse_config(BASE, "t.toml")
    assert cfg.api is None
    assert "api         none: no local control API" in summarize(cfg, "t.toml")


def test_api_defaults() -> None:
    """Only tokens_file is required: enabled and port 8484 by default."""
    cfg = parse_config(API, "t.toml")
    assert cfg.api is not None
    assert (cfg.api.enabled, cfg.api.port, cfg.api.tokens_file) == (True, 8484, "tokens.toml")
    assert "api         http://127.0.0.1:8484, tokens from tokens.toml" in summarize(cfg, "t")
    off = parse_config(API + "enabled = false\n", "t.toml")
    assert "api         OFF (enabled = false); http://127.0.0.1:8484" in summarize(off, "t")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param('tokens_file = "api_tokens.toml"', "{dir}/api_tokens.toml", id="relative"),
        pytest.param(
            'tokens_file = "../state/tokens.toml"', "{parent}/state/tokens.toml", id="relative-up"
        ),
        pytest.param(
            'tokens_file = "/run/credentials/edgetwin.service/api_tokens"',
            "/run/credentials/edgetwin.service/api_tokens",
            id="absolute",
        ),
    ],
)
def test_tokens_file_is_taken_from_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    """As [detect]'s model: relative to the config file, not the working directory
    (systemd starts the daemon elsewhere, and the CLI runs from anywhere)."""
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    path = config_dir / "gw.toml"
    path.write_text(BASE + f"\n[api]\n{text}\n")
    monkeypatch.chdir(tmp_path.root)
    cfg = load_config(path)
    assert cfg.api is not None
    where = {"dir": str(config_dir.resolve()), "parent": str(tmp_path.resolve())}
    assert cfg.api.tokens_file == expected.format(**where)


API_BROKEN = [
    pytest.param(
        API + 'host = "0.0.0.0"\n',
        "t.toml: api.host: unknown key; valid keys here are: enabled, port, tokens_file",
        id="host-is-not-configurable",
    ),
    pytest.param(
        BASE + "\n[api]\nport = 8484\n",
        "t.toml: api.tokens_file: required key is missing",
        id="tokens-file-missing",
    ),
    pytest.param(
        BASE + '\n[api]\ntokens_file = ""\n',
        "t.toml: api.tokens_file: String should have at least 1 character (got '')",
        id="tokens-file-empty",
    ),
    pytest.param(
        BASE + '\n[api]\ntokens_file = "."\n',
        "t.toml: api.tokens_file: '.' names a directory; give the file's path",
        id="tokens-file-directory",
    ),
    pytest.param(
        API + "port = 0\n",
        "t.toml: api.port: Input should be greater than or equal to 1 (got 0)",
        id="port-0",
    ),
    pytest.param(
        API + "port = 70000\n",
        "t.toml: api.port: Input should be less than or equal to 65535 (got 70000)",
        id="port-too-big",
    ),
    pytest.param(
        API + "port = 84.84\n",
        "t.toml: api.port: Input should be a valid integer, got a number with a fractional "
        "part (got 84.84)",
        id="port-fraction",
    ),
    pytest.param(
        API + 'enabled = "maybe"\n',
        "t.toml: api.enabled: Input should be a valid boolean, unable to interpret input "
        "(got 'maybe')",
        id="enabled-string",
    ),
    pytest.param(
        API + "port = 5020\n",
        "t.toml: api.port: port 5020 is already used by source 'mb' on 127.0.0.1; choose "
        "another port for the API",
        id="port-of-a-loopback-modbus-source",
    ),
    pytest.param(
        API + "port = 4840\n",
        "t.toml: api.port: port 4840 is already used by source 'plc' on 127.0.0.1; choose "
        "another port for the API",
        id="port-of-a-loopback-opcua-source",
    ),
    pytest.param(
        API.replace('host = "127.0.0.1"', 'host = "10.0.0.5"') + "port = 5020\n",
        None,
        id="same-port-on-another-host-is-fine",
    ),
    pytest.param(API + "port = 5020\nenabled = false\n", None, id="disabled-port-is-fine"),
]


@pytest.mark.parametrize(("text", "expected"), API_BROKEN)
def test_broken_api_section_is_refused_with_exact_message(text: str, expected: str | None) -> None:
    """Each broken [api] table is refused, naming the file, the key and the fix."""
    if expected is None:
        parse_config(text, "t.toml")
        return
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "t.toml")
    assert caught.value.problems == [expected]
