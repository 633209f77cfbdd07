"""`EdgeClient`: the object an app embeds.

A store is a folder::

    STORE/keyring.json    the wrapped data key (no secret in it)
    STORE/coherency.db    SQLCipher database: documents, projections, identity
    STORE/blobs/          AES-256-GCM blob files, names keyed so they reveal nothing

Every read and write of patient data goes through `EdgeClient._access`, which emits
one `AccessEvent` per operation to the registered listeners (the audit log plugs in
there), whatever collection or entry point the operation came through.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Generic, TypeVar

from crdt import (
    ClinicalNote,
    Decision,
    FieldConflict,
    HistoryEntry,
    Patient,
    Record,
    RecordDocument,
    RecordValidationError,
    SyncSession,
    Wound,
    WoundAssessment,
    sortable_time,
)
from edge_sdk._blobs import BlobRef, BlobStore, EncryptedFileBlobStore
from edge_sdk._errors import (
    ReadOnlyCollectionError,
    RecordNotFoundError,
    StoreCorruptError,
    StoreExistsError,
    StoreNotFoundError,
    WrongKeyError,
)
from edge_sdk._files import replace_durably
from edge_sdk._identity import DeviceIdentity
from edge_sdk._keys import (
    KeyProvider,
    create_keyring,
    read_keyring,
    rewrap,
    unwrap_data_key,
    write_keyring,
)
from edge_sdk._store import SEARCH_SEPARATOR, Store, fold

if TYPE_CHECKING:
    from edge_sdk._model_sync import ModelUpdate
    from edge_sdk._models import ModelStore
    from edge_sdk._sync_types import Enrollment, RetryPolicy, SyncProgress, SyncResult

__all__ = [
    "AccessEvent",
    "AccessListener",
    "Collection",
    "EdgeClient",
    "NotesCollection",
]

R = TypeVar("R", bound=Record)

KEYRING_FILE = "keyring.json"
PENDING_KEYRING_FILE = "keyring.json.next"
DATABASE_FILE = "coherency.db"
BLOB_DIR = "blobs"


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One read or write of patient data, as the audit log will record it."""

    action: str  # read | list | create | update | delete | restore | resolve | history | ...
    collection: str
    record_ids: tuple[str, ...]
    device_id: str
    at: datetime
    outcome: str  # "ok", or the error's class name


AccessListener = Callable[[AccessEvent], None]


@dataclass(slots=True)
class _Access:
    action: str
    collection: str
    record_ids: list[str] = field(default_factory=list)


