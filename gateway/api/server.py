"""The local control API: HTTP + JSON on 127.0.0.1, bearer tokens, three roles.

This layer knows HTTP, tokens and roles, and nothing of gates or writers: it turns a
request into one call on a :class:`~gateway.api.ports.ControlService` and the result into
JSON. Everything it lets through has been checked against the contract in
``gateway.api.openapi``; the governance behind it checks again, but a malformed value
should never get that far.

Why so strict at the door: a proposal is a request to move a real setpoint. Python's
``json`` accepts ``NaN`` and ``Infinity``, silently keeps the last of two equal keys, and
``True`` is an ``int``; each of those would reach the gate as something the proposer did
not mean. So bodies are parsed with those holes closed, unknown fields are refused rather
than ignored (a misspelt ``expires_in_s`` must not silently mean "the default"), and sizes
are bounded.

Why bearer tokens in a header (and no cookies): a web page in a browser on the box can
send requests to 127.0.0.1, but it cannot add an ``Authorization`` header to a
cross-origin request without a CORS preflight, which this server never answers. So a
malicious page cannot ride on someone's session; there is no session to ride on.

Why failures answer generically: a 500 says only "internal error"; the traceback goes to
the gateway's log (logger ``gateway.api``), never to the client, which may be a script
that echoes it somewhere. Every request is logged once, with the caller's name and the
status, and never with the token.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

from aiohttp import web

from gateway.api import openapi
from gateway.api.auth import Authenticator
from gateway.api.ports import Caller, ControlError, ControlService, ProposalRequest, Role
from gateway.config.schema import API_HOST
from gateway.logs import get_logger

__all__ = ["ROUTES", "ApiServer", "Route", "parse_proposal"]

log = get_logger("gateway.api")

_TAG: Final = re.compile(openapi.TAG_PATTERN)
_ID: Final = re.compile(openapi.ID_PATTERN)
_STATUS: Final = re.compile(openapi.STATUS_PATTERN)
#: Who is being served, for the request log. Set by the route's guard, read by the
#: middleware after the handler returns: both run in the request's task, so they share it,
#: and the middleware clears it first, so a keep-alive connection's next request (which may
#: run in the same task) never inherits it. A ContextVar rather than request storage
#: keeps aiohttp 3.9 (no RequestKey) without its str-key warning.
_caller: ContextVar[Caller | None] = ContextVar("gateway_api_caller", default=None)
_JSON: Final = "application/json"

#: Codes for the errors aiohttp raises itself (routing, body size).
_HTTP_CODES: Final = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}

Handler = Callable[["ApiServer", web.Request, Caller], Awaitable[Any]]


def _bad(message: str, code: str = "invalid_request") -> ControlError:
    return ControlError(400, code, message)


def _show(value: object) -> str:
    """A value as it may appear in an error message: short, whatever was sent."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- request bodies ---------------------------------------------------------------------


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number; send a finite number")


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {_show(key)} appears twice in one object")
        result[key] = value
    return result


