"""The plant's write log: every write the simulated PLC receives, one JSON line each.

Safety tests judge the gateway by this file, not by the gateway's own account of what it
did, so it records what arrived at the plant from either protocol: accepted and refused
writes alike, and writes to addresses no point lives at. Each line is flushed as soon as it
is written, so a test (or a crash) never misses the tail. Method calls (InjectFault and the
like) are scenario control, not writes, and are not logged here.

Line format::

    {"ts": 1767000000.123, "sim_time": 12.5, "protocol": "opcua", "point": "level_sp",
     "address": "s=Skid.Setpoints.Level", "value": 1.2, "accepted": true, "reason": "ok"}

``point`` is null for an address no plant point is served at; ``value`` is the decoded
engineering value, or for a write that could not be decoded the raw registers/bits as a
list. Non-finite numbers are written as the strings "nan", "inf", "-inf" so every line is
strict JSON.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Protocol, Self

from gateway.plantsim.plant import WriteOutcome

WriteProtocol = Literal["opcua", "modbus"]
LoggedValue = float | str | bool | None | list[int] | list[bool]


@dataclass(frozen=True)
class WriteAttempt:
    """A write as it arrived from a client, before the PLC judged it.

    Attributes:
        protocol: Which server received it.
        point: The plant point served at ``address``; None if no point is served there.
        address: The address as written in config (``s=Skid.Setpoints.Level``, ``hr:0``).
        value: The decoded engineering value, or the raw registers/bits if undecodable.
    """

    protocol: WriteProtocol
    point: str | None
    address: str
    value: float | str | list[int] | list[bool]


class WriteSink(Protocol):
    """Where the protocol servers send client writes (:class:`runner.PlantRuntime`)."""

    async def submit(self, attempt: WriteAttempt) -> WriteOutcome:
        """Let the PLC judge a decoded write to a plant point; log it; return the outcome."""
        ...

    def refuse(self, attempt: WriteAttempt, reason: str) -> None:
        """Log a write the server refused before the PLC saw it (bad address, type)."""
        ...


@dataclass(frozen=True)
class WriteRecord:
    """One line of the write log."""

    ts: float
    sim_time: float
    protocol: WriteProtocol
    point: str | None
    address: str
    value: LoggedValue
    accepted: bool
    reason: str


def _jsonable(value: float | str | Sequence[int] | Sequence[bool] | None) -> LoggedValue:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if isinstance(value, list | tuple):
        return list(value)
    return value  # type: ignore[return-value]


class WriteLog:
    """Appends :class:`WriteRecord` lines to a file (or only counts them without a file).

    The file is opened in append mode so a restarted plant continues the same log. Lines
    are small and written with line buffering: a flush per line costs microseconds and
    keeps the event loop unblocked in practice (no fsync).
    """

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._file: IO[str] | None = None
        self.count = 0
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8", buffering=1)

    def record(
        self, attempt: WriteAttempt, *, sim_time: float, accepted: bool, reason: str
    ) -> WriteRecord:
        """Append one write and its outcome; return the record written."""
        rec = WriteRecord(
            ts=self._clock(),
            sim_time=sim_time,
            protocol=attempt.protocol,
            point=attempt.point,
            address=attempt.address,
            value=_jsonable(attempt.value),
            accepted=accepted,
            reason=reason,
        )
        if self._file is not None:
            self._file.write(json.dumps(asdict(rec), allow_nan=False) + "\n")
            self._file.flush()
        self.count += 1
        return rec

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read_write_log(path: Path) -> list[WriteRecord]:
    """Every record of a write-log file, in order (for tests and reports)."""
    records = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(WriteRecord(**json.loads(line)))
    return records
