"""Knowledge base: runbooks split at headings, indexed in SQLite FTS5, searched safely."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from gateway.agent.knowledge import (
    MAX_PASSAGE_CHARS,
    MAX_QUERY_TERMS,
    KnowledgeBase,
    Passage,
    match_query,
    split_passages,
)
from gateway.detect.signatures import RULES

RUNBOOKS = Path(__file__).resolve().parents[2] / "config" / "knowledge"

RUNBOOK_OF_FAULT = {
    "bearing_degradation": "bearing_degradation.md",
    "impeller_wear": "impeller_wear.md",
    "valve_stiction": "valve_stiction.md",
    "level_sensor_drift": "level_sensor_drift.md",
    "leak": "leak.md",
    "heater_degradation": "heater_degradation.md",
}
"""The plant's simulated faults that the detector names, and the runbook for each."""

SECTIONS = ("Symptoms", "Likely causes", "What the gateway can do", "Needs a human", "Do not")


@pytest.fixture(scope="module")
def shipped() -> Iterator[KnowledgeBase]:
    """The shipped runbooks, indexed in memory once for the module."""
    with KnowledgeBase.open(RUNBOOKS) as kb:
        yield kb


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def runbook(title: str, *sections: tuple[str, str]) -> str:
    body = "".join(f"\n## {heading}\n{text}\n" for heading, text in sections)
    return f"# {title}\n{body}"


def max_id(kb: KnowledgeBase) -> int:
    # Test-only peek: row ids show whether a refresh rewrote rows or left them alone.
    row = kb._db.execute("SELECT coalesce(max(id), 0) FROM passages").fetchone()
    return int(row[0])


# ---------------------------------------------------------------------- shipped runbooks


def test_shipped_runbooks_index_with_every_section(shipped: KnowledgeBase) -> None:
    """Every shipped runbook is indexed, has the five sections an engineer looks for, and
    no passage exceeds the length cap."""
    files = sorted(p.name for p in RUNBOOKS.glob("*.md"))
    assert 8 <= len(files) <= 10
    rows = list(shipped._db.execute("SELECT file, heading, text FROM passages"))
    assert shipped.passages == len(rows) > 0
    assert sorted({r[0] for r in rows}) == files
    for name in files:
        headings = {r[1].split(" / ")[-1] for r in rows if r[0] == name}
        assert set(SECTIONS) <= headings, name
    assert all(len(r[2]) <= MAX_PASSAGE_CHARS for r in rows)


def test_every_detector_fault_has_a_runbook() -> None:
    """Each fault the plant simulates and the detector can name has its runbook, so a
    diagnosis never falls back to generic text for a known fault."""
    named = {rule.fault for rule in RULES} - {"sensor_freeze", "pump_mechanical"}
    assert named == set(RUNBOOK_OF_FAULT)
    assert all((RUNBOOKS / f).is_file() for f in RUNBOOK_OF_FAULT.values())


def alert_text(fault: str) -> str:
    """The text the agent gets for an alert: the alert line and the signature evidence,
    as gateway.detect.alerts and gateway.detect.signatures write them."""
    rule = next(r for r in RULES if r.fault == fault)
    evidence = [
        f"{ev.feature} z={9.0 * ev.direction:+.1f}: {ev.meaning}"
        for ev in (*rule.primary, *rule.supporting)
    ]
    return f"anomaly raised: likely {fault} (72% of the score); score 6.3x threshold\n" + (
        "\n".join(evidence)
    )


@pytest.mark.parametrize("fault", sorted(RUNBOOK_OF_FAULT))
def test_alert_for_a_fault_finds_its_runbook_first(shipped: KnowledgeBase, fault: str) -> None:
    """An alert built as the detector writes it returns that fault's runbook first."""
    found = shipped.search(alert_text(fault))
    assert found, fault
    assert found[0].source == RUNBOOK_OF_FAULT[fault]


