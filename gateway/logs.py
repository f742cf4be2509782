"""One logging pipeline for the gateway and everything it loads.

Logs are for operating the box; the audit trail (``gateway.store.audit``) is the record of
decisions. A field engineer reads logs on a terminal, a remote admin reads them from
journald or a log shipper, so the same events render two ways:

* not a TTY (systemd/journald, pipes, files): one JSON object per line;
* a TTY: structlog's readable ``ConsoleRenderer``.

Every line carries ``timestamp`` (ISO 8601, UTC), ``level``, ``logger`` and ``event``, plus
whatever is bound with ``structlog.contextvars.bound_contextvars``. Bind ``cycle_id``,
``source`` and ``proposal_id`` around a unit of work and every line inside it, including
lines from asyncua and pymodbus, can be correlated::

    with structlog.contextvars.bound_contextvars(cycle_id=cycle, proposal_id=prop.id):
        log.info("proposal_gated", verdict="escalate", reasons=reasons)

Standard-library logging (asyncua, pymodbus, anything else) is routed through
``structlog.stdlib.ProcessorFormatter`` into the same renderer, so there is one format and
one stream. asyncua and pymodbus log every request at INFO; they are held at WARNING
unless the level is ``debug``.

Event naming convention:

* the event is a short ``snake_case`` name for what happened, subject first, past tense
  or state: ``source_connected``, ``source_read_failed``, ``source_recovered``,
  ``proposal_rejected``, ``write_verified``, ``twin_fidelity_low``. It is a stable key to
  search and alert on, never a sentence with values interpolated into it;
* values go in key-value pairs (``snake_case`` keys, units in the key when not obvious:
  ``delay_s``, ``temp_c``);
* log transitions, not every poll (a source that fails logs once, and once on recovery);
* never log credentials or whole config secrets.
"""

from __future__ import annotations

import logging
import sys
from typing import Final, TextIO

import structlog
from structlog.typing import Processor

__all__ = ["CHATTY_LOGGERS", "configure_logging", "get_logger"]

_LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

#: Third-party loggers that are held at WARNING unless the level is ``debug``.
CHATTY_LOGGERS: Final = ("asyncua", "pymodbus")


class _GatewayHandler(logging.StreamHandler[TextIO]):
    """The one root handler this module installs; found and replaced on reconfiguration."""


def configure_logging(
    *, level: str = "info", json: bool | None = None, stream: TextIO | None = None
) -> None:
    """Configure structlog and the standard library to write one stream of events.

    Safe to call again (the CLI calls it per command, tests call it with their own stream):
    each call replaces the previous configuration and its handler, so lines are never
    duplicated. Handlers installed by others (pytest's log capture) are left alone.

    Args:
        level: ``debug``, ``info``, ``warning``, ``error`` or ``critical`` (any case).
        json: True for JSON lines, False for the console renderer, None to choose by
            whether ``stream`` is a TTY.
        stream: where lines go; ``sys.stdout`` (journald under systemd) if None.

    Raises:
        ValueError: unknown level.
    """
    level_no = _LEVELS.get(level.lower())
    if level_no is None:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(_LEVELS)}")
    out = sys.stdout if stream is None else stream
    tty = _isatty(out)
    use_json = not tty if json is None else json

    # Run for every line, from structlog or from the standard library.
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer()
        final: list[Processor] = [structlog.processors.format_exc_info, renderer]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=tty)
        final = [renderer]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )

    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _GatewayHandler):
            root.removeHandler(handler)
    handler = _GatewayHandler(out)
    handler.setFormatter(formatter)
    handler.setLevel(level_no)
    root.addHandler(handler)
    root.setLevel(level_no)
    # A logger's own level decides whether a record is created at all; the root level does
    # not filter records propagated from below, hence max() rather than a plain WARNING.
    chatty_level = logging.NOTSET if level_no <= logging.DEBUG else max(logging.WARNING, level_no)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(chatty_level)

    structlog.configure(
        processors=[
            shared[0],  # merge_contextvars first: bound context reaches every processor
            structlog.stdlib.filter_by_level,
            *shared[1:],
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.UnicodeDecoder(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: module-level loggers then follow a later configure_logging() call
        # and structlog.testing.capture_logs(). The cost is a dict lookup per line, and we
        # log transitions, not every poll.
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named ``name`` (use the module's ``__name__``).

    Safe to call at import time, before ``configure_logging``: the logger is resolved
    against the configuration in force when it logs.
    """
    return structlog.stdlib.get_logger(name)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty(), or a closed stream
        return False
