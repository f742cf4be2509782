"""The audit trail: committed before append returns, hash-chained, and any edit, deletion
or reordering is found by verify() with the first broken record named."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import StoreError
from gateway.store import SqliteHistorian, audit
from gateway.store.audit import (
    AUDIT_APPLICATION_ID,
    SqliteAuditTrail,
    record_hash,
    verify_audit_file,
)
from gateway.store.ports import GENESIS_HASH, AuditTrail, AuditVerifyReport

T0 = 1_700_000_000.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def trail(path: Path) -> Iterator[SqliteAuditTrail]:
    t = SqliteAuditTrail(path)
    yield t
    t.close()


def fill(trail: SqliteAuditTrail, n: int) -> None:
    """n records of a plausible decision sequence, two proposals interleaved."""
    kinds = ["proposal", "verdict", "approval", "write", "readback", "outcome"]
    for i in range(n):
        trail.append(
            kinds[i % len(kinds)],
            {"step": i, "value": 40.0 + i / 4, "reasons": ["ok"]},
            proposal_id=f"p-{i % 2}",
            ts=T0 + i,
        )


def tamper(path: Path, *statements: str) -> None:
    """Change the file as an attacker with plain sqlite3 would: drop the append-only guard
    rails first, then edit."""
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER audit_log_no_update")
    conn.execute("DROP TRIGGER audit_log_no_delete")
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def row(path: Path, seq: int) -> tuple[Any, ...]:
    conn = sqlite3.connect(path)
    got = conn.execute(
        "SELECT seq, ts, kind, proposal_id, payload, prev_hash, hash FROM audit_log WHERE seq = ?",
        (seq,),
    ).fetchone()
    conn.close()
    return tuple(got)


def forge(path: Path, seq: int, payload: str) -> str:
    """SQL that replaces record seq's payload AND recomputes its hash, as a careful forger."""
    _, ts, kind, pid, _, prev, _ = row(path, seq)
    new_hash = record_hash(seq, ts, kind, pid, json.loads(payload), prev)
    return f"UPDATE audit_log SET payload = '{payload}', hash = '{new_hash}' WHERE seq = {seq}"


def swap(a: int, b: int) -> str:
    cols = ["ts", "kind", "proposal_id", "payload", "prev_hash", "hash"]
    sets = ", ".join(
        f"{c} = (SELECT {c} FROM audit_log AS o WHERE o.seq = "
        f"CASE audit_log.seq WHEN {a} THEN {b} ELSE {a} END)"
        for c in cols
    )
    return f"UPDATE audit_log SET {sets} WHERE seq IN ({a}, {b})"


# -- appending and reading ---------------------------------------------------------------


def test_sqlite_audit_trail_satisfies_the_port(trail: SqliteAuditTrail) -> None:
    """SqliteAuditTrail is usable wherever the AuditTrail port is expected."""
    port: AuditTrail = trail
    assert port.append("startup", {"version": "0.1.0"}).seq == 1


def test_append_is_committed_before_it_returns(trail: SqliteAuditTrail, path: Path) -> None:
    """Right after append returns, another connection (another process) sees the record:
    nothing is left in an open transaction for a later step to lose."""
    rec = trail.append("proposal", {"tag": "heater_sp", "value": 61.5}, proposal_id="p-1")
    other = sqlite3.connect(path)
    assert other.execute("SELECT seq, kind, proposal_id FROM audit_log").fetchall() == [
        (1, "proposal", "p-1")
    ]
    other.close()
    assert rec.payload == {"tag": "heater_sp", "value": 61.5}


def test_file_is_wal_with_full_sync_and_marked_as_an_audit_trail(
    trail: SqliteAuditTrail, path: Path
) -> None:
    """The audit file runs WAL with synchronous=FULL (fsync per commit) and carries its
    own application_id."""
    assert trail._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    other = sqlite3.connect(path)
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("PRAGMA application_id").fetchone()[0] == AUDIT_APPLICATION_ID
    other.close()


def test_records_read_back_what_was_appended(trail: SqliteAuditTrail) -> None:
    """records() returns every appended record, equal field by field, in seq order."""
    appended = [
        trail.append("proposal", {"value": 1.25}, proposal_id="p-1", ts=T0),
        trail.append("verdict", {"ok": True, "nested": {"a": [1, None]}}, proposal_id="p-1"),
        trail.append("startup", {}, ts=T0 + 2),
    ]
    assert list(trail.records()) == appended
    assert [r.seq for r in appended] == [1, 2, 3]


