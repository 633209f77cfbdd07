"""`EdgeBox`: the box's replica and everything it keeps for the clinic's devices.

The box is an SDK replica (an encrypted store opened with a key file) enrolled with
central like a device, with the role ``edge``. Beside the replica's own tables, the
same encrypted database holds what the box keeps for its devices:

- ``edge_devices``: every device that used the box, when first and last, and where it
  stands in the box's feed (what `coherency edge status` reports);
- ``edge_origin``: for each document, the device whose push is exactly the version
  held, so a pull does not send a device back what it just pushed;
- ``edge_uploads`` and the spool folder: blob uploads in progress, resumable, the
  bytes encrypted at rest (AES-256-GCM per chunk under a key derived from the blob key);
- ``edge_audit``: the devices' audit chains, held append-only until central
  acknowledges them (relayed under the box's credentials).

Every write a device makes is committed to the store before the box answers: a box
killed mid-push loses nothing it acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crdt import (
    COLLECTIONS,
    DEFAULT_MAX_MESSAGE_SIZE,
    AuditProofError,
    Entry,
    EntryKind,
    RecordDocument,
    SyncMessage,
    SyncProtocolError,
    SyncReport,
    apply_documents,
    decode_message,
    encode_message,
    is_sha256,
    verify_chain,
)
from edge_box._auth import BoxTokens
from edge_box._tls import make_certificate
from edge_sdk import (
    ChainedEvent,
    EdgeClient,
    Enrollment,
    KeyFileKeyProvider,
    Replica,
    certificate_fingerprint,
)

__all__ = ["BoxInputError", "DeviceSeen", "EdgeBox", "EdgeStatus"]

PAGE_BYTES = DEFAULT_MAX_MESSAGE_SIZE - 4096
PUSH_MAX_DOCUMENTS = 2000
PULL_PAGE_DOCUMENTS = 1000
CHUNK_MIN = 64 * 1024
CHUNK_MAX = 4 * 1024 * 1024
_ENTRY_OVERHEAD = 64
_GENESIS = bytes(32)


class BoxInputError(Exception):
    """A device request the box refuses: a 4xx `status`, a `code`, a clear message."""

    def __init__(
        self, message: str, *, status: int = 400, code: str = "invalid", **details: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.details = details


@dataclass(frozen=True, slots=True)
class DeviceSeen:
    """A device that used the box."""

    device_id: str
    first_seen: str
    last_seen: str
    documents_pushed: int
    feed_cursor: int  # the last cursor the box answered it: its feed stands there
    behind: int  # documents changed in the box's feed since


@dataclass(frozen=True, slots=True)
class EdgeStatus:
    """What `coherency edge status` shows."""

    box_id: str
    clinic_id: str
    server_url: str | None
    fingerprint: str
    feed: int  # the newest number of the box's change feed
    upstream_documents: int  # documents central has not been sent yet
    upstream_intents: int  # of those, intents waiting for central to decide them
    upstream_blobs: int  # referenced blobs central has not been sent
    upstream_audit_events: int  # device audit events central has not acknowledged
    last_contact: str | None  # the last exchange with central that succeeded
    last_error: str | None
    devices: list[DeviceSeen] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The status as plain JSON values."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "devices"}
        out["devices"] = [{k: getattr(d, k) for k in d.__dataclass_fields__} for d in self.devices]
        return out


_TABLES = (
    "CREATE TABLE IF NOT EXISTS edge_devices (device_id TEXT PRIMARY KEY, first_seen TEXT,"
    " last_seen TEXT, pushed INTEGER NOT NULL DEFAULT 0, cursor INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS edge_origin (doc_id TEXT PRIMARY KEY, device_id TEXT NOT NULL,"
    " heads BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS edge_uploads (upload_id TEXT PRIMARY KEY, device_id TEXT NOT NULL,"
    " sha256 TEXT NOT NULL, size INTEGER NOT NULL, offset INTEGER NOT NULL, spooled INTEGER"
    " NOT NULL)",
    "CREATE TABLE IF NOT EXISTS edge_audit (device_id TEXT NOT NULL, seq INTEGER NOT NULL,"
    " canonical BLOB NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (device_id, seq))",
    "CREATE TABLE IF NOT EXISTS edge_audit_sent (device_id TEXT PRIMARY KEY, seq INTEGER"
    " NOT NULL, receipt TEXT)",
    "CREATE TABLE IF NOT EXISTS edge_nonces (nonce TEXT PRIMARY KEY, used_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS edge_keys (device_id TEXT PRIMARY KEY, public_key BLOB NOT NULL,"
    " revoked INTEGER NOT NULL DEFAULT 0)",
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class EdgeBox:
    """A clinic edge box's state: its replica, certificate and device bookkeeping.

    Make one with `EdgeBox.init` (a new store and certificate), open it again with
    `EdgeBox.open`; enrol it once with `enroll`. `coherency edge run` serves it
    (`edge_box.serve`), and the relay carries it to central.
    """

    def __init__(self, client: EdgeClient) -> None:
        self.client = client
        self.replica: Replica = client.replica
        self.store = self.replica.store
        self._spool = Path(self.replica.path) / "edge-uploads"
        self._spool.mkdir(mode=0o700, exist_ok=True)
        with self.store.transaction():
            for statement in _TABLES:
                self.store.execute(statement)
        self._version_lock = threading.Lock()
        self._feed_version = 0
        self._listeners: list[Any] = []
        self._lock = threading.Lock()  # one device write at a time, in push order
        self.tokens: BoxTokens | None = None
        self._relay_audit: Any = None  # set by the relay: push a device's chain upstream
        self._refresh_directory: Any = None  # set by the relay: central's directory now

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def init(cls, path: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> EdgeBox:
        """A new box store at `path`, its key wrapped by `key_file` (created, mode
        0600, if absent), and a new self-signed TLS certificate."""
        client = EdgeClient.init(path, KeyFileKeyProvider(key_file), idle_lock_after=None)
        box = cls(client)
        cert, key = make_certificate(client.device_id)
        with box.store.transaction():
            box.store.set_meta("edge.tls_certificate", cert)
            box.store.set_meta("edge.tls_key", key)
        return box

    @classmethod
    def open(cls, path: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> EdgeBox:
        """Open an existing box store (the store never locks itself: a box runs
        unattended)."""
        return cls(EdgeClient.open(path, KeyFileKeyProvider(key_file), idle_lock_after=None))

    def close(self) -> None:
        """Close the store."""
        self.client.close()

    def __enter__(self) -> EdgeBox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- identity
    @property
    def box_id(self) -> str:
        """The box's device id."""
        return self.replica.device_id

    @property
    def clinic_id(self) -> str:
        """The clinic the box serves."""
        return self.replica.clinic_id

    @property
    def enrollment(self) -> Enrollment | None:
        """The box's enrolment with central, or None."""
        return self.replica.enrollment

    @property
    def certificate(self) -> str:
        """The box's TLS certificate (PEM)."""
        return self.store.get_meta("edge.tls_certificate") or ""

    @property
    def fingerprint(self) -> str:
        """Lowercase hex SHA-256 of the certificate's DER: what devices pin."""
        return certificate_fingerprint(self.certificate)

    @contextlib.contextmanager
    def tls_files(self) -> Iterator[tuple[str, str, str]]:
        """The certificate and key as files uvicorn can load, for as long as the block
        runs: (certificate path, key path, key password). The key file is encrypted
        with a one-time password and removed afterwards; the key itself lives only in
        the encrypted store."""
        from cryptography.hazmat.primitives import serialization

        password = secrets.token_urlsafe(24)
        key = serialization.load_pem_private_key(
            (self.store.get_meta("edge.tls_key") or "").encode(), password=None
        )
        sealed = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(password.encode()),
        )
        folder = Path(self.replica.path) / "tls"
        folder.mkdir(mode=0o700, exist_ok=True)
        cert_path, key_path = folder / "box.crt", folder / "box.key"
        cert_path.write_text(self.certificate)
        key_path.touch(mode=0o600)
        key_path.write_bytes(sealed)
        try:
            yield str(cert_path), str(key_path), password
        finally:
            key_path.unlink(missing_ok=True)

    def enroll(self, server_url: str, token: str, *, name: str = "") -> Enrollment:
        """Enrol the box with central using a one-time edge token from an admin; the
        box's certificate is registered so central can tell devices its fingerprint."""
        from edge_sdk import HttpTransport

        return HttpTransport.enroll(
            self.replica, server_url, token, name=name, tls_certificate=self.certificate
        )

    def _central_keys(self) -> tuple[bytes, ...]:
        """Central's token key the box trusts now: the newest it learnt, vouched for by
        the one pinned at enrolment (`edge_sdk.follow_token_keys`). A rotated-out key is
        not trusted: a device whose token it signed logs in at the box with its key."""
        enrollment = self.enrollment
        return () if enrollment is None else (enrollment.current_token_key,)

    def authenticator(self) -> BoxTokens:
        """The box's login and token checks (central's key must be pinned: enrolled)."""
        enrollment = self.enrollment
        if enrollment is None:
            raise RuntimeError("the box is not enrolled with a central server: run edge enroll")
        if self.tokens is None:
            self.tokens = BoxTokens(
                box_key=Ed25519PrivateKey.from_private_bytes(self.replica.identity.private_bytes()),
                box_id=self.box_id,
                clinic_id=self.clinic_id,
                central_key=self._central_keys,
                directory=self.directory,
                was_known=self._was_revoked,
                refresh=lambda: self._refresh_directory() if self._refresh_directory else None,
                claim_nonce=self._claim_nonce,
            )
        return self.tokens

    def _claim_nonce(self, nonce: str, now: float, keep_seconds: float) -> bool:
        """Record a device login's nonce (kept `keep_seconds`); False if already used."""
        with self.store.transaction():
            self.store.execute("DELETE FROM edge_nonces WHERE used_at < ?", (now - keep_seconds,))
            seen = self.store.execute(
                "SELECT 1 FROM edge_nonces WHERE nonce = ?", (nonce,)
            ).fetchone()
            if seen is not None:
                return False
            self.store.execute(
                "INSERT INTO edge_nonces(nonce, used_at) VALUES (?, ?)", (nonce, now)
            )
        return True

    def _was_revoked(self, device_id: str) -> bool:
        row = self.store.execute(
            "SELECT 1 FROM edge_keys WHERE device_id = ? AND revoked = 1", (device_id,)
        ).fetchone()
        return row is not None

    def learn_directory(self, keys: dict[str, bytes], revoked: Sequence[str]) -> None:
        """Keep what central's directory says: the devices that may use the box (and
        author the clinic's records) and the ones revoked. A device is dropped only when
        central lists it as revoked, never because one directory answer lacked it (an
        answer fetched just before a device's enrolment can arrive after a newer one)."""
        with self.store.transaction():
            for device_id, key in keys.items():
                self.store.execute(
                    "INSERT INTO edge_keys(device_id, public_key, revoked) VALUES (?, ?, 0)"
                    " ON CONFLICT(device_id) DO UPDATE SET public_key = excluded.public_key"
                    " WHERE edge_keys.revoked = 0",
                    (device_id, key),
                )
            for device_id in revoked:
                self.store.execute(
                    "INSERT INTO edge_keys(device_id, public_key, revoked) VALUES (?, x'', 1)"
                    " ON CONFLICT(device_id) DO UPDATE SET revoked = 1",
                    (device_id,),
                )

    # ---------------------------------------------------------------- change feed
    def feed_seq(self) -> int:
        """The newest number of the box's change feed."""
        return self.store.feed_seq()

    def add_feed_listener(self, listener: Any) -> None:
        """Call `listener()` (from the writing thread) after each write to the feed."""
        self._listeners.append(listener)

    def remove_feed_listener(self, listener: Any) -> None:
        """Stop calling `listener` (if it was added)."""
        if listener in self._listeners:
            self._listeners.remove(listener)

    def notify(self) -> None:
        """Wake pulls waiting for a change (after the store committed one)."""
        with self._version_lock:
            self._feed_version += 1
        for listener in list(self._listeners):
            listener()

    def saw(self, device_id: str, *, pushed: int = 0, cursor: int | None = None) -> None:
        """Record that a device used the box."""
        now = _now()
        with self.store.transaction():
            self.store.execute(
                "INSERT INTO edge_devices(device_id, first_seen, last_seen, pushed, cursor)"
                " VALUES (?, ?, ?, ?, 0) ON CONFLICT(device_id) DO UPDATE SET"
                " last_seen = excluded.last_seen, pushed = pushed + excluded.pushed",
                (device_id, now, now, pushed),
            )
            if cursor is not None:
                self.store.execute(
                    "UPDATE edge_devices SET cursor = ? WHERE device_id = ?", (cursor, device_id)
                )

    # ---------------------------------------------------------------- documents
    def push(self, device_id: str, message: bytes) -> dict[str, Any]:
        """Merge a device's pushed documents (one `crdt` wire message of DOC entries)
        into the box's replica, committed before the answer: the same checks central
        makes (the device's clinic only, no server-owned collection, valid after the
        merge, every new change signed by an enrolled device of the clinic).

        Raises:
            BoxInputError: An unusable message.
        """
        try:
            decoded = decode_message(message)
        except SyncProtocolError as exc:
            raise BoxInputError(f"unusable sync message: {exc}", code="bad_message") from None
        if any(entry.kind is not EntryKind.DOC for entry in decoded.entries):
            raise BoxInputError(
                "a push carries whole documents (DOC entries) only", code="bad_message"
            )
        if len(decoded.entries) > PUSH_MAX_DOCUMENTS:
            raise BoxInputError(
                f"a push may carry at most {PUSH_MAX_DOCUMENTS} documents",
                status=413,
                code="push_too_costly",
            )
        incoming = [(entry.doc_id, entry.payload) for entry in decoded.entries]
        ids = list(dict.fromkeys(doc_id for doc_id, _ in incoming))
        replica = self.replica
        pushed: dict[str, list[bytes]] = {}

        def policy(document: RecordDocument) -> str | None:
            pushed[document.id] = document.heads
            reason = replica.policy(document)
            if reason is None and not document.schema.device_writable:
                reason = f"{document.collection} are server-owned: devices may not write them"
            return reason

        report = SyncReport()
        with self._lock, self.store.transaction():
            with replica.access("sync-write", "*") as access:
                target = _BoxDocuments(replica)
                apply_documents(
                    target,
                    incoming,
                    device_id=self.box_id,
                    policy=policy,
                    report=report,
                    authorship=_BoxDirectory(self),
                )
                access.record_ids.extend(sorted(report.received))
            for document in target.written:
                # A new version: it is this device's own exactly when nothing else was
                # merged into it (then the device need not pull it back).
                if pushed.get(document.id) == document.heads:
                    self.store.execute(
                        "INSERT OR REPLACE INTO edge_origin(doc_id, device_id, heads)"
                        " VALUES (?, ?, ?)",
                        (document.id, device_id, b"".join(document.heads)),
                    )
                else:
                    self.store.execute("DELETE FROM edge_origin WHERE doc_id = ?", (document.id,))
            self.saw(device_id, pushed=len(report.received))
        if report.received:
            self.notify()
        refused = {r.doc_id for r in report.rejected}
        return {
            "accepted": [d for d in ids if d in report.received],
            "unchanged": [d for d in ids if d not in report.received and d not in refused],
            "rejected": [{"doc_id": r.doc_id, "reason": r.reason} for r in report.rejected],
        }

    def pull(self, device_id: str, *, cursor: int, limit: int) -> tuple[bytes, int, bool]:
        """One page of the box's change feed after `cursor` for a device: (wire
        message, next cursor, more). Versions that are exactly what this device pushed
        are left out.

        Raises:
            BoxInputError: 409 ``cursor_ahead`` when the cursor is past the feed.
        """
        limit = max(1, min(limit, PULL_PAGE_DOCUMENTS))
        with self.store.consistent():
            feed = self.store.feed_seq()
            if cursor > feed:
                raise BoxInputError(
                    f"cursor {cursor} is ahead of the box's feed ({feed}); start again at 0",
                    status=409,
                    code="cursor_ahead",
                )
            rows = self.store.changed_since(cursor, limit=limit + 1)
            mine = self._own_versions(device_id, [r[0] for r in rows])
        more = len(rows) > limit
        entries: list[Entry] = []
        used = 0
        next_cursor = cursor
        for doc_id, seq, heads, data in rows[:limit]:
            if mine.get(doc_id) == heads:
                next_cursor = seq
                continue
            if entries and used + len(data) + _ENTRY_OVERHEAD > PAGE_BYTES:
                more = True
                break
            entries.append(Entry(EntryKind.DOC, doc_id, data))
            used += len(data) + _ENTRY_OVERHEAD
            next_cursor = seq
        if entries:
            with self.replica.access("sync-read", "*") as access:
                access.record_ids.extend(e.doc_id for e in entries)
        self.saw(device_id, cursor=next_cursor)
        control = {"cursor": next_cursor, "more": more, "feed": feed}
        return encode_message(SyncMessage(control, tuple(entries))), next_cursor, more

    def _own_versions(self, device_id: str, ids: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.store.execute(
                "SELECT doc_id, heads FROM edge_origin"
                f" WHERE device_id = ? AND doc_id IN ({marks})",
                [device_id, *chunk],
            ).fetchall()
            found.update({str(r[0]): bytes(r[1]) for r in rows})
        return found

    @property
    def feed_version(self) -> int:
        """A counter bumped at every write to the feed (for long polls)."""
        return self._feed_version

    def directory(self) -> dict[str, bytes]:
        """The clinic's devices central listed and has not revoked, with their keys."""
        rows = self.store.execute(
            "SELECT device_id, public_key FROM edge_keys WHERE revoked = 0"
        ).fetchall()
        known = {str(r[0]): bytes(r[1]) for r in rows}
        # Before the first round under this version: the replica's last directory.
        return known or dict(self.replica.directory_keys())

    # ---------------------------------------------------------------- blobs
    def _blob_key(self, purpose: bytes) -> bytes:
        blob_key = bytes.fromhex(self.store.get_meta("blob_key") or "")
        return HKDF(hashes.SHA256(), 32, salt=None, info=b"coherency-edge-spool:" + purpose).derive(
            blob_key
        )

    def declare_upload(self, device_id: str, *, sha256: str, size: int) -> dict[str, Any]:
        """Start or resume a device's blob upload, or say the box holds the blob."""
        if not is_sha256(sha256):
            raise BoxInputError("sha256 must be 64 lowercase hex characters", code="bad_sha256")
        if size < 1 or size > 2**40:
            raise BoxInputError("size must be positive", code="bad_size")
        if self.replica.blob_files.exists(sha256):
            return self._upload_state(None, size, complete=True)
        row = self.store.execute(
            "SELECT upload_id, size, offset FROM edge_uploads WHERE device_id = ? AND sha256 = ?",
            (device_id, sha256),
        ).fetchone()
        if row is not None and int(row[1]) == size:
            return self._upload_state(str(row[0]), int(row[2]), complete=False)
        upload_id = secrets.token_hex(16)
        with self.store.transaction():
            if row is not None:
                self._drop_upload(str(row[0]))
            self.store.execute(
                "INSERT INTO edge_uploads(upload_id, device_id, sha256, size, offset, spooled)"
                " VALUES (?, ?, ?, ?, 0, 0)",
                (upload_id, device_id, sha256, size),
            )
        return self._upload_state(upload_id, 0, complete=False)

    def send_chunk(
        self, device_id: str, *, upload_id: str, offset: int, data: bytes
    ) -> dict[str, Any] | None:
        """Append a chunk at `offset` (encrypted in the spool, committed before the
        answer); the blob is stored once whole and its SHA-256 matches. None when the
        upload is unknown or stands at another offset."""
        with self._lock:
            row = self.store.execute(
                "SELECT sha256, size, offset FROM edge_uploads"
                " WHERE upload_id = ? AND device_id = ?",
                (upload_id, device_id),
            ).fetchone()
            if row is None or int(row[2]) != offset:
                return None
            sha256, size = str(row[0]), int(row[1])
            end = offset + len(data)
            if end > size:
                raise BoxInputError("the chunk ends past the declared size", code="bad_chunk")
            if len(data) > CHUNK_MAX or (end < size and len(data) < CHUNK_MIN):
                raise BoxInputError(
                    f"chunks other than the last must be {CHUNK_MIN}-{CHUNK_MAX} bytes",
                    code="bad_chunk",
                )
            spool = self._spool / upload_id
            aead = AESGCM(self._blob_key(upload_id.encode()))
            # A fresh nonce per record (a chunk re-sent after a crash is sealed anew); the
            # offset is bound in the associated data, so records cannot be reordered.
            nonce = secrets.token_bytes(12)
            sealed = nonce + aead.encrypt(nonce, data, _spool_aad(upload_id, offset))
            with open(spool, "ab") as out:
                out.truncate(self._spooled(upload_id))
                out.write(len(sealed).to_bytes(4, "big") + sealed)
                out.flush()
                os.fsync(out.fileno())
            with self.store.transaction():
                self.store.execute(
                    "UPDATE edge_uploads SET offset = ?, spooled = ? WHERE upload_id = ?",
                    (end, spool.stat().st_size, upload_id),
                )
            if end < size:
                return self._upload_state(upload_id, end, complete=False)
            try:
                reader = cast(BinaryIO, _SpoolReader(self._chunks(upload_id, aead)))
                ref = self.replica.blob_files.put_stream(reader)
            finally:
                with self.store.transaction():
                    self._drop_upload(upload_id)
        if ref.sha256 != sha256:
            raise BoxInputError(
                f"the uploaded bytes do not have SHA-256 {sha256}; the upload was discarded",
                code="blob_hash_mismatch",
            )
        return self._upload_state(None, size, complete=True)

    def _spooled(self, upload_id: str) -> int:
        row = self.store.execute(
            "SELECT spooled FROM edge_uploads WHERE upload_id = ?", (upload_id,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _chunks(self, upload_id: str, aead: AESGCM) -> Iterator[bytes]:
        spool = self._spool / upload_id
        offset = 0
        with open(spool, "rb") as spooled:
            while header := spooled.read(4):
                sealed = spooled.read(int.from_bytes(header, "big"))
                nonce, body = sealed[:12], sealed[12:]
                data = aead.decrypt(nonce, body, _spool_aad(upload_id, offset))
                offset += len(data)
                yield data

    def _drop_upload(self, upload_id: str) -> None:
        self.store.execute("DELETE FROM edge_uploads WHERE upload_id = ?", (upload_id,))
        (self._spool / upload_id).unlink(missing_ok=True)

    def _upload_state(
        self, upload_id: str | None, offset: int, *, complete: bool
    ) -> dict[str, Any]:
        return {
            "upload_id": upload_id,
            "offset": offset,
            "complete": complete,
            "chunk_size": 1024 * 1024,
            "min_chunk_size": CHUNK_MIN,
            "max_chunk_size": CHUNK_MAX,
        }

    def blob_size(self, sha256: str) -> int | None:
        """The size of a blob the box holds, or None."""
        if not is_sha256(sha256) or not self.replica.blob_files.exists(sha256):
            return None
        return self.replica.blob_files.size(sha256)

    def blob_chunks(self, device_id: str, sha256: str, start: int) -> Iterator[bytes]:
        """A held blob's plaintext from byte `start` on (audited as a read)."""
        with self.replica.access("blob-read", "blobs") as access:
            access.record_ids.append(sha256)
        skip = start
        for chunk in self.replica.blob_files.open(sha256):
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            yield chunk[skip:]
            skip = 0

    # ---------------------------------------------------------------- audit chains
    def hold_audit(self, device_id: str, events: Sequence[ChainedEvent]) -> int:
        """Append a device's audit events to the box's copy of its chain (append-only:
        events it holds must be sent again unchanged, new ones must continue the
        chain); committed before the answer. The seq the box now holds.

        Raises:
            BoxInputError: 409 ``audit_chain_broken`` naming the event.
        """
        with self._lock:
            row = self.store.execute(
                "SELECT seq, hash FROM edge_audit WHERE device_id = ? ORDER BY seq DESC LIMIT 1",
                (device_id,),
            ).fetchone()
            held, head = (int(row[0]), bytes(row[1])) if row else (self._sent_seq(device_id), None)
            fresh = [e for e in events if e.seq > held]
            for event in events:
                if event.seq <= held:
                    old = self.store.execute(
                        "SELECT hash, canonical FROM edge_audit WHERE device_id = ? AND seq = ?",
                        (device_id, event.seq),
                    ).fetchone()
                    if old is not None and (
                        bytes(old[0]) != event.hash or bytes(old[1]) != event.canonical
                    ):
                        raise BoxInputError(
                            f"audit event {event.seq} differs from the one the box holds",
                            status=409,
                            code="audit_chain_broken",
                            seq=event.seq,
                            server_seq=held,
                        )
            if fresh:
                start, previous = held + 1, head
                if previous is None:
                    previous = self._sent_hash(device_id)
                    if fresh[0].seq > start:
                        # The box holds nothing of this chain that central has not
                        # acknowledged, and the device's chain goes on from where
                        # central (reached directly) acknowledged it: take the batch
                        # from its first event; central checks that it continues.
                        start, previous = fresh[0].seq + 1, fresh[0].hash
                        chained = fresh[1:]
                    else:
                        chained = fresh
                else:
                    chained = fresh
                try:
                    verify_chain(
                        [(e.seq, e.canonical, e.hash) for e in chained],
                        start_seq=start,
                        previous=previous,
                    )
                except AuditProofError as exc:
                    raise BoxInputError(
                        f"the audit chain does not continue the box's copy: {exc}",
                        status=409,
                        code="audit_chain_broken",
                        seq=fresh[0].seq,
                        server_seq=held,
                    ) from None
                with self.store.transaction():
                    for e in fresh:
                        self.store.execute(
                            "INSERT INTO edge_audit(device_id, seq, canonical, hash)"
                            " VALUES (?, ?, ?, ?)",
                            (device_id, e.seq, e.canonical, e.hash),
                        )
            return max(held, fresh[-1].seq if fresh else held)

    def _sent_seq(self, device_id: str) -> int:
        row = self.store.execute(
            "SELECT seq FROM edge_audit_sent WHERE device_id = ?", (device_id,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _sent_hash(self, device_id: str) -> bytes:
        row = self.store.execute(
            "SELECT receipt FROM edge_audit_sent WHERE device_id = ?", (device_id,)
        ).fetchone()
        if row is None or not row[0]:
            return _GENESIS
        return bytes.fromhex(json.loads(row[0])["head_hash"])

    def audit_backlog(self) -> dict[str, list[ChainedEvent]]:
        """Per device, the held audit events central has not acknowledged."""
        rows = self.store.execute(
            "SELECT device_id, seq, canonical, hash FROM edge_audit ORDER BY device_id, seq"
        ).fetchall()
        out: dict[str, list[ChainedEvent]] = {}
        for device_id, seq, canonical, digest in rows:
            out.setdefault(str(device_id), []).append(
                ChainedEvent(int(seq), bytes(canonical), bytes(digest))
            )
        return out

    def audit_relayed(self, device_id: str, receipt: dict[str, Any]) -> None:
        """Central acknowledged a device's chain up to the receipt's head: drop what
        it covers and keep the receipt (a device asking next gets it)."""
        seq = int(receipt["head_seq"])
        with self.store.transaction():
            self.store.execute(
                "DELETE FROM edge_audit WHERE device_id = ? AND seq <= ?", (device_id, seq)
            )
            self.store.execute(
                "INSERT OR REPLACE INTO edge_audit_sent(device_id, seq, receipt) VALUES (?, ?, ?)",
                (device_id, seq, json.dumps(receipt)),
            )

    def audit_forget(self, device_id: str, seq: int) -> None:
        """Central already holds a device's chain up to `seq` (the device pushed it
        there directly): the box drops its copy of those events."""
        with self.store.transaction():
            self.store.execute(
                "DELETE FROM edge_audit WHERE device_id = ? AND seq <= ?", (device_id, seq)
            )

    def audit_receipt(self, device_id: str, seq: int) -> dict[str, Any] | None:
        """Central's receipt for a device's chain if it covers exactly `seq`."""
        row = self.store.execute(
            "SELECT seq, receipt FROM edge_audit_sent WHERE device_id = ?", (device_id,)
        ).fetchone()
        if row is None or int(row[0]) != seq or not row[1]:
            return None
        return dict(json.loads(row[1]))

    def relay_audit_now(self, device_id: str) -> None:
        """Ask the relay to carry a device's chain to central now (when it can)."""
        if self._relay_audit is not None:
            self._relay_audit(device_id)

    # ---------------------------------------------------------------- status
    def status(
        self, *, last_contact: str | None = None, last_error: str | None = None
    ) -> EdgeStatus:
        """Devices seen, backlogs up and down, the last contact with central."""
        enrollment = self.enrollment
        peer = "server:" + enrollment.server_public_key.hex()[:32] if enrollment else ""
        unsent = self.store.unsent_to(peer) if enrollment else []
        upstream = [
            (d, c)
            for d, c in unsent
            if c in COLLECTIONS and COLLECTIONS[c].device_writable  # what the relay pushes
        ]
        feed = self.store.feed_seq()
        devices = []
        for row in self.store.execute(
            "SELECT device_id, first_seen, last_seen, pushed, cursor FROM edge_devices"
            " ORDER BY last_seen DESC"
        ).fetchall():
            cursor = int(row[4])
            behind = self.store.execute(
                "SELECT COUNT(*) FROM documents WHERE seq > ?", (cursor,)
            ).fetchone()[0]
            devices.append(
                DeviceSeen(str(row[0]), str(row[1]), str(row[2]), int(row[3]), cursor, int(behind))
            )
        held_blobs = set(self.replica.blob_files.list())
        sent_blobs = set(self.store.peer_heads(peer + ":blobs")) if enrollment else set()
        audit = self.store.execute("SELECT COUNT(*) FROM edge_audit").fetchone()[0]
        return EdgeStatus(
            box_id=self.box_id,
            clinic_id=self.clinic_id,
            server_url=enrollment.server_url if enrollment else None,
            fingerprint=self.fingerprint,
            feed=feed,
            upstream_documents=len(upstream),
            upstream_intents=sum(1 for _, c in upstream if c == "intents"),
            upstream_blobs=len(held_blobs - sent_blobs),
            upstream_audit_events=int(audit),
            last_contact=last_contact or self.store.get_meta("edge.last_contact"),
            last_error=last_error
            if last_error is not None
            else self.store.get_meta("edge.last_error"),
            devices=devices,
        )


def _spool_aad(upload_id: str, offset: int) -> bytes:
    return upload_id.encode() + b":" + str(offset).encode()


class _BoxDocuments:
    """The box's store as `apply_documents` sees it in a device push."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self.written: list[RecordDocument] = []

    def document_heads(self) -> dict[str, list[bytes]]:
        return self._replica.store.document_heads()

    def get_document(self, doc_id: str) -> RecordDocument | None:
        return self._replica.store.get_document(doc_id, device_id=self._replica.device_id)

    def saved_document(self, doc_id: str) -> bytes | None:
        return self._replica.store.saved_document(doc_id)

    def put_documents(self, documents: Sequence[RecordDocument]) -> None:
        self._replica.store.put_documents(documents)
        self.written.extend(documents)


class _BoxDirectory:
    """Who may author the clinic's records in a device's push: the devices central
    listed and has not revoked (`EdgeBox.directory`), else as the replica decides (the
    box itself, central's own key)."""

    def __init__(self, box: EdgeBox) -> None:
        self._box = box
        self._known = box.directory()

    def device_key(self, device_id: str, clinic_id: str, declared: bytes | None) -> bytes | None:
        if clinic_id == self._box.clinic_id and device_id in self._known:
            return self._known[device_id]
        return self._box.replica.directory.device_key(device_id, clinic_id, declared)


class _SpoolReader:
    """The decrypted spool as a readable stream for `put_stream`."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1, /) -> bytes:
        while size < 0 or len(self._buffer) < size:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                break
        if size < 0:
            out, self._buffer = self._buffer, b""
        else:
            out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out
