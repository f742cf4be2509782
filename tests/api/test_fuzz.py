"""Property: whatever body is POSTed to /v1/proposals, the server answers without a 500,
and the service only ever receives a well-formed proposal (finite floats for known-form
tag names, a real reason, no unknown field)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from gateway.api import openapi
from tests.api.conftest import Api

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
TAGS = st.sampled_from(["level_sp", "temp_sp", "valve_cmd", "Level", "a b", ""]) | st.text(
    max_size=10
)
TARGET_VALUES = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.booleans()
    | st.none()
    | st.text(max_size=6)
    | VALUES
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "targets": st.dictionaries(TAGS, TARGET_VALUES, max_size=4) | VALUES,
        "reason": st.text(max_size=40) | VALUES,
        "expires_in_s": st.floats(allow_nan=True, allow_infinity=True)
        | st.integers(min_value=-(10**6), max_value=10**6)
        | st.none()
        | VALUES,
    },
)
EXTRA = st.dictionaries(
    st.sampled_from(["expiry", "proposer", "id", "targets ", "Reason"]) | st.text(max_size=8),
    VALUES,
    max_size=2,
)


#: Close to valid, so that many bodies get through and the property is about them too.
NEAR_VALID = st.fixed_dictionaries(
    {
        "targets": st.dictionaries(
            st.sampled_from(["level_sp", "temp_sp", "valve_cmd"]),
            st.floats(-1e6, 1e6) | st.integers(-1000, 1000),
            min_size=1,
            max_size=3,
        ),
        "reason": st.text(min_size=1, max_size=40),
    },
    optional={"expires_in_s": st.floats(0, 1e5) | st.none()},
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """A JSON text as a lax encoder would write it (NaN, Infinity allowed), or raw bytes:
    a mix of near-valid bodies, arbitrary field values, and garbage."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.binary(max_size=120))
    fields: dict[str, Any] = draw(FIELDS if kind < 4 else NEAR_VALID)
    if draw(st.integers(0, 3)) == 0:
        fields |= draw(EXTRA)
    return json.dumps(fields, allow_nan=True).encode()


ALLOWED = {"targets", "reason", "expires_in_s"}
TAG = re.compile(openapi.TAG_PATTERN)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=bodies())
@example(body=b'{"targets": {"level_sp": NaN}, "reason": "x"}')
@example(body=b'{"targets": {"level_sp": 1.0}, "reason": "x", "proposer": "root"}')
@example(body=b'{"targets": {"level_sp": 1.5}, "reason": "ok"}')
def test_any_proposal_body_is_answered_without_500_and_only_clean_ones_reach_the_service(
    api: Api, body: bytes
) -> None:
    """No body makes the server fail; every proposal the service receives has only
    finite float targets under tag-form names, a non-blank bounded reason and a sane
    expiry, and came from a body with no unknown field."""
    api.service.reset()
    answer = api.call("POST", "/v1/proposals", body=body)
    assert answer.status in (200, 400), (answer.status, answer.body)
    event(f"status {answer.status}")
    submitted = api.service.submitted()
    assert len(submitted) == (1 if answer.status == 200 else 0)
    for request in submitted:
        sent = json.loads(body)
        assert set(sent) <= ALLOWED
        assert request.targets
        for tag, value in request.targets.items():
            assert TAG.fullmatch(tag)
            assert type(value) is float
            assert math.isfinite(value)
        assert isinstance(request.reason, str)
        assert request.reason.strip()
        assert len(request.reason) <= openapi.MAX_TEXT_CHARS
        assert request.expires_in_s is None or 0 < request.expires_in_s <= openapi.MAX_EXPIRES_S