class Collection(Generic[R]):
    """Typed access to one collection of records (`client.patients`, ...)."""

    _filters: Mapping[str, str] = {}

    def __init__(self, client: EdgeClient, schema: type[R]) -> None:
        self._client = client
        self._schema = schema

    @property
    def name(self) -> str:
        """The collection name."""
        return self._schema.collection

    def add(self, **values: Any) -> R:
        """Create a record. Metadata (id, clinic, times, device) is filled in.

        Raises:
            RecordValidationError: A value is missing or invalid.
        """
        with self._client._access("create", self.name) as access:
            self._check_writable()
            self._check_references(values)
            document = RecordDocument.create(
                self._schema,
                values,
                device_id=self._client.device_id,
                clinic_id=self._client.clinic_id,
            )
            access.record_ids.append(document.id)
            self._client._store.put_documents([document])
            return self._typed(document.read())

    def get(self, record_id: str) -> R:
        """The record with id `record_id`, deleted or not.

        Raises:
            RecordNotFoundError: No such record in this collection.
        """
        with self._client._access("read", self.name) as access:
            access.record_ids.append(record_id)
            found = self._client._store.get_record(self.name, record_id)
            if found is None:
                raise RecordNotFoundError(f"no {self.name} record {record_id}")
            return self._typed(self._schema.model_validate(found))

    def update(self, record_id: str, **changes: Any) -> R:
        """Change some fields of a record; unchanged values write nothing.

        Raises:
            RecordNotFoundError: No such record.
            RecordValidationError: A field is unknown, immutable or invalid.
        """
        return self._change(
            "update",
            record_id,
            lambda doc: doc.update(changes, device_id=self._client.device_id),
        )

    def delete(self, record_id: str) -> R:
        """Tombstone a record: it stays (and syncs) marked deleted."""
        return self._change(
            "delete", record_id, lambda doc: doc.delete(device_id=self._client.device_id)
        )

    def restore(self, record_id: str) -> R:
        """Undo a delete."""
        return self._change(
            "restore", record_id, lambda doc: doc.restore(device_id=self._client.device_id)
        )

    def list(
        self,
        *,
        include_deleted: bool = False,
        limit: int | None = None,
        **filters: Any,
    ) -> builtins.list[R]:
        """Records matching equality filters on indexed fields, oldest first.

        Filters by collection: patients `mrn`, `family_name`, `given_name`; wounds
        `patient_id`, `status`; assessments `wound_id`, `patient_id`; notes
        `patient_id`, `wound_id`.

        Raises:
            ValueError: A filter is not supported by this collection.
        """
        where, params = self._where(filters)
        if not include_deleted:
            where.append("deleted = 0")
        return self._query("list", where, params, limit=limit)

    def conflicts(self, record_id: str) -> builtins.list[FieldConflict]:
        """The conflicted fields of one record."""
        with self._client._access("conflicts", self.name) as access:
            access.record_ids.append(record_id)
            return self._document(record_id).conflicts()

    def resolve(self, record_id: str, field_name: str, value: Any) -> R:
        """Settle a conflicted field on `value`, superseding every concurrent value.

        Raises:
            NoConflictError: The field has no conflict.
        """
        return self._change(
            "resolve",
            record_id,
            lambda doc: doc.resolve(
                field_name,
                value,
                device_id=self._client.device_id,
            ),
        )

    def history(self, record_id: str) -> builtins.list[HistoryEntry]:
        """Every change to a record: which device, when, which fields."""
        with self._client._access("history", self.name) as access:
            access.record_ids.append(record_id)
            return self._document(record_id).history()

    # ---------------------------------------------------------------- internals
    def _check_references(self, values: Mapping[str, Any]) -> None:
        """Refuse a new record that points at records this device does not hold.

        Only local creation is checked: over sync a wound may arrive before its
        patient, and that is not an error.
        """

    def _referenced(self, collection: str, field_name: str, record_id: Any) -> dict[str, Any]:
        found = (
            self._client._store.get_record(collection, record_id)
            if isinstance(record_id, str)
            else None
        )
        if record_id is None:
            raise RecordValidationError(self.name, [f"{field_name}: field required"])
        if found is None or found["deleted"]:
            raise RecordValidationError(
                self.name, [f"{field_name}: no {collection} record {record_id} on this device"]
            )
        return found

    def _typed(self, record: Record) -> R:
        assert isinstance(record, self._schema)
        return record

    def _document(self, record_id: str) -> RecordDocument:
        document = self._client._store.get_document(record_id, device_id=self._client.device_id)
        if document is None or document.collection != self.name:
            raise RecordNotFoundError(f"no {self.name} record {record_id}")
        return document

    def _check_writable(self) -> None:
        if not self._schema.device_writable:
            raise ReadOnlyCollectionError(
                f"{self.name} are server-owned: a device reads them and never writes them"
            )

    def _change(self, action: str, record_id: str, change: Callable[[RecordDocument], Any]) -> R:
        with self._client._access(action, self.name) as access:
            access.record_ids.append(record_id)
            self._check_writable()
            store = self._client._store
            with store.transaction():
                document = self._document(record_id)
                change(document)
                store.put_documents([document])
            return self._typed(document.read())

    def _where(self, filters: Mapping[str, Any]) -> tuple[builtins.list[str], builtins.list[Any]]:
        unknown = sorted(set(filters) - set(self._filters))
        if unknown:
            allowed = ", ".join(sorted(self._filters)) or "none"
            raise ValueError(
                f"cannot filter {self.name} by {', '.join(unknown)} (allowed: {allowed})"
            )
        where = [f"{self._filters[name]} = ?" for name in filters]
        return where, [_sql_value(v) for v in filters.values()]

    def _query(
        self,
        action: str,
        where: builtins.list[str],
        params: Sequence[Any],
        *,
        order_by: str = "id",
        limit: int | None = None,
    ) -> builtins.list[R]:
        with self._client._access(action, self.name) as access:
            rows = self._client._store.query_records(
                self.name, where, params, order_by=order_by, limit=limit
            )
            access.record_ids.extend(row["id"] for row in rows)
            return [self._typed(self._schema.model_validate(row)) for row in rows]


