"""Raw tag values → named signals that carry a unit, their times and a quality.

Quality rules are pure functions here, not inside the drivers, so that OPC UA and Modbus
values are judged by the same rules and the rules can be tested without I/O.

Staleness is data, not an event: a value's quality is computed against the clock each time
it is read, so a value that stops arriving turns stale at its ``max_age_s`` without anyone
having to notice the outage. This is what keeps a dead connection from serving last-known
values as good (the most common complaint about existing gateways).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from gateway.config.schema import Signal


class Quality(StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class RawSample:
    """What a driver read for one signal, before any judgement.

    ``value`` is already decoded and scaled to engineering units (drivers own decoding).
    ``status`` is the protocol's own verdict (an OPC UA status code class, or "bad" with a
    reason for a Modbus exception or decode error). ``confirmed_ts`` is the latest moment the
    source confirmed the value is still current (a poll response, or a live subscription's
    keep-alive); for a subscribed value that does not change it moves on without a new sample.
    """

    value: float | None
    source_ts: float
    received_ts: float
    status: Quality = Quality.GOOD
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SignalValue:
    """The latest value of a configured signal, as later stages see it."""

    name: str
    value: float
    unit: str
    source_ts: float
    received_ts: float
    confirmed_ts: float
    quality: Quality
    reason: str | None = None

    @property
    def usable(self) -> bool:
        """True only for good values; uncertain, bad and stale never drive a decision."""
        return self.quality is Quality.GOOD


def judge(name: str, spec: Signal, raw: RawSample) -> SignalValue:
    """Apply the signal's quality rules to one raw sample.

    Order matters: the source's own Bad status wins (its reason is the most specific), then
    non-finite values, then the physical range. Out-of-range values are kept as they were
    read, never clipped, so the historian shows what the sensor really said.
    """
    value = math.nan if raw.value is None else float(raw.value)
    quality, reason = raw.status, raw.reason
    if quality is Quality.BAD:
        reason = reason or "bad status from source"
    elif not math.isfinite(value):
        quality, reason = Quality.BAD, f"non-finite value {value}"
    elif not spec.range[0] <= value <= spec.range[1]:
        quality = Quality.BAD
        reason = (
            f"{value:g} {spec.unit} outside physical range [{spec.range[0]:g}, {spec.range[1]:g}]"
        )
    return SignalValue(
        name=name,
        value=value,
        unit=spec.unit,
        source_ts=raw.source_ts,
        received_ts=raw.received_ts,
        confirmed_ts=raw.received_ts,
        quality=quality,
        reason=reason,
    )


def aged(value: SignalValue, max_age_s: float, now: float) -> SignalValue:
    """The value as seen at ``now``: stale once its last confirmation is older than max age."""
    age = now - value.confirmed_ts
    if age <= max_age_s or value.quality is Quality.BAD:
        return value
    return replace(
        value,
        quality=Quality.STALE,
        reason=f"last confirmed {age:.1f} s ago (max age {max_age_s:g} s)",
    )


class LiveTable:
    """The latest value of every signal; later stages read only from here.

    One writer per source (its driver task) and readers on the same event loop, so no lock
    is needed; readers get immutable values.
    """

    def __init__(self, specs: Mapping[str, Signal]) -> None:
        self._specs = dict(specs)
        self._values: dict[str, SignalValue] = {}

    def update(self, name: str, raw: RawSample) -> SignalValue:
        """Judge and store a new sample; return the stored value."""
        value = judge(name, self._specs[name], raw)
        self._values[name] = value
        return value

    def confirm(self, names: list[str] | tuple[str, ...], when: float) -> None:
        """Record that the source vouched at ``when`` that these values are still current."""
        for name in names:
            old = self._values.get(name)
            if old is not None and when > old.confirmed_ts:
                self._values[name] = replace(old, confirmed_ts=when)

    def invalidate(self, names: list[str] | tuple[str, ...], reason: str) -> None:
        """Mark values stale at once (their source is known to be down), keeping the value."""
        for name in names:
            old = self._values.get(name)
            if old is not None and old.quality is not Quality.BAD:
                self._values[name] = replace(old, quality=Quality.STALE, reason=reason)

    def get(self, name: str, now: float) -> SignalValue | None:
        value = self._values.get(name)
        if value is None:
            return None
        return aged(value, self._specs[name].max_age_s, now)

    def snapshot(self, now: float) -> dict[str, SignalValue]:
        """Every signal that has ever been read, each aged to ``now``."""
        return {
            name: aged(value, self._specs[name].max_age_s, now)
            for name, value in self._values.items()
        }


#: Key prefix of a signal node's plant-provided DisplayName in the plant-text table.
DISPLAY_NAME_PREFIX = "display_name."

#: Characters kept of a DisplayName. A display name has no ``[text.*]`` entry to carry a
#: ``max_chars``; it is plant-written all the same, so it gets the default cap of one.
DISPLAY_NAME_MAX_CHARS = 200


def display_name_key(signal: str) -> str:
    """The plant-text key of ``signal``'s DisplayName (signal names cannot contain dots,
    so these keys never collide with a ``[text.*]`` name)."""
    return f"{DISPLAY_NAME_PREFIX}{signal}"


@dataclass(frozen=True, slots=True)
class PlantTextValue:
    """A string the plant provided (operator note, alarm message, a node's DisplayName).

    The text is *untrusted data*: whoever can write a string on the PLC or its HMI wrote
    it. It is kept exactly as read (control characters, quotes, markup and all) apart from
    the ``max_chars`` cut, because escaping belongs to whoever shows it: the agent escapes
    for its prompt, a web page for HTML. Nothing in the gateway acts on its content, and
    it never reaches the historian.

    ``t`` is the source timestamp (the time the plant wrote the text), or the receive time
    when the source gives none. ``truncated`` tells a reader that the plant said more.
    """

    name: str
    text: str
    t: float
    quality: Quality
    truncated: bool
    reason: str | None = None

    @property
    def usable(self) -> bool:
        """True only for good text; bad text is empty or from a link known to be down."""
        return self.quality is Quality.GOOD


def judge_text(
    name: str,
    value: object,
    t: float,
    max_chars: int,
    *,
    status: Quality = Quality.GOOD,
    reason: str | None = None,
) -> PlantTextValue:
    """Apply the plant-text rules to one value read from the plant (pure, never raises).

    A Bad status or a value that is not a string (a text configured on the wrong node)
    gives quality BAD and empty text: a number or a structure shown as "text" would
    mislead more than a gap. A string longer than ``max_chars`` is cut and marked, so one
    runaway string cannot swell a prompt or a status file.
    """
    if status is Quality.BAD:
        return PlantTextValue(name, "", t, Quality.BAD, False, reason or "bad status from source")
    if not isinstance(value, str):
        kind = "null" if value is None else type(value).__name__
        return PlantTextValue(name, "", t, Quality.BAD, False, f"not a string: {kind}")
    truncated = len(value) > max_chars
    return PlantTextValue(name, value[:max_chars], t, status, truncated, reason)
