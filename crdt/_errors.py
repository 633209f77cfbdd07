"""Exceptions raised by the replication core.

    CrdtError
    ├── AuditProofError             an audit log, chain, checkpoint or proof does not verify
    ├── RecordValidationError       a record does not satisfy its schema
    ├── DocumentError               bytes are not a record document, or the wrong one
    │   └── DocumentTooCostlyError  over the size, change or operation limits
    ├── MergeRejectedError          merging would leave the document invalid; nothing changed
    ├── NoConflictError             asked to resolve a field that has no conflict
    └── SyncProtocolError           a sync message cannot be used
        ├── MalformedMessageError   truncated, corrupted or not a sync message at all
        ├── MessageTooLargeError    over the size cap, on encode or on decode
        └── UnsupportedVersionError written by a newer (or unknown) wire version

Automerge's own errors are translated at this boundary: callers never see a bare
``Exception`` from the binding.
"""

from __future__ import annotations

__all__ = [
    "AuditProofError",
    "CrdtError",
    "DocumentError",
    "DocumentTooCostlyError",
    "MalformedMessageError",
    "MergeRejectedError",
    "MessageTooLargeError",
    "NoConflictError",
    "RecordValidationError",
    "SyncProtocolError",
    "UnsupportedVersionError",
]


class CrdtError(Exception):
    """Base class of every error raised by `crdt`."""


class AuditProofError(CrdtError):
    """An audit log, a device's chain, a checkpoint or a proof does not verify (the
    message says what and where)."""


class RecordValidationError(CrdtError):
    """A record does not satisfy its schema.

    Attributes:
        collection: The record's collection.
        errors: One short line per failing field.
    """

    def __init__(self, collection: str, errors: list[str]) -> None:
        self.collection = collection
        self.errors = errors
        super().__init__(f"invalid {collection} record: " + "; ".join(errors))


class DocumentError(CrdtError):
    """The bytes are not a record document, or belong to another record or collection."""


class DocumentTooCostlyError(DocumentError):
    """A received document is over the limits of what one document may cost
    (`DocumentLimits`): too many bytes, changes or operations."""


class MergeRejectedError(CrdtError):
    """Merging would leave the document invalid; the stored document is unchanged."""

    def __init__(self, doc_id: str, reason: str) -> None:
        self.doc_id = doc_id
        self.reason = reason
        super().__init__(f"merge of {doc_id} refused: {reason}")


class NoConflictError(CrdtError):
    """The field named has no concurrent values to resolve."""


class SyncProtocolError(CrdtError):
    """A sync message cannot be used."""


class MalformedMessageError(SyncProtocolError):
    """The message is truncated, corrupted, or not a Coherency sync message."""


class MessageTooLargeError(SyncProtocolError):
    """The message (or one document in it) is over the size cap."""


class UnsupportedVersionError(SyncProtocolError):
    """The message was written by a wire-format version this code does not read."""
