"""The device SDK: what an app embeds to keep wound-care records offline and in sync.

Start with `EdgeClient.init` (once per device) or `EdgeClient.open`::

    from edge_sdk import EdgeClient, PassphraseKeyProvider

    with EdgeClient.open("store", PassphraseKeyProvider("correct horse")) as client:
        patient = client.patients.add(given_name="Ada", family_name="Okafor",
                                      birth_date="1950-03-01", mrn="MRN-1")

Appointments and caregiver visits, supply orders and invoice payments are asked of the
server as intents (`client.bookings.request_appointment(...)`,
`client.orders.place(...)`, `client.payments.pay(...)`), ``pending`` until its
decision syncs down (`client.intent_status`, `client.on_decision`).

Sync goes through a `SyncTransport`: `HttpTransport` to the central server (the
`[server]` extra, httpx; imported on first use) or `MemoryTransport` to an in-memory
`MemoryHub`. `client.replica` is what sync, bundles and model updates work on.

Clinic edge boxes: central pins their certificates (`client.replica.edge_boxes`),
`client.find_edge_boxes()` finds the pinned ones on the LAN (mDNS, the `[edge]` extra)
and `client.edge_transport(route)` syncs through one (`HttpTransport.for_edge_box`).

Only the names in `__all__` are public; modules starting with `_` are private.
"""

import typing

from edge_sdk._access import AccessEvent, AccessGate, AccessListener
from edge_sdk._audit_verify import AuditProblem, AuditReport, verify_audit
from edge_sdk._audit_witness import (
    AuditLogSource,
    HttpAuditLogSource,
    WitnessProblem,
    WitnessReport,
    kept_checkpoints,
    witness_server_log,
)
from edge_sdk._background import BackgroundSync
from edge_sdk._blobs import BlobRef, BlobStore, EncryptedFileBlobStore, MemoryBlobStore
from edge_sdk._bookings import Bookings
from edge_sdk._bundles import BundleInfo, export_bundle, import_bundle, read_bundle_info
from edge_sdk._client import EdgeClient, enrollment_of
from edge_sdk._collections import (
    CarePlansCollection,
    Collection,
    NotesCollection,
    PatientHistoryCollection,
)
from edge_sdk._conflict_policies import ConflictPolicy, keep_both, latest_wins, merge_lists
from edge_sdk._discovery import discover_edge_boxes
from edge_sdk._edge_boxes import (
    DiscoveredBox,
    EdgeBoxPin,
    EdgeBoxRoute,
    certificate_fingerprint,
)
from edge_sdk._errors import (
    AuditProofError,
    AuditPushError,
    AuthenticationError,
    BlobCorruptError,
    BlobError,
    BlobMissingError,
    BlobNotFoundError,
    BundleDecryptError,
    BundleError,
    BundleFormatError,
    BundleSignatureError,
    CursorAheadError,
    DeviceRevokedError,
    DocumentError,
    DocumentTooCostlyError,
    EdgeError,
    EnrolmentError,
    InsecureServerError,
    InvalidArgumentError,
    KeyProviderError,
    MalformedMessageError,
    MergeRejectedError,
    MessageTooLargeError,
    ModelError,
    ModelUnavailableError,
    ModelVerificationError,
    NoConflictError,
    NotEnrolledError,
    PushTooLargeError,
    ReadOnlyCollectionError,
    RecordFromNewerAppError,
    RecordNotFoundError,
    RecordValidationError,
    ServerAddressError,
    ServerCertificateError,
    ServerUnreachableError,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreExistsError,
    StoreLockedError,
    StoreNotFoundError,
    SyncCancelledError,
    SyncError,
    SyncProtocolError,
    UnsupportedVersionError,
    UntrustedEdgeBoxError,
    WrongKeyError,
)
from edge_sdk._fhir import FhirImportReport
from edge_sdk._identity import DeviceIdentity, verify_signature
from edge_sdk._intents import IntentStatus
from edge_sdk._keychain import IOSKeychain, MemoryKeystore, PlatformKeystore
from edge_sdk._keys import (
    Argon2Params,
    KeychainKeyProvider,
    KeyFileKeyProvider,
    KeyProvider,
    PassphraseKeyProvider,
)
from edge_sdk._memory_transport import MemoryHub, MemoryHubState, MemoryTransport
from edge_sdk._model_sync import ModelOffer, ModelSource, ModelUpdate
from edge_sdk._models import (
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    SIGNATURE_FILE,
    ModelManifest,
    ModelRunner,
    ModelStore,
    ModelTensor,
    Segmentation,
    artifact_key_statement,
    graph_metadata,
    model_signing_payload,
    sign_manifest,
    verify_model,
)
from edge_sdk._notices import NoticeEntry, NoticesCollection
from edge_sdk._notify import Deliver, Subscription
from edge_sdk._orders import Orders
from edge_sdk._payments import InvoicesCollection, Payments, balance_due, invoice_id_of
from edge_sdk._query import Page, Query, query_fields
from edge_sdk._replica import Replica
from edge_sdk._sync import sync_replica
from edge_sdk._sync_status import SyncStatus
from edge_sdk._sync_types import Enrollment, RetryPolicy, SyncProgress, SyncResult
from edge_sdk._token_keys import TokenKeyLink, follow_token_keys, token_key_statement
from edge_sdk._transport import (
    AuditReceipt,
    BlobDownload,
    BlobTransport,
    ChainedEvent,
    PushAnswer,
    SyncTransport,
    UploadState,
)
from edge_sdk._verification import QuarantinedRecord, VerificationStatus
from edge_sdk._watch import watch_sync

