"""What the model may say, as a JSON schema for the grammar, and the strict parser behind it.

The grammar makes the model's output *well-formed*; it does not make it *trustworthy*.
llama.cpp's JSON-schema grammar does not enforce numeric ranges, lets any printable
character into a plain string (a bare ``"`` or ``\\`` would then break the JSON), and a
grammar-valid number such as ``1e9999999`` overflows to infinity. So:

- every string has a pattern of printable ASCII without ``"`` and ``\\`` and a length cap,
  so the output is always parseable JSON and never smuggles control characters into logs,
  the audit trail or the approval screen;
- confidence is a word, not a number the grammar cannot bound;
- ``tag`` is an enum of the writable tags, so the model cannot even name another tag;
- numbers are unbounded in the grammar on purpose: ranges, steps and rates are the gate's
  job, and the gate does not care who proposed;
- :func:`parse_reply` parses again, strictly: unknown or duplicate keys, a tag twice,
  non-finite numbers and anything else off-schema are a :class:`ReplyError`, which means
  *no proposal* (never a default).

A reply is one of three actions: ``simulate`` (ask the twin a what-if question, answered as
data in the next turn), ``propose`` (the final proposal, which goes to the gate) or
``none`` (diagnosis only). When the simulation budget is spent, the schema for the next
turn no longer offers ``simulate``: the bound on the tool loop is in the grammar itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.errors import GatewayError

Action = Literal["simulate", "propose", "none"]
Confidence = Literal["low", "medium", "high"]

ACTIONS: tuple[Action, ...] = ("simulate", "propose", "none")
CONFIDENCES: tuple[Confidence, ...] = ("low", "medium", "high")

#: Printable ASCII except ``"`` and ``\``: always valid inside a JSON string, no escapes.
_SAFE_CHARS = r"[ !#-\[\]-~]"

DIAGNOSIS_CHARS = 80
RATIONALE_CHARS = 120
EFFECT_CHARS = 80

_FIELDS = ("action", "diagnosis", "confidence", "setpoints", "rationale", "expected_effect")


class ReplyError(GatewayError):
    """The model's text is not a reply we accept; it yields no proposal."""


def _text(max_chars: int, min_chars: int = 0) -> dict[str, Any]:
    return {"type": "string", "pattern": f"^{_SAFE_CHARS}{{{min_chars},{max_chars}}}$"}


def reply_schema(
    writable_tags: Sequence[str], *, may_simulate: bool, max_setpoints: int | None = None
) -> dict[str, Any]:
    """The JSON schema the grammar is built from.

    Args:
        writable_tags: The tags the config declares writable (the ``tag`` enum). With none,
            the model can only diagnose.
        may_simulate: Whether ``simulate`` is still on offer (the budget is not spent).
        max_setpoints: The most setpoints one reply may name (default: every writable
            tag once). The grammar cannot forbid a tag twice in a list (``uniqueItems``
            is not enforced); a small model repeats itself, and one change at a time is
            also what a cautious engineer proposes, so the agent's default is 1.
    """
    tags = sorted(writable_tags)
    setpoint = {
        "type": "object",
        "properties": {"tag": {"enum": tags}, "value": {"type": "number"}},
        "required": ["tag", "value"],
        "additionalProperties": False,
    }

    def reply(actions: Sequence[str], min_items: int, max_items: int) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "action": {"enum": list(actions)},
                "diagnosis": _text(DIAGNOSIS_CHARS, 1),
                "confidence": {"enum": list(CONFIDENCES)},
                "setpoints": {
                    "type": "array",
                    "items": setpoint,
                    "minItems": min_items,
                    "maxItems": max_items,
                },
                "rationale": _text(RATIONALE_CHARS),
                "expected_effect": _text(EFFECT_CHARS),
            },
            "required": list(_FIELDS),
            "additionalProperties": False,
        }

    # Two shapes, so that the grammar itself ties the action to the setpoints: a change
    # names at least one setpoint, "none" names none (a small model otherwise answers
    # "none" with a setpoint list, which the parser must then refuse).
    none = reply(["none"], 0, 0)
    if not tags:
        return none
    acting = [a for a in ACTIONS if a != "none" and (may_simulate or a != "simulate")]
    most = min(len(tags), max_setpoints or len(tags))
    return {"oneOf": [reply(acting, 1, most), none]}