class PatientsCollection(Collection[Patient]):
    """Patients, searchable by name and MRN."""

    _filters = {"mrn": "mrn", "family_name": "family_name", "given_name": "given_name"}

    def search(
        self, text: str, *, include_deleted: bool = False, limit: int = 100
    ) -> builtins.list[Patient]:
        """Patients whose given name, family name or MRN starts with `text` (any case)."""
        folded = fold(text)
        escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        # Each part in search_text follows a separator: "%<sep>text%" is a prefix match
        # of any part.
        where = ["search_text LIKE ? ESCAPE '\\'"]
        if not include_deleted:
            where.append("deleted = 0")
        return self._query(
            "search",
            where,
            [f"%{SEARCH_SEPARATOR}{escaped}%"],
            order_by="family_name, given_name",
            limit=limit,
        )


class WoundsCollection(Collection[Wound]):
    """Wounds, listed by patient."""

    _filters = {"patient_id": "patient_id", "status": "status"}

    def _check_references(self, values: Mapping[str, Any]) -> None:
        self._referenced("patients", "patient_id", values.get("patient_id"))


class AssessmentsCollection(Collection[WoundAssessment]):
    """Wound assessments, listed by wound and date."""

    _filters = {"wound_id": "wound_id", "patient_id": "patient_id"}

    def _check_references(self, values: Mapping[str, Any]) -> None:
        wound = self._referenced("wounds", "wound_id", values.get("wound_id"))
        if wound["patient_id"] != values.get("patient_id"):
            raise RecordValidationError(
                self.name, [f"patient_id: wound {wound['id']} belongs to another patient"]
            )

    def for_wound(
        self,
        wound_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        include_deleted: bool = False,
    ) -> builtins.list[WoundAssessment]:
        """Assessments of one wound in capture order, optionally within [since, until)."""
        where = ["wound_id = ?"]
        params: builtins.list[Any] = [wound_id]
        if since is not None:
            where.append("captured_at >= ?")
            params.append(sortable_time(since))
        if until is not None:
            where.append("captured_at < ?")
            params.append(sortable_time(until))
        if not include_deleted:
            where.append("deleted = 0")
        return self._query("list", where, params, order_by="captured_at, id")


class NotesCollection(Collection[ClinicalNote]):
    """Clinical notes; their text merges when edited on two devices offline."""

    _filters = {"patient_id": "patient_id", "wound_id": "wound_id"}

    def _check_references(self, values: Mapping[str, Any]) -> None:
        self._referenced("patients", "patient_id", values.get("patient_id"))
        if values.get("wound_id") is not None:
            wound = self._referenced("wounds", "wound_id", values.get("wound_id"))
            if wound["patient_id"] != values.get("patient_id"):
                raise RecordValidationError(
                    self.name, [f"wound_id: wound {wound['id']} belongs to another patient"]
                )

    def splice(self, record_id: str, position: int, delete: int, insert: str) -> ClinicalNote:
        """Delete `delete` characters at `position` and insert `insert` there."""
        return self._change(
            "update",
            record_id,
            lambda doc: doc.splice_text(
                "text", position, delete, insert, device_id=self._client.device_id
            ),
        )

    def edit(self, record_id: str, text: str) -> ClinicalNote:
        """Replace the text; written as the minimal splices, so concurrent edits merge."""
        return self.update(record_id, text=text)