@pytest.mark.parametrize(
    ("query", "source"),
    [
        (
            "bearing_temp rising vibration_rms high bearing degradation",
            "bearing_degradation.md",
        ),
        ("discharge_pressure below pump curve, pump needs more speed", "impeller_wear.md"),
        ("valve_position sticks against valve_cmd steps, stick-slip", "valve_stiction.md"),
        ("level transmitter drift: pump_flow below outlet_flow", "level_sensor_drift.md"),
        ("unmetered loss, pump_flow above outlet_flow, leak", "leak.md"),
        (
            "heater_power at 60 kW, tank_temp below temp_sp, heater degradation",
            "heater_degradation.md",
        ),
        (
            "forecast: tank_level reaches 2.6 m in 3 min (30/32 members), overflow",
            "high_tank_level.md",
        ),
        ("forecast: tank_temp reaches 83 degC in 4 min (32/32 members)", "high_temperature.md"),
        ("trip_word = 4: pump tripped on bearing temperature", "plc_trip.md"),
        ("remote_mode 0: heartbeat stale, writes refused 'local mode'", "remote_mode_heartbeat.md"),
    ],
)
def test_symptom_text_finds_the_right_runbook(
    shipped: KnowledgeBase, query: str, source: str
) -> None:
    """Free-text symptoms in the config's signal names find the runbook that covers them."""
    found = shipped.search(query)
    assert found[0].source == source


def test_results_are_ranked_capped_and_titled(shipped: KnowledgeBase) -> None:
    """Results come best first, at most ``limit`` of them, each heading carrying its
    runbook's title so the prompt shows where a passage comes from."""
    found = shipped.search("leak unmetered loss pump_flow", limit=5)
    assert 0 < len(found) <= 5
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    assert all(
        isinstance(p, Passage) and p.heading.startswith("Tank or piping leak")
        for p in found
        if p.source == "leak.md"
    )
    assert shipped.search("leak", limit=0) == []


# ---------------------------------------------------------------------- hostile queries


@pytest.mark.parametrize(
    "query",
    [
        'AND OR NOT "(*',
        "NEAR(",
        'NEAR("bearing" "temp", 2)',
        "bearing* OR ^heater AND NOT leak",
        "heading: leak",
        "{heading text}: valve",
        '"unbalanced quote',
        "- + * ( ) : ^ \" ' ; --",
        "Lagertemperatur steigt; température élevée; 轴承温度过高 🔥",
        "\x00bearing\x00",
        "\ud800 lone surrogate bearing",
        "_".join(["bearing"] * 500),
        "x" * 10_000,
        "".join(chr(c) for c in range(32, 127)) * 120,
        "",
        "   \n\t",
    ],
)
def test_fts_syntax_in_queries_never_raises(shipped: KnowledgeBase, query: str) -> None:
    """Text full of FTS5 operators, quotes, control characters or junk is searched as
    words (or not at all) without an error and without a logged failure."""
    with capture_logs() as logs:
        found = shipped.search(query)
    assert len(found) <= 3
    assert not [e for e in logs if e["event"] == "knowledge_search_failed"]


FTS_BITS = st.sampled_from(
    [
        '"',
        "(",
        ")",
        "*",
        "^",
        ":",
        "+",
        "-",
        "AND",
        "OR",
        "NOT",
        "NEAR",
        "NEAR(",
        ",",
        "{",
        "}",
        " ",
        "bearing",
        "leak",
        "_",
        "\x00",
        "é",
        "温",
    ]
)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.lists(st.one_of(FTS_BITS, st.text(max_size=5))).map("".join)))
def test_any_text_is_a_safe_query(shipped: KnowledgeBase, text: str) -> None:
    """For arbitrary text, search returns at most ``limit`` passages and never raises
    or hits a database error."""
    with capture_logs() as logs:
        found = shipped.search(text, limit=2)
    assert len(found) <= 2
    assert not [e for e in logs if e["event"] == "knowledge_search_failed"]


