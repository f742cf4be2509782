"""Acquisition: where the readers' samples land.

The coordinator is the readers' sink. It judges each sample into the live table (the only
place later stages read signals from), decides which samples are worth keeping in the
historian (deadband and per-signal history rate, so a fast noisy source cannot flood the
SD card), keeps them in a bounded buffer until the historian task takes them, and logs
connection *transitions* once each (STYLE.md §4), never every poll.

The buffer is bounded on purpose: if the store stays down for long, the oldest unwritten
samples are dropped (and counted) rather than letting memory grow until the box dies. The
live table, and so every decision, is unaffected by a store outage.

Plant-provided text (``[text.*]`` strings, signal nodes' DisplayNames) is kept apart: the
latest value per key, never judged as a number, never sent to the historian (it is
untrusted free text, not a measurement; the audit trail records what the agent was shown).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import structlog

from gateway.config.schema import GatewayConfig
from gateway.io.ports import LinkState
from gateway.signals import (
    LiveTable,
    PlantTextValue,
    Quality,
    RawSample,
    SignalValue,
    display_name_key,
)
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
        # Which plant-text keys each source may deliver: its [text.*] names and its
        # signals' display names. Anything else is dropped, so the table stays bounded.
        self._text_keys = {
            src: frozenset(
                [n for n, t in cfg.text.items() if t.source == src]
                + [display_name_key(n) for n in self._by_source[src]]
            )
            for src in cfg.source
        }
        self._texts: dict[str, PlantTextValue] = {}
        self._texts_bad: set[str] = set()
        self.texts_received = 0

    # -- SampleSink ----------------------------------------------------------------------
    def samples(self, source: str, batch: Sequence[tuple[str, RawSample]]) -> None:
        for name, raw in batch:
            value = self.table.update(name, raw)
            self.samples_received += 1
            if self._worth_recording(value):
                self._keep(
                    Sample(name, value.source_ts, value.value, value.quality, value.received_ts)
                )

    def texts(self, source: str, batch: Sequence[PlantTextValue]) -> None:
        keys = self._text_keys.get(source, frozenset())
        for value in batch:
            if value.name not in keys:
                log.warning("plant_text_unexpected", source=source, key=value.name)
                continue
            self._texts[value.name] = value
            self.texts_received += 1
            # Transitions only, and never the text itself: it is untrusted and may be long.
            # A link outage is logged once by link(), not once per text.
            if value.quality is Quality.BAD:
                if value.name not in self._texts_bad:
                    self._texts_bad.add(value.name)
                    log.warning(
                        "plant_text_bad", source=source, key=value.name, reason=value.reason
                    )
            elif value.name in self._texts_bad:
                self._texts_bad.discard(value.name)
                log.info("plant_text_recovered", source=source, key=value.name)

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
            self._invalidate_texts(source, f"source {source} {state}")

    def _invalidate_texts(self, source: str, reason: str) -> None:
        """Bad at once, text kept: what the plant last said, no longer vouched for.

        Bad, not stale as a signal would be: plant text has no max age to fall back on, and
        a reader of it needs only to know it is not current.
        """
        for key in self._text_keys.get(source, ()):
            old = self._texts.get(key)
            if old is not None and old.quality is not Quality.BAD:
                self._texts[key] = replace(old, quality=Quality.BAD, reason=reason)

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

    def plant_texts(self) -> dict[str, PlantTextValue]:
        """The latest plant text per key: ``[text.*]`` names and ``display_name.<signal>``.

        Only keys read at least once appear (as in :meth:`snapshot`). The text is exactly
        what the plant sent, cut to ``max_chars``; escaping is the reader's job.
        """
        return dict(self._texts)
