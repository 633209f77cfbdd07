"""Exceptions raised by the device SDK.

    EdgeError
    ├── StoreError                  the encrypted store cannot be used
    │   ├── StoreNotFoundError      no store at the given path
    │   ├── StoreExistsError        `init` on a path that already holds a store
    │   ├── WrongKeyError           the key provider's key does not unwrap the data key
    │   ├── StoreCorruptError       the database file is damaged or truncated
    │   ├── StoreLockedError        another process holds the store's write lock too long
    │   └── StoreClosedError        the client was closed and then used
    ├── KeyProviderError            a key provider is misconfigured or unavailable
    ├── RecordNotFoundError         no record with that id (or it is in another collection)
    ├── ReadOnlyCollectionError     a device tried to write a server-owned collection
    ├── BlobError
    │   ├── BlobNotFoundError       no blob with that hash
    │   │   └── BlobMissingError    the server recorded it but its storage lost it; a
    │   │                           device that holds it uploads it again
    │   └── BlobCorruptError        a blob failed authentication or its hash check
    ├── ModelError                  a wound model cannot be read, loaded or run
    │   ├── ModelVerificationError  sha256, size or the server's signature does not check out
    │   └── ModelUnavailableError   onnxruntime missing, or no model installed
    ├── BundleError
    │   ├── BundleFormatError       not a bundle, truncated, or an unsupported version
    │   ├── BundleSignatureError    the signature does not verify or the signer is not trusted
    │   └── BundleDecryptError      the bundle passphrase is wrong
    ├── RecordValidationError       a record does not satisfy its schema  (+ crdt's)
    ├── NoConflictError             resolving a field that has no conflict  (+ crdt's)
    ├── MergeRejectedError          a merge would leave a record invalid  (+ crdt's)
    ├── DocumentError               bytes are not a record document  (+ crdt's)
    │   └── DocumentTooCostlyError  over the size, change or operation limits
    ├── AuditProofError             an audit log or proof does not verify  (+ crdt's)
    ├── RecordFromNewerAppError     the record was written by a newer app version:
    │                               kept and synced on, readable after an app update
    ├── InvalidArgumentError        an argument the SDK refuses (an unknown filter,
    │                               collection or state)  (+ ValueError)
    └── SyncError                   syncing with a server failed
        ├── ServerUnreachableError  no answer (or only failures) within the retry budget
        ├── NotEnrolledError        the store was never enrolled with a server
        ├── EnrolmentError          the server refused the enrolment
        ├── InsecureServerError     plain http:// to a host other than this machine, and
        │                           the app did not opt in (allow_insecure_http)
        ├── ServerAddressError      the server URL cannot work: no or another scheme,
        │                           malformed, or a host that never resolves (.invalid)
        ├── ServerCertificateError  the server's TLS certificate did not verify
        ├── SyncCancelledError      the sync was interrupted (`BackgroundSync.stop`,
        │                           `HttpTransport.interrupt`); nothing is lost
        ├── CursorAheadError        the server's feed is behind the cursor (a restored
        │                           backup); sync handles it by pulling from the start
        ├── PushTooLargeError       the server refused a push as too costly; sync
        │                           handles it by pushing fewer documents at a time
        ├── AuditPushError          the server refused the device's audit chain (a break
        │                           where its copy ends), or its receipt did not verify
        ├── UntrustedEdgeBoxError   an edge box's certificate is not the one central
        │                           pinned for it (a rogue box), or it has no pin
        ├── AuthenticationError     the server refused the device's credentials
        │   └── DeviceRevokedError  the device was revoked
        └── SyncProtocolError       a sync message cannot be used  (+ crdt's)
            ├── MalformedMessageError    truncated, corrupted or not a sync message
            ├── MessageTooLargeError     over the size cap
            └── UnsupportedVersionError  written by a newer (or unknown) wire version

``(+ crdt's)``: the class also inherits the `crdt` error of the same name, so
``except crdt.RecordValidationError`` keeps working. `crdt` knows nothing of the SDK;
its errors are translated where the SDK calls it (`translated_errors`: the access gate
every operation on patient data runs in, and the few entry points outside it), so an
app needs only ``except edge_sdk.EdgeError``. `InvalidArgumentError` is also a
`ValueError`. A `ValueError` or `TypeError` that is not one (a key of the wrong length,
a model manifest built wrong) is a programming error, not a condition to handle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NoReturn

import crdt

__all__ = [
    "AuditProofError",
    "AuditPushError",
    "AuthenticationError",
    "BlobCorruptError",
    "BlobError",
    "BlobMissingError",
    "BlobNotFoundError",
    "BundleDecryptError",
    "BundleError",
    "BundleFormatError",
    "BundleSignatureError",
    "CursorAheadError",
    "DeviceRevokedError",
    "DocumentError",
    "DocumentTooCostlyError",
    "EdgeError",
    "EnrolmentError",
    "InsecureServerError",
    "InvalidArgumentError",
    "KeyProviderError",
    "MalformedMessageError",
    "MergeRejectedError",
    "MessageTooLargeError",
    "ModelError",
    "ModelUnavailableError",
    "ModelVerificationError",
    "NoConflictError",
    "NotEnrolledError",
    "PushTooLargeError",
    "ReadOnlyCollectionError",
    "RecordFromNewerAppError",
    "RecordNotFoundError",
    "RecordValidationError",
    "ServerAddressError",
    "ServerCertificateError",
    "ServerUnreachableError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreExistsError",
    "StoreLockedError",
    "StoreNotFoundError",
    "SyncCancelledError",
    "SyncError",
    "SyncProtocolError",
    "UnsupportedVersionError",
    "UntrustedEdgeBoxError",
    "WrongKeyError",
    "edge_error",
    "translated_errors",
]


class EdgeError(Exception):
    """Base class of every error the SDK raises on purpose."""


class StoreError(EdgeError):
    """The encrypted store cannot be opened or used."""


class StoreNotFoundError(StoreError):
    """No store exists at the given path."""


class StoreExistsError(StoreError):
    """A store already exists at the given path."""


class WrongKeyError(StoreError):
    """The key provider's key does not unwrap the store's data key."""


class StoreCorruptError(StoreError):
    """The database file is damaged, truncated or not a Coherency store."""


class StoreLockedError(StoreError):
    """Another process held the store's write lock for longer than the timeout."""


