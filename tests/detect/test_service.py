"""The daemon's detect task: live-table snapshots in, alerts committed to a real audit trail
before they are logged, and a status that shows what detection is doing, or why it is not.

The plant runs as in the detection tests (``plant_samples`` of the build script, seeds never
trained on), served to the service through a fake live table; time is a fake clock the
test moves, so nothing waits in real time.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from gateway.config import GatewayConfig, parse_config
from gateway.config.schema import DetectAlerts
from gateway.detect.alerts import AlertPolicy
from gateway.detect.features import FEATURES
from gateway.detect.service import DetectionService, alert_policy, new_boot_id
from gateway.errors import StoreError
from gateway.signals import Quality, SignalValue
from gateway.store.audit import SqliteAuditTrail

SKID = Path(__file__).resolve().parents[2] / "config" / "skid.toml"
WALL0 = 1_750_000_000.0
BOOT = "test-boot"
WARMUP_S = 600.0
FAULT = ("bearing_degradation", 0.2)
FAULT_RUN_S = WARMUP_S + 180.0
"""The detection tests raise this fault's alert within 120 s of the injection."""


class FakeClock:
    """Monotonic and wall time that move only when the test (or the fake sleep) says."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return WALL0 + self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class FakeLive:
    """A live table holding one plant sample: good values, bad where the plant said None."""

    def __init__(self) -> None:
        self.values: Mapping[str, float | None] = {}
        self.snapshots = 0

    def snapshot(self) -> dict[str, SignalValue]:
        self.snapshots += 1
        return {
            name: SignalValue(
                name=name,
                value=float("nan") if v is None else v,
                unit="",
                source_ts=0.0,
                received_ts=0.0,
                confirmed_ts=0.0,
                quality=Quality.BAD if v is None else Quality.GOOD,
            )
            for name, v in self.values.items()
        }


Samples = list[tuple[float, dict[str, float | None]]]


def skid_config(model: Path, meta: Path, *, extra: str = "") -> GatewayConfig:
    """config/skid.toml with [detect] pointing at the given model pair."""
    text = SKID.read_text(encoding="utf-8")
    text = text.replace('model = "../models/anomaly.onnx"', f'model = "{model}"')
    text = text.replace('metadata = "../models/anomaly.json"', f'metadata = "{meta}"')
    return parse_config(text + extra, "skid.toml (test)")


@pytest.fixture(scope="module")
def fault_free(builder: ModuleType) -> Samples:
    """15 minutes of normal operation on a seed never trained on."""
    return list(builder.plant_samples(301, 900.0))


@pytest.fixture(scope="module")
def with_fault(builder: ModuleType) -> Samples:
    """Normal operation, then bearing degradation from WARMUP_S on."""
    return list(builder.plant_samples(302, FAULT_RUN_S, faults=[(WARMUP_S, *FAULT)]))


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[SqliteAuditTrail]:
    with SqliteAuditTrail(tmp_path / "audit.db") as audit:
        yield audit


def make_service(
    cfg: GatewayConfig, audit: Any, **kwargs: Any
) -> tuple[DetectionService, FakeLive, FakeClock]:
    live, clock = FakeLive(), FakeClock()
    service = DetectionService(
        cfg,
        live,
        audit,
        boot_id=BOOT,
        source="skid.toml (test)",
        clock=clock.wall,
        monotonic=clock.monotonic,
        sleep=clock.sleep,
        **kwargs,
    )
    return service, live, clock


async def feed(
    service: DetectionService, live: FakeLive, clock: FakeClock, samples: Samples
) -> int:
    """Drive one step per sample, as run() would once a second; return the windows seen."""
    windows = 0
    for t, values in samples:
        clock.t = t
        live.values = values
        windows += await service.step() is not None
    return windows


async def test_fault_free_stretch_appends_no_alert(
    built: tuple[Path, Path], trail: SqliteAuditTrail, fault_free: Samples
) -> None:
    """Fifteen minutes of normal operation: windows are scored, nothing is appended to the
    audit trail, and the status shows a running detector with its last score."""
    service, live, clock = make_service(skid_config(*built), trail)
    assert await service.start()
    windows = await feed(service, live, clock, fault_free)
    assert windows == 90
    assert list(trail.records(kind="alert")) == []
    status = service.status()
    assert status["state"] == "running"
    assert status["error"] is None
    assert status["active"] == []
    assert status["alerts_raised"] == 0
    assert status["windows"] == 90
    assert status["windows_scored"] >= 90 - 30  # the first 300 s fill the window
    assert 0 < status["last_score"] < status["threshold"]
    assert status["last_no_score_reason"] == "collecting the first window"


async def test_injected_fault_appends_one_alert_and_the_chain_verifies(
    built: tuple[Path, Path], trail: SqliteAuditTrail, with_fault: Samples
) -> None:
    """Bearing degradation raises one alert: one "alert" record whose payload is the
    event's record, with a boot-unique id, committed before the alert is logged; the
    audit chain verifies, and the status shows the active alert."""
    logged_before_append: list[bool] = []

    class AuditSpy:
        """The real trail, noting whether the alert was already logged at append time."""

        def append(self, kind: str, payload: Mapping[str, Any], *, ts: float | None = None) -> Any:
            logged_before_append.append(any(e.get("alert_id") == payload["alert_id"] for e in logs))
            return trail.append(kind, payload, ts=ts)

    service, live, clock = make_service(skid_config(*built), AuditSpy())
    with capture_logs() as logs:
        assert await service.start()
        await feed(service, live, clock, with_fault)

    records = list(trail.records(kind="alert"))
    assert [r.payload["kind"] for r in records] == ["raised"]
    raised = records[0]
    assert raised.payload["alert_id"] == f"anomaly-{BOOT}-1"
    assert raised.payload["signature"][0]["fault"] == FAULT[0]
    assert raised.payload["at"] > WARMUP_S
    assert raised.ts == WALL0 + raised.payload["at"]
    assert trail.verify().ok
    assert logged_before_append == [False]

    alert_logs = [e for e in logs if e["event"] == "anomaly_alert"]
    assert len(alert_logs) == 1
    assert alert_logs[0]["log_level"] == "warning"
    assert alert_logs[0]["recorded"] is True
    assert alert_logs[0]["alert_id"] == raised.payload["alert_id"]

    status = service.status()
    assert status["alerts_raised"] == 1
    (active,) = status["active"]
    assert active["alert_id"] == f"anomaly-{BOOT}-1"
    assert active["fault"] == FAULT[0]
    assert active["severity"] in ("low", "medium", "high")
    assert active["message"] == raised.payload["message"]
    assert active["since"] == raised.ts
    json.dumps(status, allow_nan=False)  # the status file refuses NaN


async def test_an_audit_failure_does_not_lose_the_alert_from_the_log(
    built: tuple[Path, Path], with_fault: Samples
) -> None:
    """If the trail refuses the record, the alert is still logged (marked not recorded),
    the failure is an error, and detection carries on."""

    class BrokenAudit:
        def append(self, kind: str, payload: Mapping[str, Any], *, ts: float | None = None) -> Any:
            raise StoreError("disk full")

    service, live, clock = make_service(skid_config(*built), BrokenAudit())
    with capture_logs() as logs:
        assert await service.start()
        await feed(service, live, clock, with_fault)
    events = [(e["event"], e.get("recorded")) for e in logs if "alert" in e["event"]]
    assert events == [("alert_not_recorded", None), ("anomaly_alert", False)]
    assert service.status()["audit_failures"] == 1
    assert service.status()["alerts_raised"] == 1


async def test_missing_model_disables_detection_without_crashing(
    tmp_path: Path, trail: SqliteAuditTrail
) -> None:
    """No model file: start() logs one error naming the file and the fix, the status says
    "disabled" with the reason, and run() and step() return instead of raising."""
    cfg = skid_config(tmp_path / "absent.onnx", tmp_path / "absent.json")
    service, live, clock = make_service(cfg, trail)
    with capture_logs() as logs:
        await asyncio.wait_for(service.run(), timeout=30)
    assert [e["event"] for e in logs] == ["detect_disabled"]
    assert logs[0]["log_level"] == "error"
    status = service.status()
    assert status["state"] == "disabled"
    assert f"detect.model: {tmp_path / 'absent.onnx'} does not exist" in status["error"]
    assert "make models" in status["error"]
    assert await service.step() is None
    assert live.snapshots == 0
    assert clock.sleeps == []
    json.dumps(status, allow_nan=False)


async def test_detection_off_in_config_does_nothing(
    built: tuple[Path, Path], trail: SqliteAuditTrail
) -> None:
    """enabled = false: no model is loaded, nothing is logged, the status says "off"."""
    text = SKID.read_text(encoding="utf-8").replace(
        "[detect]\nenabled = true", "[detect]\nenabled = false"
    )
    service, _, _ = make_service(parse_config(text, "t"), trail)
    with capture_logs() as logs:
        assert not await service.start()
        await service.run()
    assert logs == []
    assert service.status()["state"] == "off"
    assert service.detector is None


async def test_run_samples_once_per_period_without_drift(
    built: tuple[Path, Path], trail: SqliteAuditTrail
) -> None:
    """run() takes one snapshot per model period (1 s), sleeping only what is left of the
    period after the step; after a stall longer than a period it skips, not bursts."""
    service, _, clock = make_service(skid_config(*built), trail)
    step_s = [0.25, 0.25, 3.5, 0.25, 0.25]
    started: list[float] = []

    class Enough(Exception):
        pass

    class SlowLive(FakeLive):
        def snapshot(self) -> dict[str, SignalValue]:
            if not step_s:
                raise Enough
            started.append(clock.t)
            clock.t += step_s.pop(0)
            return super().snapshot()

    service.live = SlowLive()
    with pytest.raises(Enough):
        await service.run()
    assert started == [0.0, 1.0, 2.0, 5.5, 6.5]
    assert clock.sleeps == [0.75, 0.75, 0.0, 0.75, 0.75]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        pytest.param("raise", "scoring failed: RuntimeError: onnxruntime fell over", id="error"),
        pytest.param("hang", "scoring took longer than 0.01 s", id="timeout"),
    ],
)
async def test_a_scoring_failure_is_a_window_without_score(
    built: tuple[Path, Path],
    trail: SqliteAuditTrail,
    fault_free: Samples,
    failure: str,
    reason: str,
) -> None:
    """A model that raises or hangs costs its windows (counted, error logged once, the
    reason in the status), never the task; scoring resumes when the model recovers."""
    service, live, clock = make_service(skid_config(*built), trail, timeout_s=0.01)
    assert await service.start()
    assert service.detector is not None
    model = service.detector.model

    def broken(features: Mapping[str, float]) -> Any:
        raise RuntimeError("onnxruntime fell over")

    async def hang(features: Mapping[str, float]) -> Any:
        await asyncio.Event().wait()

    if failure == "raise":
        model.score = broken  # type: ignore[method-assign]
    else:
        model.score_async = hang  # type: ignore[method-assign]
    with capture_logs() as logs:
        await feed(service, live, clock, fault_free[:330])
        vars(model).pop("score", None)  # back to the class's methods
        vars(model).pop("score_async", None)
        await feed(service, live, clock, fault_free[330:360])
    status = service.status()
    assert status["state"] == "running"
    assert status["score_failures"] == 4  # windows at 300, 310, 320, 330 s
    assert status["windows_scored"] == 3
    assert status["last_no_score_reason"] == reason
    events = [e["event"] for e in logs]
    assert events == ["detect_scoring_failed", "detect_scoring_recovered", "detect_scoring"]


async def test_external_features_are_asked_for_each_sample(
    builder: ModuleType,
    built: tuple[Path, Path],
    trail: SqliteAuditTrail,
    fault_free: Samples,
    tmp_path: Path,
) -> None:
    """A model that declares an external feature (a twin residual) refuses to start when
    the daemon supplies none, and scores when it does."""
    meta = json.loads(built[1].read_text())
    names = [*FEATURES, "twin_level_residual"]
    mean = np.array([*meta["training"]["feature_mean"], 0.0])
    std = np.array([*meta["training"]["feature_std"], 1.0])
    x = mean + std * np.random.default_rng(0).standard_normal((4000, len(names)))
    onnx = builder.onnx_model(builder.fit_mahalanobis(x), names)
    (tmp_path / "twin.onnx").write_bytes(onnx.SerializeToString())
    meta.pop("model_sha256")
    meta["features"].append({"name": "twin_level_residual", "unit": "m"})
    (tmp_path / "twin.json").write_text(json.dumps(meta))
    cfg = skid_config(tmp_path / "twin.onnx", tmp_path / "twin.json")

    without, _, _ = make_service(cfg, trail)
    assert not await without.start()
    assert "needs external features (twin_level_residual)" in without.status()["error"]

    asked: list[int] = []

    def residuals() -> dict[str, float]:
        asked.append(1)
        return {"twin_level_residual": 0.0}

    service, live, clock = make_service(cfg, trail, external=residuals)
    assert await service.start()
    await feed(service, live, clock, fault_free[:320])
    assert len(asked) == 320
    assert service.status()["windows_scored"] == 3


def test_alert_ids_are_unique_per_boot() -> None:
    """Two starts never share an alert id prefix, even with the same (wrong) clock: the
    alert manager numbers alerts from 1 on every start."""
    first, second = new_boot_id(lambda: 0.0), new_boot_id(lambda: 0.0)
    assert first != second
    assert re.fullmatch(r"19700101t000000z-[0-9a-f]{6}", first)


def test_alert_policy_comes_from_the_config() -> None:
    """Every [detect.alerts] knob reaches the AlertPolicy, and the prefix is the service's."""
    alerts = DetectAlerts(
        raise_after=2,
        clear_after=9,
        max_alerts_per_hour=3,
        min_update_interval_s=60.0,
        medium_ratio=2.0,
        high_ratio=8.0,
    )
    policy = alert_policy(alerts, "anomaly-x")
    assert policy == AlertPolicy(2, 9, 3, 60.0, 2.0, 8.0, "anomaly-x")