if typing.TYPE_CHECKING:
    from edge_sdk._http_transport import HttpTransport

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "SIGNATURE_FILE",
    "AccessEvent",
    "AccessGate",
    "AccessListener",
    "Argon2Params",
    "AuditLogSource",
    "AuditProblem",
    "AuditProofError",
    "AuditPushError",
    "AuditReceipt",
    "AuditReport",
    "AuthenticationError",
    "BackgroundSync",
    "BlobCorruptError",
    "BlobDownload",
    "BlobError",
    "BlobMissingError",
    "BlobNotFoundError",
    "BlobRef",
    "BlobStore",
    "BlobTransport",
    "Bookings",
    "BundleDecryptError",
    "BundleError",
    "BundleFormatError",
    "BundleInfo",
    "BundleSignatureError",
    "CarePlansCollection",
    "ChainedEvent",
    "Collection",
    "ConflictPolicy",
    "CursorAheadError",
    "Deliver",
    "DeviceIdentity",
    "DeviceRevokedError",
    "DiscoveredBox",
    "DocumentError",
    "DocumentTooCostlyError",
    "EdgeBoxPin",
    "EdgeBoxRoute",
    "EdgeClient",
    "EdgeError",
    "EncryptedFileBlobStore",
    "Enrollment",
    "EnrolmentError",
    "FhirImportReport",
    "HttpAuditLogSource",
    "HttpTransport",
    "IOSKeychain",
    "InsecureServerError",
    "IntentStatus",
    "InvalidArgumentError",
    "InvoicesCollection",
    "KeyFileKeyProvider",
    "KeyProvider",
    "KeyProviderError",
    "KeychainKeyProvider",
    "MalformedMessageError",
    "MemoryBlobStore",
    "MemoryHub",
    "MemoryHubState",
    "MemoryKeystore",
    "MemoryTransport",
    "MergeRejectedError",
    "MessageTooLargeError",
    "ModelError",
    "ModelManifest",
    "ModelOffer",
    "ModelRunner",
    "ModelSource",
    "ModelStore",
    "ModelTensor",
    "ModelUnavailableError",
    "ModelUpdate",
    "ModelVerificationError",
    "NoConflictError",
    "NotEnrolledError",
    "NotesCollection",
    "NoticeEntry",
    "NoticesCollection",
    "Orders",
    "Page",
    "PassphraseKeyProvider",
    "PatientHistoryCollection",
    "Payments",
    "PlatformKeystore",
    "PushAnswer",
    "PushTooLargeError",
    "QuarantinedRecord",
    "Query",
    "ReadOnlyCollectionError",
    "RecordFromNewerAppError",
    "RecordNotFoundError",
    "RecordValidationError",
    "Replica",
    "RetryPolicy",
    "Segmentation",
    "ServerAddressError",
    "ServerCertificateError",
    "ServerUnreachableError",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreExistsError",
    "StoreLockedError",
    "StoreNotFoundError",
    "Subscription",
    "SyncCancelledError",
    "SyncError",
    "SyncProgress",
    "SyncProtocolError",
    "SyncResult",
    "SyncStatus",
    "SyncTransport",
    "TokenKeyLink",
    "UnsupportedVersionError",
    "UntrustedEdgeBoxError",
    "UploadState",
    "VerificationStatus",
    "WitnessProblem",
    "WitnessReport",
    "WrongKeyError",
    "artifact_key_statement",
    "balance_due",
    "certificate_fingerprint",
    "discover_edge_boxes",
    "enrollment_of",
    "export_bundle",
    "follow_token_keys",
    "graph_metadata",
    "import_bundle",
    "invoice_id_of",
    "keep_both",
    "kept_checkpoints",
    "latest_wins",
    "merge_lists",
    "model_signing_payload",
    "query_fields",
    "read_bundle_info",
    "sign_manifest",
    "sync_replica",
    "token_key_statement",
    "verify_audit",
    "verify_model",
    "verify_signature",
    "watch_sync",
    "witness_server_log",
]


def __getattr__(name: str) -> typing.Any:
    # HttpTransport needs httpx (the [server] extra): it is imported on first use, so
    # that `import edge_sdk` works with the base install alone.
    if name == "HttpTransport":
        try:
            from edge_sdk._http_transport import HttpTransport
        except ImportError as exc:
            raise ImportError(
                f"edge_sdk.HttpTransport needs the [server] extra (httpx): {exc}"
            ) from exc
        return HttpTransport
    raise AttributeError(f"module 'edge_sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
