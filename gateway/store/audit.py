"""The audit trail: every decision, committed durably and hash-chained, in its own file.

Safety invariant 8 ("nothing is lost") is kept here: every proposal, verdict, approval,
write, read-back and outcome check is committed before the next step acts on it. So
``append`` returns only after the record is durable, and raises (recording nothing) when
it is not; a caller that gets an exception must not act (invariant 7, fail safe).

Why a separate file from the historian: durability is paid per commit and per file. The
audit file runs WAL with ``synchronous=FULL``, so each commit fsyncs the WAL and survives a
power cut the moment ``append`` returns. Samples do not need that (see ``historian.py``),
and sharing a file would make either the samples pay an fsync per batch or the decisions
lose the guarantee. Separate files also let an admin copy, ship or verify the audit trail
without the bulk of the history.

Why ``BEGIN IMMEDIATE``: the next record's ``seq`` and ``prev_hash`` come from the last
record. Two writers (the daemon and ``edgetwin approve``, or two trail objects in one
process) that both read the tail under a shared lock would both chain onto the same record.
``BEGIN IMMEDIATE`` takes the database's write lock before the tail is read, so read-link-
insert is one indivisible step across connections and processes; the other writer waits
(busy timeout) and then chains onto the new tail.

Tamper evidence, and its limits: each record's ``hash`` covers its content and the previous
hash, so an edited, deleted or reordered record breaks the chain at that point and
``verify`` names it. A chain alone cannot show that its *last* records were removed (what
remains is a valid shorter chain), so the head (last ``seq`` and ``hash``) is also written
to ``audit_head`` in the same transaction as every record; a deleted tail then disagrees
with the head. Someone who edits both consistently, or rewrites the whole file, is not
detected by the file alone: that needs the head kept elsewhere (logged, exported or
anchored off the box). Triggers refuse UPDATE and DELETE on ``audit_log`` so that an
accidental edit through ``sqlite-utils`` or datasette fails loudly; they are a guard rail,
not security (anyone with write access can drop them; the chain is the evidence).

Canonical JSON (``sort_keys``, separators ``(",", ":")``, ``ensure_ascii=False``,
``allow_nan=False``) makes the hash independent of dict order and Python version. NaN and
Infinity are refused rather than encoded: they are not JSON, and a verdict whose predicted
value is NaN should say so in words (null plus a reason), not smuggle it in.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

from sqlite_utils import Database

from gateway.errors import StoreError
from gateway.store.ports import GENESIS_HASH, AuditRecord, AuditVerifyReport

#: ``PRAGMA application_id`` of an audit file: ASCII "ETAT" (edgetwin audit trail).
AUDIT_APPLICATION_ID: Final = 0x45544154
SCHEMA_VERSION: Final = 1

_LOG: Final = "audit_log"
_HEAD: Final = "audit_head"
_COLUMNS: Final = "seq, ts, kind, proposal_id, payload, prev_hash, hash"
_BUSY_TIMEOUT_S: Final = 5.0
_PAGE: Final = 500

_TRIGGERS: Final = (
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
)


def canonical_json(value: Any) -> str:
    """The one JSON encoding used for payloads and hashes.

    Raises:
        ValueError: on NaN or Infinity.
        TypeError: on a value JSON cannot hold.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def record_hash(
    seq: int,
    ts: float,
    kind: str,
    proposal_id: str | None,
    payload: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """Hex SHA-256 of the canonical JSON of ``[seq, ts, kind, proposal_id, payload, prev_hash]``.

    Public so that an auditor can recompute a record with this function alone (or the same
    few lines in any language).
    """
    text = canonical_json([seq, ts, kind, proposal_id, payload, prev_hash])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class SqliteAuditTrail:
    """The audit-trail port (``gateway.store.ports.AuditTrail``) on a SQLite file.

    Several objects, in one process or several, may append to the same file; each append is
    one ``BEGIN IMMEDIATE`` transaction, so the chain stays linear.

    Args:
        path: database file, created if missing (its directory must exist), or
            ``":memory:"`` for a private in-memory trail (tests; nothing is durable).

    Raises:
        StoreError: the file cannot be opened, is not SQLite, or is another kind of
            database (including the historian).
    """

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        self._closed = False
        try:
            conn = sqlite3.connect(
                self._path,
                timeout=_BUSY_TIMEOUT_S,
                # Every transaction here is explicit; the driver must not open its own.
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as err:
            raise StoreError(f"audit trail {self._path}: cannot open: {err}") from err
        try:
            self._db = Database(conn, execute_plugins=False)
            self._conn = conn
            self._init_schema()
        except sqlite3.Error as err:
            conn.close()
            raise StoreError(f"audit trail {self._path}: cannot open: {err}") from err
        except BaseException:
            conn.close()
            raise

    def _init_schema(self) -> None:
        new = _check_identity(self._conn, self._path, allow_new=True)
        if self._path != ":memory:":
            self._db.enable_wal()
        # FULL: in WAL mode this fsyncs the WAL on every commit, so a returned append
        # survives a power cut. NORMAL would only protect against corruption.
        self._db.execute("PRAGMA synchronous=FULL")
        if not new:
            return  # opening an existing trail writes nothing
        # IMMEDIATE: two processes creating the same new file take turns; the second finds
        # everything in place (IF NOT EXISTS).
        with self._transaction(immediate=True):
            self._db.table(_LOG).create(
                {
                    "seq": int,
                    "ts": float,
                    "kind": str,
                    "proposal_id": str,
                    "payload": str,
                    "prev_hash": str,
                    "hash": str,
                },
                pk="seq",
                not_null=["ts", "kind", "payload", "prev_hash", "hash"],
                if_not_exists=True,
            )
            self._db.table(_LOG).create_index(
                ["proposal_id"], index_name="idx_audit_log_proposal_id", if_not_exists=True
            )
            self._db.table(_HEAD).create(
                {"id": int, "seq": int, "hash": str},
                pk="id",
                not_null=["seq", "hash"],
                if_not_exists=True,
            )
            for trigger in _TRIGGERS:
                self._db.execute(trigger)
            self._db.execute(f"PRAGMA application_id={AUDIT_APPLICATION_ID}")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    # -- port --------------------------------------------------------------------------

    def append(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        proposal_id: str | None = None,
        ts: float | None = None,
    ) -> AuditRecord:
        """Commit one record durably, then return it.

        Args:
            kind: what happened, e.g. "proposal", "verdict", "approval", "write",
                "readback", "outcome", "config", "startup".
            payload: a JSON object (str keys; str, int, float, bool, None, lists and
                nested objects). NaN and Infinity are refused.
            proposal_id: the proposal this record belongs to, if any.
            ts: event time, unix seconds; now if None.

        Raises:
            StoreError: the payload or arguments are not recordable, the trail's stored
                head disagrees with its last record (tampering: nothing more is appended
                until an admin has looked), or the database failed. Nothing was recorded.
        """
        if not isinstance(kind, str) or not kind:
            raise StoreError(f"audit record kind must be a non-empty string, not {kind!r}")
        if proposal_id is not None and (not isinstance(proposal_id, str) or not proposal_id):
            raise StoreError(f"audit {kind}: proposal_id must be a non-empty string or None")
        when = time.time() if ts is None else float(ts)
        if not math.isfinite(when):
            raise StoreError(f"audit {kind}: ts must be finite, not {when}")
        # SQLite stores -0.0 as 0.0; normalise so the hash recomputes from what is stored.
        when += 0.0
        body = _normalize_payload(kind, payload)
        body_text = canonical_json(body)

        with self._use("append"), self._transaction(immediate=True):
            last = self._conn.execute(
                f"SELECT seq, hash FROM {_LOG} ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            head = self._conn.execute(f"SELECT seq, hash FROM {_HEAD} WHERE id = 1").fetchone()
            last_seq, prev_hash = (0, GENESIS_HASH) if last is None else (int(last[0]), last[1])
            head_seq, head_hash = (0, GENESIS_HASH) if head is None else (int(head[0]), head[1])
            if (last_seq, prev_hash) != (head_seq, head_hash):
                raise StoreError(
                    f"audit trail {self._path}: the last record ({last_seq}) does not match "
                    f"the stored head ({head_seq}); the trail has been altered. Nothing was "
                    "appended; run `edgetwin audit verify` and keep the file for inspection"
                )
            seq = last_seq + 1
            digest = record_hash(seq, when, kind, proposal_id, body, prev_hash)
            self._conn.execute(
                f"INSERT INTO {_LOG} ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, when, kind, proposal_id, body_text, prev_hash, digest),
            )
            self._conn.execute(
                f"INSERT INTO {_HEAD} (id, seq, hash) VALUES (1, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                (seq, digest),
            )
        return AuditRecord(seq, when, kind, proposal_id, body, prev_hash, digest)

    def records(
        self, *, proposal_id: str | None = None, kind: str | None = None, since_seq: int = 0
    ) -> Iterator[AuditRecord]:
        """Records with ``seq > since_seq`` in sequence order, optionally only those of one
        proposal and/or one kind.

        Read page by page, so iterating a long trail neither holds the connection nor keeps
        a read snapshot open; records appended meanwhile appear at the end.
        """
        filters = ""
        params: list[object] = []
        if proposal_id is not None:
            filters += " AND proposal_id = ?"
            params.append(proposal_id)
        if kind is not None:
            filters += " AND kind = ?"
            params.append(kind)
        sql = f"SELECT {_COLUMNS} FROM {_LOG} WHERE seq > ?{filters} ORDER BY seq LIMIT ?"
        after = since_seq
        while True:
            with self._use("records"):
                rows = self._conn.execute(sql, (after, *params, _PAGE)).fetchall()
            for row in rows:
                yield self._to_record(row)
            if len(rows) < _PAGE:
                return
            after = int(rows[-1][0])

    def verify(self) -> AuditVerifyReport:
        """Recompute the whole chain and the head from one consistent snapshot.

        Holds this object's connection for the duration (other objects and processes may
        keep appending; they are not in the snapshot). For a large trail prefer
        ``verify_audit_file`` from another process.
        """
        with self._use("verify"):
            return _verify_connection(self._conn)

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    # -- extras ------------------------------------------------------------------------

    @property
    def path(self) -> str:
        """The database file (or ``":memory:"``)."""
        return self._path

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

    def _to_record(self, row: tuple[Any, ...]) -> AuditRecord:
        seq, ts, kind, proposal_id, payload_text, prev_hash, digest = row
        try:
            payload = json.loads(payload_text)
        except (TypeError, ValueError) as err:
            raise StoreError(
                f"audit trail {self._path}: record {seq} has an unreadable payload ({err}); "
                "run `edgetwin audit verify`"
            ) from err
        return AuditRecord(int(seq), float(ts), kind, proposal_id, payload, prev_hash, digest)

    @contextmanager
    def _use(self, action: str) -> Iterator[None]:
        """Serialise use of the connection and turn sqlite3 errors into StoreError."""
        with self._lock:
            if self._closed:
                raise StoreError(f"audit trail {self._path}: {action} after close()")
            try:
                yield
            except sqlite3.Error as err:
                raise StoreError(f"audit trail {self._path}: {action} failed: {err}") from err

    @contextmanager
    def _transaction(self, *, immediate: bool = False) -> Iterator[None]:
        """One explicit transaction; COMMIT on success (durable on return), else ROLLBACK."""
        self._conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        try:
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise


def verify_audit_file(path: str | Path) -> AuditVerifyReport:
    """Verify an audit file without being able to change it (opened ``mode=ro``).

    Raises:
        StoreError: naming the path, if the file is missing, unreadable, not SQLite, or
            not an edgetwin audit trail.
    """
    file = Path(path)
    if not file.exists():
        raise StoreError(f"audit trail {file}: no such file")
    if not file.is_file():
        raise StoreError(f"audit trail {file}: not a file")
    uri = f"{file.resolve().as_uri()}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    except sqlite3.Error as err:
        raise StoreError(f"audit trail {file}: cannot open read-only: {err}") from err
    try:
        _check_identity(conn, str(file), allow_new=False)
        return _verify_connection(conn)
    except sqlite3.Error as err:
        raise StoreError(f"audit trail {file}: cannot read: {err}") from err
    finally:
        conn.close()


# -- helpers -------------------------------------------------------------------------------


def _check_identity(conn: sqlite3.Connection, path: str, *, allow_new: bool) -> bool:
    """Refuse any database that is not an edgetwin audit trail of a schema we know.

    Returns:
        True if the database is empty and ``allow_new`` (the caller creates the schema).
    """
    app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
    if app_id == AUDIT_APPLICATION_ID:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"audit trail {path}: schema version {version} was written by a newer "
                f"edgetwin (this one knows {SCHEMA_VERSION})"
            )
        tables = {
            str(row[0])
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if {_LOG, _HEAD} <= tables:
            return False
        raise StoreError(
            f"audit trail {path}: marked as an edgetwin audit trail but the "
            f"{_LOG}/{_HEAD} tables are missing"
        )
    empty = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
    if app_id == 0 and empty and allow_new:
        return True
    raise StoreError(
        f"audit trail {path}: not an edgetwin audit database (application_id {app_id:#010x}"
        f"{', empty' if empty else ''})"
    )


def _verify_connection(conn: sqlite3.Connection) -> AuditVerifyReport:
    # One read transaction: the head and the records come from the same snapshot even if
    # another process appends meanwhile.
    conn.execute("BEGIN")
    try:
        head = conn.execute(f"SELECT seq, hash FROM {_HEAD} WHERE id = 1").fetchone()
        rows = conn.execute(f"SELECT {_COLUMNS} FROM {_LOG} ORDER BY seq")
        return verify_chain(rows, None if head is None else (head[0], head[1]))
    finally:
        conn.execute("ROLLBACK")


def verify_chain(
    rows: Iterable[tuple[Any, ...]], head: tuple[Any, Any] | None
) -> AuditVerifyReport:
    """Check stored rows ``(seq, ts, kind, proposal_id, payload_text, prev_hash, hash)``,
    in ``seq`` order, and the stored head ``(seq, hash)``; report the first break.

    Per record, in this order (the first failing check names the tampering best):
    1. ``seq`` follows the previous one: otherwise records were deleted;
    2. ``prev_hash`` equals the previous record's hash: otherwise records were reordered or
       one was replaced by a self-consistent forgery;
    3. the recomputed hash equals ``hash``: otherwise the content was edited.
    Then the head must name the last record: otherwise the tail was deleted (or the last
    record replaced).
    """
    count = 0
    prev_seq, prev_hash = 0, GENESIS_HASH
    failure: tuple[int | None, str] | None = None
    for row in rows:
        count += 1
        if failure is not None:
            continue  # keep counting; after the first break nothing else is meaningful
        failure = _check_record(row, prev_seq, prev_hash)
        if failure is None:
            prev_seq, prev_hash = int(row[0]), str(row[6])
    if failure is None:
        failure = _check_head(head, prev_seq, prev_hash, count)
    if failure is None:
        return AuditVerifyReport(ok=True, records=count, first_bad_seq=None, reason=None)
    return AuditVerifyReport(ok=False, records=count, first_bad_seq=failure[0], reason=failure[1])


def _check_record(
    row: tuple[Any, ...], prev_seq: int, prev_hash: str
) -> tuple[int | None, str] | None:
    seq_raw, ts, kind, proposal_id, payload_text, stored_prev, stored_hash = row
    seq = int(seq_raw)
    if seq != prev_seq + 1:
        gap = _records(prev_seq + 1, seq - 1)
        if prev_seq == 0:
            return seq, f"record {seq}: the trail starts at {seq} instead of 1 ({gap} deleted)"
        return seq, f"record {seq}: sequence jumps from {prev_seq} to {seq} ({gap} deleted)"
    if stored_prev != prev_hash:
        if seq == 1:
            return seq, "record 1: prev_hash is not the genesis value (replaced)"
        return (
            seq,
            f"record {seq}: prev_hash does not match record {prev_seq} (reordered or replaced)",
        )
    try:
        payload = json.loads(payload_text)
        expected = record_hash(seq, float(ts), kind, proposal_id, payload, stored_prev)
    except (TypeError, ValueError):
        expected = None
    if expected != stored_hash:
        return seq, f"record {seq}: content does not match its hash (edited)"
    return None


def _check_head(
    head: tuple[Any, Any] | None, last_seq: int, last_hash: str, count: int
) -> tuple[int | None, str] | None:
    if head is None:
        if count == 0:
            return None
        return None, f"the audit_head row is missing but the trail has {count} records (deleted)"
    head_seq, head_hash = int(head[0]), str(head[1])
    if head_seq > last_seq:
        gap = _records(last_seq + 1, head_seq)
        return last_seq + 1, (
            f"record {last_seq + 1}: missing; the trail ends at record {last_seq} but its head "
            f"says {head_seq} ({gap} deleted from the end)"
        )
    if head_seq < last_seq:
        return head_seq + 1, (
            f"record {head_seq + 1}: not covered by the head, which says the trail ends at "
            f"record {head_seq} (appended outside edgetwin, or the head was edited)"
        )
    if head_hash != last_hash:
        return last_seq, (
            f"record {last_seq}: hash does not match the stored head (last record replaced)"
        )
    return None


def _records(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}-{last}"


def _normalize_payload(kind: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Copy ``payload`` into plain JSON types, refusing what JSON cannot hold faithfully.

    Errors name the offending key path (e.g. ``payload.trajectory[3].temp``), so the
    caller can see which value was NaN.
    """
    if not isinstance(payload, Mapping):
        raise StoreError(f"audit {kind}: payload must be a JSON object, not {type(payload)}")
    result = _normalize(kind, payload, "payload")
    assert isinstance(result, dict)
    return result


def _normalize(kind: str, value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise StoreError(
                f"audit {kind}: {path} is {number}; NaN and Infinity cannot be recorded "
                "(record null and say why). Nothing was written"
            )
        return number
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise StoreError(
                    f"audit {kind}: {path} has a non-string key {key!r}. Nothing was written"
                )
            out[key] = _normalize(kind, item, f"{path}.{key}")
        return out
    if isinstance(value, list | tuple):
        return [_normalize(kind, item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise StoreError(
        f"audit {kind}: {path} is a {type(value).__name__}, which JSON cannot hold. "
        "Nothing was written"
    )
