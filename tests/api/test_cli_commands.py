"""The CLI on top of the API: `propose`, `proposals`, `approve`, `reject`,
`resume-autonomy` and `ask` against a real server, `token add`, and `audit show`.

Exit codes: 0 whenever the request was answered (a rejected proposal included), 2 when it
was refused as given (4xx, bad --set, no token, no [api]), 1 when it could not be made or
failed on the other side (connection refused, 5xx)."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.api.auth import TokenFile, load_tokens
from gateway.api.ports import Caller, ControlError, Role
from gateway.cli import main
from gateway.store.audit import SqliteAuditTrail
from tests.api.conftest import OPERATOR, VIEWER, Api, FakeControlService, ServerThread
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
SKID = REPO / "config" / "skid.toml"


@pytest.fixture(autouse=True)
def _quiet_server() -> Iterator[None]:
    """The server thread logs each request; keep those lines out of the CLI's stdout."""
    with capture_logs():
        yield


def _config(tmp_path: Path, port: int, *, api: str | None = None) -> Path:
    """config/skid.toml in tmp_path/config/, its API on ``port`` (or ``api`` as the
    whole [api] table text, "" for none)."""
    text = SKID.read_text(encoding="utf-8")
    head, sep, _ = text.partition("[api]\n")
    assert sep
    text = text.replace("port = 8484", f"port = {port}") if api is None else head + api
    (tmp_path / "config").mkdir(exist_ok=True)
    path = tmp_path / "config" / "skid.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def cfg(api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A config naming the test server's port; the operator's token in $EDGETWIN_TOKEN."""
    monkeypatch.setenv("EDGETWIN_TOKEN", OPERATOR)
    return str(_config(tmp_path, api.port))


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- propose --------------------------------------------------------------------------------


def test_propose_prints_one_json_object_and_exits_0_even_when_rejected(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A verdict of 'rejected' is an answer: exit 0, one JSON object on one line with the
    proposal id, the decision and the reasons; nothing on stderr."""
    code, out, err = _run(
        capsys, "propose", "--config", cfg, "--set", "level_sp=2.9", "--reason", "overfill it"
    )
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 1
    answer = json.loads(out)
    assert answer["decision"] == "rejected"
    assert answer["reasons"] == [{"code": "above_limit", "tag": "level_sp", "limit": 2.4}]
    assert answer["proposal_id"] == "p-1"


def test_propose_sends_every_target_the_reason_and_the_expiry(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--set is repeatable; values are absolute floats; --expires-in is passed on."""
    code, out, _ = _run(
        capsys,
        "propose",
        "--config",
        cfg,
        "--set",
        "level_sp=1.8",
        "--set",
        "temp_sp = 2",
        "--reason",
        "shift change",
        "--expires-in",
        "120",
    )
    assert code == 0
    assert json.loads(out)["decision"] == "needs_approval"
    (request,) = api.service.submitted()
    assert request.targets == {"level_sp": 1.8, "temp_sp": 2.0}
    assert (request.reason, request.expires_in_s) == ("shift change", 120.0)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        pytest.param("level_sp", "expected TAG=VALUE", id="no-equals"),
        pytest.param("=1.0", "expected TAG=VALUE", id="no-tag"),
        pytest.param("level_sp=high", "'high' is not a number", id="not-a-number"),
        pytest.param("level_sp=nan", "must be a finite number", id="nan"),
        pytest.param("level_sp=inf", "must be a finite number", id="inf"),
    ],
)
def test_propose_refuses_a_bad_set_without_sending_anything(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str], setting: str, message: str
) -> None:
    """A malformed --set exits 2 with the problem on stderr; no request is made."""
    code, out, err = _run(capsys, "propose", "--config", cfg, "--set", setting, "--reason", "r")
    assert (code, out) == (2, "")
    assert message in err
    assert api.service.calls == []