def test_match_query_quotes_words_drops_noise_and_caps_terms() -> None:
    """Queries are quoted word terms ORed together: operators lose their meaning, stop
    words, short tokens and numbers are dropped, repeats are dropped, the count is capped."""
    assert match_query('bearing_temp "rising" AND vibration* NOT 85 degC') == (
        '"bearing" OR "temp" OR "rising" OR "vibration" OR "degc"'
    )
    assert match_query("the and of it is 42 OR NOT (") is None
    many = " ".join(f"word{i}" for i in range(100))
    query = match_query(many)
    assert query is not None
    assert query.count(" OR ") == MAX_QUERY_TERMS - 1


# ---------------------------------------------------------------------- splitting


def test_split_prefixes_title_respects_fences_and_caps_length() -> None:
    """Sections split at ``##`` only (not ``###``, not inside code fences), carry the
    file's title, and a long section becomes several capped passages losing no word."""
    long_words = " ".join(f"w{i}" for i in range(900))
    text = (
        "# Pump runbook\n\nIntro line.\n\n## Symptoms\nHot.\n### Detail\nStill symptoms.\n"
        "```\n## not a heading\n```\n\n## Long\n" + long_words + "\n"
    )
    passages = split_passages(text, "fallback")
    headings = [h for h, _ in passages]
    assert headings[:2] == ["Pump runbook", "Pump runbook / Symptoms"]
    assert "## not a heading" in passages[1][1]
    assert "### Detail" in passages[1][1]
    long_parts = [t for h, t in passages if h.startswith("Pump runbook / Long")]
    assert len(long_parts) > 1
    assert all(len(t) <= MAX_PASSAGE_CHARS for _, t in passages)
    assert " ".join(long_parts).split() == long_words.split()
    assert split_passages("## Only\nbody", "leak")[0][0] == "leak / Only"


# ---------------------------------------------------------------------- refresh and files


def test_refresh_follows_edits_additions_and_removals(tmp_path: Path) -> None:
    """refresh re-indexes an edited file, indexes an added one, drops a removed one, and
    rewrites nothing when no file changed."""
    docs = tmp_path / "kb"
    docs.mkdir()
    write(docs, "pump.md", runbook("Pump", ("Symptoms", "cavitation noise"), ("Do not", "x")))
    write(docs, "tank.md", runbook("Tank", ("Symptoms", "overflow at the top")))
    with KnowledgeBase.open(docs) as kb:
        assert kb.passages == 3
        before = max_id(kb)
        assert kb.refresh() == 0
        assert max_id(kb) == before
        assert [p.source for p in kb.search("cavitation")] == ["pump.md"]

        write(docs, "pump.md", runbook("Pump", ("Symptoms", "impeller erosion")))
        assert kb.refresh() == 1
        assert kb.search("cavitation") == []
        assert [p.source for p in kb.search("erosion")] == ["pump.md"]
        assert kb.passages == 2

        write(docs, "valve.md", runbook("Valve", ("Symptoms", "stiction"), ("Fix", "stroke test")))
        assert kb.refresh() == 2
        assert [p.source for p in kb.search("stiction")] == ["valve.md"]

        (docs / "tank.md").unlink()
        assert kb.refresh() == 0
        assert kb.search("overflow") == []
        assert kb.passages == 3
        assert kb.refresh() == 0


def test_index_on_disk_survives_reopen(tmp_path: Path) -> None:
    """An on-disk index is reused after reopening: nothing is re-indexed and searches
    work at once."""
    docs = tmp_path / "kb"
    docs.mkdir()
    write(docs, "leak.md", runbook("Leak", ("Symptoms", "unmetered loss near the bottom")))
    db_path = tmp_path / "state" / "knowledge.db"
    with KnowledgeBase.open(docs, db_path) as kb:
        assert kb.passages == 1
        ids = max_id(kb)
    assert db_path.is_file()
    with capture_logs() as logs, KnowledgeBase.open(docs, db_path) as kb:
        assert kb.refresh() == 0
        assert kb.passages == 1
        assert max_id(kb) == ids
        assert [p.source for p in kb.search("unmetered")] == ["leak.md"]
    assert not [e for e in logs if e["event"] == "knowledge_indexed"]


