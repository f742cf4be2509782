"""Acquisition: where the readers' samples land.

The coordinator is the readers' sink. It judges each sample into the live table (the only
place later stages read signals from), decides which samples are worth keeping in the
historian (deadband and per-signal history rate, so a fast noisy source cannot flood the
SD card), keeps them in a bounded buffer until the historian task takes them, and logs
connection *transitions* once each (STYLE.md §4), never every poll.

The buffer is bounded on purpose: if the store stays down for long, the oldest unwritten
samples are dropped (and counted) rather than letting memory grow until the box dies. The
live table, and so every decision, is unaffected by a store outage.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import structlog

from gateway.config.schema import GatewayConfig
from gateway.io.ports import LinkState
from gateway.signals import LiveTable, Quality, RawSample, SignalValue
from gateway.store.ports import Sample

log = structlog.get_logger("gateway.acquire")

#: Record a sample at least this often even if it stays inside its deadband, so the
#: history shows the value was still being read.
MAX_SILENCE_S = 60.0


@dataclass(frozen=True)
class LinkStatus:
    state: LinkState
    detail: str | None
    since: float


class Acquisition:
    """The readers' sink; owner of the live table and of the history buffer."""

    def __init__(
        self,
        cfg: GatewayConfig,
        *,
        clock: Callable[[], float] = time.time,
        history_capacity: int = 200_000,
    ) -> None:
        self._cfg = cfg
        self._clock = clock
        self.table = LiveTable(cfg.signal)
        self.links: dict[str, LinkStatus] = {
            name: LinkStatus(LinkState.DISCONNECTED, "not connected yet", clock())
            for name in cfg.source
        }
        self._logged: dict[str, LinkState] = {}
        self._by_source = {
            src: tuple(n for n, s in cfg.signal.items() if s.source == src) for src in cfg.source
        }
        self._pending: deque[Sample] = deque(maxlen=history_capacity)
        self._recorded: dict[str, tuple[float, float, Quality]] = {}
        self.samples_received = 0
        self.samples_dropped = 0

    # -- SampleSink ----------------------------------------------------------------------
    def samples(self, source: str, batch: Sequence[tuple[str, RawSample]]) -> None:
        for name, raw in batch:
            value = self.table.update(name, raw)
            self.samples_received += 1
            if self._worth_recording(value):
                self._keep(
                    Sample(name, value.source_ts, value.value, value.quality, value.received_ts)
                )

    def link(self, source: str, state: LinkState, detail: str | None) -> None:
        self.links[source] = LinkStatus(state, detail, self._clock())
        # Log up/down transitions once each: a reader retrying passes through "connecting"
        # on every attempt, which is not news.
        logged = self._logged.get(source)
        if state is LinkState.CONNECTED and logged is not LinkState.CONNECTED:
            self._logged[source] = state
            log.info("source_connected", source=source)
        elif state is LinkState.DISCONNECTED and logged is not LinkState.DISCONNECTED:
            self._logged[source] = state
            log.warning("source_disconnected", source=source, detail=detail)
        if state is not LinkState.CONNECTED:
            # Known down: nothing from this source may look good until it is read again.
            self.table.invalidate(self._by_source[source], f"source {source} {state}")

    # -- history -------------------------------------------------------------------------
    def _worth_recording(self, value: SignalValue) -> bool:
        spec = self._cfg.signal[value.name]
        last = self._recorded.get(value.name)
        if last is not None:
            last_ts, last_value, last_quality = last
            elapsed = value.received_ts - last_ts
            if value.quality == last_quality:
                if elapsed < spec.history_interval_s:
                    return False
                within = abs(value.value - last_value) <= spec.deadband
                if within and elapsed < MAX_SILENCE_S:
                    return False
        self._recorded[value.name] = (value.received_ts, value.value, value.quality)
        return True

    def _keep(self, sample: Sample) -> None:
        if len(self._pending) == self._pending.maxlen:
            self.samples_dropped += 1  # deque drops the oldest
            if self.samples_dropped == 1:
                log.error("history_buffer_full", capacity=self._pending.maxlen)
        self._pending.append(sample)

    def take_history(self, limit: int = 10_000) -> list[Sample]:
        """Remove and return up to ``limit`` of the oldest unwritten samples."""
        count = min(limit, len(self._pending))
        return [self._pending.popleft() for _ in range(count)]

    def give_back(self, samples: Iterable[Sample]) -> None:
        """Return samples the store could not take, ahead of newer ones, within the bound."""
        for sample in reversed(list(samples)):
            if len(self._pending) == self._pending.maxlen:
                self.samples_dropped += 1
                continue  # the newest data wins the space: drop the older returned sample
            self._pending.appendleft(sample)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def snapshot(self) -> dict[str, SignalValue]:
        return self.table.snapshot(self._clock())
