"""The daemon's detect task: live table → :class:`Detector` → alerts in the audit trail,
the log and the status page.

Once a sample period (the model's ``window.period_s``, 1 s for ours) the service takes a
snapshot of the live table, hands the detector the values its features need (None for a
signal that is missing, stale or bad) and, for every alert event the window causes, first
commits an ``"alert"`` record to the audit trail (in a worker thread: it fsyncs) and only
then logs it, so a line in the log always has its record. The model runs in a worker
thread under a timeout (:meth:`Detector.observe_async`), so the event loop never waits on
onnxruntime.

Detection is not a safety function: the PLC's trips and the gateway's interlocks do not
depend on it. So a model that cannot be loaded, or a scoring failure, never stops the
gateway; it is logged as an error and shown in :meth:`DetectionService.status`, and the
daemon keeps reading, recording and writing its heartbeat.

Alert ids are ``anomaly-<boot id>-<n>``: the alert manager counts from 1 on every start,
so without a per-boot part "anomaly-1" would name a different alert after each restart
and the audit trail could not tell them apart.

Wiring, in ``Daemon.run`` once the audit trail is open (the service only reads the live
table and appends to the trail; it owns neither)::

    from gateway.detect.service import DetectionService

    detection = DetectionService(self.cfg, self.acquisition, audit, source=config_file)
    tg.create_task(detection.run(), name="detect")
    ...
    extra["detect"] = detection.status()     # in the status loop: JSON-ready

``run()`` returns at once when detection is off in the config or cannot start (the
reason is in ``status()``); a TaskGroup is fine with a task that ends. To feed the model's
external features (e.g. twin residuals, when a model declares them), pass
``external=lambda: {"twin_level_residual": ...}``.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import structlog

from gateway.config.schema import DetectAlerts, DetectSection, GatewayConfig
from gateway.detect.alerts import AlertEvent, AlertPolicy
from gateway.detect.anomaly import AnomalyModel, ModelError, load_metadata
from gateway.detect.detector import DetectionStep, Detector
from gateway.detect.features import FEATURES, required_signals
from gateway.errors import StoreError
from gateway.signals import SignalValue

log = structlog.get_logger("gateway.detect")

#: Longest a window's scoring may take. Ours takes well under a millisecond; this only
#: catches a wedged worker pool, and a window it catches counts as "no score".
DEFAULT_TIMEOUT_S: Final = 5.0
AUDIT_KIND: Final = "alert"
MAKE_MODELS: Final = "build it with `make models` (models/build_anomaly_model.py)"

ServiceState = Literal["off", "starting", "running", "disabled"]
ExternalFeatures = Callable[[], Mapping[str, float]]


class LiveTable(Protocol):
    """Where the current signal values come from (``gateway.acquire.Acquisition``)."""

    def snapshot(self) -> Mapping[str, SignalValue]:
        """Every configured signal's latest value, with its quality judged now."""
        ...


class AlertRecorder(Protocol):
    """Where alert events are committed (``gateway.store.audit.SqliteAuditTrail``)."""

    def append(self, kind: str, payload: Mapping[str, Any], *, ts: float | None = None) -> object:
        """Commit one record durably; raise StoreError (nothing recorded) otherwise."""
        ...


def new_boot_id(clock: Callable[[], float] = time.time) -> str:
    """A short id unique to this start of the process, e.g. ``20250301t101500z-3fa9c2``.

    The time makes ids sortable when the clock is right; the random part keeps them unique
    when it is not (a Raspberry Pi has no RTC and may boot with an old time).
    """
    stamp = time.strftime("%Y%m%dt%H%M%Sz", time.gmtime(clock()))
    return f"{stamp}-{secrets.token_hex(3)}"


