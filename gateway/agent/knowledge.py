"""The runbooks the agent reads: markdown files indexed for full-text search in SQLite.

A plant engineer's runbooks (``config/knowledge/*.md``) are split at their ``##``
headings into passages, so a prompt gets the paragraph about *what the gateway may do*
for a fault rather than a whole file. Passages live in a ``passages`` table with an FTS5
index (porter stemming, so "rising" finds "rise") kept in step by sqlite-utils' triggers,
and are ranked by bm25 with the heading weighted above the body: a heading names the
fault and the section, which is what a query from an alert is about.

Queries come from alert messages, model output and strings the plant sent us, so they
are never handed to FTS5's query language: :func:`match_query` keeps only word tokens,
quotes each one and ORs them, which cannot be a syntax error whatever the input.

The index is a cache of the directory, never the record: ``refresh`` mirrors the files
(added, edited, removed) and re-indexes only files whose content hash changed, so it
can run on every start, and an on-disk index survives restarts without rework.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import structlog
from sqlite_utils import Database

log = structlog.get_logger("gateway.agent.knowledge")

MAX_PASSAGE_CHARS: Final = 1200
"""A passage's text is at most this long; longer sections are split at paragraphs, so
one verbose runbook cannot crowd the others out of a prompt."""
MAX_HEADING_CHARS: Final = 200
MAX_QUERY_TERMS: Final = 24
"""More terms only dilute bm25 and slow the match; an alert says what it is early."""
MAX_QUERY_SCAN_CHARS: Final = 16_384
"""Only this much of a query text is read, to bound the work on a hostile string."""
MIN_TERM_CHARS: Final = 3
MAX_TERM_CHARS: Final = 40
"""No real word is longer; a longer token is junk (a hash, a run of one letter)."""
HEADING_WEIGHT: Final = 2.0
TEXT_WEIGHT: Final = 1.0

_STOP_WORDS_TEXT: Final = """
    about above after again all also and any are because been before being below between
    both but can could did does doing down during each few for from further had has have
    having her here hers him his how into its itself just more most much nor not now off
    once only other our ours out over own same she should some such than that the their
    theirs them then there these they this those through too under until very was were
    what when where which while who whom why will with would you your yours
"""
STOP_WORDS: Final = frozenset(_STOP_WORDS_TEXT.split())
"""Words that match nearly every passage and so say nothing about the fault."""

_WORD: Final = re.compile(r"[^\W_]+")
"""Letters and digits only: underscores split signal names (``bearing_temp``) the way
FTS5's unicode61 tokenizer splits them in the index."""
_HEADING: Final = re.compile(r"^(#{1,2})[ \t]+(.+?)[ \t#]*$")
_FENCE: Final = re.compile(r"^\s*(```|~~~)")

_TABLE: Final = "passages"


@dataclass(frozen=True)
class Passage:
    """One section of a runbook, as found by a search.

    Attributes:
        source: The runbook's file name (e.g. ``"leak.md"``), for the prompt to cite.
        heading: The runbook's title and the section's heading, e.g.
            ``"Tank or piping leak / What the gateway can do"``.
        text: The section's text, at most :data:`MAX_PASSAGE_CHARS`.
        score: bm25 relevance to the query; higher is better, only comparable within
            one search.
    """

    source: str
    heading: str
    text: str
    score: float


def match_query(text: str) -> str | None:
    """An FTS5 MATCH expression for arbitrary text, or None when nothing is searchable.

    Every term is a run of letters/digits inside double quotes, so FTS5 operators,
    parentheses, ``NEAR(``, ``*`` and stray quotes in the text lose their meaning;
    terms are ORed because an alert shares some words with its runbook, never all.
    """
    terms: list[str] = []
    seen: set[str] = set()
    for match in _WORD.finditer(text[:MAX_QUERY_SCAN_CHARS]):
        term = match.group().casefold()
        if (
            term in seen
            or not MIN_TERM_CHARS <= len(term) <= MAX_TERM_CHARS
            or term.isdigit()
            or term in STOP_WORDS
        ):
            continue
        seen.add(term)
        terms.append(f'"{term}"')
        if len(terms) >= MAX_QUERY_TERMS:
            break
    return " OR ".join(terms) if terms else None


