"""The API server's contract: authentication, roles, strict validation, error mapping,
logging, and an OpenAPI document that lists exactly what is served."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.api import openapi
from gateway.api.ports import ControlError, ProposalRequest, Role
from gateway.api.server import ROUTES, ApiServer
from tests.api.conftest import ENGINEER, OPERATOR, TOKENS, VIEWER, Api, token_table

REASON = "raise the level before the shift"
GOOD: dict[str, Any] = {"targets": {"level_sp": 1.8}, "reason": REASON}


def _propose(api: Api, body: bytes | dict[str, Any], token: str | None = OPERATOR) -> Any:
    return api.call("POST", "/v1/proposals", body=body, token=token)


# -- authentication -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer not-a-token"}, id="unknown-token"),
        pytest.param({"Authorization": f"Basic {OPERATOR}"}, id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer "}, id="empty-token"),
        pytest.param({"Authorization": OPERATOR}, id="no-scheme"),
        pytest.param({"Authorization": f"Bearer {OPERATOR}x"}, id="token-plus-one"),
        pytest.param({"Authorization": "Bearer " + "a" * 600}, id="overlong"),
    ],
)
def test_requests_without_a_known_token_get_401_and_reach_nothing(
    api: Api, headers: dict[str, str]
) -> None:
    """No token, or one the file does not hold: 401 with a JSON body and the Bearer
    challenge; the service is not called at all."""
    answer = api.call("POST", "/v1/proposals", body=GOOD, token=None, headers=headers)
    assert answer.status == 401
    assert answer.body["error"] == "unauthorized"
    assert "edgetwin token add" in answer.body["message"]
    assert answer.headers["www-authenticate"] == 'Bearer realm="edgetwin"'
    assert api.service.calls == []


def test_bearer_scheme_is_case_insensitive(api: Api) -> None:
    """RFC 7235: the scheme name is case-insensitive; 'bearer' works like 'Bearer'."""
    answer = api.call(
        "GET", "/v1/signals", token=None, headers={"Authorization": f"bearer {VIEWER}"}
    )
    assert answer.status == 200


# -- roles ----------------------------------------------------------------------------------

#: The least role of each operation, written out independently of ROUTES.
LEAST_ROLE = {
    ("GET", "/v1/signals"): Role.VIEWER,
    ("GET", "/v1/alerts"): Role.VIEWER,
    ("GET", "/v1/proposals"): Role.VIEWER,
    ("GET", "/v1/proposals/{id}"): Role.VIEWER,
    ("GET", "/v1/openapi.json"): Role.VIEWER,
    ("POST", "/v1/proposals"): Role.OPERATOR,
    ("POST", "/v1/proposals/{id}/approve"): Role.OPERATOR,
    ("POST", "/v1/proposals/{id}/reject"): Role.OPERATOR,
    ("POST", "/v1/autonomy/resume"): Role.OPERATOR,
    ("POST", "/v1/agent/requests"): Role.OPERATOR,
}

#: Success statuses other than 200: asking the agent only queues the work (202 Accepted).
ACCEPTED = {("POST", "/v1/agent/requests")}

BODIES: dict[str, dict[str, Any]] = {
    "/v1/proposals": GOOD,
    "/v1/proposals/{id}/approve": {"note": "looks fine"},
    "/v1/proposals/{id}/reject": {"reason": "not now"},
    "/v1/autonomy/resume": {"note": "read-back fixed"},
    "/v1/agent/requests": {"note": "the pump sounds odd"},
}


def test_routes_declare_the_documented_least_roles() -> None:
    """Each route asks for the role the issue gives it: viewers read, operators act."""
    assert {(r.method, r.path): r.role for r in ROUTES} == LEAST_ROLE
    assert {(r.method, r.path) for r in ROUTES if r.status == 202} == ACCEPTED


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize(("method", "path"), list(LEAST_ROLE))
def test_each_role_may_do_exactly_what_its_rank_allows(
    api: Api, role: Role, method: str, path: str
) -> None:
    """A viewer may read but not propose, approve, reject, resume or ask the agent (403);
    an operator and an engineer may do everything; an allowed call reaches the service as
    that caller."""
    api.service.store["p-9"] = {"proposal_id": "p-9", "status": "pending", "approvals": []}
    name, token = TOKENS[role]
    answer = api.call(method, path.replace("{id}", "p-9"), token=token, body=BODIES.get(path))
    if role.allows(LEAST_ROLE[(method, path)]):
        assert answer.status == (202 if (method, path) in ACCEPTED else 200), answer.body
        if method == "POST":
            (_, args), *_ = api.service.calls
            assert args[0].name == name
    else:
        assert answer.status == 403
        assert answer.body["error"] == "forbidden"
        assert f"needs the {LEAST_ROLE[(method, path)].value} role" in answer.body["message"]
        assert api.service.calls == []


def test_the_proposer_is_the_tokens_name_and_role(api: Api) -> None:
    """The service is told who asked (the token's name, never a name from the body)."""
    assert _propose(api, GOOD).status == 200
    ((kind, args),) = api.service.calls
    assert kind == "submit"
    caller, request = args
    assert (caller.name, caller.role) == ("otto", Role.OPERATOR)
    assert request == ProposalRequest(targets={"level_sp": 1.8}, reason=REASON)


def test_asking_the_agent_is_accepted_with_the_incident(api: Api) -> None:
    """POST /v1/agent/requests: 202 (queued, not answered) with the service's incident;
    the service is told who asked and what they said, word for word."""
    note = "the pump sounds odd, have a look"
    answer = api.call("POST", "/v1/agent/requests", body={"note": note})
    assert answer.status == 202
    assert answer.body == {"incident": "request-0-1", "queued": 1}
    ((kind, (caller, sent)),) = api.service.calls
    assert (kind, caller.name, caller.role, sent) == ("ask_agent", "otto", Role.OPERATOR, note)


def test_asking_the_agent_when_it_cannot_take_it_is_a_503(api: Api) -> None:
    """The service's 503 (no agent, queue full) reaches the client with its code."""
    api.service.fail = ControlError(503, "agent_unavailable", "no agent is attached")
    answer = api.call("POST", "/v1/agent/requests", body={"note": "look"})
    assert answer.status == 503
    assert answer.body == {"error": "agent_unavailable", "message": "no agent is attached"}


def test_a_rejected_verdict_is_a_200_result(api: Api) -> None:
    """A proposal the gate rejects is an answer, not an error: 200 with the reasons."""
    answer = _propose(api, {"targets": {"level_sp": 2.9}, "reason": "overfill"})
    assert answer.status == 200
    assert answer.body["decision"] == "rejected"
    assert answer.body["reasons"][0]["code"] == "above_limit"


# -- strict validation ----------------------------------------------------------------------

LONG = "x" * (openapi.MAX_TEXT_CHARS + 1)
INVALID_PROPOSALS = [
    pytest.param(b"[]", "must be a JSON object, not list", id="array"),
    pytest.param(b'"text"', "must be a JSON object, not str", id="string"),
    pytest.param(b"", "not valid JSON", id="empty"),
    pytest.param(b"{", "not valid JSON", id="truncated"),
    pytest.param(b"\xff\xfe{}", "not UTF-8", id="not-utf8"),
    pytest.param(
        b'{"targets": {"level_sp": NaN}, "reason": "x"}', "NaN is not a JSON number", id="nan"
    ),
    pytest.param(
        b'{"targets": {"level_sp": Infinity}, "reason": "x"}', "Infinity is not a JSON", id="inf"
    ),
    pytest.param(
        b'{"targets": {"level_sp": -Infinity}, "reason": "x"}', "-Infinity is not", id="-inf"
    ),
    pytest.param(
        b'{"targets": {"level_sp": 1e999}, "reason": "x"}', "must be a finite number", id="1e999"
    ),
    pytest.param(
        b'{"targets": {"level_sp": 1' + b"0" * 400 + b'}, "reason": "x"}',
        "is too large",
        id="huge-int",
    ),
    pytest.param(
        b'{"targets": {"level_sp": 1' + b"0" * 5000 + b'}, "reason": "x"}',
        "not valid JSON",
        id="int-beyond-str-digits",
    ),
    pytest.param({"targets": {"level_sp": "1.8"}, "reason": "x"}, "must be a number", id="str-val"),
    pytest.param({"targets": {"level_sp": True}, "reason": "x"}, "must be a number", id="bool-val"),
    pytest.param({"targets": {"level_sp": None}, "reason": "x"}, "must be a number", id="null-val"),
    pytest.param({"targets": {"level_sp": [1]}, "reason": "x"}, "must be a number", id="list-val"),
    pytest.param({"targets": {}, "reason": "x"}, "at least one writable tag", id="no-targets"),
    pytest.param({"targets": [1.8], "reason": "x"}, "must be an object", id="targets-list"),
    pytest.param({"targets": {"Level SP": 1.0}, "reason": "x"}, "not a tag name", id="bad-tag"),
    pytest.param({"targets": {"level_sp\n": 1.0}, "reason": "x"}, "not a tag name", id="tag-nl"),
    pytest.param(
        {"targets": {f"t{i}": 1.0 for i in range(openapi.MAX_TARGETS + 1)}, "reason": "x"},
        f"at most {openapi.MAX_TARGETS}",
        id="too-many-targets",
    ),
    pytest.param(
        {"targets": {"level_sp": 1.8}}, "required field(s) missing: reason", id="no-reason"
    ),
    pytest.param({"reason": "x"}, "required field(s) missing: targets", id="no-targets-key"),
    pytest.param({**GOOD, "reason": "   "}, "reason: must not be empty", id="blank-reason"),
    pytest.param({**GOOD, "reason": 5}, "reason: must be a string", id="reason-int"),
    pytest.param({**GOOD, "reason": LONG}, "at most 2000", id="reason-too-long"),
    pytest.param({**GOOD, "expiry": 60}, "unknown field(s) 'expiry'", id="unknown-field"),
    pytest.param({**GOOD, "proposer": "root"}, "unknown field(s) 'proposer'", id="proposer-field"),
    pytest.param({**GOOD, "expires_in_s": 0}, "expires_in_s: 0 is not in", id="expires-0"),
    pytest.param({**GOOD, "expires_in_s": -5}, "expires_in_s: -5 is not in", id="expires-neg"),
    pytest.param({**GOOD, "expires_in_s": 1e7}, "is not in (0, 86400]", id="expires-long"),
    pytest.param({**GOOD, "expires_in_s": "600"}, "must be a number", id="expires-str"),
    pytest.param({**GOOD, "expires_in_s": True}, "must be a number", id="expires-bool"),
    pytest.param(
        b'{"targets": {"level_sp": 1.0, "level_sp": 2.0}, "reason": "x"}',
        "appears twice",
        id="duplicate-tag",
    ),
    pytest.param(
        b'{"targets": {"level_sp": 1.0}, "reason": "x", "reason": "y"}',
        "appears twice",
        id="duplicate-field",
    ),
    pytest.param(b"[" * 100_000, None, id="deep-nesting-too-large"),
    pytest.param(b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested too deeply", id="deep-nesting"),
]


@pytest.mark.parametrize(("body", "expected"), INVALID_PROPOSALS)
def test_malformed_proposals_are_refused_before_the_service(
    api: Api, body: bytes | dict[str, Any], expected: str | None
) -> None:
    """Each malformed body is a 400 (413 when oversized) naming the problem; the service
    never sees it, so the gate never gets a NaN, a bool, a string or an unknown field."""
    answer = _propose(api, body)
    if expected is None:
        assert answer.status == 413
    else:
        assert answer.status == 400, answer.body
        assert expected in answer.body["message"]
    assert api.service.calls == []


def test_valid_proposal_forms_are_accepted(api: Api) -> None:
    """Integers, negative numbers, several tags, an explicit expiry or null are all fine,
    and reach the service as floats."""
    answer = _propose(
        api,
        {
            "targets": {"level_sp": 2, "temp_sp": -0.5},
            "reason": "r" * openapi.MAX_TEXT_CHARS,
            "expires_in_s": 600,
        },
    )
    assert answer.status == 200
    assert _propose(api, {**GOOD, "expires_in_s": None}).status == 200
    first, second = api.service.submitted()
    assert first.targets == {"level_sp": 2.0, "temp_sp": -0.5}
    assert all(type(v) is float for v in first.targets.values())
    assert first.expires_in_s == 600.0
    assert second.expires_in_s is None


def test_a_body_over_the_limit_is_refused_with_413(api: Api) -> None:
    """A body larger than MAX_BODY_BYTES is refused (announced or chunked) unread."""
    big = {**GOOD, "reason": "x" * openapi.MAX_BODY_BYTES}
    answer = _propose(api, big)
    assert answer.status == 413
    assert answer.body["error"] == "payload_too_large"
    # An iterable body: http.client sends it chunked, without a Content-Length.
    chunked = api.call("POST", "/v1/proposals", body=iter([json.dumps(big).encode()]))
    assert chunked.status == 413
    assert api.service.calls == []


def test_a_body_not_sent_as_json_is_refused_with_415(api: Api) -> None:
    """A form post (what a browser can send without a preflight) is refused."""
    answer = api.call(
        "POST",
        "/v1/proposals",
        body=json.dumps(GOOD).encode(),
        content_type="application/x-www-form-urlencoded",
    )
    assert answer.status == 415
    assert "application/json" in answer.body["message"]


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        pytest.param("/v1/proposals/p-1/approve", {"note": 5}, "note: must be a string", id="note"),
        pytest.param("/v1/proposals/p-1/approve", {"by": "x"}, "unknown field", id="approve-extra"),
        pytest.param("/v1/proposals/p-1/approve", {"note": LONG}, "at most 2000", id="note-long"),
        pytest.param("/v1/proposals/p-1/reject", {}, "missing: reason", id="reject-no-reason"),
        pytest.param("/v1/proposals/p-1/reject", {"reason": ""}, "must not be empty", id="empty"),
        pytest.param("/v1/autonomy/resume", {}, "missing: note", id="resume-no-note"),
        pytest.param("/v1/autonomy/resume", {"note": " "}, "must not be empty", id="resume-blank"),
        pytest.param("/v1/agent/requests", {}, "missing: note", id="ask-no-note"),
        pytest.param("/v1/agent/requests", {"note": ""}, "must not be empty", id="ask-empty"),
        pytest.param("/v1/agent/requests", {"note": " \n"}, "must not be empty", id="ask-blank"),
        pytest.param("/v1/agent/requests", {"note": ["x"]}, "must be a string", id="ask-list"),
        pytest.param("/v1/agent/requests", {"note": LONG}, "at most 2000", id="ask-long"),
        pytest.param(
            "/v1/agent/requests", {"note": "x", "urgent": True}, "unknown field", id="ask-extra"
        ),
        pytest.param("/v1/agent/requests?now=1", {"note": "x"}, "unknown query", id="ask-query"),
        pytest.param("/v1/proposals/p%20x/approve", {}, "is not a proposal id", id="bad-id"),
        pytest.param("/v1/proposals?x=1", GOOD, "unknown query parameter", id="query-on-post"),
    ],
)
def test_other_bodies_are_validated_too(
    api: Api, path: str, body: dict[str, Any], expected: str
) -> None:
    """Approve, reject, resume and ask take only their fields; a rejection, a resumption
    and a question to the agent must say why."""
    api.service.store["p-1"] = {"proposal_id": "p-1", "status": "pending", "approvals": []}
    answer = api.call("POST", path, body=body)
    assert answer.status == 400, answer.body
    assert expected in answer.body["message"]
    assert api.service.calls == []


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        pytest.param("/v1/proposals?status=pending", 200, None, id="status-filter"),
        pytest.param("/v1/proposals?status=Pending!", 400, "not a status name", id="bad-status"),
        pytest.param("/v1/proposals?status=a&status=b", 400, "more than once", id="two-status"),
        pytest.param("/v1/proposals?limit=5", 400, "unknown query parameter", id="unknown-q"),
        pytest.param("/v1/signals?verbose=1", 400, "unknown query parameter", id="signals-q"),
    ],
)
def test_query_parameters_are_strict(
    api: Api, path: str, status: int, expected: str | None
) -> None:
    """Only GET /v1/proposals takes a parameter (status); anything else is refused."""
    answer = api.call("GET", path, token=VIEWER)
    assert answer.status == status
    if expected is not None:
        assert expected in answer.body["message"]
    else:
        assert api.service.calls == [("proposals", ("pending",))]


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 503])
def test_control_errors_become_their_status_with_code_and_message(api: Api, status: int) -> None:
    """A ControlError from the service is answered with its status, code and message."""
    api.service.fail = ControlError(status, "some_code", "what happened; the fix")
    answer = _propose(api, GOOD)
    assert answer.status == status
    assert answer.body == {"error": "some_code", "message": "what happened; the fix"}