def test_non_utf8_file_is_skipped_with_one_warning(tmp_path: Path) -> None:
    """A runbook that is not UTF-8 is skipped with a warning naming it (once, not on every
    refresh); the other runbooks are indexed, and the file is indexed once fixed."""
    docs = tmp_path / "kb"
    docs.mkdir()
    write(docs, "good.md", runbook("Good", ("Symptoms", "bearing noise")))
    bad = docs / "bad.md"
    bad.write_bytes(b"# Bad\n\n## Symptoms\nTemperatur \xfcber 80 \xb0C\n")
    with capture_logs() as logs, KnowledgeBase.open(docs) as kb:
        kb.refresh()
        skipped = [e for e in logs if e["event"] == "knowledge_file_skipped"]
        assert len(skipped) == 1
        assert skipped[0]["log_level"] == "warning"
        assert skipped[0]["file"] == str(bad)
        assert {p.source for p in kb.search("bearing Temperatur")} == {"good.md"}

        bad.write_text("# Bad\n\n## Symptoms\nTemperatur über 80 °C\n", encoding="utf-8")
        assert kb.refresh() == 1
        assert [p.source for p in kb.search("Temperatur")] == ["bad.md"]


def test_file_turning_unreadable_drops_its_stale_passages(tmp_path: Path) -> None:
    """A runbook that was indexed and is now not UTF-8 loses its old passages: stale
    advice is worse than none."""
    docs = tmp_path / "kb"
    docs.mkdir()
    path = write(docs, "heater.md", runbook("Heater", ("Symptoms", "scale on sheath")))
    with KnowledgeBase.open(docs) as kb:
        assert kb.passages == 1
        path.write_bytes(b"\xff\xfe garbage")
        with capture_logs() as logs:
            assert kb.refresh() == 0
        assert kb.passages == 0
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == [
            "knowledge_file_skipped"
        ]


def test_missing_directory_gives_an_empty_base_and_a_warning(tmp_path: Path) -> None:
    """A missing runbook directory is not an error: the base is empty, searches return
    nothing, and one warning names the directory."""
    missing = tmp_path / "nowhere"
    with capture_logs() as logs, KnowledgeBase.open(missing) as kb:
        assert kb.passages == 0
        assert kb.search("bearing degradation") == []
        assert kb.refresh() == 0
    warnings = [e for e in logs if e["event"] == "knowledge_directory_missing"]
    assert len(warnings) == 1
    assert warnings[0]["directory"] == str(missing)


def test_only_markdown_files_are_indexed(tmp_path: Path) -> None:
    """Editor backups and other files next to the runbooks are not indexed."""
    docs = tmp_path / "kb"
    docs.mkdir()
    write(docs, "leak.md", runbook("Leak", ("Symptoms", "wet floor")))
    write(docs, "leak.md~", runbook("Old", ("Symptoms", "wet floor")))
    write(docs, "notes.txt", "wet floor")
    with KnowledgeBase.open(docs) as kb:
        assert {p.source for p in kb.search("wet floor", limit=10)} == {"leak.md"}


def test_close_closes_the_database(tmp_path: Path) -> None:
    """Leaving the context closes the connection."""
    with KnowledgeBase.open(tmp_path) as kb:
        pass
    with pytest.raises(sqlite3.ProgrammingError):
        kb._db.execute("SELECT 1")


def test_passage_text_keeps_runbook_words(shipped: KnowledgeBase) -> None:
    """Passages keep the runbook's numbers (limits, thresholds) the agent must quote."""
    found = shipped.search("bearing degradation what the gateway can do valve_cmd", limit=3)
    text = " ".join(p.text for p in found)
    assert re.search(r"10.90 %", text)