class StoreClosedError(StoreError):
    """The client (and its store) was closed, then used."""


class KeyProviderError(EdgeError):
    """A key provider is misconfigured or its backing keystore is unavailable."""


class RecordNotFoundError(EdgeError):
    """No record with that id exists in the collection."""


class ReadOnlyCollectionError(EdgeError):
    """The collection is server-owned: devices read it and never write it."""


class BlobError(EdgeError):
    """Base class of blob store errors."""


class BlobNotFoundError(BlobError):
    """No blob with that SHA-256 exists in the store."""


class BlobMissingError(BlobNotFoundError):
    """The server recorded the blob, but its storage lost it (or holds damaged bytes).

    Not a failure of the sync: `SyncResult.blobs_missing` lists it, and a device that
    holds the blob uploads it again at its next sync.
    """


class BlobCorruptError(BlobError):
    """A blob file failed authentication or its SHA-256 check."""


class BundleError(EdgeError):
    """Base class of sync bundle errors."""


class BundleFormatError(BundleError):
    """The file is not a sync bundle, is truncated, or has an unsupported version."""


class BundleSignatureError(BundleError):
    """The bundle's signature does not verify, or its signer is not the trusted one."""


class BundleDecryptError(BundleError):
    """The bundle cannot be decrypted with the given passphrase."""


class SyncError(EdgeError):
    """Syncing with a server failed (after the retries the policy allows)."""


class ServerUnreachableError(SyncError):
    """The server could not be reached, or kept failing, within the retry budget."""


class NotEnrolledError(SyncError):
    """The store has not been enrolled with a server (`coherency device enroll`)."""


class EnrolmentError(SyncError):
    """The server refused the enrolment (bad, used or expired token; clinic mismatch)."""


class PushTooLargeError(SyncError):
    """The server refused a push as too large or too costly to merge at once (413).

    The sync algorithm pushes the batch again in halves; a single document refused so
    is reported in `SyncResult.refused_by_server`.
    """


class InsecureServerError(SyncError):
    """The server URL is plain ``http://`` to a host other than this machine, and the
    app did not opt in with ``allow_insecure_http=True``: tokens,
    keys and records would cross the network unprotected, and the server key pinned at
    enrolment would be whatever answered first."""


class ServerAddressError(SyncError):
    """The server URL cannot work, whatever the network does: no scheme
    (``sync.example.org``), a scheme other than http(s), a malformed URL, or a host that
    never resolves (``.invalid``). Raised at once, never retried."""


class ServerCertificateError(SyncError):
    """The server's TLS certificate did not verify (expired, self-signed, another
    host's). Raised at once, never retried: another try would meet the same
    certificate."""


class SyncCancelledError(SyncError):
    """The sync was interrupted from another thread (`BackgroundSync.stop`, a local
    write waking the loop, `HttpTransport.interrupt`). Nothing is lost: a pull page is
    applied whole or not at all, and a push whose answer was cut goes again next time.
    """


class CursorAheadError(SyncError):
    """The other side's change feed is behind the cursor (it was restored from a backup).

    Raised by a transport's `pull`; sync catches it and pulls again from the start.
    """


class AuthenticationError(SyncError):
    """The server refused this device's credentials."""


class DeviceRevokedError(AuthenticationError):
    """The server has revoked this device; it can no longer sync."""


class ModelError(EdgeError):
    """A model cannot be read, loaded or run (bad manifest, bad input, runtime failure)."""


class ModelVerificationError(ModelError):
    """A model failed its checks: sha256, size, or the server's signature."""


class ModelUnavailableError(ModelError):
    """No model can run: onnxruntime is not installed, or no model is installed."""


