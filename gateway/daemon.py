"""The gateway daemon: one asyncio process, one TaskGroup of named, long-lived tasks.

Today's cycle is the L0 passive twin: read every source, judge signals into the live table,
record them, write the heartbeat, tell systemd how we are. Each later stage (twin, detect,
agent, govern, act) joins as a task of its own that reads the live table.

Failure containment: each reader catches its own connection failures and reconnects, the
historian task survives store failures (samples wait in a bounded buffer), the heartbeat
task survives write failures. Only a bug escapes a task, and then the TaskGroup stops the
whole process so that systemd restarts it and the PLC's watchdog sheds to local control
meanwhile: a half-alive gateway is worse than a dead one.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from gateway import __version__
from gateway.acquire import Acquisition
from gateway.act.actuator import Actuator
from gateway.act.setpoints import AutonomyLatch, SetpointExecutor
from gateway.agent.context import plant_context, whatif
from gateway.agent.prompt import PlantContext, untrusted
from gateway.agent.service import AgentService, Trigger
from gateway.config.schema import GatewayConfig, ModbusSource, OpcUaSource
from gateway.control import GovernanceService
from gateway.detect.predictive import PredictiveAlerts, PredictiveEvent
from gateway.detect.service import DetectionService, new_boot_id
from gateway.detect.twin_alerts import TwinAlerts, twin_policy
from gateway.errors import ConfigError, GatewayError, StoreError, WriteError
from gateway.govern.gate import GovernSettings, settings_for
from gateway.io.modbus_reader import ModbusReader
from gateway.io.opcua_reader import OpcUaReader
from gateway.io.ports import LinkState, SampleSink
from gateway.sdnotify import Notifier
from gateway.status import STATUS_FILE, status_document, write_status
from gateway.store.audit import SqliteAuditTrail
from gateway.store.historian import SqliteHistorian
from gateway.store.ports import Sample
from gateway.store.proposals import SqliteProposalStore
from gateway.twin.numba_cache import use_cache_dir
from gateway.twin.runtime import TwinRuntime, TwinTick
from gateway.twin.whatif import TWIN_STATE_FILE

LATCH_FILE = "autonomy.json"
"""Whether autonomous writes are suspended (after a failed read-back or outcome check)."""

TWIN_SAVE_EVERY_S = 5.0
FIDELITY_SAMPLE_EVERY_S = 10.0
FIDELITY_SIGNAL = "twin.fidelity"
"""Historian name of the overall fidelity score; per output: ``twin.fidelity.<output>``."""

log = structlog.get_logger("gateway.daemon")

#: Send READY=1 after this long even if a source is still down: a PLC that is offline at
#: boot must not keep the gateway from starting (it reports the source as down instead).
READY_GRACE_S = 20.0
RETENTION_EVERY_S = 3600.0

Reader = OpcUaReader | ModbusReader


def build_readers(cfg: GatewayConfig, sink: SampleSink) -> dict[str, Reader]:
    readers: dict[str, Reader] = {}
    for name, source in cfg.source.items():
        signals = {n: s for n, s in cfg.signal.items() if s.source == name}
        if isinstance(source, OpcUaSource):
            texts = {n: t for n, t in cfg.text.items() if t.source == name}
            readers[name] = OpcUaReader(name, source, signals, sink, texts=texts)
        else:
            assert isinstance(source, ModbusSource)
            readers[name] = ModbusReader(name, source, signals, sink)
    return readers


class Daemon:
    """Owns the stores, the readers and the tasks; ``run`` returns only when cancelled."""

    def __init__(
        self,
        cfg: GatewayConfig,
        state_dir: Path,
        *,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        govern: GovernSettings | None = None,
        twin_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.state_dir = state_dir
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.acquisition = Acquisition(cfg, clock=clock)
        self.readers = build_readers(cfg, self.acquisition)
        self.actuator = Actuator(cfg, self.readers)
        self.ready = asyncio.Event()
        self.historian_failing = False
        self.boot_id = new_boot_id(clock)
        """Distinguishes this run's alert ids from the previous run's."""
        self.twin: TwinRuntime | None = None
        self.twin_state: dict[str, Any] = (
            {"state": "not configured"} if cfg.twin is None else {"state": "starting"}
        )
        self.predictive = PredictiveAlerts(id_prefix=f"forecast-{self.boot_id}")
        self._forecast_clock = -math.inf
        self.twin_alerts = TwinAlerts(twin_policy(f"twin-{self.boot_id}"))
        self.detection: DetectionService | None = None
        self.govern_settings = govern or settings_for(cfg)
        self.twin_options = dict(twin_options or {})
        self.latch = AutonomyLatch.load(state_dir / LATCH_FILE)
        self.governance: GovernanceService | None = None
        self.api_state: dict[str, Any] = {"state": "off"}
        self.agent: AgentService | None = None
        self._requests = 0
        self.agent_state: dict[str, Any] = (
            {"state": "starting"}
            if cfg.agent is not None and cfg.agent.enabled
            else {"state": "off"}
        )

    def progress(self) -> int:
        """Grows while acquisition is alive: samples in, connect attempts, polls, probes."""
        return self.acquisition.samples_received + sum(r.cycles for r in self.readers.values())

    async def run(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        h = self.cfg.historian
        historian = SqliteHistorian(
            self.state_dir / "history.db",
            retention_s=h.retention_days * 86400,
            max_bytes=int(h.max_mb * 2**20),
        )
        audit = SqliteAuditTrail(self.state_dir / "audit.db")
        proposals = SqliteProposalStore(self.state_dir / "proposals.db")
        executor = SetpointExecutor(
            self.cfg,
            self.govern_settings,
            self.actuator.write_setpoint,
            self.acquisition.snapshot,
            audit,
            self.latch,
            clock=self.clock,
        )
        self.governance = GovernanceService(
            self.cfg,
            self.govern_settings,
            self.acquisition.snapshot,
            lambda: self.twin,
            executor,
            audit,
            proposals,
            alerts=self._active_alerts,
            boot_id=self.boot_id,
            clock=self.clock,
        )
        self.governance.agent_requester = self._agent_request
        self.detection = DetectionService(
            self.cfg,
            self.acquisition,
            audit,
            boot_id=self.boot_id,
            clock=self.clock,
            external=self._residual_features,
        )
        config_hash = hashlib.sha256(self.cfg.model_dump_json().encode()).hexdigest()
        audit.append(
            "startup",
            {
                "gateway": self.cfg.gateway.name,
                "autonomy": self.cfg.gateway.autonomy,
                "config_sha256": config_hash,
                "version": __version__,
            },
        )
        log.info("daemon_started", gateway=self.cfg.gateway.name, state_dir=str(self.state_dir))
        try:
            async with asyncio.TaskGroup() as tg:
                for reader in self.readers.values():
                    tg.create_task(reader.run(), name=f"source:{reader.name}")
                tg.create_task(self._historian_loop(historian), name="historian")
                if self.cfg.heartbeat is not None:
                    tg.create_task(self._heartbeat_loop(), name="heartbeat")
                tg.create_task(self._systemd_loop(), name="systemd")
                tg.create_task(self._status_loop(), name="status")
                if self.cfg.twin is not None:
                    tg.create_task(self._twin_loop(historian, audit), name="twin")
                tg.create_task(self.detection.run(), name="detect")
                if self.cfg.api is not None and self.cfg.api.enabled:
                    tg.create_task(self._api_loop(), name="api")
                if self.cfg.agent is not None and self.cfg.agent.enabled:
                    tg.create_task(self._agent_loop(audit), name="agent")
        finally:
            self.notifier.send("STOPPING=1")
            # A stopped daemon must not look running to `edgetwin status`.
            (self.state_dir / STATUS_FILE).unlink(missing_ok=True)
            self._final_flush(historian)
            if self.governance is not None:
                await self.governance.close()
            audit.append("shutdown", {"gateway": self.cfg.gateway.name})
            historian.close()
            audit.close()
            proposals.close()
            log.info("daemon_stopped")

    # -- tasks ---------------------------------------------------------------------------
    async def _historian_loop(self, historian: SqliteHistorian) -> None:
        next_retention = time.monotonic() + RETENTION_EVERY_S
        while True:
            await asyncio.sleep(self.cfg.historian.flush_interval_s)
            await self._flush_once(historian)
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + RETENTION_EVERY_S
                try:
                    await asyncio.to_thread(historian.enforce_retention, self.clock())
                except StoreError as err:
                    log.error("historian_retention_failed", error=str(err))

    async def _flush_once(self, historian: SqliteHistorian) -> None:
        batch = self.acquisition.take_history()
        if not batch:
            return
        try:
            await asyncio.to_thread(historian.append, batch)
        except StoreError as err:
            self.acquisition.give_back(batch)
            if not self.historian_failing:
                log.error("historian_write_failed", error=str(err), pending=len(batch))
            self.historian_failing = True
            return
        if self.historian_failing:
            log.info("historian_recovered", pending=self.acquisition.pending)
        self.historian_failing = False

    def _final_flush(self, historian: SqliteHistorian) -> None:
        while self.acquisition.pending:
            batch = self.acquisition.take_history()
            try:
                historian.append(batch)
            except StoreError as err:
                log.error("historian_final_flush_failed", error=str(err), lost=len(batch))
                return

    async def _heartbeat_loop(self) -> None:
        assert self.cfg.heartbeat is not None
        last_progress = self.acquisition.samples_received
        failing: str | None = None
        while True:
            await asyncio.sleep(self.cfg.heartbeat.interval_s)
            progress = self.acquisition.samples_received
            if progress == last_progress:
                reason = "acquisition made no progress"
            else:
                try:
                    await self.actuator.beat()
                    reason = None
                except WriteError as err:
                    reason = str(err)
            last_progress = progress
            if reason is not None and failing is None:
                log.warning("heartbeat_paused", reason=reason)
            elif reason is None and failing is not None:
                log.info("heartbeat_resumed")
            failing = reason

    async def _systemd_loop(self) -> None:
        started = time.monotonic()
        last = -1
        while True:
            if not self.ready.is_set():
                down = [
                    n
                    for n, s in self.acquisition.links.items()
                    if s.state is not LinkState.CONNECTED
                ]
                if not down or time.monotonic() - started > READY_GRACE_S:
                    status = "all sources connected" if not down else f"down: {', '.join(down)}"
                    self.notifier.send("READY=1", f"STATUS={status}")
                    self.ready.set()
                    log.info("daemon_ready", sources_down=down)
            if self.notifier.watchdog_s is not None:
                progress = self.progress()
                if progress != last:
                    self.notifier.send("WATCHDOG=1")
                last = progress
            await asyncio.sleep(min(1.0, (self.notifier.watchdog_s or 3.0) / 3))

    async def _status_loop(self) -> None:
        path = self.state_dir / STATUS_FILE
        while True:
            now = self.clock()
            links: dict[str, Mapping[str, Any]] = {
                name: {"state": str(s.state), "detail": s.detail, "since": s.since}
                for name, s in self.acquisition.links.items()
            }
            extra = {
                "history_pending": self.acquisition.pending,
                "history_dropped": self.acquisition.samples_dropped,
                "heartbeats_written": self.actuator.heartbeats_written,
                "twin": self._twin_status(),
                "detect": self.detection.status() if self.detection else {"state": "off"},
                "govern": self._govern_status(),
                "api": self.api_state,
                "agent": self._agent_status(),
            }
            doc = status_document(self.cfg, self.acquisition.snapshot(), links, extra, now)
            try:
                await asyncio.to_thread(write_status, path, doc)
            except OSError as err:
                log.error("status_write_failed", error=str(err))
            await asyncio.sleep(1.0)

    # -- the twin ------------------------------------------------------------------------
    async def _twin_loop(self, historian: SqliteHistorian, audit: SqliteAuditTrail) -> None:
        """Build and warm the twin once acquisition is up, then step it once a second.

        The twin is built after READY: compiling (on a machine's first start) takes seconds
        and must not delay acquisition or the heartbeat. A twin that cannot be built is
        reported in the status and the log, and the daemon goes on without it: the gate
        (which needs the twin) then refuses every proposal, which is the safe side.
        """
        from gateway.twin.build import build_twin

        assert self.cfg.twin is not None
        await self.ready.wait()
        try:
            use_cache_dir(self.state_dir / "numba")
        except GatewayError as err:
            log.warning("twin_cache_dir_not_used", error=str(err))
        started = time.monotonic()
        try:
            model, simulator = await asyncio.to_thread(
                build_twin, self.cfg.twin, signals=self.cfg.signal
            )
            await asyncio.to_thread(simulator.warm_up)
        except (GatewayError, ValueError, OSError) as err:
            self.twin_state = {"state": "failed", "error": str(err)}
            log.error("twin_failed", error=str(err))
            return
        self.twin = TwinRuntime(self.cfg, model, simulator, **self.twin_options)
        self.twin_state = {"state": "running"}
        log.info("twin_ready", model=model.name, warm_up_s=round(time.monotonic() - started, 2))
        next_save = next_sample = 0.0
        while True:
            began = time.monotonic()
            now = self.clock()
            tick = await asyncio.to_thread(self.twin.step, now, self.acquisition.snapshot())
            events = self._predictive_events(tick)
            for event in events:
                await self._audit_event(audit, "forecast_alert", event.to_record())
                log.warning("forecast_alert", **event.to_record())
            await self._twin_alerts(audit, tick)
            if began >= next_sample:
                next_sample = began + FIDELITY_SAMPLE_EVERY_S
                await self._store_fidelity(historian, tick)
            if began >= next_save:
                next_save = began + TWIN_SAVE_EVERY_S
                await self._save_twin_state(now)
            await asyncio.sleep(max(0.05, 1.0 - (time.monotonic() - began)))

    async def _twin_alerts(self, audit: SqliteAuditTrail, tick: TwinTick) -> None:
        try:
            alerts = self.twin_alerts.observe(tick.t, tick.fidelity, tick.drift)
        except ValueError as err:
            # A bug here must cost the divergence alert, not the twin (or the daemon).
            log.error("twin_alert_failed", error=str(err))
            return
        for alert in alerts:
            # Audit first: a logged alert is a recorded one.
            await self._audit_event(audit, "twin_alert", alert.to_record())
            emit = log.info if alert.kind == "cleared" else log.warning
            emit("twin_alert", **alert.to_record())

    def _predictive_events(self, tick: TwinTick) -> list[PredictiveEvent]:
        # The wall clock may step back (NTP); the alert clock holds until it catches up.
        at = self._forecast_clock = max(tick.t, self._forecast_clock)
        if tick.forecasts is not None:
            return self.predictive.observe(at, tick.forecasts)
        if tick.observer is None:
            self.predictive.missing(at)
        return []

    async def _audit_event(
        self, audit: SqliteAuditTrail, kind: str, payload: Mapping[str, Any]
    ) -> None:
        try:
            await asyncio.to_thread(audit.append, kind, payload)
        except StoreError as err:
            log.error("audit_append_failed", kind=kind, error=str(err))

    async def _store_fidelity(self, historian: SqliteHistorian, tick: TwinTick) -> None:
        report = tick.fidelity
        now = tick.t

        def sample(signal: str, value: float | None) -> Sample:
            if value is None:
                return Sample(signal, now, float("nan"), "uncertain", now)
            return Sample(signal, now, value, "good", now)

        batch = [sample(FIDELITY_SIGNAL, report.score)] + [
            sample(f"{FIDELITY_SIGNAL}.{name}", score) for name, score in report.per_output.items()
        ]
        try:
            await asyncio.to_thread(historian.append, batch)
        except StoreError as err:
            log.error("fidelity_store_failed", error=str(err))

    async def _save_twin_state(self, now: float) -> None:
        assert self.twin is not None
        snapshot = self.twin.snapshot()
        if snapshot is None:
            return
        document = {"saved_at": now, "gateway": self.cfg.gateway.name, "observer": snapshot}
        path = self.state_dir / TWIN_STATE_FILE
        try:
            await asyncio.to_thread(write_status, path, document)
        except OSError as err:
            log.error("twin_state_write_failed", error=str(err))

    async def _api_loop(self) -> None:
        """Serve the local control API until cancelled.

        Without it nobody can approve or propose, but acquisition, the heartbeat and the
        twin still matter: a missing tokens file or a taken port is logged and shown in
        the status (with the fix), and the daemon goes on.
        """
        from gateway.api.auth import TokenFile
        from gateway.api.server import ApiServer

        assert self.cfg.api is not None
        assert self.governance is not None
        try:
            tokens = await asyncio.to_thread(TokenFile, self.cfg.api.tokens_file)
        except ConfigError as err:
            self.api_state = {"state": "disabled", "error": "; ".join(err.problems)}
            log.error("api_disabled", problems=err.problems)
            return
        try:
            async with ApiServer(self.governance, tokens, self.cfg.api.port) as api:
                self.api_state = {"state": "listening", "url": api.url}
                log.info("api_listening", url=api.url)
                await asyncio.Event().wait()
        except OSError as err:
            self.api_state = {"state": "disabled", "error": str(err)}
            log.error("api_disabled", error=str(err))

    # -- the agent -----------------------------------------------------------------------
    async def _agent_loop(self, audit: SqliteAuditTrail) -> None:
        """Start the model's worker process and the agent once acquisition is up.

        The agent is optional in the strongest sense: without a model file, with a model
        llama.cpp cannot load, or without runbooks, the daemon goes on (acquisition, the
        twin, the gate and operators' proposals do not need it), and the status page says
        why the agent is not running and how to fix it.
        """
        from gateway.agent.knowledge import KnowledgeBase
        from gateway.agent.llm import LlmError, LlmWorker
        from gateway.agent.locate import resolve_model

        section = self.cfg.agent
        assert section is not None
        assert self.governance is not None
        governance = self.governance
        await self.ready.wait()
        try:
            model_path = await asyncio.to_thread(resolve_model, section.model)
        except GatewayError as err:
            self.agent_state = {"state": "disabled", "error": str(err)}
            log.error("agent_disabled", error=str(err))
            return
        # Indexing reads every runbook and writes SQLite: not on the event loop.
        knowledge = await asyncio.to_thread(
            KnowledgeBase.open, Path(section.knowledge_dir), self.state_dir / "knowledge.db"
        )
        try:
            indexed = knowledge.passages
            async with LlmWorker(
                model_path,
                context_tokens=section.context_tokens,
                threads=section.threads,
                seed=section.seed,
            ) as llm:
                try:
                    await llm.start()
                except LlmError as err:
                    self.agent_state = {"state": "disabled", "error": str(err)}
                    log.error("agent_disabled", error=str(err), model=str(model_path))
                    return
                self.agent = AgentService(
                    self.cfg,
                    section,
                    llm,
                    governance.propose,
                    self._agent_context,
                    self._agent_whatif,
                    audit,
                    alerts=self._active_alerts,
                    knowledge=knowledge,
                    proposal_status=self._proposal_status,
                    clock=self.clock,
                )
                self.agent_state = {
                    "state": "running",
                    "model": str(model_path),
                    "passages": indexed,
                    "worker": llm.info(),
                }
                log.info("agent_ready", model=str(model_path), passages=indexed)
                await self.agent.run()
        finally:
            knowledge.close()

    def _agent_request(self, who: str, note: str) -> dict[str, Any]:
        """An operator's "have a look" (API ``POST /v1/agent/requests``, ``edgetwin ask``)."""
        from gateway.api.ports import ControlError

        if self.agent is None:
            state = self.agent_state.get("state")
            detail = self.agent_state.get("error") or "it has not started yet"
            raise ControlError(503, "agent_unavailable", f"the agent is {state}: {detail}")
        self._requests += 1
        incident = f"request-{self.boot_id}-{self._requests}"
        summary = {"by": who, "note": untrusted(note, 500)}
        if not self.agent.request(Trigger(incident, "request", summary, note)):
            raise ControlError(503, "agent_busy", "the agent's queue is full; ask again later")
        return {"incident": incident, "queued": self.agent.queue.qsize()}

    def _agent_context(self) -> PlantContext:
        assert self.cfg.agent is not None
        try:
            proposals = self.governance.store.all(limit=5)[::-1] if self.governance else []
        except StoreError as err:
            log.error("proposal_store_failed", error=str(err))
            proposals = []
        return plant_context(
            self.cfg,
            self.acquisition.snapshot(),
            twin_status=self.twin.status() if self.twin is not None else None,
            alerts=self._active_alerts(),
            proposals=proposals,
            texts=self.acquisition.plant_texts(),
            max_text_chars=self.cfg.agent.max_text_chars,
        )

    async def _agent_whatif(self, targets: Mapping[str, float]) -> Mapping[str, Any]:
        return await asyncio.to_thread(whatif, self.cfg, self.twin, targets)

    def _proposal_status(self, proposal_id: str) -> str | None:
        if self.governance is None:
            return None
        try:
            doc = self.governance.store.get(proposal_id)
        except StoreError:
            return None
        return None if doc is None else str(doc.get("status"))

    def _agent_status(self) -> dict[str, Any]:
        status = dict(self.agent_state)
        if self.agent is not None:
            status.update(self.agent.status())
        return status

    def _active_alerts(self) -> list[dict[str, Any]]:
        detect = self.detection.status().get("active", []) if self.detection else []
        forecasts = [e.to_record() for e in self.predictive.active.values()]
        twin = self.twin_alerts.active
        return (
            [{"kind": "anomaly", **a} for a in detect]
            + [{**f, "kind": "forecast"} for f in forecasts]
            + ([] if twin is None else [{**twin.to_record(), "kind": "twin"}])
        )

    def _govern_status(self) -> dict[str, Any]:
        latch = self.latch.to_record()
        pending = []
        if self.governance is not None:
            try:
                pending = [d["proposal"]["id"] for d in self.governance.store.all("pending")]
            except StoreError as err:
                log.error("proposal_store_failed", error=str(err))
        return {
            "configured": self.cfg.gateway.autonomy,
            "effective": self.latch.effective(self.cfg.gateway.autonomy),
            "suspended": latch,
            "pending": pending,
        }

    def _residual_features(self) -> dict[str, float]:
        return {} if self.twin is None else self.twin.residual_features()

    def _twin_status(self) -> dict[str, Any]:
        status = dict(self.twin_state)
        if self.twin is not None:
            status.update(self.twin.status())
            status["forecast_alerts"] = [e.to_record() for e in self.predictive.active.values()]
            twin_alert = self.twin_alerts.active
            status["divergence_alert"] = None if twin_alert is None else twin_alert.to_record()
        return status
