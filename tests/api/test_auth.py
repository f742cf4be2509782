"""API tokens: only hashes stored, files readable only by the service, unique names,
`token add` round trip, and a tokens file that is re-read (failing closed) on change."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.api.auth import (
    TokenEntry,
    TokenFile,
    TokenFileError,
    TokenTable,
    add_token,
    hash_token,
    load_tokens,
)
from gateway.api.ports import Caller, Role
from gateway.errors import ConfigError

H1 = hash_token("token-one")
H2 = hash_token("token-two")


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def _entry(name: str, role: str, digest: str) -> str:
    return f'[[token]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{digest}"\n'


def test_a_valid_file_authenticates_its_tokens_and_nothing_else(tmp_path: Path) -> None:
    """Each stored hash lets its token in with its name and role; anything else is None."""
    path = _write(
        tmp_path / "t.toml", _entry("alice", "operator", H1) + _entry("bob", "viewer", H2)
    )
    table = load_tokens(path)
    assert table.authenticate("token-one") == Caller("alice", Role.OPERATOR)
    assert table.authenticate("token-two") == Caller("bob", Role.VIEWER)
    for wrong in ("", "token-on", "token-one ", H1, "TOKEN-ONE"):
        assert table.authenticate(wrong) is None
    assert len(table) == 2


def test_an_empty_file_is_valid_and_lets_nobody_in(tmp_path: Path) -> None:
    """A fresh tokens file (no [[token]] yet) loads; the API then refuses everyone."""
    table = load_tokens(_write(tmp_path / "t.toml", "# no tokens yet\n"))
    assert len(table) == 0
    assert table.authenticate("anything") is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644, 0o660, 0o666, 0o610])
def test_a_file_others_may_read_or_write_is_refused_with_the_chmod_fix(
    tmp_path: Path, mode: int
) -> None:
    """Group/other read or write (or execute) permission refuses the file, naming it, its
    mode and the fix; a refused tokens file is a config error (the start stops)."""
    path = _write(tmp_path / "t.toml", _entry("alice", "operator", H1), mode)
    with pytest.raises(TokenFileError) as caught:
        load_tokens(path)
    assert isinstance(caught.value, ConfigError)
    assert caught.value.problems == [
        f"{path}: mode {mode:04o} lets group or others read or write the API tokens file, "
        f"which must be readable only by the service; fix: chmod 600 {path}"
    ]


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    """0600 and 0400 (e.g. a systemd credential) are both private enough."""
    path = _write(tmp_path / "t.toml", _entry("alice", "operator", H1), mode)
    assert load_tokens(path).authenticate("token-one") is not None


def test_a_missing_file_says_how_to_create_one(tmp_path: Path) -> None:
    """No file: the message names it and the `token add` command that creates it."""
    path = tmp_path / "absent.toml"
    with pytest.raises(TokenFileError) as caught:
        load_tokens(path)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{path}: cannot read the tokens file: No such file")
    assert f"edgetwin token add --tokens-file {path}" in problem


def test_a_directory_is_not_a_tokens_file(tmp_path: Path) -> None:
    """A path naming a directory is refused as such."""
    target = tmp_path / "dir"
    target.mkdir(mode=0o700)
    with pytest.raises(TokenFileError, match="cannot read the tokens file: Is a directory"):
        load_tokens(target)


BROKEN = [
    pytest.param(
        _entry("alice", "operator", H1).replace('role = "operator"', 'role = "admin"'),
        "t.toml: token[0](alice).role: 'admin' is not a role; use one of viewer, operator, "
        "engineer",
        id="unknown-role",
    ),
    pytest.param(
        _entry("alice", "operator", H1) + 'token = "plain"\n',
        "t.toml: token[0](alice).token: unknown key; valid keys here are: name, role, sha256",
        id="plain-token-key",
    ),
    pytest.param(
        _entry("alice", "operator", H1).replace(f'sha256 = "{H1}"\n', ""),
        "t.toml: token[0](alice).sha256: required key is missing",
        id="missing-hash",
    ),
    pytest.param(
        _entry("alice", "operator", H1.upper()),
        "t.toml: token[0](alice).sha256: must be the 64 lower-case hex digits of the token's "
        "SHA-256 (`edgetwin token add` writes it)",
        id="upper-case-hash",
    ),
    pytest.param(
        _entry("alice", "operator", "secret-token"),
        "t.toml: token[0](alice).sha256: must be the 64 lower-case hex digits of the token's "
        "SHA-256 (`edgetwin token add` writes it)",
        id="token-instead-of-hash",
    ),
    pytest.param(
        _entry("op:alice", "operator", H1),
        "t.toml: token[0](op:alice).name: 'op:alice' is not a valid name: use letters, digits, "
        "'_', '.' or '-', starting with a letter (at most 64)",
        id="colon-in-name",
    ),
    pytest.param(
        _entry("alice", "operator", H1) + _entry("alice", "viewer", H2),
        "t.toml: token[1].name: 'alice' is already used by token[0]; names must be unique "
        "(the name is recorded as the approver): rename or remove one",
        id="duplicate-name",
    ),
    pytest.param(
        _entry("alice", "operator", H1) + _entry("bob", "viewer", H1),
        "t.toml: token[1].sha256: the same token as token[0] ('alice'); one token must name "
        "one person: remove it and create a new one with `edgetwin token add`",
        id="duplicate-token",
    ),
    pytest.param(
        'token = "abc"\n',
        "t.toml: token: write each token as a [[token]] table",
        id="token-not-a-table",
    ),
    pytest.param(
        "[api]\nport = 1\n",
        "t.toml: api: unknown key; a tokens file holds only [[token]] tables",
        id="unknown-table",
    ),
    pytest.param("[[token]\n", "t.toml: not valid TOML: ", id="invalid-toml"),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN)
def test_broken_tokens_file_is_refused_with_exact_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, expected: str
) -> None:
    """Each fault is refused with the file, the key path and the fix."""
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "t.toml", text)
    with pytest.raises(TokenFileError) as caught:
        load_tokens("t.toml")
    assert caught.value.problems[0].startswith(expected)
    if not expected.endswith(": "):
        assert caught.value.problems[0] == expected


def test_table_refuses_duplicates_built_in_code() -> None:
    """The uniqueness rule holds for tables built in code too (tests, tools)."""
    with pytest.raises(TokenFileError, match="already used"):
        TokenTable([TokenEntry("a", Role.VIEWER, H1), TokenEntry("a", Role.VIEWER, H2)])


# -- token add ------------------------------------------------------------------------------


def test_token_add_round_trip_creates_a_private_file_with_only_the_hash(tmp_path: Path) -> None:
    """add_token creates the file (and its directory) private to the owner, stores the
    hash and never the token, and the token it returns then authenticates."""
    path = tmp_path / "state" / "tokens.toml"
    token = add_token(path, "alice", Role.OPERATOR)
    assert len(token) >= 43
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    text = path.read_text()
    assert token not in text
    assert hash_token(token) in text
    second = add_token(path, "bob", Role.VIEWER)
    assert second != token
    table = load_tokens(path)
    assert table.authenticate(token) == Caller("alice", Role.OPERATOR)
    assert table.authenticate(second) == Caller("bob", Role.VIEWER)


def test_token_add_appends_to_a_hand_written_file(tmp_path: Path) -> None:
    """A file written by hand (no trailing newline, comments) keeps its content."""
    path = _write(tmp_path / "t.toml", "# ours\n" + _entry("carol", "engineer", H1).rstrip())
    token = add_token(path, "dave", Role.OPERATOR)
    assert path.read_text().startswith("# ours\n")
    table = load_tokens(path)
    assert table.authenticate("token-one") == Caller("carol", Role.ENGINEER)
    assert table.authenticate(token) == Caller("dave", Role.OPERATOR)


@pytest.mark.parametrize(
    ("name", "match"),
    [
        pytest.param("alice", "a token named 'alice' exists already", id="taken"),
        pytest.param("al ice", "is not valid", id="space"),
        pytest.param("operator:al", "is not valid", id="colon"),
        pytest.param('a"b', "is not valid", id="quote"),
        pytest.param("", "is not valid", id="empty"),
    ],
)
def test_token_add_refuses_a_bad_or_taken_name_and_changes_nothing(
    tmp_path: Path, name: str, match: str
) -> None:
    """A name that is taken, or could not be written safely, is refused; the file is
    left exactly as it was."""
    path = tmp_path / "t.toml"
    add_token(path, "alice", Role.OPERATOR)
    before = path.read_bytes()
    with pytest.raises(TokenFileError, match=match):
        add_token(path, name, Role.VIEWER)
    assert path.read_bytes() == before


def test_token_add_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    """Adding to a world-readable file would put a new credential where others can see
    who holds it: refused with the chmod fix, nothing written."""
    path = _write(tmp_path / "t.toml", "", 0o644)
    with pytest.raises(TokenFileError, match=r"fix: chmod 600"):
        add_token(path, "alice", Role.OPERATOR)
    assert path.read_text() == ""


# -- reloading ------------------------------------------------------------------------------


def test_token_file_picks_up_added_and_revoked_tokens(tmp_path: Path) -> None:
    """A token added (or removed) while the gateway runs works (or stops working) on the
    next request, without a restart."""
    path = tmp_path / "t.toml"
    first = add_token(path, "alice", Role.OPERATOR)
    tokens = TokenFile(path)
    assert tokens.authenticate(first) == Caller("alice", Role.OPERATOR)
    second = add_token(path, "bob", Role.VIEWER)
    assert tokens.authenticate(second) == Caller("bob", Role.VIEWER)
    _write(path, _entry("bob", "viewer", hash_token(second)))
    assert tokens.authenticate(first) is None
    assert tokens.authenticate(second) == Caller("bob", Role.VIEWER)


def test_token_file_fails_closed_when_the_file_goes_bad_and_recovers(tmp_path: Path) -> None:
    """Opened to others, or removed: every token is refused (logged once), until the file
    is fixed; then tokens work again (logged as recovered)."""
    path = tmp_path / "t.toml"
    token = add_token(path, "alice", Role.OPERATOR)
    tokens = TokenFile(path)
    with capture_logs() as logs:
        path.chmod(0o644)
        assert tokens.authenticate(token) is None
        assert tokens.authenticate(token) is None
        path.chmod(0o600)
        assert tokens.authenticate(token) == Caller("alice", Role.OPERATOR)
        os.rename(path, tmp_path / "moved.toml")
        assert tokens.authenticate(token) is None
    events = [(e["event"], e.get("recovered")) for e in logs]
    assert events == [
        ("api_tokens_refused", None),
        ("api_tokens_reloaded", True),
        ("api_tokens_refused", None),
    ]


def test_token_file_refuses_a_bad_file_at_start(tmp_path: Path) -> None:
    """A bad file stops the start (the daemon reports it) rather than serving nobody."""
    path = _write(tmp_path / "t.toml", _entry("alice", "operator", H1), 0o644)
    with pytest.raises(TokenFileError, match="chmod 600"):
        TokenFile(path)