def split_passages(markdown: str, fallback_title: str) -> list[tuple[str, str]]:
    """Cut a runbook into ``(heading, text)`` passages at its ``##`` headings.

    Each heading carries the file's ``#`` title (or ``fallback_title``) because "Symptoms"
    alone would match every runbook equally. Text before the first ``##`` is a passage
    under the bare title. Headings inside fenced code blocks are text, and sections
    longer than :data:`MAX_PASSAGE_CHARS` become several passages.
    """
    title = fallback_title
    titled = False
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    in_fence = False
    for line in markdown.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        heading = None if in_fence else _HEADING.match(line)
        if heading is not None and heading.group(1) == "#" and not titled:
            title, titled = heading.group(2).strip(), True
        elif heading is not None and heading.group(1) == "##":
            sections.append((heading.group(2).strip(), []))
        else:
            sections[-1][1].append(line)
    passages: list[tuple[str, str]] = []
    for section, lines in sections:
        body = "\n".join(lines).strip()
        if not body:
            continue
        name = title if section is None else f"{title} / {section}"
        name = name[:MAX_HEADING_CHARS]
        for i, chunk in enumerate(_chunks(body, MAX_PASSAGE_CHARS)):
            passages.append((name if i == 0 else f"{name} (cont.)", chunk))
    return passages


def _chunks(body: str, limit: int) -> Iterator[str]:
    """Paragraph-aligned pieces of at most ``limit`` characters (a paragraph longer than
    that is cut at the last space before the limit, or hard if it has none)."""
    current = ""
    for paragraph in re.split(r"\n\s*\n", body):
        paragraph = paragraph.strip()
        while len(paragraph) > limit:
            cut = paragraph.rfind(" ", 0, limit + 1)
            cut = cut if cut > 0 else limit
            if current:
                yield current
                current = ""
            yield paragraph[:cut].rstrip()
            paragraph = paragraph[cut:].lstrip()
        if not paragraph:
            continue
        if current and len(current) + 2 + len(paragraph) > limit:
            yield current
            current = paragraph
        else:
            current = f"{current}\n\n{paragraph}" if current else paragraph
    if current:
        yield current