def test_unknown_proposal_is_404(api: Api) -> None:
    """GET of an id the service does not know is its 404, passed through."""
    answer = api.call("GET", "/v1/proposals/p-404", token=VIEWER)
    assert answer.status == 404
    assert answer.body["error"] == "unknown_proposal"


def test_a_control_error_with_a_non_error_status_is_a_500(api: Api) -> None:
    """A service bug (ControlError(200, ...)) must not read as success."""
    api.service.fail = ControlError(200, "odd", "odd")
    with capture_logs() as logs:
        answer = _propose(api, GOOD)
    assert (answer.status, answer.body["error"]) == (500, "internal_error")
    assert "api_control_error_status_invalid" in [e["event"] for e in logs]


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(RuntimeError("secret internal detail /etc/edgetwin"), id="exception"),
        pytest.param(KeyError("gate_state"), id="key-error"),
    ],
)
def test_an_unexpected_exception_is_a_generic_500_logged_with_its_traceback(
    api: Api, failure: Exception
) -> None:
    """The client learns only that it failed; the log has the exception and traceback."""
    api.service.fail = failure
    with capture_logs() as logs:
        answer = _propose(api, GOOD)
    assert answer.status == 500
    assert answer.body == {
        "error": "internal_error",
        "message": "internal error; see the gateway log",
    }
    assert "Traceback" not in answer.text
    assert str(failure) not in answer.text
    (failed,) = [e for e in logs if e["event"] == "api_request_failed"]
    assert failed["log_level"] == "error"
    assert failed["exc_info"] is True
    assert (failed["method"], failed["path"], failed["caller"]) == ("POST", "/v1/proposals", "otto")