def test_chain_links_each_record_to_the_previous_hash(trail: SqliteAuditTrail) -> None:
    """Record 1 links to 64 zeros, each later record to its predecessor's hash, and each
    hash is SHA-256 over the canonical JSON of [seq, ts, kind, proposal_id, payload,
    prev_hash] (recomputed here independently of the module)."""
    first = trail.append("proposal", {"b": 1, "a": "é"}, proposal_id="p-1", ts=T0)
    second = trail.append("verdict", {"pass": False}, ts=T0 + 0.5)
    assert first.prev_hash == GENESIS_HASH == "0" * 64
    assert second.prev_hash == first.hash
    text = '[1,1700000000.0,"proposal","p-1",{"a":"é","b":1},"' + "0" * 64 + '"]'
    assert first.hash == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_records_filters_by_proposal_kind_and_since_seq(
    trail: SqliteAuditTrail, monkeypatch: pytest.MonkeyPatch
) -> None:
    """records() filters by proposal_id, kind and since_seq, across page boundaries."""
    monkeypatch.setattr(audit, "_PAGE", 3)
    fill(trail, 14)
    assert [r.seq for r in trail.records()] == list(range(1, 15))
    assert [r.seq for r in trail.records(proposal_id="p-1")] == [2, 4, 6, 8, 10, 12, 14]
    assert [r.seq for r in trail.records(kind="verdict")] == [2, 8, 14]
    assert [r.seq for r in trail.records(kind="verdict", proposal_id="p-0")] == []
    assert [r.seq for r in trail.records(since_seq=11)] == [12, 13, 14]


def test_reopened_trail_continues_the_chain(path: Path) -> None:
    """After a restart, appends continue at the next seq, chained to the last hash."""
    with SqliteAuditTrail(path) as t:
        fill(t, 3)
    with SqliteAuditTrail(path) as t:
        rec = t.append("startup", {"reason": "restart"})
        assert rec.seq == 4
        assert rec.prev_hash == list(t.records())[2].hash
        assert t.verify().ok


def test_in_memory_trail_works(tmp_path: Path) -> None:
    """An in-memory trail (":memory:") works the same, without durability, for tests."""
    with SqliteAuditTrail(":memory:") as t:
        fill(t, 4)
        assert t.verify() == AuditVerifyReport(True, 4, None, None)


def test_payload_values_are_normalised_to_plain_json(trail: SqliteAuditTrail) -> None:
    """Tuples, str enums and integer-valued numbers are stored as plain JSON, and the chain
    verifies; an int ts and -0.0 ts are stored so that the hash recomputes."""

    class Q(StrEnum):
        GOOD = "good"

    rec = trail.append("readback", {"q": Q.GOOD, "xy": (1, 2.5), "ok": True}, ts=5)
    assert rec.payload == {"q": "good", "xy": [1, 2.5], "ok": True}
    assert rec.ts == 5.0
    trail.append("outcome", {}, ts=-0.0)
    assert trail.verify().ok


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_payload_is_refused_and_nothing_is_written(
    trail: SqliteAuditTrail, bad: float
) -> None:
    """NaN/Infinity anywhere in the payload raises StoreError naming the key path, and
    the trail is unchanged."""
    trail.append("startup", {})
    with pytest.raises(StoreError, match=r"payload\.predicted\.temp_c\[1\] is (nan|inf|-inf)"):
        trail.append("verdict", {"predicted": {"temp_c": [60.0, bad]}}, proposal_id="p-1")
    assert [r.seq for r in trail.records()] == [1]
    assert trail.verify().ok
    assert trail.append("verdict", {"predicted": None}).seq == 2


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"when": object()}, r"payload\.when is a object"),
        ({"m": {1: "a"}}, r"payload\.m has a non-string key 1"),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_unrecordable_payload_is_refused(
    trail: SqliteAuditTrail, payload: Any, message: str
) -> None:
    """Values JSON cannot hold faithfully are refused with the key path, nothing written."""
    with pytest.raises(StoreError, match=message):
        trail.append("config", payload)
    assert list(trail.records()) == []


