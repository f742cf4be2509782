"""The stdlib client against the real server: each route, each kind of failure, and
where the token comes from."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.api.client import ApiClient, ApiError, ApiUnreachable, resolve_token
from tests.api.conftest import OPERATOR, VIEWER, Api
from tests.support import free_port


def test_every_route_round_trips(api: Api) -> None:
    """Each client method calls its route and returns the service's answer (lists
    unwrapped)."""
    client = ApiClient(api.port, OPERATOR)
    assert client.signals()[0]["name"] == "tank_level"
    assert client.alerts()[0]["alert_id"] == "a-1"
    result = client.propose({"level_sp": 1.8}, "before the shift", expires_in_s=300)
    assert result["decision"] == "needs_approval"
    pid = result["proposal_id"]
    assert [p["proposal"]["id"] for p in client.proposals(status="pending")] == [pid]
    assert client.proposals(status="approved") == []
    assert client.proposal(pid)["proposal"]["targets"] == {"level_sp": 1.8}
    assert client.approve(pid, note="ok")["status"] == "approved"
    other = client.propose({"temp_sp": 2.0}, "warmer")["proposal_id"]
    assert client.reject(other, "not today")["rejected_by"] == "otto"
    assert client.resume_autonomy("read-back fixed")["resumed_by"] == "otto"
    assert client.ask_agent("the pump sounds odd")["incident"].startswith("request-")
    assert api.service.calls[-1][1][1] == "the pump sounds odd"
    assert client.openapi()["openapi"] == "3.1.0"
    submitted = api.service.submitted()
    assert submitted[0].expires_in_s == 300.0
    assert submitted[1].expires_in_s is None


@pytest.mark.parametrize(
    ("token", "call", "status", "code"),
    [
        pytest.param(VIEWER, "propose", 403, "forbidden", id="viewer-proposes"),
        pytest.param("nope", "signals", 401, "unauthorized", id="unknown-token"),
        pytest.param(OPERATOR, "unknown", 404, "unknown_proposal", id="unknown-id"),
        pytest.param(OPERATOR, "empty-reason", 400, "invalid_request", id="empty-reason"),
        pytest.param(VIEWER, "ask", 403, "forbidden", id="viewer-asks"),
        pytest.param(OPERATOR, "empty-note", 400, "invalid_request", id="empty-note"),
    ],
)
def test_http_errors_carry_status_code_and_message(
    api: Api, token: str, call: str, status: int, code: str
) -> None:
    """A refusal raises ApiError with the server's status, code and message, readable
    as one line: 'HTTP 403 forbidden: ...'."""
    client = ApiClient(api.port, token)
    calls: dict[str, Callable[[], object]] = {
        "propose": lambda: client.propose({"level_sp": 1.0}, "x"),
        "signals": client.signals,
        "unknown": lambda: client.approve("p-404"),
        "empty-reason": lambda: client.reject("p-1", ""),
        "ask": lambda: client.ask_agent("look"),
        "empty-note": lambda: client.ask_agent("  "),
    }
    with pytest.raises(ApiError) as caught:
        calls[call]()
    assert not isinstance(caught.value, ApiUnreachable)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert str(caught.value).startswith(f"HTTP {status} {code}: ")
    assert caught.value.message


def test_a_server_error_is_an_api_error_with_status_500(api: Api) -> None:
    """A 500 arrives as ApiError(500, 'internal_error', ...)."""
    api.service.fail = RuntimeError("boom")
    with pytest.raises(ApiError) as caught:
        ApiClient(api.port, VIEWER).signals()
    assert (caught.value.status, caught.value.code) == (500, "internal_error")


def test_connection_refused_says_to_start_the_gateway() -> None:
    """Nothing listening: ApiUnreachable naming the fix and the address."""
    port = free_port()
    with pytest.raises(ApiUnreachable) as caught:
        ApiClient(port, OPERATOR).signals()
    assert caught.value.status is None
    assert str(caught.value) == (
        f"unreachable: connection refused: is `edgetwin run` running? API on 127.0.0.1:{port}"
    )


def test_proxy_settings_are_ignored_for_the_loopback_api(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An http_proxy in the environment must not carry the request (and token) away."""
    dead = free_port()
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{dead}")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    assert ApiClient(api.port, VIEWER).signals()


def test_an_id_is_quoted_into_the_path(api: Api) -> None:
    """An id with '/' or '?' cannot reach another route: it is one path segment, which
    the server then refuses as not an id."""
    with pytest.raises(ApiError) as caught:
        ApiClient(api.port, VIEWER).proposal("../../v1/signals?x=1")
    assert (caught.value.status, caught.value.code) == (400, "invalid_id")


# -- where the token comes from -------------------------------------------------------------


def _token_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "token"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_token_precedence_is_flag_then_file_then_environment(tmp_path: Path) -> None:
    """--token beats --token-file beats $EDGETWIN_TOKEN; surrounding whitespace goes."""
    path = _token_file(tmp_path, "from-file\n")
    env = {"EDGETWIN_TOKEN": " from-env "}
    assert resolve_token("from-flag", path, env) == "from-flag"
    assert resolve_token(None, path, env) == "from-file"
    assert resolve_token(None, None, env) == "from-env"


@pytest.mark.parametrize(
    ("text", "mode", "match"),
    [
        pytest.param(
            "tok", 0o644, r"mode 0644 lets others read the token; fix: chmod 600", id="open"
        ),
        pytest.param("  \n", 0o600, "the token file is empty", id="empty"),
    ],
)
def test_a_token_file_must_be_private_and_not_empty(
    tmp_path: Path, text: str, mode: int, match: str
) -> None:
    """A token file is a credential: readable by others, or empty, it is refused."""
    path = _token_file(tmp_path, text, mode)
    with pytest.raises(ApiError, match=match):
        resolve_token(None, path, {})


def test_no_token_anywhere_says_where_to_put_one(tmp_path: Path) -> None:
    """Neither flag, file nor environment: a 'no_token' error listing all three."""
    with pytest.raises(ApiError) as caught:
        resolve_token(None, None, {})
    assert caught.value.code == "no_token"
    assert "EDGETWIN_TOKEN" in caught.value.message
    assert "--token-file" in caught.value.message
    with pytest.raises(ApiError, match="cannot read the token file"):
        resolve_token(None, tmp_path / "absent", {})