def alert_policy(alerts: DetectAlerts, id_prefix: str) -> AlertPolicy:
    """The detector's alert policy from the config's ``[detect.alerts]`` table."""
    return AlertPolicy(
        raise_after=alerts.raise_after,
        clear_after=alerts.clear_after,
        max_alerts_per_hour=alerts.max_alerts_per_hour,
        min_update_interval_s=alerts.min_update_interval_s,
        medium_ratio=alerts.medium_ratio,
        high_ratio=alerts.high_ratio,
        id_prefix=id_prefix,
    )


def load_model(
    detect: DetectSection, signals: Collection[str], *, source: str = "config"
) -> tuple[AnomalyModel | None, list[str]]:
    """Load the configured anomaly model and check it against the configured signals.

    Used by ``edgetwin check-config`` and at the service's start, so both say the same
    thing in the same words: each problem names the config file, the key and the fix.

    Args:
        detect: The config's ``[detect]`` section (paths already resolved by the loader).
        signals: Names of the configured signals (``cfg.signal``).
        source: The config file's name, at the start of every message.

    Returns:
        ``(model, problems)``. The model is None when it could not be loaded; it is
        usable only when ``problems`` is empty (a model whose signals are not all
        configured loads, but could never score a window).
    """
    problems: list[str] = []
    for key, path in (("detect.model", detect.model), ("detect.metadata", detect.metadata_path)):
        if not Path(path).is_file():
            problems.append(
                f"{source}: {key}: {path} does not exist; {MAKE_MODELS}, point {key} at "
                "your own file, or set detect.enabled = false"
            )
    if problems:
        return None, problems
    try:
        metadata = load_metadata(detect.metadata_path)
    except ModelError as err:
        return None, [f"{source}: detect.metadata: {line}" for line in str(err).splitlines()]
    try:
        model = AnomalyModel(detect.model, detect.metadata_path)
    except ModelError as err:
        return None, [f"{source}: detect.model: {line}" for line in str(err).splitlines()]

    roles = required_signals(metadata.names)
    for role in roles:
        signal = detect.signals.get(role, role)
        if signal in signals:
            continue
        users = ", ".join(
            n for n in metadata.names if n in FEATURES and role in FEATURES[n].signals
        )
        if role in detect.signals:
            problems.append(
                f"{source}: detect.signals.{role}: unknown signal {signal!r}; declared: "
                f"{', '.join(sorted(signals))}"
            )
        else:
            problems.append(
                f"{source}: detect.signals.{role}: the model reads signal role {role!r} "
                f"(for {users}) and no signal has that name; map it under [detect.signals]: "
                f'{role} = "<the signal that measures it>"'
            )
    for role in detect.signals:
        if role not in roles:
            problems.append(
                f"{source}: detect.signals.{role}: the model reads no signal role {role!r}; "
                f"it reads: {', '.join(roles)}"
            )
    return model, problems


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or Infinity (the status file refuses them)."""
    return value if value is not None and math.isfinite(value) else None


class DetectionService:
    """The detect task of the daemon; see the module docstring.

    Args:
        cfg: The loaded config; its ``[detect]`` section says whether and what to run.
        live: The live table (``Acquisition``): ``snapshot()`` once a sample period.
        audit: The audit trail; every alert event is committed there as kind ``"alert"``
            with the event's ``to_record()`` as payload.
        boot_id: Unique to this start of the gateway; alert ids are
            ``anomaly-<boot_id>-<n>``. Default: :func:`new_boot_id`.
        source: The config file's name, for messages.
        clock: Wall time, unix seconds: audit record times and the status page.
        monotonic: The detector's sample times (a wall clock can step back; the detector
            refuses time going backwards and reads a gap as missing data).
        sleep: Awaited between samples (tests pass one that advances a fake clock).
        external: Returns the model's external features each sample, by name (e.g. twin
            residuals); None when the daemon supplies none.
        timeout_s: Longest one window's scoring may take.
    """

    def __init__(
        self,
        cfg: GatewayConfig,
        live: LiveTable,
        audit: AlertRecorder,
        *,
        boot_id: str | None = None,
        source: str = "config",
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        external: ExternalFeatures | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if boot_id is not None and not boot_id.strip():
            raise ValueError("boot_id must be a non-empty string")
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.cfg = cfg
        self.section = cfg.detect
        self.live = live
        self.audit = audit
        self.boot_id = boot_id or new_boot_id(clock)
        self.id_prefix = f"anomaly-{self.boot_id}"
        self.source = source
        self.timeout_s = timeout_s
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._external = external
        self.detector: Detector | None = None
        """The running detector (None until started, or when off or disabled)."""
        enabled = self.section is not None and self.section.enabled
        self.state: ServiceState = "starting" if enabled else "off"
        self.error: str | None = None
        """Why a configured detector is disabled (None otherwise)."""
        self._active: dict[str, dict[str, Any]] = {}
        self._counts = {"raised": 0, "updated": 0, "cleared": 0, "suppressed": 0}
        self.windows = 0
        self.windows_scored = 0
        self.score_failures = 0
        self.audit_failures = 0
        self._last_score: float | None = None
        self._last_scored_at: float | None = None
        self._threshold: float | None = None
        self._last_window_at: float | None = None
        self._last_reason: str | None = None
        self._last_reason_at: float | None = None
        self._scoring = False
        self._failing: str | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> bool:
        """Load the model (in a worker thread) and build the detector.

        Returns:
            True when the detector runs. False when detection is off in the config or
            cannot run; then the reason is logged once as an error and kept in
            :meth:`status`, and nothing is raised: the gateway runs on without it.
        """
        if self.state != "starting":
            return self.state == "running"
        section = self.section
        assert section is not None
        model, problems = await asyncio.to_thread(
            load_model, section, set(self.cfg.signal), source=self.source
        )
        if model is not None and not problems and model.metadata.external and not self._external:
            problems.append(
                f"{self.source}: detect.model: the model needs external features "
                f"({', '.join(model.metadata.external)}) and the gateway supplies none; use a "
                "model built from signal features only"
            )
        if model is None or problems:
            self.state = "disabled"
            self.error = "; ".join(problems)
            log.error("detect_disabled", problems=problems, model=section.model)
            return False
        self.detector = Detector(
            model, alert_policy(section.alerts, self.id_prefix), signal_map=section.signals
        )
        self._threshold = model.threshold
        self.state = "running"
        self.error = None
        meta = model.metadata
        log.info(
            "detect_started",
            model=section.model,
            features=len(meta.features),
            signals=len(self.detector.signals),
            threshold=meta.threshold,
            window_s=meta.window.length * meta.window.period_s,
            alert_id_prefix=self.id_prefix,
        )
        return True

    async def run(self) -> None:
        """Sample once per period until cancelled; return at once if detection cannot run.

        Ticks are scheduled on the monotonic clock, so a slow step does not make the
        period drift. After falling more than a period behind (a stalled loop) the missed
        ticks are skipped, not caught up in a burst: the detector reads the gap as missing
        data and refills its window, which is the honest answer.
        """
        if not await self.start():
            return
        assert self.detector is not None
        period = self.detector.model.metadata.window.period_s
        next_at = self._monotonic()
        while True:
            await self.step()
            next_at += period
            now = self._monotonic()
            if now - next_at > period:
                next_at = now
            await self._sleep(max(0.0, next_at - now))

    # -- one sample ------------------------------------------------------------------------

    async def step(self) -> DetectionStep | None:
        """Take one sample from the live table; score, record and log a due window.

        Returns:
            What the window produced, or None when no window was due (or detection is
            not running).
        """
        detector = self.detector
        if detector is None:
            return None
        t = self._monotonic()
        wall = self._clock()
        values = detector.sample_snapshot(self.live.snapshot())
        external = dict(self._external()) if self._external is not None else None
        try:
            async with asyncio.timeout(self.timeout_s):
                step = await detector.observe_async(t, values, external)
        except TimeoutError:
            return self._failed(t, wall, f"scoring took longer than {self.timeout_s:g} s")
        # onnxruntime's errors derive from Exception directly. Detection is not a safety
        # function, so a failing model must not stop the gateway: this is the boundary.
        except Exception as err:
            return self._failed(t, wall, f"scoring failed: {type(err).__name__}: {err}")
        if step is None:
            return None
        self._account(step, wall)
        for event in step.events:
            await self._publish(event, wall)
        return step

    def _failed(self, t: float, wall: float, reason: str) -> DetectionStep:
        """A window that could not be scored: missing data to the alert manager (it breaks
        the consecutive counts, never clears an alert); logged on the transition only."""
        assert self.detector is not None
        self.score_failures += 1
        events = self.detector.alerts.observe(t, None)
        step = DetectionStep(t, None, None, (), events, reason)
        self._account(step, wall)
        if self._failing is None:
            log.error("detect_scoring_failed", reason=reason)
        self._failing = reason
        return step

    def _account(self, step: DetectionStep, wall: float) -> None:
        self.windows += 1
        self._last_window_at = wall
        if step.score is not None:
            self.windows_scored += 1
            self._last_score = _finite(step.score.score)
            self._last_scored_at = wall
            self._threshold = step.score.threshold
            if self._failing is not None:
                log.info("detect_scoring_recovered", failed_windows=self.score_failures)
                self._failing = None
            if not self._scoring:
                log.info("detect_scoring", score=step.score.score, threshold=step.score.threshold)
            self._scoring = True
            return
        self._last_reason = step.reason
        self._last_reason_at = wall
        if self._scoring:
            # A transition, not every window: the window now refills (300 s for ours).
            log.warning("detect_no_score", reason=step.reason)
        self._scoring = False

    async def _publish(self, event: AlertEvent, wall: float) -> None:
        """Audit first, then the status and the log: a logged alert is a recorded one."""
        record = event.to_record()
        recorded = True
        try:
            await asyncio.to_thread(self.audit.append, AUDIT_KIND, record, ts=wall)
        except StoreError as err:
            recorded = False
            self.audit_failures += 1
            log.error("alert_not_recorded", alert_id=event.alert_id, error=str(err))
        self._counts[event.kind] += 1
        if event.kind == "raised":
            self._active[event.alert_id] = {"since": wall}
        if event.kind in ("raised", "updated") and event.alert_id in self._active:
            self._active[event.alert_id].update(
                alert_id=event.alert_id,
                fault=event.fault,
                severity=event.severity,
                message=event.message,
                score=_finite(event.score),
                peak_score=_finite(event.peak_score),
                updated=wall,
            )
        elif event.kind == "cleared":
            self._active.pop(event.alert_id, None)
        emit = log.info if event.kind == "cleared" else log.warning
        emit("anomaly_alert", recorded=recorded, **record)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The detect part of the status page (JSON-ready: no NaN, no objects).

        ``state`` is "off" (not in the config, or enabled = false), "starting",
        "running", or "disabled" (configured but could not start: ``error`` says why).
        """
        return {
            "state": self.state,
            "error": self.error,
            "model": self.section.model if self.section is not None else None,
            "alert_id_prefix": self.id_prefix,
            "active": [dict(a) for a in self._active.values()],
            "alerts_raised": self._counts["raised"],
            "alerts_updated": self._counts["updated"],
            "alerts_cleared": self._counts["cleared"],
            "alerts_suppressed": self._counts["suppressed"],
            "windows": self.windows,
            "windows_scored": self.windows_scored,
            "last_score": self._last_score,
            "last_scored_at": self._last_scored_at,
            "threshold": self._threshold,
            "last_window_at": self._last_window_at,
            "last_no_score_reason": self._last_reason,
            "last_no_score_at": self._last_reason_at,
            "score_failures": self.score_failures,
            "audit_failures": self.audit_failures,
        }
