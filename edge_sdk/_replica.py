"""`Replica`: one device's copy of its clinic's records, as sync, bundles and models see it.

A replica is the encrypted store, the encrypted blob files, the device identity, its
clinic, the policy every received document must pass, the access gate every read and
write of patient data goes through, and the enrolment with a server (its URL, its
pinned keys, the refresh token and the pull cursor). An `EdgeClient` owns one
(`client.replica`); bundles, sync and model updates work on one; the clinic edge box
runs the same sync over its own.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

from crdt import DocumentStore, RecordDocument, RecordHint, SyncSession, server_device_id
from edge_sdk._access import AccessGate
from edge_sdk._audit import DeviceAuditLog
from edge_sdk._blobs import BlobRef, BlobStore, EncryptedFileBlobStore
from edge_sdk._edge_boxes import EdgeBoxPin
from edge_sdk._identity import DeviceIdentity
from edge_sdk._notify import Listeners
from edge_sdk._store import Store, Written
from edge_sdk._sync_types import Enrollment
from edge_sdk._token_keys import TokenKeyLink, follow_token_keys
from edge_sdk._verification import Verification, split_claims

__all__ = ["META_PREFIX", "Replica", "ReplicaHolder", "replica_of"]

META_PREFIX = "sync."
"""Store metadata keys of the server enrolment start with this."""


class Replica:
    """One device's replica of its clinic's records.

    Attributes:
        path: The store's folder.
        store: The encrypted database (internal: its methods are not a stable API).
        identity: The device's Ed25519 identity; its id is the Automerge actor.
        clinic_id: The clinic this replica belongs to.
        blob_files: The encrypted blob files, not audited (wrap uses in `access`).
        blobs: The same blob files with every read and write audited.
        documents: The documents as a `crdt.DocumentStore`, reads and writes audited.
        access: The gate every read and write of patient data goes through; it writes
            each access to `audit` before letting the result out.
    """

    def __init__(
        self,
        *,
        path: Path,
        store: Store,
        identity: DeviceIdentity,
        clinic_id: str,
        blob_files: EncryptedFileBlobStore,
    ) -> None:
        self.path = path
        self.store = store
        self.identity = identity
        self.clinic_id = clinic_id
        self.blob_files = blob_files
        self.audit = DeviceAuditLog(store)
        """The device's hash-chained audit log (the gate's journal)."""
        self.access = AccessGate(identity.device_id, journal=self.audit)
        self.blobs: BlobStore = _AuditedBlobs(self.access, blob_files)
        self.documents: DocumentStore = _AuditedDocuments(self)
        self.directory = ReplicaDirectory(self)
        """Which devices may author this clinic's records (a `crdt.KeyDirectory`)."""
        self._directory_keys: dict[str, bytes] | None = None  # cached; reset on change
        self._enrollment: tuple[Enrollment | None] | None = None
        self.commits: Listeners[Written] = Listeners("commit")
        """Told what each committed transaction stored (live queries listen here)."""
        store.add_commit_listener(self.commits.notify)
        self.verification = Verification(self)
        """Deferred verification of records stored from a sender's claim."""
        self.verification.start()  # what a store closed too early left to verify

    @property
    def device_id(self) -> str:
        """This device's id (a UUID)."""
        return self.identity.device_id

    def close(self) -> None:
        """Close the store; the replica cannot be used afterwards."""
        self.verification.close()
        self.store.close()

    # ---------------------------------------------------------------- documents
    def policy(self, document: RecordDocument) -> str | None:
        """Why a received document may not be stored here (another clinic's), or None."""
        # The stored values, not the validated record: a record a newer app wrote is
        # kept (and synced on) without being read.
        clinic = document.values().get("clinic_id")
        if clinic != self.clinic_id:
            return f"record belongs to clinic {clinic}, this device to {self.clinic_id}"
        return None

    def document_heads(self) -> dict[str, list[bytes]]:
        """Every document id held here, with its sorted heads (what convergence compares)."""
        return self.store.document_heads()

    def sync_session(self) -> SyncSession:
        """A sync session over this replica, for any transport (in memory, HTTP, file)."""
        return SyncSession(
            self.documents,
            device_id=self.device_id,
            policy=self.policy,
            authorship=self.directory,
        )

    # ---------------------------------------------------------------- enrolment
    @property
    def enrollment(self) -> Enrollment | None:
        """The enrolment with a server, or None if the replica was never enrolled."""
        if self._enrollment is None:
            self._enrollment = (self._read_enrollment(),)
        return self._enrollment[0]

    def _read_enrollment(self) -> Enrollment | None:
        url = self.store.get_meta(META_PREFIX + "server_url")
        key = self.store.get_meta(META_PREFIX + "server_key")
        if not url or not key:
            return None
        artifact_key = self.store.get_meta(META_PREFIX + "artifact_key")
        token_key = self.store.get_meta(META_PREFIX + "token_key")
        return Enrollment(
            server_url=url,
            device_id=self.device_id,
            clinic_id=self.clinic_id,
            organisation_id=self.store.get_meta(META_PREFIX + "organisation_id") or "",
            server_public_key=bytes.fromhex(key),
            artifact_public_key=bytes.fromhex(artifact_key) if artifact_key else None,
            token_public_key=bytes.fromhex(token_key) if token_key else None,
            insecure_http=self.store.get_meta(META_PREFIX + "insecure_http") == "1",
        )

    def enrol(self, enrollment: Enrollment, *, refresh_token: str) -> None:
        """Record an enrolment the server granted (in one transaction): the server, its
        pinned keys, the first refresh token, a pull from the start, and the clinic."""
        with self.store.transaction():
            if enrollment.clinic_id != self.clinic_id:
                self.store.set_meta("clinic_id", enrollment.clinic_id)
            for key, value in {
                "server_url": enrollment.server_url,
                "server_key": enrollment.server_public_key.hex(),
                "artifact_key": (enrollment.artifact_public_key or b"").hex(),
                "token_key": (enrollment.token_public_key or b"").hex(),
                "insecure_http": "1" if enrollment.insecure_http else "",
                "organisation_id": enrollment.organisation_id,
                "refresh_token": refresh_token,
                "enrolled_at": datetime.now(UTC).isoformat(),
            }.items():
                self.store.set_meta(META_PREFIX + key, value)
            # A new enrolment pulls every feed from the start.
            self.store.execute(
                "DELETE FROM meta WHERE key LIKE ? OR key IN (?, ?)",
                (META_PREFIX + "cursor:%", META_PREFIX + "cursor", META_PREFIX + "cursor_peer"),
            )
        self.clinic_id = enrollment.clinic_id
        self._enrollment = None

    def set_directory(self, keys: dict[str, bytes]) -> None:
        """Keep the server's directory of the clinic's enrolled devices (replacing the
        last one: a device revoked since is no longer in it)."""
        with self.store.transaction():
            self.store.set_meta(
                META_PREFIX + "directory",
                json.dumps({device: key.hex() for device, key in sorted(keys.items())}),
            )
        self._directory_keys = dict(keys)

    def directory_keys(self) -> dict[str, bytes]:
        """The last directory of enrolled devices the server gave (empty if none)."""
        if self._directory_keys is None:
            raw = self.store.get_meta(META_PREFIX + "directory")
            self._directory_keys = (
                {device: bytes.fromhex(key) for device, key in json.loads(raw).items()}
                if raw
                else {}
            )
        return self._directory_keys

    @property
    def edge_boxes(self) -> list[EdgeBoxPin]:
        """The clinic's edge boxes central last vouched for (empty if none)."""
        raw = self.store.get_meta(META_PREFIX + "edge_boxes")
        return [EdgeBoxPin(**entry) for entry in json.loads(raw)] if raw else []

    def set_edge_boxes(self, pins: Sequence[EdgeBoxPin]) -> list[EdgeBoxPin]:
        """Keep the edge boxes central gave (replacing the last list: a box central
        dropped is no longer trusted). A pin whose certificate does not hash to its
        fingerprint is dropped; the pins kept are returned.

        Only central may set these (its enrolment and directory answers): a box cannot
        vouch for boxes.
        """
        kept = [pin for pin in pins if pin.checks_out()]
        with self.store.transaction():
            self.store.set_meta(
                META_PREFIX + "edge_boxes", json.dumps([pin.to_json() for pin in kept])
            )
        return kept

    def pin_artifact_key(self, public_key: bytes) -> None:
        """Pin the server's artifact key on a replica enrolled before servers had one
        (after checking the enrolment's pinned server key vouches for it)."""
        with self.store.transaction():
            self.store.set_meta(META_PREFIX + "artifact_key", public_key.hex())
        self._enrollment = None

    def learn_token_key(self, chain: Iterable[TokenKeyLink]) -> bytes | None:
        """Pin the newest server token key of `chain` that the pinned one vouches for
        (`edge_sdk.follow_token_keys`); the key pinned now, or None if not enrolled.
        A key not vouched for is ignored; the sync peer id never changes."""
        enrollment = self.enrollment
        if enrollment is None:
            return None
        pinned = enrollment.current_token_key
        learnt = follow_token_keys(pinned, chain)
        if learnt != pinned:
            with self.store.transaction():
                self.store.set_meta(META_PREFIX + "token_key", learnt.hex())
            self._enrollment = None
        return learnt

    def take_refresh_token(self) -> str | None:
        """The refresh token from the server, if any, removed from the store as it is
        taken: a refresh token is sent at most once, whatever becomes of its answer."""
        with self.store.transaction():
            token = self.store.get_meta(META_PREFIX + "refresh_token")
            self.store.delete_meta(META_PREFIX + "refresh_token")
        return token or None

    def keep_refresh_token(self, token: str) -> None:
        """Store a new refresh token durably (before it is ever used: losing it would
        only mean a device-key login next time)."""
        with self.store.transaction():
            self.store.set_meta(META_PREFIX + "refresh_token", token)

    def cursor(self, peer_id: str) -> int:
        """Where pulling from `peer_id`'s change feed stands (0: from the start).

        Each peer has its own cursor (the central server and an edge box number their
        feeds apart), so a device that switches between them resumes where it stood
        with each instead of pulling everything again.
        """
        kept = self.store.get_meta(META_PREFIX + "cursor:" + peer_id)
        if kept is not None:
            return int(kept)
        # A store from before per-peer cursors kept one, for one peer.
        if self.store.get_meta(META_PREFIX + "cursor_peer") != peer_id:
            return 0
        return int(self.store.get_meta(META_PREFIX + "cursor") or "0")

    def set_cursor(self, peer_id: str, cursor: int) -> None:
        """Save the cursor of `peer_id`'s feed (in the caller's transaction, if any)."""
        with self.store.transaction():
            self.store.set_meta(META_PREFIX + "cursor:" + peer_id, str(cursor))


