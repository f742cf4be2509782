"""What a southbound reader delivers, and to whom.

Readers (one per configured source) own their connection and never hold a lock shared with
another source, so one dead PLC cannot stall the others. They push judged-later raw samples,
plant-provided text and connection transitions into a ``SampleSink``; the acquisition
coordinator is the sink.

Writing is deliberately not part of a reader: the write path lives in separate modules that
only ``gateway.act`` may import (safety invariant 1, enforced by a test).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Protocol

from gateway.signals import PlantTextValue, RawSample


class LinkState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class SampleSink(Protocol):
    def samples(self, source: str, batch: Sequence[tuple[str, RawSample]]) -> None:
        """New samples from ``source``; called on the event loop, must not block."""

    def texts(self, source: str, batch: Sequence[PlantTextValue]) -> None:
        """Plant-provided strings from ``source`` (``[text.*]`` values and signal nodes'
        DisplayNames, keyed as in :func:`gateway.signals.display_name_key`), already cut to
        their ``max_chars``; called on the event loop, must not block.

        A separate method, not samples: text is untrusted data for people and the agent,
        never a number a decision or the historian may take.
        """

    def link(self, source: str, state: LinkState, detail: str | None) -> None:
        """A connection transition of ``source`` (logged once per transition by the sink)."""


class Reader(Protocol):
    name: str

    async def run(self) -> None:
        """Read forever: connect, read, and reconnect with capped backoff on any failure."""


def backoff_delays(initial: float, cap: float) -> Sequence[float]:
    """The reconnect delays before the cap is reached, for documentation and tests."""
    delays, delay = [], initial
    while delay < cap:
        delays.append(delay)
        delay *= 2
    delays.append(cap)
    return delays
