"""`MemoryHub` and `MemoryTransport`: the central server's sync semantics in one process.

    hub = MemoryHub()
    ward.sync(transport=MemoryTransport(hub, device_id=ward.device_id,
                                        clinic_id=ward.clinic_id,
                                        public_key=ward.identity.public_key))

A real backend shipped beside `HttpTransport` (as httpx ships `MockTransport`): sync
runs without a server in tests, examples and demos. The hub keeps, per clinic, the
documents and a change feed (a monotonic sequence; each document carries the number
of its latest change), and the clinic's blobs; it applies the rules the server applies:

- a push is merged with `crdt.apply_documents` under the server's policy: a document
  must belong to the pushing device's clinic, be of a collection devices may write
  (server-owned ones are refused), validate after the merge, and have every new
  change signed by a device enrolled in the clinic (a transport enrols its device with
  its key); an id another clinic holds is refused; a refused document is reported and
  nothing of it stored; the clinic's enrolled devices are its `directory`;
- a pull answers the clinic's documents changed after a cursor, oldest change first,
  in pages, leaving out versions that are exactly what the device pushed itself; a
  cursor past the feed is `CursorAheadError`; `wait` long-polls on a condition
  variable that every accepted push notifies;
- a blob upload is declared, resumed at the hub's offset, sent in chunks at that
  offset, and stored only if its SHA-256 matches; downloads start at any offset;
- a published model (`publish_model`) is offered to every replica (`ModelSource`);
- a device's audit chain is kept append-only (`push_audit`: a batch that does not
  continue what the hub holds is refused whole, `AuditPushError` naming the event);
  each push appends a leaf naming the device's head to the hub's own Merkle log, and
  the answer is a checkpoint signed by the hub's key with the leaf's inclusion proof.

The hub trusts the identity a `MemoryTransport` is made with: it is in-process, so
there is nothing to authenticate. `snapshot()` and `restore()` stand for a server's
backup and restore.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from crdt import (
    DEFAULT_MAX_MESSAGE_SIZE,
    GENESIS,
    AuditProofError,
    Checkpoint,
    Entry,
    EntryKind,
    RecordDocument,
    Rejection,
    StaticDirectory,
    SyncMessage,
    SyncProtocolError,
    SyncReport,
    apply_documents,
    canonical_json,
    decode_message,
    encode_message,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    server_device_id,
    verify_chain,
)
from edge_sdk._errors import (
    AuditPushError,
    BlobCorruptError,
    BlobError,
    BlobNotFoundError,
    CursorAheadError,
    SyncCancelledError,
    SyncError,
)
from edge_sdk._model_sync import ModelOffer
from edge_sdk._transport import (
    AuditReceipt,
    BlobDownload,
    ChainedEvent,
    PushAnswer,
    UploadState,
)

__all__ = ["MemoryHub", "MemoryHubState", "MemoryTransport"]

_MiB = 1024 * 1024
_FOREIGN = "the id belongs to a record outside this device's clinic"
_PAGE_BYTES = DEFAULT_MAX_MESSAGE_SIZE - 4096  # room for the control fields, as the server
_ENTRY_OVERHEAD = 64


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Held:
    data: bytes
    seq: int
    origin: str | None  # the device whose push is exactly this version


@dataclass(slots=True)
class _Upload:
    clinic_id: str
    sha256: str
    size: int
    data: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class _Clinic:
    documents: dict[str, _Held] = field(default_factory=dict)
    feed_seq: int = 0
    blobs: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class MemoryHubState:
    """Everything a hub holds (what `snapshot` copies and `restore` puts back)."""

    clinics: dict[str, _Clinic] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # document id -> its clinic
    uploads: dict[str, _Upload] = field(default_factory=dict)
    models: dict[str, bytes] = field(default_factory=dict)  # sha256 -> model file
    devices: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> clinic, key
    current_model: ModelOffer | None = None
    audit_chains: dict[str, list[ChainedEvent]] = field(default_factory=dict)  # by device
    audit_leaves: list[bytes] = field(default_factory=list)  # the hub's log, in order


class MemoryHub:
    """An in-memory stand-in for the central server's sync semantics.

    Args:
        name: Names the hub to the replicas that sync with it (they keep what it holds
            and their cursor under ``hub:<name>``); a random one by default.
        page_size: Most documents per pull page.
        min_chunk_size: Smallest blob chunk accepted, but for the last.
        max_chunk_size: Largest blob chunk accepted.
    """

    def __init__(
        self,
        *,
        name: str | None = None,
        page_size: int = 1000,
        min_chunk_size: int = 0,
        max_chunk_size: int = 4 * _MiB,
    ) -> None:
        if page_size < 1 or max_chunk_size < 1 or not 0 <= min_chunk_size <= max_chunk_size:
            raise ValueError(
                "page and chunk sizes must be positive, the minimum at most the maximum"
            )
        self.name = name or uuid.uuid4().hex
        self._key = Ed25519PrivateKey.generate()
        self._page_size = page_size
        self._min_chunk = min_chunk_size
        self._max_chunk = max_chunk_size
        self._state = MemoryHubState()
        self._changed = threading.Condition()

    # ---------------------------------------------------------------- inspection
    def document_heads(self, clinic_id: str) -> dict[str, list[bytes]]:
        """Every document the hub holds for a clinic, with its sorted heads."""
        with self._changed:
            held = dict(self._clinic(clinic_id).documents)
        return {doc_id: RecordDocument.load(h.data).heads for doc_id, h in held.items()}

    def feed(self, clinic_id: str) -> int:
        """The clinic's newest change-feed sequence."""
        with self._changed:
            return self._clinic(clinic_id).feed_seq

    def has_blob(self, clinic_id: str, sha256: str) -> bool:
        """True if the hub holds the whole, verified blob for the clinic."""
        with self._changed:
            return sha256 in self._clinic(clinic_id).blobs

    def publish_model(self, *, manifest: bytes, model: bytes, signature: bytes | None) -> None:
        """Offer a model as current (`manifest` as signed, `signature` by the key the
        replicas pinned): what the server's model publishing does."""
        offer = ModelOffer(
            manifest=manifest,
            signature=signature,
            sha256=hashlib.sha256(model).hexdigest(),
            size=len(model),
        )
        with self._changed:
            self._state.models[offer.sha256] = model
            self._state.current_model = offer

    def current_model(self) -> ModelOffer | None:
        """The model offered as current, if any."""
        with self._changed:
            return self._state.current_model

    def download_model(self, sha256: str) -> bytes:
        """A published model file.

        Raises:
            SyncError: No model with that SHA-256 was published.
        """
        with self._changed:
            model = self._state.models.get(sha256)
        if model is None:
            raise SyncError(f"the hub has no model {sha256}")
        return model

    def snapshot(self) -> MemoryHubState:
        """A copy of everything the hub holds (a backup)."""
        with self._changed:
            return copy.deepcopy(self._state)

    def restore(self, state: MemoryHubState) -> None:
        """Put back what a `snapshot` copied (a restore from that backup)."""
        with self._changed:
            self._state = copy.deepcopy(state)
            self._changed.notify_all()

    # ---------------------------------------------------------------- identity
    @property
    def public_key(self) -> bytes:
        """The hub's own Ed25519 public key: it signs the documents it writes."""
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    @property
    def server_device_id(self) -> str:
        """The actor the hub writes its own documents as (`crdt.server_device_id`)."""
        return server_device_id(self.public_key)

    @property
    def device_id(self) -> str:
        """The same as `server_device_id` (so the hub is a `crdt.Signer`)."""
        return self.server_device_id

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature by the hub's key."""
        return self._key.sign(data)

    # ---------------------------------------------------------------- audit
    def audit_chain(self, device_id: str) -> list[ChainedEvent]:
        """The audit events the hub holds for a device, in order."""
        with self._changed:
            return list(self._state.audit_chains.get(device_id, ()))

    def push_audit(
        self, events: Sequence[ChainedEvent], *, device_id: str, clinic_id: str
    ) -> AuditReceipt:
        """Append a device's audit events (the ones it holds already must be the same).

        Raises:
            AuditPushError: The events do not continue the chain the hub holds.
        """
        if not events:
            raise AuditPushError("an audit push needs at least one event")
        with self._changed:
            chain = self._state.audit_chains.setdefault(device_id, [])
            held = len(chain)
            for event in events:
                if event.seq <= held and chain[event.seq - 1] != event:
                    raise AuditPushError(
                        f"audit event {event.seq} differs from the one the hub holds",
                        seq=event.seq,
                        server_seq=held,
                    )
            new = [event for event in events if event.seq > held]
            previous = chain[-1].hash if chain else GENESIS
            expected = held + 1
            for event in new:
                try:
                    verify_chain(
                        [(event.seq, event.canonical, event.hash)],
                        start_seq=expected,
                        previous=previous,
                    )
                except AuditProofError as exc:
                    raise AuditPushError(
                        f"the audit chain breaks at event {expected}: {exc}",
                        seq=expected,
                        server_seq=held,
                    ) from None
                previous, expected = event.hash, expected + 1
            chain.extend(new)
            head = events[-1]
            leaf = canonical_json(
                {
                    "v": 1,
                    "kind": "device-audit-received",
                    "clinic_id": clinic_id,
                    "target": f"{device_id}:{head.seq}:{head.hash.hex()}",
                }
            )
            leaves = self._state.audit_leaves
            leaves.append(leaf)
            hashes = [leaf_hash(item) for item in leaves]
            size = len(hashes)
            path = inclusion_proof(size - 1, size, lambda a, b: merkle_root(hashes[a:b]))
            unsigned = Checkpoint(
                origin=f"hub:{self.name}", size=size, root=merkle_root(hashes), at=_now()
            )
            checkpoint = dataclasses.replace(unsigned, signature=self.sign(unsigned.message()))
        return AuditReceipt(
            head_seq=head.seq,
            head_hash=head.hash,
            checkpoint=checkpoint,
            leaf_index=size - 1,
            leaf=leaf,
            inclusion=path,
            public_key=self.public_key,
        )

    # ---------------------------------------------------------------- devices
    def enrol(self, *, device_id: str, clinic_id: str, public_key: bytes) -> None:
        """Let a device author the clinic's records, with its Ed25519 public key.

        Raises:
            SyncError: The device is enrolled with another clinic or key.
        """
        with self._changed:
            known = self._state.devices.get(device_id)
            if known is not None and known != (clinic_id, public_key):
                raise SyncError(f"device {device_id} is enrolled with another clinic or key")
            self._state.devices[device_id] = (clinic_id, public_key)

    def revoke(self, device_id: str) -> None:
        """Take a device out of the directory: its new changes are refused from now on."""
        with self._changed:
            self._state.devices.pop(device_id, None)

    def directory(self, clinic_id: str) -> dict[str, bytes]:
        """The devices enrolled in a clinic, with their keys (and the hub's own)."""
        with self._changed:
            found = {d: key for d, (c, key) in self._state.devices.items() if c == clinic_id}
        found[self.server_device_id] = self.public_key
        return found

    # ---------------------------------------------------------------- server writes
    def write_documents(self, clinic_id: str, documents: Sequence[RecordDocument]) -> int:
        """Store documents the server makes (e.g. decisions) in a clinic's feed, merged
        with what it holds, signed by the hub (write them as `server_device_id`);
        returns the clinic's new feed sequence."""
        for document in documents:
            document.seal(self)
        with self._changed:
            clinic = self._clinic(clinic_id)
            store = _ClinicStore(clinic)
            merged: list[RecordDocument] = []
            for document in documents:
                current = store.get_document(document.id)
                if current is None:
                    merged.append(document)
                elif current.merge(document):
                    merged.append(current)
            self._publish(clinic_id, clinic, merged, origin=None, pushed={})
            return clinic.feed_seq

    # ---------------------------------------------------------------- sync
    def push(self, message: bytes, *, device_id: str, clinic_id: str) -> PushAnswer:
        """Merge a device's pushed documents into its clinic (see the module doc)."""
        try:
            decoded = decode_message(message)
        except SyncProtocolError as exc:
            raise SyncError(f"the hub refused the push: unusable sync message: {exc}") from None
        if any(entry.kind is not EntryKind.DOC for entry in decoded.entries):
            raise SyncError("the hub refused the push: it carries whole documents only")
        incoming = [(entry.doc_id, entry.payload) for entry in decoded.entries]
        ids = list(dict.fromkeys(doc_id for doc_id, _ in incoming))
        with self._changed:
            clinic = self._clinic(clinic_id)
            owners = self._state.owners
            foreign = {d for d in ids if owners.get(d, clinic_id) != clinic_id}
            rejected = [Rejection(doc_id, _FOREIGN) for doc_id in sorted(foreign)]
            pushed: dict[str, list[bytes]] = {}

            def policy(document: RecordDocument) -> str | None:
                pushed[document.id] = document.heads
                if document.newer_than_schema:  # as the server: update servers first
                    return _newer_than_server(document)
                record = document.read()
                if record.clinic_id != clinic_id:
                    return (
                        f"record belongs to clinic {record.clinic_id}, not to this device's clinic"
                    )
                if not document.schema.device_writable:
                    return f"{document.collection} are server-owned: devices may not write them"
                return None

            store = _ClinicStore(clinic)
            report = SyncReport()
            apply_documents(
                store,
                [(doc_id, data) for doc_id, data in incoming if doc_id not in foreign],
                device_id=device_id,
                policy=policy,
                report=report,
                authorship=StaticDirectory(
                    {(c, d): key for d, (c, key) in self._state.devices.items()}
                ),
            )
            self._publish(clinic_id, clinic, store.written, origin=device_id, pushed=pushed)
            rejected += report.rejected
            refused = {r.doc_id for r in rejected}
            return PushAnswer(
                accepted=[d for d in ids if d in report.received],
                unchanged=[d for d in ids if d not in report.received and d not in refused],
                rejected=rejected,
            )

    def pull(
        self,
        *,
        device_id: str,
        clinic_id: str,
        cursor: int,
        limit: int,
        wait: float,
        interrupted: threading.Event | None = None,
    ) -> bytes:
        """One page of the clinic's change feed after `cursor` (see the module doc).

        Raises:
            SyncCancelledError: `interrupted` was set (and `wake` called) while waiting.
        """
        deadline = time.monotonic() + max(0.0, wait)
        with self._changed:
            while True:
                if interrupted is not None and interrupted.is_set():
                    raise SyncCancelledError("the pull was interrupted")
                clinic = self._clinic(clinic_id)
                if cursor > clinic.feed_seq:
                    raise CursorAheadError(
                        f"cursor {cursor} is ahead of the clinic's feed ({clinic.feed_seq})"
                    )
                entries, new_cursor, more = self._page(clinic, device_id, cursor, limit)
                remaining = deadline - time.monotonic()
                if entries or new_cursor != cursor or remaining <= 0:
                    break
                self._changed.wait(remaining)
            control = {"cursor": new_cursor, "more": more, "feed": clinic.feed_seq}
        return encode_message(SyncMessage(control, tuple(entries)))

    def wake(self) -> None:
        """Wake the pulls waiting for changes (they look at their `interrupted` flag)."""
        with self._changed:
            self._changed.notify_all()

    # ---------------------------------------------------------------- blobs
    def declare_upload(self, *, clinic_id: str, sha256: str, size: int) -> UploadState:
        """Start or resume the upload of a blob, or say the clinic already holds it."""
        if size < 0:
            raise BlobError(f"the hub refused to take blob {sha256}: a negative size")
        with self._changed:
            if sha256 in self._clinic(clinic_id).blobs:
                return self._state_of(None, size, complete=True)
            uploads = self._state.uploads
            for upload_id, upload in list(uploads.items()):
                if upload.clinic_id == clinic_id and upload.sha256 == sha256:
                    if upload.size == size:
                        return self._state_of(upload_id, len(upload.data), complete=False)
                    del uploads[upload_id]  # one declaration is wrong: the new one wins
            upload_id = uuid.uuid4().hex
            uploads[upload_id] = _Upload(clinic_id, sha256, size)
            return self._state_of(upload_id, 0, complete=False)

    def send_chunk(
        self, *, clinic_id: str, upload_id: str, offset: int, data: bytes
    ) -> UploadState | None:
        """Write a chunk at `offset`; None when the upload is gone or stands elsewhere."""
        with self._changed:
            upload = self._state.uploads.get(upload_id)
            if upload is None or upload.clinic_id != clinic_id or offset != len(upload.data):
                return None
            end = offset + len(data)
            final = end == upload.size
            if end > upload.size:
                raise BlobError(f"a chunk of upload {upload_id} ends past its declared size")
            if len(data) > self._max_chunk or (not final and len(data) < max(1, self._min_chunk)):
                raise BlobError(
                    f"a chunk of upload {upload_id} has {len(data)} bytes, outside the "
                    f"hub's {self._min_chunk}-{self._max_chunk}"
                )
            upload.data += data
            if not final:
                return self._state_of(upload_id, end, complete=False)
            del self._state.uploads[upload_id]
            blob = bytes(upload.data)
            if hashlib.sha256(blob).hexdigest() != upload.sha256:
                raise BlobError(
                    f"the uploaded bytes do not have SHA-256 {upload.sha256}; the upload "
                    "was discarded and nothing was stored"
                )
            self._clinic(clinic_id).blobs[upload.sha256] = blob
            return self._state_of(None, upload.size, complete=True)

    def download(self, *, clinic_id: str, sha256: str, start: int) -> BlobDownload:
        """The clinic's blob from byte `start` on."""
        with self._changed:
            blob = self._clinic(clinic_id).blobs.get(sha256)
        if blob is None:
            raise BlobNotFoundError(f"the hub has no blob {sha256}")
        if start > len(blob) or (start and start == len(blob)):
            raise BlobCorruptError(f"the hub's blob {sha256} ends before byte {start}")
        pieces = (blob[i : i + 64 * 1024] for i in range(start, len(blob), 64 * 1024))
        return BlobDownload(start, len(blob), pieces, lambda: None)

    # ---------------------------------------------------------------- internals
    def _clinic(self, clinic_id: str) -> _Clinic:
        return self._state.clinics.setdefault(clinic_id, _Clinic())

    def _publish(
        self,
        clinic_id: str,
        clinic: _Clinic,
        documents: Sequence[RecordDocument],
        *,
        origin: str | None,
        pushed: dict[str, list[bytes]],
    ) -> None:
        """Give each written document the next feed number, and wake waiting pulls."""
        for document in documents:
            clinic.feed_seq += 1
            exact = origin is not None and pushed.get(document.id) == document.heads
            clinic.documents[document.id] = _Held(
                document.save(), clinic.feed_seq, origin if exact else None
            )
            self._state.owners[document.id] = clinic_id
        if documents:
            self._changed.notify_all()

    def _page(
        self, clinic: _Clinic, device_id: str, cursor: int, limit: int
    ) -> tuple[list[Entry], int, bool]:
        changed = sorted(
            (held.seq, doc_id, held)
            for doc_id, held in clinic.documents.items()
            if held.seq > cursor
        )
        size = min(limit, self._page_size)
        more = len(changed) > size
        entries: list[Entry] = []
        used = 0
        for seq, doc_id, held in changed[:size]:
            if held.origin == device_id:  # exactly what this device pushed
                cursor = seq
                continue
            if entries and used + len(held.data) + _ENTRY_OVERHEAD > _PAGE_BYTES:
                more = True
                break
            entries.append(Entry(EntryKind.DOC, doc_id, held.data))
            used += len(held.data) + _ENTRY_OVERHEAD
            cursor = seq
        return entries, cursor, more

    def _state_of(self, upload_id: str | None, offset: int, *, complete: bool) -> UploadState:
        return UploadState(
            upload_id=upload_id,
            offset=offset,
            complete=complete,
            chunk_size=self._max_chunk,
            min_chunk_size=self._min_chunk,
            max_chunk_size=self._max_chunk,
        )


