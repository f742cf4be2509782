"""Everything the gateway keeps on the box: signal history and the audit trail.

Two ports (``ports.Historian``, ``ports.AuditTrail``) with one SQLite adapter each, in two
separate files: the historian trades the last batch on power loss for cheap commits, the
audit trail commits every decision durably and hash-chains it (safety invariant 8). Code
that only needs the record types or the ports can import ``gateway.store.ports``; importing
this package also loads the SQLite adapters (and ``sqlite_utils``).
"""

from gateway.store.audit import SqliteAuditTrail, verify_audit_file
from gateway.store.historian import SqliteHistorian
from gateway.store.ports import (
    QUALITIES,
    AuditRecord,
    AuditTrail,
    AuditVerifyReport,
    Historian,
    Sample,
)

__all__ = [
    "QUALITIES",
    "AuditRecord",
    "AuditTrail",
    "AuditVerifyReport",
    "Historian",
    "Sample",
    "SqliteAuditTrail",
    "SqliteHistorian",
    "verify_audit_file",
]
