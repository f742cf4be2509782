"""Logging: one pipeline for structlog and the standard library, JSON lines off a TTY,
correlated by bound context, and readable in tests with capture_logs."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog
from structlog.contextvars import bound_contextvars
from structlog.testing import capture_logs

from gateway.logs import CHATTY_LOGGERS, configure_logging, get_logger

# Created at import time, before any configure_logging(): must still follow it.
MODULE_LOG = get_logger("gateway.tests.module_level")


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """Leave the root logger, the chatty loggers and structlog as each test found them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    config = structlog.get_config()
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, lvl in chatty.items():
        logging.getLogger(name).setLevel(lvl)
    structlog.configure(**config)
    structlog.contextvars.clear_contextvars()


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_off_a_tty_carry_event_level_timestamp_and_context() -> None:
    """On a non-TTY stream each line is one JSON object with event, level, logger, an ISO
    UTC timestamp and the bound contextvars; context ends with its block."""
    buf = io.StringIO()
    configure_logging(stream=buf)
    log = get_logger("gateway.io.opcua")
    with bound_contextvars(cycle_id=7, source="plc1", proposal_id="p-1"):
        log.info("source_connected", endpoint="opc.tcp://127.0.0.1:4840")
    log.info("source_recovered")
    first, second = lines(buf)
    assert first["event"] == "source_connected"
    assert first["level"] == "info"
    assert first["logger"] == "gateway.io.opcua"
    assert first["endpoint"] == "opc.tcp://127.0.0.1:4840"
    assert (first["cycle_id"], first["source"], first["proposal_id"]) == (7, "plc1", "p-1")
    stamp = datetime.fromisoformat(first["timestamp"])
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert "cycle_id" not in second


def test_stdlib_asyncua_warning_goes_through_the_same_pipeline() -> None:
    """A warning from the stdlib logger "asyncua.client" comes out as the same JSON,
    with its message formatted, its logger name, and the bound context."""
    buf = io.StringIO()
    configure_logging(stream=buf)
    with bound_contextvars(source="plc1"):
        logging.getLogger("asyncua.client").warning("connection lost to %s", "opc.tcp://x")
    (line,) = lines(buf)
    assert line["event"] == "connection lost to opc.tcp://x"
    assert line["level"] == "warning"
    assert line["logger"] == "asyncua.client"
    assert line["source"] == "plc1"
    assert "timestamp" in line


@pytest.mark.parametrize("name", ["asyncua.client.ua_client", "pymodbus.logging"])
def test_chatty_libraries_are_held_at_warning_unless_debug(name: str) -> None:
    """asyncua/pymodbus INFO chatter is dropped at level info and shown at level debug."""
    buf = io.StringIO()
    configure_logging(level="info", stream=buf)
    logging.getLogger(name).info("request sent")
    assert buf.getvalue() == ""
    configure_logging(level="debug", stream=buf)
    logging.getLogger(name).info("request sent")
    assert [line["event"] for line in lines(buf)] == ["request sent"]


def test_level_filters_structlog_and_stdlib_alike() -> None:
    """At level error, info and warning lines are dropped from our loggers, other stdlib
    loggers and the chatty libraries alike."""
    buf = io.StringIO()
    configure_logging(level="ERROR", stream=buf)
    get_logger("gateway.x").warning("twin_fidelity_low")
    logging.getLogger("other").info("noise")
    logging.getLogger("asyncua").warning("still noise")
    get_logger("gateway.x").error("store_failed")
    assert [line["event"] for line in lines(buf)] == ["store_failed"]


def test_tty_gets_the_console_renderer() -> None:
    """On a TTY the output is the human-readable console format, not JSON."""
    tty = FakeTty()
    configure_logging(stream=tty)
    get_logger("gateway.x").info("source_connected", source="plc1")
    out = tty.getvalue()
    assert "source_connected" in out
    assert "plc1" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])


def test_json_flag_overrides_detection() -> None:
    """json=True forces JSON on a TTY; json=False forces the console format (without
    colour codes) on a pipe."""
    tty = FakeTty()
    configure_logging(json=True, stream=tty)
    get_logger("gateway.x").info("forced_json")
    assert lines(tty)[0]["event"] == "forced_json"
    pipe = io.StringIO()
    configure_logging(json=False, stream=pipe)
    get_logger("gateway.x").info("forced_console")
    assert "forced_console" in pipe.getvalue()
    assert "\x1b[" not in pipe.getvalue()


def test_repeated_configuration_replaces_instead_of_duplicating() -> None:
    """Calling configure_logging again installs one handler, so each event is written once,
    to the stream of the latest call."""
    old, new = io.StringIO(), io.StringIO()
    configure_logging(stream=old)
    configure_logging(stream=new)
    configure_logging(stream=new)
    get_logger("gateway.x").info("once")
    logging.getLogger("plain").warning("also once")
    assert old.getvalue() == ""
    assert [line["event"] for line in lines(new)] == ["once", "also once"]


def test_logger_created_before_configuration_follows_it() -> None:
    """A module-level logger made at import time uses the configuration in force when it
    logs."""
    buf = io.StringIO()
    configure_logging(stream=buf)
    MODULE_LOG.info("module_event")
    assert lines(buf)[0]["logger"] == "gateway.tests.module_level"


def test_exceptions_are_rendered_into_the_json_line() -> None:
    """log.exception puts the traceback into the same JSON line."""
    buf = io.StringIO()
    configure_logging(stream=buf)
    try:
        raise RuntimeError("driver exploded")
    except RuntimeError:
        get_logger("gateway.x").exception("source_read_failed")
    (line,) = lines(buf)
    assert line["level"] == "error"
    assert "RuntimeError: driver exploded" in line["exception"]


def test_capture_logs_sees_events_from_configured_loggers() -> None:
    """structlog.testing.capture_logs captures events with their keys and level, from
    loggers made before and after configuration, and nothing reaches the stream."""
    buf = io.StringIO()
    configure_logging(stream=buf)
    log = get_logger("gateway.govern")
    log.info("before_capture")
    with capture_logs() as captured:
        log.info("proposal_rejected", reasons=["interlock:tank_high"])
        MODULE_LOG.warning("twin_fidelity_low", fidelity=0.4)
    assert captured == [
        {"event": "proposal_rejected", "reasons": ["interlock:tank_high"], "log_level": "info"},
        {"event": "twin_fidelity_low", "fidelity": 0.4, "log_level": "warning"},
    ]
    log.info("after_capture")
    assert [line["event"] for line in lines(buf)] == ["before_capture", "after_capture"]


def test_unknown_level_is_refused() -> None:
    """A misspelt level is an error naming the valid ones, not a silent default."""
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        configure_logging(level="verbose", stream=io.StringIO())
