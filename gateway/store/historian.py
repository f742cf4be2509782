"""Signal history in its own SQLite file, bounded by age and by size.

Why a file of its own: samples arrive every cycle for every signal, decisions arrive a few
times an hour. The audit trail commits with ``synchronous=FULL`` (an fsync per decision,
see ``audit.py``); paying that on every sample batch would wear the SD card and stall the
cycle for nothing, because a lost sample batch is not a lost decision. So the historian runs
WAL with ``synchronous=NORMAL``: a commit is atomic and the file is never corrupted, but a
power cut may lose the last batch or so committed before it. That is accepted and is the
documented limit of this store; the audit trail is where "nothing is lost" is kept.

Layout (readable with ``sqlite-utils``, ``datasette`` or ``sqlite3``)::

    samples(signal TEXT, ts REAL, value REAL NULL, quality TEXT, received REAL)
    idx_samples_signal_ts (signal, ts)   -- query() and latest()
    idx_samples_received (received)      -- retention, oldest first

``value`` is NULL where the sample's value was NaN (SQLite cannot hold NaN; the quality
column says why there is no number). ``PRAGMA application_id`` marks the file as an
edgetwin historian, so pointing the historian at the audit file (or any other database)
fails at start instead of mixing records.

Retention is measured on ``received`` (the gateway's clock), not on the PLC's ``ts``:
a PLC whose clock is years off must not get its fresh data deleted as "old".

Concurrency: one connection per object, shared by whichever thread calls (the daemon calls
from ``asyncio.to_thread``); a lock serialises calls. Other processes (``edgetwin status``,
datasette) may read the file at the same time: WAL lets readers and the writer proceed
together.
"""

from __future__ import annotations

import math
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from sqlite_utils import Database

from gateway.errors import StoreError
from gateway.store.ports import QUALITIES, Sample

#: ``PRAGMA application_id`` of a historian file: ASCII "ETHS" (edgetwin historian samples).
HISTORIAN_APPLICATION_ID: Final = 0x45544853
SCHEMA_VERSION: Final = 1

_TABLE: Final = "samples"
_COLUMNS: Final = ("signal", "ts", "value", "quality", "received")
_INSERT: Final = "INSERT INTO samples (signal, ts, value, quality, received) VALUES (?, ?, ?, ?, ?)"
_SELECT: Final = "SELECT signal, ts, value, quality, received FROM samples"

#: How long a call waits for another process's write lock before failing.
_BUSY_TIMEOUT_S: Final = 5.0
#: Rows deleted per transaction, so a large clean-up never holds the write lock for long
#: and appends from the cycle can slip in between chunks.
_DELETE_CHUNK: Final = 5_000
#: When over the size budget, delete down to this fraction of it, so that a historian
#: sitting at its budget is not trimmed (and re-counted) on every call.
_SIZE_TARGET: Final = 0.9
_MAX_SIZE_PASSES: Final = 8
#: Below this the budget cannot hold the empty schema plus a useful history.
_MIN_MAX_BYTES: Final = 64 * 1024
#: Keep the WAL file from staying large after a burst (it is truncated to this after a
#: checkpoint); the WAL is outside ``max_bytes``.
_JOURNAL_SIZE_LIMIT: Final = 16 * 2**20

# Newest sample per signal without scanning the table: walk the distinct signals with a
# loose index scan over (signal, ts), then seek each signal's last entry. Cost grows with
# the number of signals, not with the number of samples (this backs ``edgetwin status``).
_LATEST: Final = """
WITH RECURSIVE sig(name) AS (
    SELECT MIN(signal) FROM samples
    UNION ALL
    SELECT (SELECT MIN(signal) FROM samples WHERE signal > sig.name)
    FROM sig WHERE sig.name IS NOT NULL
)
SELECT s.signal, s.ts, s.value, s.quality, s.received
FROM sig JOIN samples AS s ON s.rowid = (
    SELECT rowid FROM samples
    WHERE signal = sig.name
    ORDER BY ts DESC, rowid DESC
    LIMIT 1
)
ORDER BY s.signal
"""


