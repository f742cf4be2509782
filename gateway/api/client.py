"""A small client for the local control API, on the standard library alone.

The CLI's ``propose``, ``proposals``, ``approve``, ``reject``, ``resume-autonomy`` and
``ask`` use it. Standard library only (``urllib``): these commands run on the box, often
over ssh, and should start fast and work in the leanest install.

Errors are one family, :class:`ApiError`, carrying the HTTP status (None when no answer
came), the server's error code and its message, so a caller can tell "the gateway said
no" (4xx) from "the gateway is not there" (:class:`ApiUnreachable`).
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from gateway.config.schema import API_HOST
from gateway.errors import GatewayError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TOKEN_ENV",
    "ApiClient",
    "ApiError",
    "ApiUnreachable",
    "resolve_token",
]

#: Seconds to wait for an answer. Generous: a proposal is simulated over the whole
#: ensemble before the answer comes, and an approval may include the re-check and write.
DEFAULT_TIMEOUT_S: Final = 60.0
#: Environment variable holding the token (preferred over ``--token``, which ``ps`` shows).
TOKEN_ENV: Final = "EDGETWIN_TOKEN"


class ApiError(GatewayError):
    """A request that did not succeed.

    Attributes:
        status: HTTP status, or None if no HTTP answer came (or no request was made).
        code: machine-readable reason, e.g. "forbidden", "unknown_proposal".
        message: what went wrong, and the fix where there is one.
    """

    def __init__(self, status: int | None, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        where = f"HTTP {status} " if status is not None else ""
        super().__init__(f"{where}{code}: {message}")


class ApiUnreachable(ApiError):
    """No answer from the API: nothing listening, or no reply in time."""


def resolve_token(
    token: str | None,
    token_file: str | Path | None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The token to send: ``token``, else the contents of ``token_file``, else $EDGETWIN_TOKEN.

    A token file must be readable only by its owner (``chmod 600``), as the server's
    tokens file must: it is a credential.

    Raises:
        ApiError: (status None, code "no_token") none given, or the file is refused.
    """
    if token:
        return token.strip()
    if token_file is not None:
        shown = str(token_file)
        try:
            with open(token_file, encoding="utf-8") as handle:
                mode = os.fstat(handle.fileno()).st_mode
                text = handle.read().strip()
        except (OSError, UnicodeDecodeError) as err:
            raise ApiError(None, "no_token", f"{shown}: cannot read the token file: {err}") from err
        if mode & 0o077:
            raise ApiError(
                None,
                "no_token",
                f"{shown}: mode {stat.S_IMODE(mode):04o} lets others read the token; "
                f"fix: chmod 600 {shown}",
            )
        if not text:
            raise ApiError(None, "no_token", f"{shown}: the token file is empty")
        return text
    env = os.environ if environ is None else environ
    value = env.get(TOKEN_ENV, "").strip()
    if value:
        return value
    raise ApiError(
        None,
        "no_token",
        f"no API token: set {TOKEN_ENV}, or pass --token-file FILE (or --token TOKEN); "
        "an admin creates one with `edgetwin token add`",
    )