class ReplicaDirectory:
    """Which devices may author the records of a replica's clinic (`crdt.KeyDirectory`).

    - This device: its own key.
    - Enrolled with a server: the devices of the server's directory (refreshed at every
      sync; a revoked device drops out), and the server itself (its pinned artifact key,
      under `crdt.server_device_id`) for the documents it writes; nobody else.
    - Synced with a peer that gave a directory (an in-memory hub): that directory.
    - Otherwise (a clinic that only exchanges bundles): a device's key is trusted on
      first use, and a later different key for that device is refused.
    """

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self._asked = threading.local()

    @property
    def missing(self) -> set[str]:
        """Devices asked for and not found since this thread last cleared this (a
        directory older than the changes being checked: sync refreshes it and tries
        again). One set per thread: the sync's merges and the background verification
        check documents at the same time."""
        missing: set[str] | None = getattr(self._asked, "missing", None)
        if missing is None:
            missing = self._asked.missing = set()
        return missing

    def device_key(self, device_id: str, clinic_id: str, declared: bytes | None) -> bytes | None:
        """The key `device_id` signs this clinic's records with, or None to refuse it."""
        replica = self._replica
        if clinic_id != replica.clinic_id:
            return None
        if device_id == replica.device_id:
            return replica.identity.public_key
        enrollment = replica.enrollment
        if enrollment is not None:
            server_key = enrollment.artifact_public_key or enrollment.server_public_key
            if device_id == server_device_id(server_key):
                return server_key
        directory = replica.directory_keys()
        if directory or enrollment is not None:
            found = directory.get(device_id)  # a directory, once given, decides
            if found is None:
                self.missing.add(device_id)
            return found
        trusted = replica.store.trusted_signer(device_id)
        if trusted is not None:
            return trusted[0]
        if declared is None:
            return None
        # The background verification may meet the same new signer at the same time:
        # the first key trusted is the one both use.
        return replica.store.trust_signer(device_id, declared, datetime.now(UTC).isoformat())