class SqliteHistorian:
    """The historian port (``gateway.store.ports.Historian``) on a SQLite file.

    Args:
        path: database file, created if missing (its directory must exist), or
            ``":memory:"`` for a private in-memory store.
        retention_s: samples received longer ago than this are deleted by
            ``enforce_retention``.
        max_bytes: budget for the database's live pages; beyond it the oldest samples are
            deleted. The WAL file comes on top (bounded by SQLite's auto-checkpoint).

    Raises:
        StoreError: the file cannot be opened, is not SQLite, or belongs to something else.
        ValueError: a limit is not a positive finite number, or ``max_bytes`` < 64 KiB.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        retention_s: float = 7 * 86400,
        max_bytes: int = 512 * 2**20,
    ) -> None:
        if not (math.isfinite(retention_s) and retention_s > 0):
            raise ValueError(f"retention_s must be a positive number of seconds, not {retention_s}")
        if max_bytes < _MIN_MAX_BYTES:
            raise ValueError(f"max_bytes must be at least {_MIN_MAX_BYTES}, not {max_bytes}")
        self._path = str(path)
        self._retention_s = float(retention_s)
        self._max_bytes = int(max_bytes)
        self._lock = threading.Lock()
        self._closed = False
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=_BUSY_TIMEOUT_S,
                # Transactions are explicit (sqlite-utils' atomic()); no driver-implicit BEGIN.
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as err:
            raise StoreError(f"historian {self._path}: cannot open: {err}") from err
        try:
            self._db = Database(conn, execute_plugins=False)
            self._init_schema()
        except sqlite3.Error as err:
            conn.close()
            raise StoreError(f"historian {self._path}: cannot open: {err}") from err
        except BaseException:
            conn.close()
            raise

    # -- set-up ------------------------------------------------------------------------

    def _init_schema(self) -> None:
        with self._translate("open"):
            app_id = self._pragma_int("application_id")
            version = self._pragma_int("user_version")
            empty = self._pragma_int_sql("SELECT count(*) FROM sqlite_master") == 0
            if app_id == HISTORIAN_APPLICATION_ID:
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"historian {self._path}: schema version {version} was written by a "
                        f"newer edgetwin (this one knows {SCHEMA_VERSION}); refusing to use it"
                    )
            elif app_id != 0 or not empty:
                raise StoreError(
                    f"historian {self._path}: not an edgetwin historian database "
                    f"(application_id {app_id:#010x}); refusing to write samples into it"
                )
            if self._path != ":memory:":
                self._db.enable_wal()
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(f"PRAGMA journal_size_limit={_JOURNAL_SIZE_LIMIT}")
            if app_id == HISTORIAN_APPLICATION_ID and self._db.table(_TABLE).exists():
                return  # opening an existing historian writes nothing
            # IMMEDIATE: two processes creating the same new file take turns; the second
            # finds everything in place (IF NOT EXISTS).
            self._db.execute("BEGIN IMMEDIATE")
            try:
                table = self._db.table(_TABLE)
                table.create(
                    {"signal": str, "ts": float, "value": float, "quality": str, "received": float},
                    column_order=list(_COLUMNS),
                    not_null=["signal", "ts", "quality", "received"],
                    if_not_exists=True,
                )
                table.create_index(
                    ["signal", "ts"], index_name="idx_samples_signal_ts", if_not_exists=True
                )
                table.create_index(
                    ["received"], index_name="idx_samples_received", if_not_exists=True
                )
                self._db.execute(f"PRAGMA application_id={HISTORIAN_APPLICATION_ID}")
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                self._db.rollback()
                raise
            self._db.commit()

    # -- port --------------------------------------------------------------------------

    def append(self, samples: Sequence[Sample]) -> None:
        """Store a batch in one transaction: all of it or (on error) none of it.

        Raises:
            StoreError: a sample is malformed (the whole batch is refused, nothing is
                written) or the database failed.
        """
        rows = [_to_row(sample) for sample in samples]
        if not rows:
            return
        with self._translate("append"), self._db.atomic():
            self._db.conn.executemany(_INSERT, rows)

    def query(self, signal: str, since: float, until: float | None = None) -> list[Sample]:
        """Samples of ``signal`` with ``since <= ts < until`` (source time), oldest first.

        The window is half-open so that consecutive windows never return a sample twice.
        """
        sql = f"{_SELECT} WHERE signal = ? AND ts >= ?"
        params: tuple[object, ...] = (signal, since)
        if until is not None:
            sql += " AND ts < ?"
            params = (*params, until)
        sql += " ORDER BY ts, rowid"
        with self._translate("query"):
            return [_from_row(row) for row in self._db.conn.execute(sql, params)]

    def latest(self) -> dict[str, Sample]:
        """The newest sample (largest source ``ts``) of every signal in the store."""
        with self._translate("latest"):
            return {row[0]: _from_row(row) for row in self._db.conn.execute(_LATEST)}

    def enforce_retention(self, now: float) -> int:
        """Delete by age, then by size, oldest first; return the number of rows deleted.

        Age: rows with ``received < now - retention_s``.

        Size: the measure is the database's live pages, ``(page_count - freelist_count) *
        page_size``. It is exact, cheap (three pragmas) and counts what actually fills the
        disk, indexes included; ``page_count * page_size`` alone would never go down,
        because SQLite keeps freed pages in the file for reuse instead of shrinking it
        (we do not VACUUM: it rewrites the whole file and blocks writers). Pages, though,
        say nothing about which rows to drop, so the number to delete is a row estimate:
        excess bytes divided by the average bytes per row (live bytes / row count), down to
        90 % of the budget. Freed space is not exactly proportional (B-tree pages empty
        unevenly), so the measure is taken again and the step repeated, a few passes at most.

        The file itself stays near its high-water mark; freed pages are reused by new
        samples, so it stops growing once the budget is reached.
        """
        deleted = self._delete_oldest("received < ?", (now - self._retention_s,))
        used = self.used_bytes()
        if used <= self._max_bytes:
            return deleted
        target = int(self._max_bytes * _SIZE_TARGET)
        for _ in range(_MAX_SIZE_PASSES):
            with self._translate("enforce_retention"):
                rows = self._pragma_int_sql("SELECT count(*) FROM samples")
            if rows == 0:
                break
            n = min(rows, max(1, math.ceil(rows * (used - target) / used)))
            removed = self._delete_oldest(None, (), limit=n)
            deleted += removed
            used = self.used_bytes()
            if removed == 0 or used <= target:
                break
        return deleted

    def close(self) -> None:
        """Close the connection (a WAL checkpoint runs if this was the last one). Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    # -- extras ------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file (or ``":memory:"``)."""
        return self._path

    def used_bytes(self) -> int:
        """Bytes held by live database pages (what ``max_bytes`` bounds)."""
        with self._translate("used_bytes"):
            pages = self._pragma_int("page_count") - self._pragma_int("freelist_count")
            return pages * self._pragma_int("page_size")

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ---------------------------------------------------------------------

    def _delete_oldest(
        self, where: str | None, params: tuple[object, ...], *, limit: int | None = None
    ) -> int:
        """Delete the oldest rows (by ``received``) matching ``where``, at most ``limit``,
        in chunks of one transaction each."""
        condition = f"WHERE {where}" if where else ""
        sql = (
            f"DELETE FROM samples WHERE rowid IN (SELECT rowid FROM samples {condition} "
            "ORDER BY received, rowid LIMIT ?)"
        )
        deleted = 0
        while limit is None or deleted < limit:
            chunk = _DELETE_CHUNK if limit is None else min(_DELETE_CHUNK, limit - deleted)
            with self._translate("enforce_retention"), self._db.atomic():
                n = self._db.conn.execute(sql, (*params, chunk)).rowcount
            deleted += n
            if n < chunk:
                break
        return deleted

    def _pragma_int(self, name: str) -> int:
        return self._pragma_int_sql(f"PRAGMA {name}")

    def _pragma_int_sql(self, sql: str) -> int:
        row = self._db.conn.execute(sql).fetchone()
        return int(row[0])

    @contextmanager
    def _translate(self, action: str) -> Iterator[None]:
        """Serialise use of the connection and turn sqlite3 errors into StoreError."""
        with self._lock:
            if self._closed:
                raise StoreError(f"historian {self._path}: {action} after close()")
            try:
                yield
            except sqlite3.Error as err:
                raise StoreError(f"historian {self._path}: {action} failed: {err}") from err


def _to_row(sample: Sample) -> tuple[str, float, float | None, str, float]:
    """Validate one sample and turn it into a row; NaN becomes NULL."""
    if not isinstance(sample.signal, str) or not sample.signal:
        raise StoreError(f"sample {sample!r}: signal must be a non-empty name")
    if sample.quality not in QUALITIES:
        raise StoreError(
            f"sample of {sample.signal!r}: quality {sample.quality!r} is not one of "
            f"{sorted(QUALITIES)}"
        )
    ts, received = float(sample.ts), float(sample.received)
    if not (math.isfinite(ts) and math.isfinite(received)):
        raise StoreError(
            f"sample of {sample.signal!r}: timestamps must be finite (ts={ts}, received={received})"
        )
    value = float(sample.value)
    return (sample.signal, ts, None if math.isnan(value) else value, str(sample.quality), received)


def _from_row(row: tuple[Any, ...]) -> Sample:
    signal, ts, value, quality, received = row
    return Sample(
        signal=str(signal),
        ts=float(ts),
        value=math.nan if value is None else float(value),
        quality=str(quality),
        received=float(received),
    )