class ApiClient:
    """Calls the control API on ``127.0.0.1:port`` with a bearer token.

    Each method mirrors one route and returns the decoded JSON (lists unwrapped).

    Args:
        port: the API's port (``[api].port`` in the config).
        token: the bearer token.
        timeout_s: seconds to wait for each answer.
    """

    def __init__(self, port: int, token: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.port = port
        self._token = token
        self._timeout_s = timeout_s
        # No proxies: an http_proxy in the environment must not route a loopback request
        # (and its token) through a proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def base_url(self) -> str:
        return f"http://{API_HOST}:{self.port}"

    # -- routes -------------------------------------------------------------------------

    def signals(self) -> list[dict[str, Any]]:
        """GET /v1/signals."""
        return _items(self._request("GET", "/v1/signals"), "signals")

    def alerts(self) -> list[dict[str, Any]]:
        """GET /v1/alerts."""
        return _items(self._request("GET", "/v1/alerts"), "alerts")

    def proposals(self, status: str | None = None) -> list[dict[str, Any]]:
        """GET /v1/proposals, optionally only those in ``status``."""
        query = None if status is None else {"status": status}
        return _items(self._request("GET", "/v1/proposals", query=query), "proposals")

    def proposal(self, proposal_id: str) -> dict[str, Any]:
        """GET /v1/proposals/{id}."""
        return self._request("GET", f"/v1/proposals/{_quote(proposal_id)}")

    def propose(
        self, targets: Mapping[str, float], reason: str, expires_in_s: float | None = None
    ) -> dict[str, Any]:
        """POST /v1/proposals: the gate's answer, whatever the verdict."""
        body: dict[str, Any] = {"targets": dict(targets), "reason": reason}
        if expires_in_s is not None:
            body["expires_in_s"] = expires_in_s
        return self._request("POST", "/v1/proposals", body=body)

    def approve(self, proposal_id: str, note: str = "") -> dict[str, Any]:
        """POST /v1/proposals/{id}/approve."""
        return self._request(
            "POST", f"/v1/proposals/{_quote(proposal_id)}/approve", body={"note": note}
        )

    def reject(self, proposal_id: str, reason: str) -> dict[str, Any]:
        """POST /v1/proposals/{id}/reject."""
        return self._request(
            "POST", f"/v1/proposals/{_quote(proposal_id)}/reject", body={"reason": reason}
        )

    def resume_autonomy(self, note: str) -> dict[str, Any]:
        """POST /v1/autonomy/resume."""
        return self._request("POST", "/v1/autonomy/resume", body={"note": note})

    def ask_agent(self, note: str) -> dict[str, Any]:
        """POST /v1/agent/requests: the incident id (202); the diagnosis comes later, in the
        audit trail and as proposals."""
        return self._request("POST", "/v1/agent/requests", body={"note": note})

    def openapi(self) -> dict[str, Any]:
        """GET /v1/openapi.json."""
        return self._request("GET", "/v1/openapi.json")

    # -- transport ----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        data = None
        if body is not None:
            try:
                data = json.dumps(body, allow_nan=False).encode("utf-8")
            except ValueError as err:
                raise ApiError(None, "invalid_request", f"cannot send as JSON: {err}") from err
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self._timeout_s) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as err:
            raise self._http_error(err) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            raise self._unreachable(err) from err
        return _decode(status, raw)

    def _http_error(self, err: urllib.error.HTTPError) -> ApiError:
        try:
            answer = json.loads(err.read())
            code, message = str(answer["error"]), str(answer["message"])
        except (OSError, ValueError, TypeError, KeyError):
            code, message = "http_error", str(err.reason)
        finally:
            err.close()
        return ApiError(err.code, code, message)

    def _unreachable(self, err: BaseException) -> ApiUnreachable:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        where = f"API on {API_HOST}:{self.port}"
        if isinstance(reason, ConnectionRefusedError):
            return ApiUnreachable(
                None, "unreachable", f"connection refused: is `edgetwin run` running? {where}"
            )
        if isinstance(reason, TimeoutError):
            return ApiUnreachable(
                None, "timeout", f"no answer within {self._timeout_s:g} s from the {where}"
            )
        return ApiUnreachable(None, "unreachable", f"{reason}: {where}")


def _quote(proposal_id: str) -> str:
    return urllib.parse.quote(proposal_id, safe="")


def _decode(status: int, raw: bytes) -> dict[str, Any]:
    """Every answer of the API is one JSON object (lists come wrapped in one)."""
    try:
        value = json.loads(raw)
    except ValueError as err:
        raise ApiError(status, "bad_response", f"the answer is not JSON: {err}") from err
    if not isinstance(value, dict):
        raise ApiError(status, "bad_response", "the answer is not a JSON object")
    return value


def _items(answer: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    items = answer.get(key)
    if not isinstance(items, list):
        raise ApiError(None, "bad_response", f"the answer has no {key!r} list")
    return items
