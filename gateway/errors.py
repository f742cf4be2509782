"""One error family for the gateway, so callers can tell failure kinds apart without
string matching and the reason survives to the log and the audit trail."""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration cannot be used; ``problems`` lists every reason, one per line.

    A config is refused whole: a half-loaded config could leave an interlock out.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class SourceError(GatewayError):
    """A PLC source could not be read (connection, timeout, protocol error)."""


class WriteError(GatewayError):
    """A write to a PLC was refused, failed, or could not be verified."""


class StoreError(GatewayError):
    """The historian or audit trail could not be read or written."""