def test_propose_refuses_the_same_tag_twice(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two values for one tag are ambiguous: refused, not last-one-wins."""
    code, _, err = _run(
        capsys, "propose", "--config", cfg, "--set", "level_sp=1", "--set", "level_sp=2",
        "--reason", "r",
    )  # fmt: skip
    assert code == 2
    assert "level_sp is set twice" in err
    assert api.service.calls == []


def test_propose_refused_by_the_server_exits_2_with_the_error_on_stderr(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A viewer's proposal is a 403: exit 2, 'HTTP 403 forbidden: ...' on stderr, and
    stdout stays empty so a script cannot mistake it for a verdict."""
    monkeypatch.setenv("EDGETWIN_TOKEN", VIEWER)
    code, out, err = _run(
        capsys, "propose", "--config", cfg, "--set", "level_sp=1", "--reason", "r"
    )
    assert (code, out) == (2, "")
    assert err.startswith("edgetwin propose: HTTP 403 forbidden: ")


def test_propose_with_a_failing_server_exits_1(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 500 is not the caller's fault: exit 1."""
    api.service.fail = RuntimeError("boom")
    code, out, err = _run(
        capsys, "propose", "--config", cfg, "--set", "level_sp=1", "--reason", "r"
    )
    assert (code, out) == (1, "")
    assert "HTTP 500 internal_error" in err


def test_propose_with_nothing_listening_exits_1_and_says_to_start_the_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connection refused: exit 1 with the address and the likely fix."""
    monkeypatch.setenv("EDGETWIN_TOKEN", OPERATOR)
    port = free_port()
    path = _config(tmp_path, port)
    code, out, err = _run(
        capsys, "propose", "--config", str(path), "--set", "level_sp=1", "--reason", "r"
    )
    assert (code, out) == (1, "")
    assert "is `edgetwin run` running? API on 127.0.0.1:" + str(port) in err


def test_propose_without_a_token_exits_2(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No token anywhere: exit 2 naming the three ways to give one; nothing is sent."""
    monkeypatch.delenv("EDGETWIN_TOKEN")
    code, _, err = _run(capsys, "propose", "--config", cfg, "--set", "level_sp=1", "--reason", "r")
    assert code == 2
    assert "no API token: set EDGETWIN_TOKEN, or pass --token-file FILE" in err
    assert api.service.calls == []


def test_token_file_and_flag_are_used(
    api: Api, cfg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--token-file (mode 600) and --token override the environment's token."""
    token_file = tmp_path / "viewer.token"
    token_file.write_text(VIEWER + "\n")
    token_file.chmod(0o600)
    argv = ["propose", "--config", cfg, "--set", "level_sp=1", "--reason", "r"]
    assert _run(capsys, *argv, "--token-file", str(token_file))[0] == 2  # viewer: 403
    assert _run(capsys, *argv, "--token", OPERATOR)[0] == 0


@pytest.mark.parametrize(
    "api_table",
    [
        pytest.param("", id="no-section"),
        pytest.param('enabled = false\ntokens_file = "t.toml"\n', id="disabled"),
    ],
)
def test_commands_need_an_enabled_api_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], api_table: str
) -> None:
    """Without an enabled [api], the commands say so (exit 2) instead of guessing a port."""
    text = "[api]\n" + api_table if api_table else ""
    path = _config(tmp_path, 0, api=text)
    code, _, err = _run(capsys, "proposals", "--config", str(path), "--token", "x")
    assert code == 2
    assert f"{path}: api: the control API is not enabled" in err


# -- proposals, approve, reject, resume-autonomy ----------------------------------------------


def test_proposals_prints_a_table_or_json_and_filters_by_status(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The table has one row per proposal, newest first; --json prints the list;
    --status filters on the server."""
    assert _run(capsys, "proposals", "--config", cfg)[1] == "no proposals\n"
    for value in ("1.5", "2.9"):
        _run(capsys, "propose", "--config", cfg, "--set", f"level_sp={value}", "--reason", "r")
    code, out, _ = _run(capsys, "proposals", "--config", cfg)
    assert code == 0
    assert out.splitlines() == [
        "ID   STATUS    DECISION        PROPOSER       TARGETS",
        "p-2  rejected  rejected        operator:otto  level_sp=2.9",
        "p-1  pending   needs_approval  operator:otto  level_sp=1.5",
    ]
    code, out, _ = _run(capsys, "proposals", "--config", cfg, "--status", "pending", "--json")
    assert [p["proposal"]["id"] for p in json.loads(out)] == ["p-1"]
    assert _run(capsys, "proposals", "--config", cfg, "--status", "approved")[1] == (
        "no approved proposals\n"
    )


def test_approve_reject_and_resume_print_the_new_state(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each prints the service's answer as one JSON object; the caller is the token's."""
    for _ in range(2):
        _run(capsys, "propose", "--config", cfg, "--set", "level_sp=1", "--reason", "r")
    code, out, _ = _run(capsys, "approve", "p-1", "--config", cfg, "--note", "checked")
    assert code == 0
    assert json.loads(out)["approvals"] == [{"by": "otto", "note": "checked"}]
    code, out, _ = _run(capsys, "reject", "p-2", "--config", cfg, "--reason", "not now")
    assert (code, json.loads(out)["status"]) == (0, "rejected")
    code, out, _ = _run(capsys, "resume-autonomy", "--config", cfg, "--note", "fixed")
    assert (code, json.loads(out)) == (0, {"autonomy": "L3", "resumed_by": "otto", "note": "fixed"})


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        pytest.param(("approve", "p-404"), "HTTP 404 unknown_proposal", id="unknown"),
        pytest.param(("reject", "p-404", "--reason", " "), "HTTP 400 invalid_request", id="blank"),
        pytest.param(("resume-autonomy", "--note", ""), "note: must not be empty", id="no-note"),
    ],
)
def test_refused_decisions_exit_2_with_the_servers_reason(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], expected: str
) -> None:
    """An unknown id or an empty reason is refused by the server: exit 2, its message."""
    code, out, err = _run(capsys, *argv, "--config", cfg)
    assert (code, out) == (2, "")
    assert expected in err