class _ClinicStore:
    """A `crdt.DocumentStore` over one clinic of a hub, collecting what is written."""

    def __init__(self, clinic: _Clinic) -> None:
        self._clinic = clinic
        self.written: list[RecordDocument] = []

    def document_heads(self) -> dict[str, list[bytes]]:
        raise NotImplementedError("the hub does not offer heads; replicas pull the feed")

    def get_document(self, doc_id: str) -> RecordDocument | None:
        held = self._clinic.documents.get(doc_id)
        return None if held is None else RecordDocument.load(held.data)

    def saved_document(self, doc_id: str) -> bytes | None:
        held = self._clinic.documents.get(doc_id)
        return None if held is None else held.data

    def put_documents(self, documents: Sequence[RecordDocument]) -> None:
        self.written.extend(documents)


class MemoryTransport:
    """A `SyncTransport` (and `ModelSource`) to a `MemoryHub`, as one device of one clinic.

    Args:
        hub: The hub.
        device_id: The device syncing (the hub leaves out what it pushed itself).
        clinic_id: Its clinic: the scope of everything it pushes and pulls.
        public_key: The device's Ed25519 public key: the hub enrols the device with it
            (what enrolment does with a server), so its signed changes are accepted.
    """

    def __init__(
        self, hub: MemoryHub, *, device_id: str, clinic_id: str, public_key: bytes
    ) -> None:
        hub.enrol(device_id=device_id, clinic_id=clinic_id, public_key=public_key)
        self.hub = hub
        self.device_id = device_id
        self.clinic_id = clinic_id
        self._requests = 0
        self._interrupted = threading.Event()

    @property
    def peer_id(self) -> str:
        """``hub:`` and the hub's name."""
        return f"hub:{self.hub.name}"

    @property
    def description(self) -> str:
        """What this transport talks to, for people."""
        return f"memory hub {self.hub.name}"

    def interrupt(self) -> None:
        """Abandon the calls in flight (a waiting pull) from any thread: they raise
        `SyncCancelledError`, and so does every call made before `resume`."""
        self._interrupted.set()
        self.hub.wake()

    def resume(self) -> None:
        """Let calls through again after `interrupt`."""
        self._interrupted.clear()

    def _call(self) -> None:
        if self._interrupted.is_set():
            raise SyncCancelledError("the call to the memory hub was interrupted")
        self._requests += 1

    @property
    def requests(self) -> int:
        """Calls made to the hub so far."""
        return self._requests

    @property
    def retries(self) -> int:
        """Always 0: a call to the hub does not fail on the way."""
        return 0

    def push(self, message: bytes) -> PushAnswer:
        """Merge a wire message of documents into the clinic."""
        self._call()
        return self.hub.push(message, device_id=self.device_id, clinic_id=self.clinic_id)

    def push_audit(self, events: Sequence[ChainedEvent]) -> AuditReceipt:
        """Append the device's audit events to the hub's copy of its chain."""
        self._call()
        return self.hub.push_audit(events, device_id=self.device_id, clinic_id=self.clinic_id)

    def directory(self) -> dict[str, bytes]:
        """The devices enrolled in the clinic, with their keys."""
        self._call()
        return self.hub.directory(self.clinic_id)

    def pull(self, *, cursor: int, limit: int, wait: float) -> bytes:
        """A page of the clinic's feed after `cursor` (waiting up to `wait` seconds)."""
        self._call()
        return self.hub.pull(
            device_id=self.device_id,
            clinic_id=self.clinic_id,
            cursor=cursor,
            limit=limit,
            wait=wait,
            interrupted=self._interrupted,
        )

    def declare_upload(self, *, sha256: str, size: int) -> UploadState:
        """Start or resume a blob upload."""
        self._call()
        return self.hub.declare_upload(clinic_id=self.clinic_id, sha256=sha256, size=size)

    def send_chunk(self, *, upload_id: str, offset: int, data: bytes) -> UploadState | None:
        """Send a chunk of an upload."""
        self._call()
        return self.hub.send_chunk(
            clinic_id=self.clinic_id, upload_id=upload_id, offset=offset, data=data
        )

    def download(self, *, sha256: str, start: int) -> BlobDownload:
        """A blob from byte `start` on."""
        self._call()
        return self.hub.download(clinic_id=self.clinic_id, sha256=sha256, start=start)

    def current_model(self) -> ModelOffer | None:
        """The model the hub offers as current, if any."""
        self._call()
        return self.hub.current_model()

    def download_model(self, sha256: str) -> bytes:
        """A model file the hub published."""
        self._call()
        return self.hub.download_model(sha256)


def _newer_than_server(document: RecordDocument) -> str:
    return (
        f"record schema version {document.schema_version} of {document.collection} is "
        f"newer than this server reads ({document.schema.schema_version}): update the server"
    )