@dataclass(frozen=True)
class AgentReply:
    """One parsed turn of the model."""

    action: Action
    diagnosis: str
    confidence: Confidence
    setpoints: dict[str, float] = field(default_factory=dict)
    rationale: str = ""
    expected_effect: str = ""

    def to_record(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "diagnosis": self.diagnosis,
            "confidence": self.confidence,
            "setpoints": dict(self.setpoints),
            "rationale": self.rationale,
            "expected_effect": self.expected_effect,
        }


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        duplicated = sorted({k for k in keys if keys.count(k) > 1})
        raise ReplyError(f"duplicate key(s) {', '.join(duplicated)}")
    return dict(pairs)


def _no_constants(name: str) -> float:
    raise ReplyError(f"{name} is not a number JSON allows")


def _string(doc: dict[str, Any], key: str, max_chars: int, *, required: bool = True) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise ReplyError(f"{key} must be a string")
    if required and not value.strip():
        raise ReplyError(f"{key} is empty")
    if len(value) > max_chars:
        raise ReplyError(f"{key} is longer than {max_chars} characters")
    if any(not (" " <= ch <= "~") for ch in value):
        raise ReplyError(f"{key} holds characters outside printable ASCII")
    return value


def parse_reply(
    text: str,
    writable_tags: Sequence[str],
    *,
    may_simulate: bool = True,
    max_setpoints: int | None = None,
) -> AgentReply:
    """Parse and check one reply; anything off-schema is a :class:`ReplyError`.

    The checks repeat the grammar's on purpose: a model file, a llama.cpp version or a
    grammar bug that lets something through must still not reach the gate malformed.
    """
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except json.JSONDecodeError as err:
        raise ReplyError(f"not JSON: {err.msg} at character {err.pos}") from None
    except RecursionError:
        raise ReplyError("not JSON: nested too deeply") from None
    if not isinstance(doc, dict):
        raise ReplyError("the reply must be a JSON object")
    unknown = sorted(set(doc) - set(_FIELDS))
    missing = [k for k in _FIELDS if k not in doc]
    if unknown:
        raise ReplyError(f"unknown field(s) {', '.join(unknown)}")
    if missing:
        raise ReplyError(f"missing field(s) {', '.join(missing)}")
    action = doc["action"]
    if action not in ACTIONS or (action == "simulate" and not may_simulate):
        raise ReplyError(f"action {action!r} is not on offer")
    confidence = doc["confidence"]
    if confidence not in CONFIDENCES:
        raise ReplyError(f"confidence {confidence!r} is not one of {', '.join(CONFIDENCES)}")
    setpoints = _setpoints(doc["setpoints"], set(writable_tags))
    if max_setpoints is not None and len(setpoints) > max_setpoints:
        raise ReplyError(f"{len(setpoints)} setpoints; at most {max_setpoints} per reply")
    if action in ("simulate", "propose") and not setpoints:
        raise ReplyError(f"action {action!r} without setpoints")
    if action == "none" and setpoints:
        raise ReplyError("action 'none' with setpoints")
    return AgentReply(
        action=action,
        diagnosis=_string(doc, "diagnosis", DIAGNOSIS_CHARS),
        confidence=confidence,
        setpoints=setpoints,
        rationale=_string(doc, "rationale", RATIONALE_CHARS, required=False),
        expected_effect=_string(doc, "expected_effect", EFFECT_CHARS, required=False),
    )


def _setpoints(items: object, writable: set[str]) -> dict[str, float]:
    if not isinstance(items, list):
        raise ReplyError("setpoints must be a list")
    targets: dict[str, float] = {}
    for item in items:
        if not isinstance(item, dict) or set(item) != {"tag", "value"}:
            raise ReplyError("each setpoint must be exactly {tag, value}")
        tag, value = item["tag"], item["value"]
        if not isinstance(tag, str) or tag not in writable:
            raise ReplyError(f"tag {tag!r} is not a writable tag")
        if tag in targets:
            raise ReplyError(f"tag {tag!r} given twice")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ReplyError(f"value for {tag} must be a number")
        try:
            number = float(value)
        except OverflowError:
            raise ReplyError(f"value for {tag} is out of any range") from None
        if not math.isfinite(number):
            raise ReplyError(f"value for {tag} is not finite")
        targets[tag] = number
    return targets
