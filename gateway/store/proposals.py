"""Proposals and their state, in SQLite: pending approvals survive a restart.

The audit trail is the record of what happened; this is the working state the daemon
needs to go on after a restart (which proposals wait for whom, with the verdict the
approvers will see). One row per proposal, rewritten on every change, in its own file
beside the audit trail.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from sqlite_utils import Database

from gateway.errors import StoreError

OPEN_STATUSES: Final = frozenset({"pending", "executing"})
"""A proposal in these holds its tags: one open proposal per tag."""


class SqliteProposalStore:
    """Proposal rows: id, status, the proposal, its verdict, approvals and the outcome."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        try:
            conn = sqlite3.connect(self._path, timeout=5.0, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._db = Database(conn)
            self._table = self._db.table("proposals")
            if "proposals" not in self._db.table_names():
                self._table.create(
                    {
                        "id": str,
                        "status": str,
                        "tags": str,
                        "created_at": float,
                        "updated_at": float,
                        "document": str,
                    },
                    pk="id",
                )
                self._table.create_index(["status"])
        except sqlite3.Error as err:
            raise StoreError(f"proposal store {self._path}: cannot open: {err}") from err

    @contextmanager
    def _use(self, action: str) -> Iterator[None]:
        with self._lock:
            try:
                yield
            except sqlite3.Error as err:
                raise StoreError(f"proposal store {self._path}: {action} failed: {err}") from err

    def put(self, proposal_id: str, status: str, document: Mapping[str, Any], now: float) -> None:
        """Insert or replace one proposal's row (durable on return)."""
        proposal = document["proposal"]
        row = {
            "id": proposal_id,
            "status": status,
            "tags": ",".join(sorted(proposal["targets"])),
            "created_at": float(proposal["created_at"]),
            "updated_at": now,
            "document": json.dumps({**document, "status": status}, allow_nan=False),
        }
        with self._use("put"):
            self._table.upsert(row, pk="id")
            self._db.conn.commit()

    def get(self, proposal_id: str) -> dict[str, Any] | None:
        with self._use("get"):
            rows = list(self._db["proposals"].rows_where("id = ?", [proposal_id]))
        return json.loads(rows[0]["document"]) if rows else None

    def all(self, status: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first."""
        with self._use("list"):
            if status is None:
                rows = self._db["proposals"].rows_where(order_by="created_at desc", limit=limit)
            else:
                rows = self._db["proposals"].rows_where(
                    "status = ?", [status], order_by="created_at desc", limit=limit
                )
            return [json.loads(r["document"]) for r in rows]

    def open_on(self, tags: set[str]) -> list[dict[str, Any]]:
        """Open proposals holding any of ``tags``."""
        out = []
        for status in OPEN_STATUSES:
            for doc in self.all(status):
                if tags & set(doc["proposal"]["targets"]):
                    out.append(doc)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.conn.close()