def test_triggers_refuse_casual_edits(trail: SqliteAuditTrail, path: Path) -> None:
    """An UPDATE or DELETE through an ordinary SQL tool fails: the log is append-only."""
    fill(trail, 2)
    other = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        other.execute("UPDATE audit_log SET kind = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        other.execute("DELETE FROM audit_log WHERE seq = 2")
    other.close()


# -- verification ------------------------------------------------------------------------


def test_verify_an_intact_chain(trail: SqliteAuditTrail, path: Path) -> None:
    """An untouched trail (empty or not) verifies, in-process and from the file."""
    assert trail.verify() == AuditVerifyReport(True, 0, None, None)
    fill(trail, 6)
    assert trail.verify() == AuditVerifyReport(True, 6, None, None)
    assert verify_audit_file(path) == AuditVerifyReport(True, 6, None, None)


TAMPERINGS: list[tuple[str, Callable[[Path], list[str]], int | None, str]] = [
    (
        "edited payload",
        lambda p: ["UPDATE audit_log SET payload = '{\"value\":99.0}' WHERE seq = 3"],
        3,
        "record 3: content does not match its hash (edited)",
    ),
    (
        "edited kind",
        lambda p: ["UPDATE audit_log SET kind = 'approval' WHERE seq = 2"],
        2,
        "record 2: content does not match its hash (edited)",
    ),
    (
        "edited hash",
        lambda p: [f"UPDATE audit_log SET hash = '{'f' * 64}' WHERE seq = 3"],
        3,
        "record 3: content does not match its hash (edited)",
    ),
    (
        "forged record with recomputed hash",
        lambda p: [forge(p, 3, '{"value":99.0}')],
        4,
        "record 4: prev_hash does not match record 3 (reordered or replaced)",
    ),
    (
        "deleted middle record",
        lambda p: ["DELETE FROM audit_log WHERE seq = 3"],
        4,
        "record 4: sequence jumps from 2 to 4 (record 3 deleted)",
    ),
    (
        "deleted middle records",
        lambda p: ["DELETE FROM audit_log WHERE seq IN (2, 3, 4)"],
        5,
        "record 5: sequence jumps from 1 to 5 (records 2-4 deleted)",
    ),
    (
        "deleted first record",
        lambda p: ["DELETE FROM audit_log WHERE seq = 1"],
        2,
        "record 2: the trail starts at 2 instead of 1 (record 1 deleted)",
    ),
    (
        "deleted last record",
        lambda p: ["DELETE FROM audit_log WHERE seq = 6"],
        6,
        "record 6: missing; the trail ends at record 5 but its head says 6 "
        "(record 6 deleted from the end)",
    ),
    (
        "deleted last two records",
        lambda p: ["DELETE FROM audit_log WHERE seq >= 5"],
        5,
        "record 5: missing; the trail ends at record 4 but its head says 6 "
        "(records 5-6 deleted from the end)",
    ),
    (
        "deleted every record",
        lambda p: ["DELETE FROM audit_log"],
        1,
        "record 1: missing; the trail ends at record 0 but its head says 6 "
        "(records 1-6 deleted from the end)",
    ),
    (
        "forged last record with recomputed hash",
        lambda p: [forge(p, 6, '{"value":0.0}')],
        6,
        "record 6: hash does not match the stored head (last record replaced)",
    ),
    (
        "reordered pair",
        lambda p: [swap(3, 4)],
        3,
        "record 3: prev_hash does not match record 2 (reordered or replaced)",
    ),
    (
        "deleted head",
        lambda p: ["DELETE FROM audit_head"],
        None,
        "the audit_head row is missing but the trail has 6 records (deleted)",
    ),
]


@pytest.mark.parametrize(
    ("tampering", "first_bad_seq", "reason"),
    [(t[1], t[2], t[3]) for t in TAMPERINGS],
    ids=[t[0] for t in TAMPERINGS],
)
def test_verify_names_the_first_broken_record(
    trail: SqliteAuditTrail,
    path: Path,
    tampering: Callable[[Path], list[str]],
    first_bad_seq: int | None,
    reason: str,
) -> None:
    """Each kind of tampering is detected, with the first broken record and a reason that
    says what happened, both by the live trail and by verify_audit_file."""
    fill(trail, 6)
    tamper(path, *tampering(path))
    report = trail.verify()
    assert report == AuditVerifyReport(
        ok=False, records=report.records, first_bad_seq=first_bad_seq, reason=reason
    )
    assert verify_audit_file(path) == report


def test_verify_counts_every_record_even_after_a_break(trail: SqliteAuditTrail, path: Path) -> None:
    """records in the report is the number of rows in the trail, not where checking stopped."""
    fill(trail, 6)
    tamper(path, "UPDATE audit_log SET payload = '{}' WHERE seq = 2")
    assert trail.verify().records == 6


def test_append_refuses_to_extend_a_trail_whose_tail_was_deleted(
    trail: SqliteAuditTrail, path: Path
) -> None:
    """After the last record is deleted, append raises instead of re-using its seq (which
    would erase the evidence), and writes nothing."""
    fill(trail, 4)
    tamper(path, "DELETE FROM audit_log WHERE seq = 4")
    with pytest.raises(StoreError, match="does not match the stored head"):
        trail.append("proposal", {})
    assert [r.seq for r in trail.records()] == [1, 2, 3]
    assert trail.verify().first_bad_seq == 4


# -- concurrency -------------------------------------------------------------------------


def test_two_trail_objects_interleaving_appends_keep_one_chain(path: Path) -> None:
    """Two objects on one file (as two processes would be) alternate appends; the result is
    one gap-free chain that both see and that verifies."""
    with SqliteAuditTrail(path) as a, SqliteAuditTrail(path) as b:
        for i in range(10):
            assert a.append("proposal", {"by": "a", "i": i}).seq == 2 * i + 1
            assert b.append("approval", {"by": "b", "i": i}).seq == 2 * i + 2
        assert [r.seq for r in a.records()] == list(range(1, 21))
        assert [r.payload["by"] for r in b.records()][:4] == ["a", "b", "a", "b"]
        assert a.verify().ok
        assert b.verify().ok
    assert verify_audit_file(path).ok


def test_concurrent_appends_from_threads_never_fork_the_chain(path: Path) -> None:
    """Two objects appending at the same time from two threads (separate connections, as
    separate processes) produce a linear chain: BEGIN IMMEDIATE serialises read-and-link."""
    n = 50
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            with SqliteAuditTrail(path) as t:
                for i in range(n):
                    t.append("write", {"by": name, "i": i})
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    SqliteAuditTrail(path).close()
    threads = [threading.Thread(target=writer, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    report = verify_audit_file(path)
    assert report == AuditVerifyReport(True, 2 * n, None, None)


# -- opening files -----------------------------------------------------------------------


def test_verify_audit_file_on_a_missing_path_names_it(tmp_path: Path) -> None:
    """A missing file is an error that names the path, not an empty (valid) trail, and
    verifying does not create it."""
    missing = tmp_path / "nowhere" / "audit.db"
    with pytest.raises(StoreError, match=f"{missing}: no such file"):
        verify_audit_file(missing)
    assert not missing.exists()


def test_verify_audit_file_refuses_other_databases(tmp_path: Path) -> None:
    """The historian, an empty SQLite file and a text file are not audit trails: each is
    refused with the path named."""
    hist = tmp_path / "history.db"
    SqliteHistorian(hist).close()
    with pytest.raises(StoreError, match=r"history\.db: not an edgetwin audit database"):
        verify_audit_file(hist)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(StoreError, match=r"empty\.db: not an edgetwin audit database"):
        verify_audit_file(empty)
    text = tmp_path / "notes.txt"
    text.write_text("hello " * 200)
    with pytest.raises(StoreError, match=r"notes\.txt"):
        verify_audit_file(text)


def test_verify_audit_file_does_not_change_the_file(trail: SqliteAuditTrail, path: Path) -> None:
    """verify_audit_file opens read-only: the database bytes are unchanged afterwards."""
    fill(trail, 3)
    trail.close()
    before = path.read_bytes()
    assert verify_audit_file(path).ok
    assert path.read_bytes() == before


def test_trail_refuses_a_historian_file(tmp_path: Path) -> None:
    """Opening the historian's file as the audit trail fails, naming the file."""
    hist = tmp_path / "history.db"
    SqliteHistorian(hist).close()
    with pytest.raises(StoreError, match=r"history\.db: not an edgetwin audit database"):
        SqliteAuditTrail(hist)


def test_use_after_close_raises_store_error(trail: SqliteAuditTrail) -> None:
    """A closed trail refuses appends with a StoreError; close() is idempotent."""
    trail.close()
    trail.close()
    with pytest.raises(StoreError, match="after close"):
        trail.append("startup", {})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": ""}, "kind must be a non-empty string"),
        ({"kind": "write", "proposal_id": ""}, "proposal_id must be a non-empty string"),
        ({"kind": "write", "ts": math.nan}, "ts must be finite"),
    ],
)
def test_malformed_arguments_are_refused(
    trail: SqliteAuditTrail, kwargs: dict[str, Any], message: str
) -> None:
    """An empty kind or proposal id, or a non-finite time, is refused before writing."""
    kind = kwargs.pop("kind")
    with pytest.raises(StoreError, match=message):
        trail.append(kind, {}, **kwargs)
    assert list(trail.records()) == []


def test_opening_an_existing_trail_needs_no_write_lock(path: Path) -> None:
    """A second process (e.g. `edgetwin approve`) can open and read the trail while another
    holds the write lock: opening an existing trail writes nothing."""
    with SqliteAuditTrail(path) as t:
        fill(t, 2)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with SqliteAuditTrail(path) as reader:
            assert [r.seq for r in reader.records()] == [1, 2]
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_trail_from_a_newer_schema_is_refused(path: Path) -> None:
    """A trail written by a newer edgetwin (higher user_version) is not guessed at."""
    SqliteAuditTrail(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99 was written by a newer"):
        SqliteAuditTrail(path)
    with pytest.raises(StoreError, match="schema version 99"):
        verify_audit_file(path)