def test_a_result_with_nan_is_a_500_not_invalid_json(api: Api) -> None:
    """The service promises JSON-ready results; a NaN in one is a bug, surfaced as 500."""
    api.service.result_override = {"proposal_id": "p-1", "decision": "x", "margin": float("nan")}
    answer = _propose(api, GOOD)
    assert answer.status == 500
    assert "NaN" not in answer.text


def test_unknown_route_and_wrong_method_answer_json(api: Api) -> None:
    """Routing errors are in the same JSON shape; 405 names the allowed methods."""
    missing = api.call("GET", "/v1/nothing", token=VIEWER)
    assert missing.status == 404
    assert missing.body["error"] == "not_found"
    wrong = api.call("DELETE", "/v1/proposals", token=OPERATOR)
    assert wrong.status == 405
    assert wrong.body["error"] == "method_not_allowed"
    assert set(wrong.headers["allow"].split(",")) == {"GET", "POST"}


# -- logging --------------------------------------------------------------------------------


def test_every_request_is_logged_once_without_the_token(api: Api) -> None:
    """One 'api_request' event per request with method, path, caller and status; neither
    the token nor the Authorization header appears anywhere in the log."""
    with capture_logs() as logs:
        _propose(api, GOOD)
        api.call("GET", "/v1/signals", token="wrong-token-123")
        api.call("POST", "/v1/proposals", token=VIEWER, body=GOOD)
    requests = [e for e in logs if e["event"] == "api_request"]
    assert [(e["method"], e["path"], e["caller"], e["status"]) for e in requests] == [
        ("POST", "/v1/proposals", "otto", 200),
        ("GET", "/v1/signals", None, 401),
        ("POST", "/v1/proposals", "vera", 403),
    ]
    text = repr(logs)
    for secret in (OPERATOR, VIEWER, "wrong-token-123", "Bearer", "uthorization"):
        assert secret not in text


