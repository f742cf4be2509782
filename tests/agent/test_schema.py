"""The reply schema the grammar is built from, and the strict parser behind it."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.agent.schema import (
    DIAGNOSIS_CHARS,
    ReplyError,
    parse_reply,
    reply_schema,
)

TAGS = ["level_sp", "temp_sp", "valve_cmd"]


def reply(**overrides: object) -> str:
    doc: dict[str, object] = {
        "action": "propose",
        "diagnosis": "level sensor drift",
        "confidence": "medium",
        "setpoints": [{"tag": "level_sp", "value": 1.4}],
        "rationale": "keep margin to the high level",
        "expected_effect": "level settles near 1.4 m",
    }
    doc.update(overrides)
    return json.dumps(doc)


def test_a_well_formed_proposal_parses() -> None:
    parsed = parse_reply(reply(), TAGS)
    assert parsed.action == "propose"
    assert parsed.setpoints == {"level_sp": 1.4}
    assert parsed.confidence == "medium"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not JSON"),
        ("[]", "JSON object"),
        (reply(extra=1), "unknown field"),
        (reply()[:-1] + ', "action": "none"}', "duplicate"),
        (json.dumps({"action": "none"}), "missing"),
        (reply(action="write"), "not on offer"),
        (reply(confidence=0.9), "confidence"),
        (reply(setpoints=[{"tag": "pump_speed", "value": 1}]), "not a writable tag"),
        (
            reply(setpoints=[{"tag": "level_sp", "value": 1}, {"tag": "level_sp", "value": 2}]),
            "twice",
        ),
        (reply(setpoints=[{"tag": "level_sp", "value": "1.4"}]), "must be a number"),
        (reply(setpoints=[{"tag": "level_sp", "value": True}]), "must be a number"),
        (reply(setpoints=[{"tag": "level_sp", "value": 1, "why": "x"}]), "exactly"),
        (reply().replace("1.4", "1e999"), "not finite"),
        (reply().replace("1.4", "NaN"), "not a number JSON allows"),
        (reply().replace("1.4", "-Infinity"), "not a number JSON allows"),
        (reply().replace("1.4", "1" * 400), "out of any range"),
        (reply(setpoints=[]), "without setpoints"),
        (reply(action="none"), "'none' with setpoints"),
        (reply(diagnosis=""), "empty"),
        (reply(diagnosis="x" * (DIAGNOSIS_CHARS + 1)), "longer"),
        (reply(rationale="line\nbreak"), "printable"),
        (reply(rationale="bidi \u202e override"), "printable"),
        ("[" * 100_000, "nested too deeply"),
    ],
)
def test_anything_off_schema_is_a_reply_error(text: str, why: str) -> None:
    with pytest.raises(ReplyError, match=why):
        parse_reply(text, TAGS)


def test_simulate_is_refused_once_the_budget_is_spent() -> None:
    text = reply(action="simulate")
    assert parse_reply(text, TAGS, may_simulate=True).action == "simulate"
    with pytest.raises(ReplyError, match="not on offer"):
        parse_reply(text, TAGS, may_simulate=False)
    assert "simulate" not in actions(reply_schema(TAGS, may_simulate=False))


def actions(schema: dict[str, object]) -> list[str]:
    """Every action the schema offers, over its alternatives."""
    shapes = schema.get("oneOf", [schema])
    assert isinstance(shapes, list)
    return [a for shape in shapes for a in shape["properties"]["action"]["enum"]]


def test_the_grammar_ties_the_action_to_the_setpoints() -> None:
    acting, none = reply_schema(TAGS, may_simulate=True)["oneOf"]
    assert acting["properties"]["action"]["enum"] == ["simulate", "propose"]
    assert acting["properties"]["setpoints"]["minItems"] == 1
    assert none["properties"]["action"]["enum"] == ["none"]
    assert none["properties"]["setpoints"]["maxItems"] == 0


def test_the_schema_names_only_writable_tags_and_safe_strings() -> None:
    schema = reply_schema(["temp_sp", "level_sp"], may_simulate=True)["oneOf"][0]
    item = schema["properties"]["setpoints"]["items"]
    assert item["properties"]["tag"]["enum"] == ["level_sp", "temp_sp"]
    assert schema["additionalProperties"] is False
    pattern = schema["properties"]["diagnosis"]["pattern"]
    assert re.fullmatch(pattern, "valve stiction at 40 % [est.]")
    for bad in ['a"b', "a\\b", "a\nb", "é"]:
        assert not re.fullmatch(pattern, bad)


def test_without_writable_tags_the_model_can_only_diagnose() -> None:
    schema = reply_schema([], may_simulate=True)
    assert actions(schema) == ["none"]
    assert schema["properties"]["setpoints"]["maxItems"] == 0


def test_the_grammar_builds_from_the_schema() -> None:
    """llama.cpp's converter accepts the schema as written (patterns included)."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    grammar = json_schema_to_gbnf(json.dumps(reply_schema(TAGS, may_simulate=True)))
    assert '"\\"level_sp\\""' in grammar
    assert "[ !#-\\[\\]-~]" in grammar


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["action", "tag", "value", "x", "setpoints"]), inner)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        json_values.map(lambda v: json.dumps(v)),
        st.fixed_dictionaries(
            {
                "action": st.sampled_from(["simulate", "propose", "none", "x"]),
                "diagnosis": st.text(max_size=30),
                "confidence": st.sampled_from(["low", "medium", "high", "sure"]),
                "setpoints": st.lists(
                    st.fixed_dictionaries(
                        {
                            "tag": st.sampled_from([*TAGS, "pump_speed"]),
                            "value": st.floats() | st.integers(),
                        }
                    ),
                    max_size=4,
                ),
                "rationale": st.text(max_size=30),
                "expected_effect": st.text(max_size=30),
            }
        ).map(json.dumps),
    )
)
def test_parsing_accepts_only_what_the_gate_can_take(text: str) -> None:
    """Whatever the text, the parser raises ReplyError or returns a reply whose setpoints
    name writable tags with finite values and whose strings are printable ASCII."""
    try:
        parsed = parse_reply(text, TAGS)
    except ReplyError:
        return
    assert set(parsed.setpoints) <= set(TAGS)
    assert all(math.isfinite(v) for v in parsed.setpoints.values())
    for field in (parsed.diagnosis, parsed.rationale, parsed.expected_effect):
        assert all(" " <= ch <= "~" for ch in field)
    assert (parsed.action == "none") == (not parsed.setpoints)


def test_the_agent_proposes_one_change_at_a_time_by_default() -> None:
    schema = reply_schema(TAGS, may_simulate=True, max_setpoints=1)["oneOf"][0]
    assert schema["properties"]["setpoints"]["maxItems"] == 1
    two = reply(setpoints=[{"tag": "level_sp", "value": 1.4}, {"tag": "temp_sp", "value": 50}])
    assert len(parse_reply(two, TAGS).setpoints) == 2
    with pytest.raises(ReplyError, match="at most 1"):
        parse_reply(two, TAGS, max_setpoints=1)