def test_reject_requires_a_reason(cfg: str) -> None:
    """`reject` without --reason is a usage error (argparse, exit 2)."""
    with pytest.raises(SystemExit) as caught:
        main(["reject", "p-1", "--config", cfg])
    assert caught.value.code == 2


# -- ask ------------------------------------------------------------------------------------


def test_ask_prints_the_incident_as_one_json_object(
    api: Api, cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """exit 0, one JSON line with the incident id; the note and the token's name reach the
    service unchanged."""
    code, out, err = _run(capsys, "ask", "--config", cfg, "--note", "the pump sounds odd")
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 1
    assert json.loads(out) == {"incident": "request-0-1", "queued": 1}
    ((kind, (caller, note)),) = api.service.calls
    assert (kind, caller.name, note) == ("ask_agent", "otto", "the pump sounds odd")


@pytest.mark.parametrize(
    ("token", "note", "failure", "exit_code", "expected"),
    [
        pytest.param(VIEWER, "look", None, 2, "HTTP 403 forbidden", id="viewer"),
        pytest.param(OPERATOR, " ", None, 2, "note: must not be empty", id="blank-note"),
        pytest.param(
            OPERATOR,
            "look",
            ControlError(503, "agent_unavailable", "no agent"),
            1,
            "HTTP 503 agent_unavailable: no agent",
            id="no-agent",
        ),
    ],
)
def test_ask_refused_or_unavailable_prints_nothing_and_exits_like_the_others(
    api: Api,
    cfg: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    token: str,
    note: str,
    failure: ControlError | None,
    exit_code: int,
    expected: str,
) -> None:
    """A refusal as asked (4xx) exits 2; no agent to take it (503) is the gateway's side,
    exit 1; either way stdout stays empty and stderr has the server's reason."""
    monkeypatch.setenv("EDGETWIN_TOKEN", token)
    api.service.fail = failure
    code, out, err = _run(capsys, "ask", "--config", cfg, "--note", note)
    assert (code, out) == (exit_code, "")
    assert err.startswith("edgetwin ask: ")
    assert expected in err


def test_ask_requires_a_note_and_says_where_the_answer_comes(
    cfg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ask` without --note is a usage error (exit 2); its help points at the audit trail
    and `edgetwin proposals`, since the answer is not printed."""
    with pytest.raises(SystemExit) as caught:
        main(["ask", "--config", cfg])
    assert caught.value.code == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["ask", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "audit trail" in text
    assert "`edgetwin proposals`" in text


# -- token add ------------------------------------------------------------------------------


def test_token_add_prints_the_token_once_and_stores_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """stdout is the token alone (pipe it into a file); stderr says what was done; the
    file is private and the token authenticates as the named role."""
    path = tmp_path / "tokens.toml"
    code, out, err = _run(
        capsys, "token", "add", "--tokens-file", str(path), "--name", "alice", "--role", "operator"
    )
    assert code == 0
    token = out.strip()
    assert out == token + "\n"
    assert "added operator token 'alice'" in err
    assert token not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_tokens(path).authenticate(token) == Caller("alice", Role.OPERATOR)
    code, out, err = _run(
        capsys, "token", "add", "--tokens-file", str(path), "--name", "alice", "--role", "viewer"
    )
    assert (code, out) == (2, "")
    assert "a token named 'alice' exists already" in err


def test_token_add_defaults_to_the_configs_tokens_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --tokens-file, [api].tokens_file of --config is used, resolved from the
    config file's directory (skid.toml: ../state/api_tokens.toml)."""
    path = _config(tmp_path, 8484)
    code, _, _ = _run(
        capsys, "token", "add", "--config", str(path), "--name", "bob", "--role", "viewer"
    )
    assert code == 0
    assert (tmp_path / "state" / "api_tokens.toml").is_file()


def test_a_token_added_while_serving_works_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """token add -> a running server (reading the file) -> propose with that token: the
    proposal arrives under the token's name, without a restart."""
    tokens_path = tmp_path / "tokens.toml"
    assert (
        main(
            [
                "token",
                "add",
                "--tokens-file",
                str(tokens_path),
                "--name",
                "eve",
                "--role",
                "engineer",
            ]
        )
        == 0
    )
    first = capsys.readouterr().out.strip()
    service = FakeControlService()
    server = ServerThread(service, TokenFile(tokens_path))
    try:
        cfg = str(_config(tmp_path, server.port))
        main(
            [
                "token",
                "add",
                "--tokens-file",
                str(tokens_path),
                "--name",
                "fay",
                "--role",
                "operator",
            ]
        )
        second = capsys.readouterr().out.strip()
        for token, name in ((first, "eve"), (second, "fay")):
            monkeypatch.setenv("EDGETWIN_TOKEN", token)
            code, _, _ = _run(
                capsys, "propose", "--config", cfg, "--set", "level_sp=1", "--reason", "r"
            )
            assert code == 0
            assert service.calls[-1][1][0].name == name
    finally:
        server.close()


# -- audit show -----------------------------------------------------------------------------


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    path = tmp_path / "audit.db"
    with SqliteAuditTrail(path) as audit:
        audit.append("startup", {"gateway": "skid_1"}, ts=1_700_000_000.0)
        audit.append(
            "proposal",
            {"proposer": "operator:otto", "targets": {"level_sp": 1.8}, "reason": "shift"},
            proposal_id="p-1",
            ts=1_700_000_001.0,
        )
        audit.append("proposal", {"proposer": "agent"}, proposal_id="p-2", ts=1_700_000_002.0)
        audit.append(
            "verdict",
            {"decision": "needs_approval", "reasons": ["risk medium"], "envelope": "x" * 200},
            proposal_id="p-1",
            ts=1_700_000_002.5,
        )
        audit.append("approval", {"by": "otto"}, proposal_id="p-1", ts=1_700_000_010.25)
    return path


def test_audit_show_tells_one_proposals_story_in_order(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every record of that proposal, and only those, in order, with time (UTC), kind and
    the payload's fields (long ones shortened)."""
    code, out, _ = _run(capsys, "audit", "show", "p-1", "--file", str(trail))
    assert code == 0
    assert out.splitlines() == [
        f"proposal p-1: 3 audit records in {trail}",
        "     2  2023-11-14 22:13:21.000Z  proposal      proposer=operator:otto  reason=shift  "
        'targets={"level_sp":1.8}',
        "     4  2023-11-14 22:13:22.500Z  verdict       decision=needs_approval  envelope="
        + "x" * 77
        + '...  reasons=["risk medium"]',
        "     5  2023-11-14 22:13:30.250Z  approval      by=otto",
    ]


def test_audit_show_json_prints_whole_records(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json: one object per record with the full payload."""
    code, out, _ = _run(capsys, "audit", "show", "p-1", "--file", str(trail), "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["kind"] for r in records] == ["proposal", "verdict", "approval"]
    assert records[1]["payload"]["envelope"] == "x" * 200


def test_audit_show_unknown_id_or_missing_file_exits_1_and_creates_nothing(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An id with no records, or a file that is not there: exit 1 with the reason; a
    missing file is not created as an empty trail."""
    code, out, err = _run(capsys, "audit", "show", "p-9", "--file", str(trail))
    assert (code, out) == (1, "")
    assert "no audit records for proposal 'p-9'" in err
    absent = tmp_path / "none.db"
    code, _, err = _run(capsys, "audit", "show", "p-1", "--file", str(absent))
    assert code == 1
    assert "no such file" in err
    assert not absent.exists()
