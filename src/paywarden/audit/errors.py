"""The audit log's exceptions. One narrow tree, so callers catch exactly what
they can act on::

    AuditError                 anything the audit package raises on purpose
    ├── AuditWriteError        an entry was not durably recorded: fail the action it records
    │   └── AuditEntryError    the entry itself was refused (not JSON-native, looks like a PAN)
    └── AuditKeyError          a signing key or sealed secret cannot be used (wrong key, tampered)

No message ever repeats a refused value: the value may be the very card number
or secret the refusal protects.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base of every error the audit package raises deliberately."""


class AuditWriteError(AuditError):
    """The entry is not known to be durably committed.

    The caller must fail the action it was recording ("no unaudited card
    access"). After a timeout the entry may still commit later: over-recording
    an attempt is acceptable, an unrecorded action is not.
    """


class AuditEntryError(AuditWriteError, ValueError):
    """The entry was refused before it reached the store (never retried)."""


class AuditKeyError(AuditError):
    """A sealed signing key or secret could not be opened or is missing."""