class EdgeClient:
    """An encrypted, offline-first store of clinical records on one device.

    Use `EdgeClient.init` once to create a store and `EdgeClient.open` afterwards;
    close it (or use it as a context manager) when done.
    """

    def __init__(
        self,
        path: Path,
        store: Store,
        identity: DeviceIdentity,
        clinic_id: str,
        data_key: bytes,
        blobs: EncryptedFileBlobStore,
    ) -> None:
        self.path = path
        self._store = store
        self._identity = identity
        self.clinic_id = clinic_id
        self._data_key = data_key
        self._blob_files = blobs
        self.blobs: BlobStore = _AuditedBlobs(self, blobs)
        """Scan files: content-addressed, encrypted, every read and write audited."""
        self._listeners: list[AccessListener] = []
        self._sync_http: Any = None  # the sync client's connection to its server, if any
        self.patients = PatientsCollection(self, Patient)
        self.wounds = WoundsCollection(self, Wound)
        self.assessments = AssessmentsCollection(self, WoundAssessment)
        self.notes = NotesCollection(self, ClinicalNote)
        self.decisions: Collection[Decision] = Collection(self, Decision)
        """The server's decisions on this clinic's intents (read-only here)."""

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        key_provider: KeyProvider,
        *,
        clinic_id: str,
    ) -> EdgeClient:
        """Create a new store at `path` (a folder) and a new device identity.

        Raises:
            StoreExistsError: `path` already holds a store.
        """
        root = Path(path)
        if (root / KEYRING_FILE).exists():
            raise StoreExistsError(f"{root}: a store already exists here")
        # A database without a keyring is an `init` cut short: its key was never
        # written down, so it cannot be opened and holds no record. Start over.
        for name in (DATABASE_FILE, DATABASE_FILE + "-wal", DATABASE_FILE + "-shm"):
            (root / name).unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = DeviceIdentity.generate()
        data_key, keyring = create_keyring(key_provider, store_id=identity.device_id)
        blob_key = secrets.token_bytes(32)
        store = Store.open(root / DATABASE_FILE, data_key, create=True)
        try:
            with store.transaction():
                store.db.table("identity").insert(
                    {
                        "device_id": identity.device_id,
                        "private_key": identity.private_bytes(),
                        "public_key": identity.public_key,
                    }
                )
                store.set_meta("clinic_id", clinic_id)
                store.set_meta("blob_key", blob_key.hex())
                store.set_meta("created_at", datetime.now(UTC).isoformat())
        except BaseException:
            store.close()
            raise
        # The keyring is written last: a store without one was never finished.
        write_keyring(root / KEYRING_FILE, keyring)
        return cls._assemble(root, store, data_key)

    @classmethod
    def open(cls, path: str | os.PathLike[str], key_provider: KeyProvider) -> EdgeClient:
        """Open an existing store.

        Raises:
            StoreNotFoundError: No store at `path`.
            WrongKeyError: The provider's key does not open it.
            StoreCorruptError: The database is damaged or truncated.
        """
        root = Path(path)
        if not (root / KEYRING_FILE).exists():
            raise StoreNotFoundError(f"{root}: no Coherency store here (run `coherency init`)")
        pending = root / PENDING_KEYRING_FILE
        if pending.exists():
            return cls._finish_rekey(root, key_provider)
        data_key = unwrap_data_key(read_keyring(root / KEYRING_FILE), key_provider)
        store = Store.open(root / DATABASE_FILE, data_key)
        return cls._assemble(root, store, data_key)

    @classmethod
    def _finish_rekey(cls, root: Path, key_provider: KeyProvider) -> EdgeClient:
        """Open a store whose last `rekey` was cut short, and settle which key it has.

        `rekey` writes the new keyring aside, re-encrypts the database (atomically),
        then moves the new keyring into place; a crash can stop it between any two.
        """
        pending = root / PENDING_KEYRING_FILE
        for keyring_path in (pending, root / KEYRING_FILE):
            try:
                data_key = unwrap_data_key(read_keyring(keyring_path), key_provider)
                store = Store.open(root / DATABASE_FILE, data_key)
            except (WrongKeyError, StoreCorruptError):
                continue
            if keyring_path == pending:
                replace_durably(pending, root / KEYRING_FILE)  # the database has the new key
            else:
                pending.unlink()  # the database was never re-encrypted
            return cls._assemble(root, store, data_key)
        raise WrongKeyError(
            f"{root}: a key change was interrupted; open the store with the new key "
            "(or the old one) to finish it"
        )

    @classmethod
    def _assemble(cls, root: Path, store: Store, data_key: bytes) -> EdgeClient:
        row = store.execute("SELECT device_id, private_key FROM identity").fetchone()
        identity = DeviceIdentity.from_private_bytes(row[0], bytes(row[1]))
        clinic_id = store.get_meta("clinic_id") or ""
        blob_key = bytes.fromhex(store.get_meta("blob_key") or "")
        blobs = EncryptedFileBlobStore(root / BLOB_DIR, blob_key)
        client = cls(root, store, identity, clinic_id, data_key, blobs)
        client._finish_blob_rotation()
        return client

    def close(self) -> None:
        """Close the store (and any server connection). The client cannot be used
        afterwards."""
        if self._sync_http is not None:
            self._sync_http.close()
            self._sync_http = None
        self._store.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- identity
    @property
    def device_id(self) -> str:
        """This device's id (a UUID), also its Automerge actor."""
        return self._identity.device_id

    @property
    def identity(self) -> DeviceIdentity:
        """This device's Ed25519 identity."""
        return self._identity

    # ---------------------------------------------------------------- keys
    def change_key(self, new_provider: KeyProvider) -> None:
        """Rewrap the data key under a new provider (e.g. a new passphrase)."""
        keyring = read_keyring(self.path / KEYRING_FILE)
        write_keyring(self.path / KEYRING_FILE, rewrap(keyring, self._data_key, new_provider))

    def rekey(self, new_provider: KeyProvider) -> None:
        """Re-encrypt everything under new keys: blobs, then the database.

        Blobs get a new random key (kept inside the database) and are re-encrypted one
        by one; the database gets a new random data key, wrapped by `new_provider`.
        Each stage survives a crash: opening the store again finishes it.
        """
        self._rotate_blob_key(secrets.token_bytes(32))
        data_key, keyring = create_keyring(new_provider, store_id=self.device_id)
        pending = self.path / PENDING_KEYRING_FILE
        write_keyring(pending, keyring)
        self._store.rekey(data_key)
        replace_durably(pending, self.path / KEYRING_FILE)
        self._data_key = data_key

    def _rotate_blob_key(self, new_key: bytes) -> None:
        # The next key is recorded before any blob moves to it, so an interrupted
        # rotation is finished by the next open (see `_assemble`).
        with self._store.transaction():
            self._store.set_meta("blob_key_next", new_key.hex())
        self._finish_blob_rotation()

    def _finish_blob_rotation(self) -> None:
        next_key = self._store.get_meta("blob_key_next")
        if not next_key:
            return
        self._blob_files.rekey(bytes.fromhex(next_key))
        with self._store.transaction():
            self._store.set_meta("blob_key", next_key)
            self._store.execute("DELETE FROM meta WHERE key = 'blob_key_next'")

    # ---------------------------------------------------------------- records
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group many writes into one transaction (all or none are kept)."""
        with self._store.transaction():
            yield

    def conflicts(self) -> list[FieldConflict]:
        """Every conflicted field in the store, by record."""
        with self._access("conflicts", "*") as access:
            found: list[FieldConflict] = []
            for doc_id in self._store.conflicted_documents():
                access.record_ids.append(doc_id)
                document = self._store.get_document(doc_id)
                if document is not None:
                    found += document.conflicts()
            return found

    def collection(self, name: str) -> Collection[Any]:
        """The collection called `name` (patients, wounds, assessments, notes, decisions)."""
        collections: dict[str, Collection[Any]] = {
            "patients": self.patients,
            "wounds": self.wounds,
            "assessments": self.assessments,
            "notes": self.notes,
            "decisions": self.decisions,
        }
        try:
            return collections[name]
        except KeyError:
            raise ValueError(f"no collection {name!r}") from None

    def find(self, record_id: str) -> Collection[Any]:
        """The collection holding record `record_id`.

        Raises:
            RecordNotFoundError: No record has that id.
        """
        name = self._store.collection_of(record_id)
        if name is None:
            raise RecordNotFoundError(f"no record {record_id}")
        return self.collection(name)

    # ---------------------------------------------------------------- sync
    def sync_session(self) -> SyncSession:
        """A sync session over this store, for any transport (in memory, HTTP, file)."""
        return SyncSession(_AuditedStore(self), device_id=self.device_id, policy=self._policy)

    def enroll(self, server_url: str, token: str, *, name: str = "") -> Enrollment:
        """Enrol this device with a sync server, using a one-time token from staff.

        Needs the `[server]` extra (httpx). See `edge_sdk._sync_client.enroll`.

        Raises:
            EnrolmentError: The server refused the token or the clinic does not match.
            ServerUnreachableError: The server did not answer.
        """
        from edge_sdk._sync_client import enroll

        return enroll(self, server_url, token, name=name)

    def sync(
        self,
        *,
        progress: Callable[[SyncProgress], None] | None = None,
        wait: float = 0.0,
        blobs: bool = True,
        retry: RetryPolicy | None = None,
    ) -> SyncResult:
        """Push local changes to the enrolled server, then pull the clinic's changes.

        Safe to cut at any point and call again: nothing is lost or applied twice.
        `wait` > 0 long-polls the pull; `progress` is called as batches and pages go.
        Needs the `[server]` extra (httpx).

        Raises:
            NotEnrolledError: The store was never enrolled (`enroll`).
            DeviceRevokedError: The server revoked this device.
            ServerUnreachableError: The server did not answer within the retry budget.
        """
        from edge_sdk._sync_client import sync

        return sync(self, progress=progress, wait=wait, blobs=blobs, retry=retry)

    @property
    def models(self) -> ModelStore:
        """The wound models on this device (`<store>/models`): `client.models.runner()`.

        Once enrolled, it takes only models signed by the server key pinned at enrolment.
        """
        from edge_sdk._model_sync import model_store

        return model_store(self)

    def update_model(self, *, threads: int = 1) -> ModelUpdate:
        """Install the server's current wound model if it is not the installed one.

        The model is verified against the server key pinned at enrolment (signature,
        then size and SHA-256) and run once with `threads` threads before it replaces
        the current one. Needs the `[server]` extra (httpx).

        Raises:
            NotEnrolledError: The store was never enrolled (`enroll`).
            ModelVerificationError: The model is tampered with, unsigned, signed by
                another key, or does not run; the previous model stays in use.
            ServerUnreachableError: The server did not answer within the retry budget.
        """
        from edge_sdk._model_sync import update_model

        return update_model(self, threads=threads)

    def _policy(self, document: RecordDocument) -> str | None:
        clinic = document.read().clinic_id
        if clinic != self.clinic_id:
            return f"record belongs to clinic {clinic}, this device to {self.clinic_id}"
        return None

    # ---------------------------------------------------------------- access
    def add_access_listener(self, listener: AccessListener) -> None:
        """Call `listener` with an `AccessEvent` after every read or write."""
        self._listeners.append(listener)

    @contextlib.contextmanager
    def _access(self, action: str, collection: str) -> Iterator[_Access]:
        access = _Access(action, collection)
        outcome = "ok"
        try:
            yield access
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            event = AccessEvent(
                action=access.action,
                collection=access.collection,
                record_ids=tuple(access.record_ids),
                device_id=self.device_id,
                at=datetime.now(UTC),
                outcome=outcome,
            )
            for listener in self._listeners:
                listener(event)


class _AuditedBlobs:
    """The blob store as app code sees it: every read and write is an access event."""

    def __init__(self, client: EdgeClient, files: EncryptedFileBlobStore) -> None:
        self._client = client
        self._files = files

    def put_stream(self, stream: BinaryIO) -> BlobRef:
        """Store a stream (never held in memory whole); returns its content address."""
        with self._client._access("blob-write", "blobs") as access:
            ref = self._files.put_stream(stream)
            access.record_ids.append(ref.sha256)
            return ref

    def put_bytes(self, data: bytes) -> BlobRef:
        """Store bytes; returns their content address."""
        with self._client._access("blob-write", "blobs") as access:
            ref = self._files.put_bytes(data)
            access.record_ids.append(ref.sha256)
            return ref

    def open(self, sha256: str) -> Iterator[bytes]:
        """The blob's plaintext in verified chunks."""
        with self._client._access("blob-read", "blobs") as access:
            access.record_ids.append(sha256)
            yield from self._files.open(sha256)

    def read_bytes(self, sha256: str) -> bytes:
        """The whole blob, verified."""
        with self._client._access("blob-read", "blobs") as access:
            access.record_ids.append(sha256)
            return self._files.read_bytes(sha256)

    def copy_to(self, sha256: str, out: BinaryIO) -> int:
        """Write the blob's plaintext to `out`; returns the byte count."""
        with self._client._access("blob-read", "blobs") as access:
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


class _AuditedStore:
    """The store as a sync session sees it, with its reads and writes audited."""

    def __init__(self, client: EdgeClient) -> None:
        self._client = client

    def document_heads(self) -> dict[str, list[bytes]]:
        return self._client._store.document_heads()

    def get_document(self, doc_id: str) -> RecordDocument | None:
        with self._client._access("sync-read", "*") as access:
            access.record_ids.append(doc_id)
            return self._client._store.get_document(doc_id, device_id=self._client.device_id)

    def saved_document(self, doc_id: str) -> bytes | None:
        with self._client._access("sync-read", "*") as access:
            access.record_ids.append(doc_id)
            return self._client._store.saved_document(doc_id)

    def put_documents(self, documents: Sequence[RecordDocument]) -> None:
        with self._client._access("sync-write", "*") as access:
            access.record_ids.extend(d.id for d in documents)
            self._client._store.put_documents(documents)


def _sql_value(value: Any) -> Any:
    """A filter value as the projection stores it (dates as ISO strings)."""
    return value.isoformat() if isinstance(value, date) else value  # datetimes are dates
