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
