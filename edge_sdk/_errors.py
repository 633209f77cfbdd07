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
    │   └── BlobCorruptError        a blob failed authentication or its hash check
    ├── ModelError                  a wound model cannot be read, loaded or run
    │   ├── ModelVerificationError  sha256, size or the server's signature does not check out
    │   └── ModelUnavailableError   onnxruntime missing, or no model installed
    ├── BundleError
    │   ├── BundleFormatError       not a bundle, truncated, or an unsupported version
    │   ├── BundleSignatureError    the signature does not verify or the signer is not trusted
    │   └── BundleDecryptError      the bundle passphrase is wrong
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
        └── AuthenticationError     the server refused the device's credentials
            └── DeviceRevokedError  the device was revoked

Errors from `crdt` (validation, malformed sync messages) pass through unchanged: they
are the caller's to handle, and the CLI reports them the same way.
"""

from __future__ import annotations

__all__ = [
    "AuditPushError",
    "AuthenticationError",
    "BlobCorruptError",
    "BlobError",
    "BlobNotFoundError",
    "BundleDecryptError",
    "BundleError",
    "BundleFormatError",
    "BundleSignatureError",
    "CursorAheadError",
    "DeviceRevokedError",
    "EdgeError",
    "EnrolmentError",
    "InsecureServerError",
    "KeyProviderError",
    "ModelError",
    "ModelUnavailableError",
    "ModelVerificationError",
    "NotEnrolledError",
    "PushTooLargeError",
    "ReadOnlyCollectionError",
    "RecordNotFoundError",
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
    "UntrustedEdgeBoxError",
    "WrongKeyError",
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
