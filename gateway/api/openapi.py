"""The control API's contract: its limits and its OpenAPI 3.1 document, written by hand.

Written by hand rather than generated from the handlers because the document is what an
integrator (a SCADA script, an optimiser submitting proposals) builds against: it should
say what the API promises, including the strictness (unknown fields refused, finite
numbers only, size limits), in words a reviewer can check. A test holds it to the server:
every route the server serves is documented with the same role, and nothing else is.

The limits live here, with the contract, and ``gateway.api.server`` enforces them; so the
document cannot drift from the numbers the server checks.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "ID_PATTERN",
    "MAX_BODY_BYTES",
    "MAX_EXPIRES_S",
    "MAX_TARGETS",
    "MAX_TEXT_CHARS",
    "MAX_TOKEN_CHARS",
    "STATUS_PATTERN",
    "TAG_PATTERN",
    "document",
]

API_VERSION: Final = "1.1.0"

#: Largest request body, bytes. A proposal is a few tags and a sentence; anything near
#: this is a mistake or an attack, and it is refused before it is parsed.
MAX_BODY_BYTES: Final = 64 * 1024
#: Longest reason or note, characters: enough for an explanation an approver will read,
#: short enough that the audit trail and an approval screen stay usable.
MAX_TEXT_CHARS: Final = 2000
#: Most targets in one proposal. The skid has three writable tags; a proposal naming more
#: than a few dozen is not a proposal a human can review.
MAX_TARGETS: Final = 32
#: Longest expiry a proposer may ask for, seconds: a proposal is about the plant as it is
#: now, and a day later it is about a different plant.
MAX_EXPIRES_S: Final = 86400.0
#: Longest bearer token looked at; generated tokens are 43 characters.
MAX_TOKEN_CHARS: Final = 512
#: A writable tag's name, as the config declares names (``gateway.config.schema.Name``).
TAG_PATTERN: Final = r"[a-z][a-z0-9_]{0,63}"
#: A proposal id as it may appear in a path.
ID_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
#: A proposal status filter (the service decides which statuses exist).
STATUS_PATTERN: Final = r"[a-z][a-z_]{0,31}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _text(description: str, *, required: bool) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": MAX_TEXT_CHARS}
    if required:
        schema |= {"minLength": 1, "pattern": r"\S"}
    return schema | {"description": description}


_SCHEMAS: Final[dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "additionalProperties": False,
        "properties": {
            "error": {"type": "string", "description": "Machine-readable code."},
            "message": {"type": "string", "description": "What went wrong, and the fix."},
        },
    },
    "ProposalRequest": {
        "type": "object",
        "description": (
            "Absolute targets, never increments (a retried request must not move a "
            "setpoint twice). Unknown fields are refused. Numbers must be finite: NaN and "
            "Infinity (which standard JSON cannot hold, but some encoders write) are refused."
        ),
        "required": ["targets", "reason"],
        "additionalProperties": False,
        "properties": {
            "targets": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": MAX_TARGETS,
                "propertyNames": {"pattern": f"^{TAG_PATTERN}$"},
                "additionalProperties": {"type": "number"},
                "description": "Writable tag -> absolute target value, in the tag's unit.",
            },
            "reason": _text("Why; shown to approvers and kept in the audit trail.", required=True),
            "expires_in_s": {
                "type": ["number", "null"],
                "exclusiveMinimum": 0,
                "maximum": MAX_EXPIRES_S,
                "description": "How long the proposal stays valid; null: the configured default.",
            },
        },
    },
    "ApproveRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"note": _text("Recorded with the approval.", required=False)},
    },
    "RejectRequest": {
        "type": "object",
        "required": ["reason"],
        "additionalProperties": False,
        "properties": {"reason": _text("Why it is rejected (audit trail).", required=True)},
    },
    "ResumeRequest": {
        "type": "object",
        "required": ["note"],
        "additionalProperties": False,
        "properties": {
            "note": _text(
                "What was checked before autonomous writes are re-enabled (audit trail).",
                required=True,
            )
        },
    },
    "AgentRequest": {
        "type": "object",
        "required": ["note"],
        "additionalProperties": False,
        "properties": {
            "note": _text(
                "What to look at and why, e.g. 'the pump sounds odd'; the agent records it "
                "with the caller's name when it starts (audit trail: agent_started).",
                required=True,
            )
        },
    },
    "AgentRequestAccepted": {
        "type": "object",
        "description": (
            "The request is queued, not answered: the agent's diagnosis arrives later in the "
            "audit trail (agent_* records) and, if it proposes, in GET /v1/proposals."
        ),
        "required": ["incident"],
        "properties": {
            "incident": {
                "type": "string",
                "description": "The incident id the agent's audit records carry.",
            },
            "queued": {
                "type": "integer",
                "description": "Requests and incidents waiting for the agent, this included.",
            },
        },
    },
    "ProposalResult": {
        "type": "object",
        "description": (
            "The gate's answer, whatever it is: a rejection is a result (200), not an error."
        ),
        "required": ["proposal_id", "decision"],
        "properties": {
            "proposal_id": {"type": "string"},
            "decision": {"type": "string"},
            "verdict": {"type": "object"},
            "reasons": {"type": "array", "items": {}},
        },
    },
    "Proposal": {
        "type": "object",
        "description": "A proposal with its verdict, approvals and status.",
    },
    "AutonomyState": {"type": "object", "description": "The autonomy state after the change."},
    "SignalList": {
        "type": "object",
        "required": ["signals"],
        "properties": {
            "signals": {
                "type": "array",
                "items": {
                    "type": "object",
                    "description": "name, value, unit, quality, reason, timestamps",
                },
            }
        },
    },
    "AlertList": {
        "type": "object",
        "required": ["alerts"],
        "properties": {"alerts": {"type": "array", "items": {"type": "object"}}},
    },
    "ProposalList": {
        "type": "object",
        "required": ["proposals"],
        "properties": {"proposals": {"type": "array", "items": _ref("Proposal")}},
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": _json(_ref("Error"))}


_RESPONSES: Final[dict[str, Any]] = {
    "BadRequest": _error(
        "Malformed request: not a JSON object, unknown field, wrong type, non-finite number, "
        "empty reason, bad query parameter."
    ),
    "Unauthorized": _error("No token, or a token the gateway does not know."),
    "Forbidden": _error("The token's role does not allow this (or the service refuses it)."),
    "NotFound": _error("No such proposal, or no such route."),
    "MethodNotAllowed": _error("The route exists, but not with this method."),
    "Conflict": _error("The proposal was already decided, or has expired."),
    "PayloadTooLarge": _error(f"The body is larger than {MAX_BODY_BYTES} bytes."),
    "UnsupportedMediaType": _error("The body is not sent as application/json."),
    "Unprocessable": _error("Well-formed but invalid, e.g. a tag that is not writable."),
    "Internal": _error("An internal error; the gateway log has the details, the client none."),
    "Unavailable": _error(
        "The gateway is not ready (e.g. the twin is warming up), or the agent is not running "
        "or its queue is full."
    ),
}

_COMMON: Final = {
    "400": "BadRequest",
    "401": "Unauthorized",
    "403": "Forbidden",
    "405": "MethodNotAllowed",
    "500": "Internal",
}
_BODY_ERRORS: Final = {"413": "PayloadTooLarge", "415": "UnsupportedMediaType"}
_SERVICE_ERRORS: Final = {"409": "Conflict", "422": "Unprocessable", "503": "Unavailable"}

#: Success statuses and their descriptions: 202 where the work is only queued.
_SUCCESS: Final = {200: "OK", 202: "Accepted: queued; the outcome is recorded later"}

_ID_PARAMETER: Final = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": f"^{ID_PATTERN}$"},
    "description": "The proposal id returned by POST /v1/proposals.",
}


def _op(
    operation_id: str,
    summary: str,
    role: str,
    result: str | dict[str, Any],
    *,
    body: str | None = None,
    errors: dict[str, str] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    status: int = 200,
) -> dict[str, Any]:
    codes = {**_COMMON, **(errors or {}), **(_BODY_ERRORS if body else {})}
    responses: dict[str, Any] = {
        str(status): {
            "description": _SUCCESS[status],
            "content": _json(_ref(result) if isinstance(result, str) else result),
        }
    }
    responses |= {code: {"$ref": f"#/components/responses/{codes[code]}"} for code in sorted(codes)}
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "x-required-role": role,
        "responses": responses,
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(_ref(body))}
    if parameters:
        op["parameters"] = parameters
    return op


def document(port: int = 8484) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API served on ``127.0.0.1:port``.

    ``x-required-role`` on each operation names the least role that may call it; roles
    are ordered viewer < operator < engineer, each allowed what the ones before it are.
    """
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "edgetwin local control API",
            "version": API_VERSION,
            "description": (
                "Lists signals, alerts and proposals; accepts proposals, approvals, "
                "rejections and requests for the agent to have a look. Served on 127.0.0.1 "
                "only. Every request needs 'Authorization: Bearer <token>' (tokens: "
                "`edgetwin token add`). Request bodies are JSON objects sent as "
                "application/json; unknown fields are refused. Errors are "
                "{'error': code, 'message': text}."
            ),
        },
        "servers": [{"url": f"http://127.0.0.1:{port}"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from the gateway's tokens file; its role "
                    "(viewer, operator, engineer) decides what it may do.",
                }
            },
            "schemas": _SCHEMAS,
            "responses": _RESPONSES,
        },
        "paths": {
            "/v1/signals": {
                "get": _op("listSignals", "Every configured signal", "viewer", "SignalList")
            },
            "/v1/alerts": {"get": _op("listAlerts", "Active alerts", "viewer", "AlertList")},
            "/v1/proposals": {
                "get": _op(
                    "listProposals",
                    "Proposals, newest first, each with its verdict",
                    "viewer",
                    "ProposalList",
                    parameters=[
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "pattern": f"^{STATUS_PATTERN}$"},
                            "description": "Only proposals in this status, e.g. 'pending'.",
                        }
                    ],
                ),
                "post": _op(
                    "submitProposal",
                    "Submit a proposal; it is run through the gate and the verdict returned",
                    "operator",
                    "ProposalResult",
                    body="ProposalRequest",
                    errors=_SERVICE_ERRORS,
                ),
            },
            "/v1/proposals/{id}": {
                "get": _op(
                    "getProposal",
                    "One proposal with its verdict and audit story",
                    "viewer",
                    "Proposal",
                    errors={"404": "NotFound"},
                    parameters=[_ID_PARAMETER],
                )
            },
            "/v1/proposals/{id}/approve": {
                "post": _op(
                    "approveProposal",
                    "Approve a pending proposal (it is re-checked before any write)",
                    "operator",
                    "Proposal",
                    body="ApproveRequest",
                    errors={"404": "NotFound", **_SERVICE_ERRORS},
                    parameters=[_ID_PARAMETER],
                )
            },
            "/v1/proposals/{id}/reject": {
                "post": _op(
                    "rejectProposal",
                    "Reject a pending proposal",
                    "operator",
                    "Proposal",
                    body="RejectRequest",
                    errors={"404": "NotFound", **_SERVICE_ERRORS},
                    parameters=[_ID_PARAMETER],
                )
            },
            "/v1/autonomy/resume": {
                "post": _op(
                    "resumeAutonomy",
                    "Re-enable autonomous writes after a read-back or outcome failure",
                    "operator",
                    "AutonomyState",
                    body="ResumeRequest",
                    errors=_SERVICE_ERRORS,
                )
            },
            "/v1/agent/requests": {
                "post": _op(
                    "askAgent",
                    "Ask the diagnosing agent to look at the plant now; it answers later, in "
                    "the audit trail and as proposals",
                    "operator",
                    "AgentRequestAccepted",
                    body="AgentRequest",
                    errors={"503": "Unavailable"},
                    status=202,
                )
            },
            "/v1/openapi.json": {
                "get": _op(
                    "getOpenApi",
                    "This document",
                    "viewer",
                    {"type": "object", "description": "OpenAPI 3.1 document"},
                )
            },
        },
    }