class KnowledgeBase:
    """Searchable runbooks; see the module docstring. Build one with :meth:`open`.

    Safe to share between the event loop and worker threads: one connection, one lock.
    """

    def __init__(self, directory: Path, db: Database) -> None:
        self.directory = directory
        self._db = db
        self._table = db.table(_TABLE)
        self._lock = threading.Lock()
        self._skipped: dict[str, str] = {}
        """Files skipped, with the digest (or error) already warned about: a bad file
        is reported once, not on every refresh."""
        self._directory_missing = False

    @classmethod
    def open(cls, directory: Path, db_path: Path | None = None) -> KnowledgeBase:
        """Open (or create) the index and bring it up to date with ``directory``.

        Args:
            directory: Folder of ``*.md`` runbooks (not searched recursively). A missing
                folder gives an empty knowledge base and a warning: the agent can work
                without runbooks, so their absence must not stop the gateway.
            db_path: SQLite file for the index; None keeps it in memory (rebuilt on
                every start, which costs milliseconds for a few dozen runbooks).
        """
        if db_path is not None:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            ":memory:" if db_path is None else str(db_path), check_same_thread=False
        )
        try:
            kb = cls(Path(directory), Database(conn))
            kb._ensure_schema()
            kb.refresh()
        except BaseException:
            conn.close()
            raise
        return kb

    def _ensure_schema(self) -> None:
        with self._lock, self._db.conn:
            if not self._table.exists():
                self._table.create(
                    {"id": int, "file": str, "heading": str, "text": str, "hash": str},
                    pk="id",
                )
                self._table.create_index(["file"])
            # replace=True is a no-op when the FTS table and its triggers already match,
            # and rebuilds them when an older index was made differently.
            self._table.enable_fts(
                ["heading", "text"], tokenize="porter", create_triggers=True, replace=True
            )
            # FTS5's persistent rank setting: the default ``rank`` column (which
            # sqlite-utils orders by) becomes bm25 with the heading weighted.
            self._db.execute(
                f"INSERT INTO [{_TABLE}_fts]([{_TABLE}_fts], rank) VALUES ('rank', ?)",
                [f"bm25({HEADING_WEIGHT}, {TEXT_WEIGHT})"],
            )

    @property
    def passages(self) -> int:
        """How many passages are indexed."""
        with self._lock:
            return int(self._table.count)

    def refresh(self) -> int:
        """Mirror the directory into the index: re-index added and edited files, drop
        removed ones, leave unchanged ones alone (compared by content hash).

        Returns:
            Passages written by this call; 0 when nothing changed.
        """
        with self._lock:
            files = self._read_directory()
            indexed: dict[str, str] = dict(
                self._db.execute(f"SELECT file, hash FROM [{_TABLE}] GROUP BY file").fetchall()
            )
            written = 0
            changed: list[str] = []
            with self._db.conn:
                for name in sorted(indexed.keys() - files.keys()):
                    self._table.delete_where("file = ?", [name])
                    changed.append(name)
                for name, data in files.items():
                    digest = hashlib.sha256(data).hexdigest()
                    if indexed.get(name) == digest:
                        continue
                    if name in indexed:
                        self._table.delete_where("file = ?", [name])
                    rows = self._rows(name, data, digest)
                    if rows:
                        self._table.insert_all(rows)
                    written += len(rows)
                    if rows or name in indexed:
                        changed.append(name)
            if changed:
                log.info(
                    "knowledge_indexed",
                    directory=str(self.directory),
                    files=changed,
                    passages_written=written,
                    passages=int(self._table.count),
                )
            return written

    def _read_directory(self) -> dict[str, bytes]:
        if not self.directory.is_dir():
            if not self._directory_missing:
                log.warning(
                    "knowledge_directory_missing",
                    directory=str(self.directory),
                    fix="create it and put the runbooks (*.md) there, or fix the path",
                )
                self._directory_missing = True
            return {}
        self._directory_missing = False
        files: dict[str, bytes] = {}
        for path in sorted(self.directory.glob("*.md")):
            try:
                if path.is_file():
                    files[path.name] = path.read_bytes()
            except OSError as err:
                self._skip(path.name, f"error:{err}", f"cannot read: {err}")
        return files

    def _rows(self, name: str, data: bytes, digest: str) -> list[dict[str, str]]:
        try:
            markdown = data.decode("utf-8")
        except UnicodeDecodeError as err:
            self._skip(name, digest, f"not UTF-8: {err}")
            return []
        self._skipped.pop(name, None)
        return [
            {"file": name, "heading": heading, "text": text, "hash": digest}
            for heading, text in split_passages(markdown, Path(name).stem.replace("_", " "))
        ]

    def _skip(self, name: str, key: str, reason: str) -> None:
        if self._skipped.get(name) != key:
            log.warning(
                "knowledge_file_skipped",
                file=str(self.directory / name),
                reason=reason,
            )
            self._skipped[name] = key

    def search(self, text: str, limit: int = 3) -> list[Passage]:
        """The passages most relevant to ``text``, best first.

        Takes any text (an alert message, a diagnosis, strings from the plant) and never
        raises on its content: no searchable word gives ``[]``, and a database error is
        logged and also gives ``[]``, since runbooks help a diagnosis but must not
        block one.
        """
        query = match_query(text)
        if query is None or limit <= 0:
            return []
        with self._lock:
            try:
                rows = list(
                    self._table.search(
                        query, columns=["file", "heading", "text"], limit=limit, include_rank=True
                    )
                )
            except sqlite3.Error as err:
                log.warning("knowledge_search_failed", error=str(err), query=query)
                return []
        return [
            Passage(
                source=str(row["file"]),
                heading=str(row["heading"]),
                text=str(row["text"]),
                score=-float(row["rank"]),
            )
            for row in rows
        ]

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