class ReplicaHolder(Protocol):
    """Anything that owns a replica (an `EdgeClient`)."""

    @property
    def replica(self) -> Replica:
        """The replica it owns."""
        ...


def replica_of(holder: Replica | ReplicaHolder) -> Replica:
    """The replica itself, or the one `holder` owns."""
    return holder if isinstance(holder, Replica) else holder.replica


class _AuditedBlobs:
    """The blob files as app code sees them: every read and write is an access event."""

    def __init__(self, access: AccessGate, files: EncryptedFileBlobStore) -> None:
        self._access = access
        self._files = files

    def put_stream(self, stream: BinaryIO) -> BlobRef:
        """Store a stream (never held in memory whole); returns its content address."""
        with self._access("blob-write", "blobs") as access:
            ref = self._files.put_stream(stream)
            access.record_ids.append(ref.sha256)
            return ref

    def put_bytes(self, data: bytes) -> BlobRef:
        """Store bytes; returns their content address."""
        with self._access("blob-write", "blobs") as access:
            ref = self._files.put_bytes(data)
            access.record_ids.append(ref.sha256)
            return ref

    def open(self, sha256: str) -> Iterator[bytes]:
        """The blob's plaintext in verified chunks."""
        with self._access("blob-read", "blobs") as access:
            access.record_ids.append(sha256)
            yield from self._files.open(sha256)

    def read_bytes(self, sha256: str) -> bytes:
        """The whole blob, verified."""
        with self._access("blob-read", "blobs") as access:
            access.record_ids.append(sha256)
            return self._files.read_bytes(sha256)

    def copy_to(self, sha256: str, out: BinaryIO) -> int:
        """Write the blob's plaintext to `out`; returns the byte count."""
        with self._access("blob-read", "blobs") as access:
            access.record_ids.append(sha256)
            return self._files.copy_to(sha256, out)

    def exists(self, sha256: str) -> bool:
        """True if the blob is stored."""
        return self._files.exists(sha256)

    def size(self, sha256: str) -> int:
        """The blob's plaintext size."""
        return self._files.size(sha256)

    def list(self) -> Iterator[str]:
        """The SHA-256 of every stored blob."""
        return self._files.list()