# -- binding --------------------------------------------------------------------------------


def test_the_server_listens_on_loopback_only(api: Api) -> None:
    """Bound to 127.0.0.1 (never 0.0.0.0): nobody off the box can reach it."""
    assert api.server._runner is not None
    assert [address[0] for address in api.server._runner.addresses] == ["127.0.0.1"]
    assert api.server.url == f"http://127.0.0.1:{api.port}"


async def test_a_taken_port_fails_the_start_and_leaves_nothing_running(api: Api) -> None:
    """Starting on a port in use raises OSError (the daemon reports it) and cleans up."""
    second = ApiServer(api.service, token_table(), api.port)
    with pytest.raises(OSError, match="address already in use"):
        await second.start()
    with pytest.raises(RuntimeError, match="not started"):
        _ = second.port
    await second.stop()  # idempotent after a failed start


async def test_context_manager_starts_and_stops(api: Api) -> None:
    """`async with` binds a port and answers; on exit the port is closed."""
    async with ApiServer(api.service, token_table(), 0) as server:
        port = server.port
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        await writer.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


def test_port_out_of_range_is_refused(api: Api) -> None:
    """A port outside 0..65535 is a programming error, caught at construction."""
    with pytest.raises(ValueError, match="not a TCP port"):
        ApiServer(api.service, token_table(), 70000)