class AuditPushError(SyncError):
    """The server refused the device's audit chain, or its receipt did not verify.

    Attributes:
        seq: The event where the chain breaks, when the server said.
        server_seq: The last event the server holds for this device, when it said.
    """

    def __init__(self, message: str, *, seq: int | None = None, server_seq: int | None = None):
        super().__init__(message)
        self.seq = seq
        self.server_seq = server_seq


class UntrustedEdgeBoxError(SyncError):
    """An edge box presented a certificate other than the one central pinned for it
    (the TLS handshake failed before any request was sent), or central never vouched
    for the box. Not retried: another try would meet the same certificate.

    Attributes:
        box_id: The box the device meant to reach.
    """

    def __init__(self, message: str, *, box_id: str) -> None:
        super().__init__(message)
        self.box_id = box_id


class SyncProtocolError(SyncError, crdt.SyncProtocolError):
    """A sync message cannot be used."""


class MalformedMessageError(SyncProtocolError, crdt.MalformedMessageError):
    """The message is truncated, corrupted, or not a Coherency sync message."""


class MessageTooLargeError(SyncProtocolError, crdt.MessageTooLargeError):
    """The message (or one document in it) is over the size cap."""


class UnsupportedVersionError(SyncProtocolError, crdt.UnsupportedVersionError):
    """The message was written by a wire-format version this code does not read."""


class RecordValidationError(EdgeError, crdt.RecordValidationError):
    """A record does not satisfy its schema (`errors`: one line per failing field).

    Attributes:
        collection: The record's collection.
        errors: One short line per failing field.
    """


class NoConflictError(EdgeError, crdt.NoConflictError):
    """The field named has no concurrent values to resolve."""


class MergeRejectedError(EdgeError, crdt.MergeRejectedError):
    """Merging would leave the record invalid; the stored record is unchanged.

    Attributes:
        doc_id: The record.
        reason: Why the merge was refused.
    """


class DocumentError(EdgeError, crdt.DocumentError):
    """The bytes are not a record document, or belong to another record or collection."""


class DocumentTooCostlyError(DocumentError, crdt.DocumentTooCostlyError):
    """A received document is over the limits of what one document may cost."""


class AuditProofError(EdgeError, crdt.AuditProofError):
    """An audit log, a device's chain, a checkpoint or a proof does not verify."""


class RecordFromNewerAppError(EdgeError):
    """The record was written by a newer version of the app (its `schema_version` is
    above the one this app knows). It is kept and syncs on to other devices; this app
    cannot read it until it is updated.

    Attributes:
        record_id: The record.
        collection: Its collection.
        version: The record's schema version.
        known: The newest version this app reads.
    """

    def __init__(self, record_id: str, collection: str, version: int, known: int) -> None:
        super().__init__(
            f"{collection} record {record_id} was written by a newer app (record schema "
            f"version {version}, this app reads up to {known}): update the app to read it"
        )
        self.record_id = record_id
        self.collection = collection
        self.version = version
        self.known = known


class InvalidArgumentError(EdgeError, ValueError):
    """The SDK refused an argument: an unknown filter, collection, kind or state."""


# Most specific first: the first `isinstance` match translates.
_TRANSLATIONS: tuple[tuple[type[crdt.CrdtError], type[EdgeError]], ...] = (
    (crdt.MalformedMessageError, MalformedMessageError),
    (crdt.MessageTooLargeError, MessageTooLargeError),
    (crdt.UnsupportedVersionError, UnsupportedVersionError),
    (crdt.SyncProtocolError, SyncProtocolError),
    (crdt.RecordValidationError, RecordValidationError),
    (crdt.NoConflictError, NoConflictError),
    (crdt.MergeRejectedError, MergeRejectedError),
    (crdt.DocumentTooCostlyError, DocumentTooCostlyError),
    (crdt.DocumentError, DocumentError),
    (crdt.AuditProofError, AuditProofError),
)


def edge_error(exc: crdt.CrdtError) -> EdgeError:
    """The SDK error for a `crdt` error: same message and attributes, a class that is
    both the SDK's and crdt's (an SDK error is returned as it is)."""
    if isinstance(exc, EdgeError):
        return exc
    for crdt_class, edge_class in _TRANSLATIONS:
        if isinstance(exc, crdt_class):
            translated = edge_class.__new__(edge_class)
            break
    else:  # a crdt error newer than this table: still an EdgeError
        translated = EdgeError.__new__(EdgeError)
    translated.args = exc.args
    translated.__dict__.update(exc.__dict__)
    translated.__traceback__ = exc.__traceback__
    return translated


def _raise_translated(exc: crdt.CrdtError) -> NoReturn:
    raise edge_error(exc) from exc.__cause__


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Run the body with `crdt` errors raised as their SDK twins (see the tree above)."""
    try:
        yield
    except crdt.CrdtError as exc:
        if isinstance(exc, EdgeError):
            raise
        _raise_translated(exc)
