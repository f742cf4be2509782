"""The historian: samples in, the same samples out, bounded by age and size."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import StoreError
from gateway.store import SqliteAuditTrail
from gateway.store.historian import HISTORIAN_APPLICATION_ID, SqliteHistorian
from gateway.store.ports import Historian, Sample

T0 = 1_700_000_000.0


def sample(
    signal: str = "tank_level",
    ts: float = T0,
    value: float = 1.5,
    quality: str = "good",
    received: float | None = None,
) -> Sample:
    return Sample(signal, ts, value, quality, ts + 0.05 if received is None else received)


@pytest.fixture(params=["memory", "file"])
def historian(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteHistorian]:
    """The same contract is checked against an in-memory and an on-disk historian."""
    path = ":memory:" if request.param == "memory" else tmp_path / "history.db"
    store = SqliteHistorian(path)
    yield store
    store.close()


def test_sqlite_historian_satisfies_the_port(historian: SqliteHistorian) -> None:
    """SqliteHistorian is usable wherever the Historian port is expected."""
    port: Historian = historian
    port.append([sample()])
    assert port.latest()["tank_level"].value == 1.5


def test_round_trip_returns_the_sample_unchanged(historian: SqliteHistorian) -> None:
    """A stored sample reads back equal in every field."""
    s = sample(value=2.25, quality="uncertain", received=T0 + 0.3)
    historian.append([s])
    assert historian.query("tank_level", T0 - 1) == [s]


def test_batch_insert_stores_every_sample_in_ts_order(historian: SqliteHistorian) -> None:
    """A large batch lands whole, and query returns it oldest first whatever the
    insertion order."""
    batch = [sample(ts=T0 + i, value=float(i)) for i in range(1000)]
    historian.append(list(reversed(batch)))
    assert historian.query("tank_level", T0) == batch


def test_empty_batch_is_a_no_op(historian: SqliteHistorian) -> None:
    """Appending nothing writes nothing and does not fail."""
    historian.append([])
    assert historian.latest() == {}


def test_invalid_sample_refuses_the_whole_batch(historian: SqliteHistorian) -> None:
    """One malformed sample (unknown quality) refuses the batch, naming the problem;
    the good samples of that batch are not written either."""
    with pytest.raises(StoreError, match="quality 'excellent'"):
        historian.append([sample(), sample(ts=T0 + 1, quality="excellent")])
    assert historian.query("tank_level", 0) == []


def test_non_finite_timestamp_is_refused(historian: SqliteHistorian) -> None:
    """A sample without a real time cannot be placed in the history."""
    with pytest.raises(StoreError, match="timestamps must be finite"):
        historian.append([sample(ts=math.nan)])


def test_batch_is_all_or_nothing_when_the_database_fails(tmp_path: Path) -> None:
    """If the database rejects one row mid-batch, the rows before it are rolled back."""
    path = tmp_path / "history.db"
    with SqliteHistorian(path) as store:
        other = sqlite3.connect(path)
        other.execute(
            "CREATE TRIGGER refuse_666 BEFORE INSERT ON samples WHEN NEW.value = 666 "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        other.commit()
        other.close()
        with pytest.raises(StoreError, match=r"history\.db: append failed: refused"):
            store.append([sample(ts=T0), sample(ts=T0 + 1), sample(ts=T0 + 2, value=666)])
        assert store.query("tank_level", 0) == []
        store.append([sample(ts=T0 + 3)])
        assert len(store.query("tank_level", 0)) == 1


def test_nan_value_is_stored_as_null_and_read_back_as_nan(tmp_path: Path) -> None:
    """A NaN value is kept with its quality: NULL in the file, NaN when read back."""
    path = tmp_path / "history.db"
    with SqliteHistorian(path) as store:
        store.append([sample(value=math.nan, quality="bad")])
        (got,) = store.query("tank_level", 0)
        assert math.isnan(got.value)
        assert got.quality == "bad"
        assert math.isnan(store.latest()["tank_level"].value)
    raw = sqlite3.connect(path).execute("SELECT value, quality FROM samples").fetchall()
    assert raw == [(None, "bad")]


def test_infinite_value_round_trips(historian: SqliteHistorian) -> None:
    """An infinite reading (stored with its bad quality) reads back with its sign."""
    historian.append([sample(value=-math.inf, quality="bad")])
    assert historian.query("tank_level", 0)[0].value == -math.inf


def test_query_window_is_half_open_and_per_signal(historian: SqliteHistorian) -> None:
    """query returns since <= ts < until for the one signal asked, oldest first;
    without until it runs to the newest sample."""
    historian.append(
        [sample(ts=T0 + i, value=float(i)) for i in range(10)]
        + [sample(signal="pump_speed", ts=T0 + i) for i in range(10)]
    )
    window = historian.query("tank_level", T0 + 2, T0 + 5)
    assert [s.value for s in window] == [2.0, 3.0, 4.0]
    assert [s.value for s in historian.query("tank_level", T0 + 8)] == [8.0, 9.0]
    assert historian.query("tank_level", T0 + 5, T0 + 5) == []
    assert historian.query("no_such_signal", 0) == []


def test_latest_is_the_newest_by_source_time_per_signal(historian: SqliteHistorian) -> None:
    """latest() gives each signal's sample with the largest ts, even when an older
    sample arrived later."""
    historian.append(
        [
            sample("tank_level", ts=T0 + 5, value=5.0),
            sample("pump_speed", ts=T0 + 1, value=10.0),
            sample("heater_temp", ts=T0 + 2, value=60.0, quality="stale"),
        ]
    )
    historian.append([sample("tank_level", ts=T0 + 3, value=3.0, received=T0 + 99)])
    latest = historian.latest()
    assert sorted(latest) == ["heater_temp", "pump_speed", "tank_level"]
    assert latest["tank_level"].value == 5.0
    assert latest["pump_speed"].value == 10.0
    assert latest["heater_temp"].quality == "stale"


def test_latest_of_an_empty_historian_is_empty(historian: SqliteHistorian) -> None:
    """With nothing stored, latest() is an empty dict (not an error)."""
    assert historian.latest() == {}


def test_retention_by_age_deletes_only_samples_received_before_the_cutoff(
    tmp_path: Path,
) -> None:
    """enforce_retention(now) deletes samples received more than retention_s before now
    (a sample exactly at the cutoff stays) and returns how many it deleted."""
    with SqliteHistorian(tmp_path / "h.db", retention_s=100.0) as store:
        store.append([sample(ts=T0 + i, received=T0 + i) for i in range(0, 300, 10)])
        deleted = store.enforce_retention(now=T0 + 250)
        kept = store.query("tank_level", 0)
        assert deleted == 15  # received T0+0 ... T0+140
        assert [s.received for s in kept] == [T0 + i for i in range(150, 300, 10)]
        assert store.enforce_retention(now=T0 + 250) == 0


def test_retention_age_uses_the_gateway_clock_not_the_plc_clock(tmp_path: Path) -> None:
    """A PLC whose clock is decades behind does not get its fresh samples deleted."""
    with SqliteHistorian(tmp_path / "h.db", retention_s=100.0) as store:
        store.append([sample(ts=1000.0, received=T0)])
        assert store.enforce_retention(now=T0 + 10) == 0
        assert len(store.query("tank_level", 0)) == 1


def test_retention_by_size_deletes_the_oldest_until_under_budget(tmp_path: Path) -> None:
    """Over max_bytes, the oldest samples (by arrival) are deleted until the live pages fit
    the budget; the newest are kept, and a second call has nothing to do."""
    budget = 128 * 1024
    with SqliteHistorian(tmp_path / "h.db", retention_s=1e9, max_bytes=budget) as store:
        n = 6000
        for start in range(0, n, 500):
            store.append(
                [
                    sample(signal=f"sig_{i % 7}", ts=T0 + i, value=float(i), received=T0 + i)
                    for i in range(start, start + 500)
                ]
            )
        assert store.used_bytes() > budget
        deleted = store.enforce_retention(now=T0 + n)
        assert deleted > 0
        assert store.used_bytes() <= budget
        kept = sorted(s.received for sig in range(7) for s in store.query(f"sig_{sig}", 0))
        assert len(kept) == n - deleted
        assert kept == [T0 + i for i in range(deleted, n)]  # exactly the newest
        assert store.enforce_retention(now=T0 + n) == 0


def test_reopened_file_keeps_its_samples(tmp_path: Path) -> None:
    """Samples survive closing and reopening the file, and appends continue after them."""
    path = tmp_path / "h.db"
    with SqliteHistorian(path) as store:
        store.append([sample(ts=T0)])
    with SqliteHistorian(path) as store:
        store.append([sample(ts=T0 + 1)])
        assert [s.ts for s in store.query("tank_level", 0)] == [T0, T0 + 1]


def test_file_is_in_wal_mode_and_marked_as_a_historian(tmp_path: Path) -> None:
    """The file uses WAL (readers never block the writer) and carries the historian's
    application_id, as any other tool sees it."""
    path = tmp_path / "h.db"
    with SqliteHistorian(path):
        other = sqlite3.connect(path)
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert other.execute("PRAGMA application_id").fetchone()[0] == HISTORIAN_APPLICATION_ID
        names = {r[0] for r in other.execute("SELECT name FROM sqlite_master")}
        assert {"samples", "idx_samples_signal_ts", "idx_samples_received"} <= names
        other.close()


def test_refuses_a_database_that_is_not_a_historian(tmp_path: Path) -> None:
    """Pointing the historian at the audit file, or any other database, fails at start
    and names the file, instead of mixing samples into it."""
    audit = tmp_path / "audit.db"
    SqliteAuditTrail(audit).close()
    with pytest.raises(StoreError, match=r"audit\.db: not an edgetwin historian"):
        SqliteHistorian(audit)
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match=r"other\.db: not an edgetwin historian"):
        SqliteHistorian(other)


def test_unopenable_path_raises_store_error_naming_it(tmp_path: Path) -> None:
    """A missing directory or a non-SQLite file gives a StoreError with the path."""
    with pytest.raises(StoreError, match="no_such_dir"):
        SqliteHistorian(tmp_path / "no_such_dir" / "h.db")
    text = tmp_path / "notes.txt"
    text.write_text("not a database, just some words that fill the header" * 20)
    with pytest.raises(StoreError, match=r"notes\.txt"):
        SqliteHistorian(text)


def test_use_after_close_raises_store_error(historian: SqliteHistorian) -> None:
    """A closed historian says so instead of failing obscurely; close() is idempotent."""
    historian.close()
    historian.close()
    with pytest.raises(StoreError, match="after close"):
        historian.append([sample()])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retention_s": 0.0}, "retention_s"),
        ({"retention_s": math.inf}, "retention_s"),
        ({"max_bytes": 1024}, "max_bytes"),
    ],
)
def test_nonsense_limits_are_refused(kwargs: dict[str, float], message: str) -> None:
    """A zero/infinite retention or a budget too small for the schema is refused."""
    with pytest.raises(ValueError, match=message):
        SqliteHistorian(":memory:", **kwargs)  # type: ignore[arg-type]


def test_historian_from_a_newer_schema_is_refused(tmp_path: Path) -> None:
    """A historian written by a newer edgetwin (higher user_version) is not guessed at."""
    path = tmp_path / "h.db"
    SqliteHistorian(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError, match="schema version 99 was written by a newer"):
        SqliteHistorian(path)


def test_opening_an_existing_historian_needs_no_write_lock(tmp_path: Path) -> None:
    """`edgetwin status` can open the historian and read latest() while the daemon holds
    the write lock: opening an existing file writes nothing."""
    path = tmp_path / "h.db"
    with SqliteHistorian(path) as store:
        store.append([sample()])
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with SqliteHistorian(path) as reader:
            assert reader.latest()["tank_level"].value == 1.5
    finally:
        holder.execute("ROLLBACK")
        holder.close()