def decode_body(raw: bytes) -> dict[str, Any]:
    """Parse a request body into a JSON object, refusing what JSON should not hold.

    Raises:
        ControlError: 400 for anything but one UTF-8 JSON object without NaN, Infinity or
            duplicate keys.
    """
    try:
        value = json.loads(
            raw.decode("utf-8"),
            parse_constant=_refuse_constant,
            object_pairs_hook=_refuse_duplicates,
        )
    except UnicodeDecodeError:
        raise _bad("the body is not UTF-8 text") from None
    except RecursionError:
        raise _bad("the body is nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, our refusals, an over-long integer
        raise _bad(f"the body is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise _bad(f"the body must be a JSON object, not {type(value).__name__}")
    return value


def _fields(body: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise _bad(
            f"unknown field(s) {', '.join(_show(k) for k in unknown)}; valid fields here are: "
            f"{', '.join(allowed)}"
        )
    missing = [key for key in required if key not in body]
    if missing:
        raise _bad(f"required field(s) missing: {', '.join(missing)}")


def _number(value: object, where: str) -> float:
    # bool is an int in Python; true must not arrive at the gate as 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{where}: must be a number, not {_show(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise _bad(f"{where}: {_show(value)} is too large") from None
    if not math.isfinite(number):
        raise _bad(f"{where}: must be a finite number, not {number}")
    return number


def _text(body: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise _bad(f"{key}: must be a string, not {_show(value)}")
    if required and not value.strip():
        raise _bad(f"{key}: must not be empty; say why")
    if len(value) > openapi.MAX_TEXT_CHARS:
        raise _bad(f"{key}: {len(value)} characters; at most {openapi.MAX_TEXT_CHARS}")
    return value


def parse_proposal(body: Mapping[str, Any]) -> ProposalRequest:
    """Turn a decoded POST /v1/proposals body into a ProposalRequest, or refuse it (400).

    Checks form only (names, types, finiteness, sizes); whether a tag is writable and a
    value within its limits is the gate's to say, with its reasons.
    """
    _fields(body, ("targets", "reason", "expires_in_s"), ("targets", "reason"))
    raw = body["targets"]
    if not isinstance(raw, dict):
        raise _bad(f"targets: must be an object of tag -> value, not {_show(raw)}")
    if not raw:
        raise _bad("targets: name at least one writable tag")
    if len(raw) > openapi.MAX_TARGETS:
        raise _bad(f"targets: {len(raw)} tags; at most {openapi.MAX_TARGETS} per proposal")
    targets: dict[str, float] = {}
    for tag, value in raw.items():
        if not _TAG.fullmatch(tag):
            raise _bad(
                f"targets: {_show(tag)} is not a tag name (lower-case letters, digits and "
                "'_', starting with a letter)"
            )
        targets[tag] = _number(value, f"targets.{tag}")
    reason = _text(body, "reason", required=True)
    expires: float | None = None
    if body.get("expires_in_s") is not None:
        expires = _number(body["expires_in_s"], "expires_in_s")
        if not 0 < expires <= openapi.MAX_EXPIRES_S:
            raise _bad(
                f"expires_in_s: {expires:g} is not in (0, {openapi.MAX_EXPIRES_S:g}]; "
                "omit it for the configured default"
            )
    return ProposalRequest(targets=targets, reason=reason, expires_in_s=expires)


# -- routes -----------------------------------------------------------------------------


def _no_query(request: web.Request, allowed: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise _bad(f"unknown query parameter(s): {', '.join(_show(k) for k in unknown)}")
    for key in allowed:
        if len(request.query.getall(key, [])) > 1:
            raise _bad(f"query parameter {key!r} given more than once")


def _proposal_id(request: web.Request) -> str:
    value = request.match_info["id"]
    if not _ID.fullmatch(value):
        raise _bad(f"{_show(value)} is not a proposal id", code="invalid_id")
    return value


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != _JSON:
        raise ControlError(
            415,
            "unsupported_media_type",
            f"send the body as {_JSON} (Content-Type header), not {request.content_type!r}",
        )
    # Checked before reading when announced; aiohttp's client_max_size enforces the same
    # limit on chunked bodies while reading.
    if request.content_length is not None and request.content_length > openapi.MAX_BODY_BYTES:
        raise _too_large()
    return decode_body(await request.read())


def _too_large() -> ControlError:
    return ControlError(
        413, "payload_too_large", f"the body is larger than {openapi.MAX_BODY_BYTES} bytes"
    )


async def _signals(self: ApiServer, request: web.Request, caller: Caller) -> Any:
    _no_query(request)
    return {"signals": self.service.signals()}


async def _alerts(self: ApiServer, request: web.Request, caller: Caller) -> Any:
    _no_query(request)
    return {"alerts": self.service.alerts()}


async def _list_proposals(self: ApiServer, request: web.Request, caller: Caller) -> Any:
    _no_query(request, ("status",))
    status = request.query.get("status")
    if status is not None and not _STATUS.fullmatch(status):
        raise _bad(f"status: {_show(status)} is not a status name (e.g. 'pending')")
    return {"proposals": self.service.proposals(status)}


async def _get_proposal(self: ApiServer, request: web.Request, caller: Caller) -> Any:
    _no_query(request)
    return self.service.proposal(_proposal_id(request))


async def _submit(self: ApiServer, request: web.Request, caller: Caller) -> Any:
    _no_query(request)
    proposal = parse_proposal(await _body(request))
    return await self.service.submit(caller, proposal)


async def _approve(self: ApiServer, request: web.Request, caller: Caller) -> Any:
    _no_query(request)
    proposal_id = _proposal_id(request)
    body = await _body(request)
    _fields(body, ("note",), ())
    return await self.service.approve(caller, proposal_id, _text(body, "note", required=False))


async def _reject(self: ApiServer, request: web.Request, caller: Caller) -> Any:
    _no_query(request)
    proposal_id = _proposal_id(request)
    body = await _body(request)
    _fields(body, ("reason",), ("reason",))
    return await self.service.reject(caller, proposal_id, _text(body, "reason", required=True))


async def _resume(self: ApiServer, request: web.Request, caller: Caller) -> Any:
    _no_query(request)
    body = await _body(request)
    _fields(body, ("note",), ("note",))
    return await self.service.resume_autonomy(caller, _text(body, "note", required=True))


async def _ask_agent(self: ApiServer, request: web.Request, caller: Caller) -> Any:
    _no_query(request)
    body = await _body(request)
    _fields(body, ("note",), ("note",))
    return await self.service.ask_agent(caller, _text(body, "note", required=True))


async def _openapi(self: ApiServer, request: web.Request, caller: Caller) -> Any:
    _no_query(request)
    return openapi.document(self.port)


@dataclass(frozen=True)
class Route:
    """One operation: method, path, the least role that may call it, and its handler.

    ``status`` is the success status: 202 where the service only queues the work (the
    agent's look), so a client does not read the answer as the outcome.
    """

    method: str
    path: str
    role: Role
    handler: Handler
    status: int = 200


#: Every route the API serves. The OpenAPI document must list exactly these (a test
#: checks it). openapi.json needs a viewer token: it reveals nothing secret, but nothing
#: on this port answers strangers, which keeps "who asked what" complete in the log.
ROUTES: Final = (
    Route("GET", "/v1/signals", Role.VIEWER, _signals),
    Route("GET", "/v1/alerts", Role.VIEWER, _alerts),
    Route("GET", "/v1/proposals", Role.VIEWER, _list_proposals),
    Route("GET", "/v1/proposals/{id}", Role.VIEWER, _get_proposal),
    Route("POST", "/v1/proposals", Role.OPERATOR, _submit),
    Route("POST", "/v1/proposals/{id}/approve", Role.OPERATOR, _approve),
    Route("POST", "/v1/proposals/{id}/reject", Role.OPERATOR, _reject),
    Route("POST", "/v1/autonomy/resume", Role.OPERATOR, _resume),
    Route("POST", "/v1/agent/requests", Role.OPERATOR, _ask_agent, status=202),
    Route("GET", "/v1/openapi.json", Role.VIEWER, _openapi),
)


# -- responses --------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


def _ok(result: Any, status: int = 200) -> web.Response:
    # allow_nan=False: the service promises JSON-ready results; if one holds a NaN, that
    # is a bug to surface (500, logged), not a non-JSON token to hand a client.
    text = json.dumps(result, allow_nan=False, ensure_ascii=False)
    return web.Response(text=text, status=status, content_type=_JSON)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > openapi.MAX_TOKEN_CHARS:
        return None
    return token


class ApiServer:
    """The control API on ``127.0.0.1:port``, serving one ControlService.

    Use as ``async with ApiServer(service, tokens, port) as api:`` or call ``start()`` and
    ``stop()``. The host is fixed to 127.0.0.1 (see ``gateway.config.schema.ApiSection``
    for why); ``port=0`` asks the OS for a free port (tests), and ``port`` then tells which.

    Args:
        service: what the routes call; its ControlErrors become HTTP errors.
        tokens: who may call, with which role (``TokenFile`` re-reads on change).
        port: TCP port on 127.0.0.1.
    """

    def __init__(self, service: ControlService, tokens: Authenticator, port: int) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not a TCP port (0..65535)")
        self.service = service
        self.tokens = tokens
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.app = self._build_app()

    @property
    def port(self) -> int:
        """The bound port (the requested one, or the one the OS chose for 0)."""
        if self._port is None:
            raise RuntimeError("the API server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8484``."""
        return f"http://{API_HOST}:{self.port}"

    async def start(self) -> None:
        """Bind 127.0.0.1 and start answering. Raises OSError if the port is taken."""
        if self._runner is not None:
            raise RuntimeError("the API server is already started")
        # access_log=None: every request is logged once, by the middleware, as an event
        # with the caller's name; aiohttp's own access line would duplicate it.
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, API_HOST, self._requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("api_started", url=self.url)

    async def stop(self) -> None:
        """Stop answering and close connections. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("api_stopped", port=self._port)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- internals ----------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(
            client_max_size=openapi.MAX_BODY_BYTES, middlewares=[self._middleware]
        )
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._guard(route))
        return app

    def _guard(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The route's handler behind authentication and its role check."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            token = _bearer(request)
            caller = None if token is None else self.tokens.authenticate(token)
            if caller is None:
                response = _error(
                    401,
                    "unauthorized",
                    "missing or unknown API token; send 'Authorization: Bearer <token>' "
                    "(an admin creates tokens with `edgetwin token add`)",
                )
                response.headers["WWW-Authenticate"] = 'Bearer realm="edgetwin"'
                return response
            _caller.set(caller)
            if not caller.role.allows(route.role):
                return _error(
                    403,
                    "forbidden",
                    f"{route.method} {route.path} needs the {route.role.value} role; "
                    f"{caller.name!r} is a {caller.role.value}",
                )
            return _ok(await route.handler(self, request, caller), route.status)

        return guarded

    @web.middleware
    async def _middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Turn every outcome into a JSON response, and log each request once."""
        started = time.monotonic()
        _caller.set(None)
        response: web.StreamResponse
        try:
            response = await handler(request)
        except ControlError as err:
            if 400 <= err.status <= 599:
                response = _error(err.status, err.code, err.message)
            else:
                # A service bug: a refusal must never read as success.
                log.error("api_control_error_status_invalid", status=err.status, code=err.code)
                response = _error(500, "internal_error", "internal error; see the gateway log")
        except web.HTTPRequestEntityTooLarge:
            refused = _too_large()
            response = _error(refused.status, refused.code, refused.message)
        except web.HTTPException as exc:
            # Routing (404, 405) and the like: aiohttp's own, answered in our shape.
            code = _HTTP_CODES.get(exc.status, "http_error")
            response = _error(exc.status, code, exc.reason)
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception:
            # The task boundary of one request: the details go to the log, not the client.
            log.exception(
                "api_request_failed",
                method=request.method,
                path=request.path,
                caller=_caller_name(),
            )
            response = _error(500, "internal_error", "internal error; see the gateway log")
        log.info(
            "api_request",
            method=request.method,
            path=request.path,
            caller=_caller_name(),
            status=response.status,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return response


def _caller_name() -> str | None:
    caller = _caller.get()
    return None if caller is None else caller.name