class _AuditedDocuments:
    """The store as a sync session or a bundle sees it, with its reads and writes audited."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica

    def document_heads(self) -> dict[str, list[bytes]]:
        return self._replica.store.document_heads()

    # A document looked for and not held is no access to patient data: only the ids of
    # documents found are recorded (a sync step that touched none writes no row).
    def get_document(self, doc_id: str) -> RecordDocument | None:
        with self._replica.access("sync-read", "*") as access:
            found = self._replica.store.get_document(doc_id, device_id=self._replica.device_id)
            if found is not None:
                access.record_ids.append(doc_id)
            return found

    def saved_document(self, doc_id: str) -> bytes | None:
        with self._replica.access("sync-read", "*") as access:
            found = self._replica.store.saved_document(doc_id)
            if found is not None:
                access.record_ids.append(doc_id)
            return found

    def saved_documents(self, doc_ids: Sequence[str]) -> dict[str, bytes]:
        with self._replica.access("sync-read", "*") as access:
            found = self._replica.store.saved_documents(doc_ids)
            access.record_ids.extend(doc_id for doc_id in doc_ids if doc_id in found)
            return found

    def hinted_documents(
        self, doc_ids: Sequence[str]
    ) -> dict[str, tuple[bytes, RecordHint | None]]:
        with self._replica.access("sync-read", "*") as access:
            found = self._replica.store.hinted_documents(doc_ids)
            access.record_ids.extend(doc_id for doc_id in doc_ids if doc_id in found)
            return found

    def held(self, doc_ids: Sequence[str]) -> set[str]:
        # Which ids are held is no access to patient data (no record is read).
        return self._replica.store.held(doc_ids)

    def put_claimed(
        self, documents: Sequence[tuple[str, bytes]], hints: Mapping[str, bytes]
    ) -> set[str]:
        # New documents stored from their sender's hint, verified in the background
        # (`Verification`) and before any read shows them.
        replica = self._replica
        with replica.store.transaction():  # what is held cannot change before the insert
            _, claimed = split_claims(replica.store, replica.clinic_id, documents, hints)
            if not claimed:
                return set()
            with replica.access("sync-write", "*") as access:
                access.record_ids.extend(d.doc_id for d in claimed)
                replica.store.put_unverified(claimed)
        replica.verification.start()
        return {d.doc_id for d in claimed}

    def put_documents(self, documents: Sequence[RecordDocument]) -> None:
        with self._replica.access("sync-write", "*") as access:
            access.record_ids.extend(d.id for d in documents)
            self._replica.store.put_documents(documents)