# -- OpenAPI --------------------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_openapi_lists_exactly_the_served_routes_with_their_roles(api: Api) -> None:
    """Every route the app serves is in the document with the same least role and success
    status, and the document lists nothing the app does not serve."""
    served = {
        (route.method, route.resource.canonical)
        for route in api.server.app.router.routes()
        if route.resource is not None
    }
    doc = openapi.document()
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert served == documented
    roles = {
        (method.upper(), path): op["x-required-role"]
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }
    assert roles == {(r.method, r.path): r.role.value for r in ROUTES}
    successes = {
        (method.upper(), path): [code for code in op["responses"] if code.startswith("2")]
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
    }
    assert successes == {(r.method, r.path): [str(r.status)] for r in ROUTES}


def test_openapi_references_resolve_and_limits_match() -> None:
    """Every $ref points at a component that exists; the documented limits are the ones
    the server enforces."""
    doc = openapi.document()
    for ref in _refs(doc):
        _, section, kind, name = ref.split("/")
        assert name in doc[section][kind], ref
    proposal = doc["components"]["schemas"]["ProposalRequest"]
    assert proposal["additionalProperties"] is False
    assert proposal["properties"]["reason"]["maxLength"] == openapi.MAX_TEXT_CHARS
    assert proposal["properties"]["targets"]["maxProperties"] == openapi.MAX_TARGETS
    ask = doc["components"]["schemas"]["AgentRequest"]
    assert (ask["required"], ask["additionalProperties"]) == (["note"], False)
    assert ask["properties"]["note"]["maxLength"] == openapi.MAX_TEXT_CHARS
    assert doc["openapi"] == "3.1.0"


def test_openapi_is_served_to_a_viewer_with_the_real_port(api: Api) -> None:
    """GET /v1/openapi.json (viewer) returns the document naming this server's URL; no
    token, no document."""
    answer = api.call("GET", "/v1/openapi.json", token=VIEWER)
    assert answer.status == 200
    assert answer.body["servers"] == [{"url": f"http://127.0.0.1:{api.port}"}]
    assert answer.body == json.loads(json.dumps(openapi.document(api.port)))
    assert api.call("GET", "/v1/openapi.json", token=None).status == 401


def test_engineer_token_works_where_an_operator_does(api: Api) -> None:
    """Roles are ordered: an engineer may submit like an operator."""
    assert _propose(api, GOOD, token=ENGINEER).status == 200
