"""`EdgeClient`: the object an app embeds.

A store is a folder::

    STORE/keyring.json    the wrapped data key (no secret in it)
    STORE/coherency.db    SQLCipher database: documents, projections, identity
    STORE/blobs/          AES-256-GCM blob files, names keyed so they reveal nothing

The client opens the folder (keys, key changes, crash recovery) and owns the
`Replica` (`client.replica`) that collections, bundles, sync and model updates work on.
Every read and write of patient data goes through the replica's access gate, which
emits one `AccessEvent` per operation to the registered listeners (the audit log plugs
in there), whatever collection or entry point the operation came through.

Every access is also written to the device's hash-chained audit log before its result
is returned (`edge_sdk._audit`); `verify_audit` checks that log, and sync pushes it.
A store locks itself after `idle_lock_after` seconds without use (automatic logoff):
`unlock` with the key provider to go on.

Server-authoritative work (appointments, visits, supply orders, payments) is asked
for through intents (`client.bookings`, `client.orders`, `client.payments`);
`intent_status`, `list_intents` and `on_decision` follow any intent to the server's
decision.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crdt import (
    AllergyIntolerance,
    Availability,
    CarePlan,
    Catalogue,
    ClinicalNote,
    Condition,
    Decision,
    Directory,
    FieldConflict,
    Invoice,
    MedicationStatement,
    Notice,
    Patient,
    SyncReport,
    SyncSession,
    Wound,
    WoundAssessment,
)
from edge_sdk._access import AccessListener
from edge_sdk._audit_verify import AuditReport, verify_audit
from edge_sdk._background import BackgroundSync
from edge_sdk._blobs import BlobStore, EncryptedFileBlobStore
from edge_sdk._bookings import Bookings
from edge_sdk._collections import (
    AssessmentsCollection,
    CarePlansCollection,
    Collection,
    NotesCollection,
    PatientHistoryCollection,
    PatientsCollection,
    WoundsCollection,
)
from edge_sdk._conflict_policies import ConflictPolicies, ConflictPolicy, keep_both
from edge_sdk._discovery import discover_edge_boxes
from edge_sdk._edge_boxes import EdgeBoxPin, EdgeBoxRoute, routes_to_pinned
from edge_sdk._errors import (
    InvalidArgumentError,
    RecordNotFoundError,
    ServerUnreachableError,
    StoreCorruptError,
    StoreExistsError,
    StoreNotFoundError,
    SyncError,
    UntrustedEdgeBoxError,
    WrongKeyError,
)
from edge_sdk._evolution import RecordUpgrades
from edge_sdk._fhir import FhirImportReport, fhir_export, fhir_import
from edge_sdk._files import replace_durably
from edge_sdk._identity import DeviceIdentity
from edge_sdk._intents import (
    DecisionCallback,
    DecisionNotices,
    DecisionsCollection,
    IntentsCollection,
    IntentStatus,
)
from edge_sdk._interop import export_documents, import_documents
from edge_sdk._keys import (
    KeyProvider,
    create_keyring,
    read_keyring,
    rewrap,
    unwrap_data_key,
    write_keyring,
)
from edge_sdk._model_sync import ModelSource, ModelUpdate, model_store, update_model
from edge_sdk._models import ModelStore
from edge_sdk._notices import NoticesCollection
from edge_sdk._notify import Deliver, Subscription
from edge_sdk._orders import Orders
from edge_sdk._payments import InvoicesCollection, Payments
from edge_sdk._replica import Replica
from edge_sdk._store import Store
from edge_sdk._sync import sync_replica
from edge_sdk._sync_status import StatusTracker, SyncStatus
from edge_sdk._sync_types import Enrollment, RetryPolicy, SyncProgress, SyncResult
from edge_sdk._transport import SyncTransport
from edge_sdk._verification import VerificationStatus

if TYPE_CHECKING:
    from edge_sdk._http_transport import HttpTransport

__all__ = ["EdgeClient", "enrollment_of"]

KEYRING_FILE = "keyring.json"
PENDING_KEYRING_FILE = "keyring.json.next"
DATABASE_FILE = "coherency.db"
BLOB_DIR = "blobs"
DEFAULT_IDLE_LOCK = 15 * 60.0
"""Seconds without use after which a store locks itself, unless told otherwise."""


class EdgeClient:
    """An encrypted, offline-first store of clinical records on one device.

    Use `EdgeClient.init` once to create a store and `EdgeClient.open` afterwards;
    close it (or use it as a context manager) when done.
    """

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        """The device's replica: what sync, bundles and model updates work on."""
        self._server: HttpTransport | None = None  # see `_server_transport`
        self._status = StatusTracker(replica)
        self._loops: list[BackgroundSync] = []  # stopped by `close`
        self.patients = PatientsCollection(replica, Patient)
        self.wounds = WoundsCollection(replica, Wound)
        self.assessments = AssessmentsCollection(replica, WoundAssessment)
        self.notes = NotesCollection(replica, ClinicalNote)
        self.conditions = PatientHistoryCollection(replica, Condition)
        """The patients' medical history: diagnoses, with their course."""
        self.allergies = PatientHistoryCollection(replica, AllergyIntolerance)
        """Allergies and intolerances (drugs, latex, adhesives)."""
        self.medications = PatientHistoryCollection(replica, MedicationStatement)
        """Medications the patients take or took."""
        self.care_plans = CarePlansCollection(replica, CarePlan)
        """How each wound is to be treated: goals, dressings, offloading, review."""
        self.decisions = DecisionsCollection(replica, Decision)
        """The server's decisions on this clinic's intents (read-only here)."""
        self.intents = IntentsCollection(replica, self.decisions)
        """Intents this clinic's devices wrote (immutable: read them, write new ones
        through `bookings`, `orders` and `payments`)."""
        self.bookings = Bookings(replica, self.intents, self.decisions)
        """Appointments and caregiver visits: ask for them, see what is free."""
        self.invoices = InvoicesCollection(replica, Invoice)
        """The patients' invoices (server-owned, read-only here)."""
        self.notices = NoticesCollection(replica, Notice)
        """In-app notifications the server wrote (read-only here; `inbox` lists a
        recipient's newest first, `mark_seen` flags one seen on this device)."""
        self.orders = Orders(replica, self.intents, self.decisions)
        """Supplies: the clinic's catalogue, and orders for patients."""
        self.payments = Payments(self.invoices, self.intents)
        """Invoices as synced, and paying them."""
        self._notices = DecisionNotices(replica, self.decisions)
        self._upgrades = RecordUpgrades(replica)  # records an older app wrote, at open
        self._conflict_policies = ConflictPolicies(replica, self._resolve)

    @property
    def path(self) -> Path:
        """The store's folder."""
        return self.replica.path

    @property
    def clinic_id(self) -> str:
        """The clinic this device belongs to ("" until enrolment gives it one)."""
        return self.replica.clinic_id

    @property
    def blobs(self) -> BlobStore:
        """Scan files: content-addressed, encrypted, every read and write audited."""
        return self.replica.blobs

    # ---------------------------------------------------------------- lifecycle
    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        key_provider: KeyProvider,
        *,
        clinic_id: str | None = None,
        idle_lock_after: float | None = DEFAULT_IDLE_LOCK,
    ) -> EdgeClient:
        """Create a new store at `path` (a folder) and a new device identity.

        `clinic_id`: leave it out for a device that will sync with a server: the clinic
        comes with the enrolment (`enroll`), and records can be written once enrolled.
        Give it for a store that only ever syncs by bundles or sessions, or when the
        server's clinic id is known in advance.
        `idle_lock_after`: seconds without use after which the store locks (see
        `open`).

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
                store.set_meta("clinic_id", clinic_id or "")
                store.set_meta("blob_key", blob_key.hex())
                store.set_meta("created_at", datetime.now(UTC).isoformat())
        except BaseException:
            store.close()
            raise
        # The keyring is written last: a store without one was never finished.
        write_keyring(root / KEYRING_FILE, keyring)
        return cls._assemble(root, store, idle_lock_after)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        key_provider: KeyProvider,
        *,
        idle_lock_after: float | None = DEFAULT_IDLE_LOCK,
    ) -> EdgeClient:
        """Open an existing store.

        After `idle_lock_after` seconds without a call (15 minutes by default; None:
        never) the store locks: the connection closes, the keys are dropped from
        memory, and every call raises `StoreLockedError` until `unlock`.

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
            return cls._finish_rekey(root, key_provider, idle_lock_after)
        data_key = unwrap_data_key(read_keyring(root / KEYRING_FILE), key_provider)
        store = Store.open(root / DATABASE_FILE, data_key)
        return cls._assemble(root, store, idle_lock_after)

    @classmethod
    def _finish_rekey(
        cls, root: Path, key_provider: KeyProvider, idle_lock_after: float | None
    ) -> EdgeClient:
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
            return cls._assemble(root, store, idle_lock_after)
        raise WrongKeyError(
            f"{root}: a key change was interrupted; open the store with the new key "
            "(or the old one) to finish it"
        )

    @classmethod
    def _assemble(cls, root: Path, store: Store, idle_lock_after: float | None) -> EdgeClient:
        row = store.execute("SELECT device_id, private_key FROM identity").fetchone()
        identity = DeviceIdentity.from_private_bytes(row[0], bytes(row[1]))
        clinic_id = store.get_meta("clinic_id") or ""
        blob_key = bytes.fromhex(store.get_meta("blob_key") or "")
        blobs = EncryptedFileBlobStore(root / BLOB_DIR, blob_key)
        _finish_blob_rotation(store, blobs)
        replica = Replica(
            path=root, store=store, identity=identity, clinic_id=clinic_id, blob_files=blobs
        )
        store.add_lock_listener(blobs.forget_key)
        store.idle_lock_after = idle_lock_after
        store.touch()
        return cls(replica)

    def close(self) -> None:
        """Close the store (and any server connection), stopping background syncs
        first. The client cannot be used afterwards."""
        for loop in self._loops:
            with contextlib.suppress(Exception):  # its error was reported through status
                loop.stop()
        self._loops = []
        if self._server is not None:
            self._server.close()
            self._server = None
        self.replica.close()

    # ---------------------------------------------------------------- logoff
    @property
    def locked(self) -> bool:
        """True once the store has locked (idle, or `lock`)."""
        return self.replica.store.locked

    def lock(self) -> None:
        """Lock the store now: the connection closes and the keys are dropped from
        memory; every call raises `StoreLockedError` until `unlock`."""
        self.replica.store.lock()

    def unlock(self, key_provider: KeyProvider) -> None:
        """Open a locked store again with its key provider (a no-op if not locked).

        Raises:
            WrongKeyError: The provider's key does not open this store.
        """
        store = self.replica.store
        if not store.locked:
            return
        data_key = unwrap_data_key(read_keyring(self.path / KEYRING_FILE), key_provider)
        store.unlock(data_key)
        self.replica.blob_files.use_key(bytes.fromhex(store.get_meta("blob_key") or ""))

    @property
    def idle_lock_after(self) -> float | None:
        """Seconds without use after which the store locks (None: never)."""
        return self.replica.store.idle_lock_after

    # ---------------------------------------------------------------- audit
    @property
    def user(self) -> str | None:
        """The app's signed-in user (an id, never a name), recorded with every access
        in the audit log; None when the app did not say."""
        return self.replica.access.user

    @user.setter
    def user(self, user_id: str | None) -> None:
        self.replica.access.user = user_id

    def verify_audit(self, *, server: bool = False) -> AuditReport:
        """Check this device's audit log (see `edge_sdk.verify_audit`).

        With `server`, the device also witnesses the enrolled server's log: the server
        must prove that its log still extends every checkpoint kept here (over HTTP,
        through the connection `sync` keeps, with the device's credentials; the
        `[server]` extra, httpx).

        Raises:
            NotEnrolledError: `server` and the store was never enrolled.
            ServerUnreachableError: `server` and the server did not answer.
        """
        if not server:
            return verify_audit(self.replica)
        from edge_sdk._audit_witness import HttpAuditLogSource

        source = HttpAuditLogSource(request=self._server_transport(None, any_policy=True).request)
        return verify_audit(self.replica, server=source)

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- identity
    @property
    def device_id(self) -> str:
        """This device's id (a UUID), also its Automerge actor."""
        return self.replica.device_id

    @property
    def identity(self) -> DeviceIdentity:
        """This device's Ed25519 identity."""
        return self.replica.identity

    # ---------------------------------------------------------------- keys
    def change_key(self, new_provider: KeyProvider) -> None:
        """Rewrap the data key under a new provider (e.g. a new passphrase)."""
        keyring = read_keyring(self.path / KEYRING_FILE)
        data_key = self.replica.store.data_key
        write_keyring(self.path / KEYRING_FILE, rewrap(keyring, data_key, new_provider))

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
        self.replica.store.rekey(data_key)
        replace_durably(pending, self.path / KEYRING_FILE)

    def _rotate_blob_key(self, new_key: bytes) -> None:
        # The next key is recorded before any blob moves to it, so an interrupted
        # rotation is finished by the next open (see `_assemble`).
        store = self.replica.store
        with store.transaction():
            store.set_meta("blob_key_next", new_key.hex())
        _finish_blob_rotation(store, self.replica.blob_files)

    # ---------------------------------------------------------------- records
    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Group many writes into one transaction (all or none are kept)."""
        with self.replica.store.transaction():
            yield

    def conflicts(self) -> list[FieldConflict]:
        """Every conflicted field in the store, by record."""
        store = self.replica.store
        with self.replica.access("conflicts", "*") as access:
            found: list[FieldConflict] = []
            for doc_id in store.conflicted_documents():
                access.record_ids.append(doc_id)
                document = store.get_document(doc_id)
                if document is not None:
                    found += document.conflicts()
            return found

    def on_conflict(
        self, collection: str, field: str, policy: ConflictPolicy = keep_both
    ) -> Subscription:
        """Resolve conflicts on `collection`.`field` with `policy` as merges create them.

        After each transaction that stores records (sync, bundle import, session)
        commits, each new conflict on the field (and, at once, each already here) is
        handed to `policy`, once: a value it returns is written as an ordinary
        `resolve` by this device (signed, audited, synced); None leaves the conflict
        for a person. Built in: `keep_both` (the default), `latest_wins`,
        `merge_lists`. A policy that raises is logged; the merge stands.

        Args:
            collection: The collection (``"wounds"``).
            field: The field (``"status"``).
            policy: Given the `FieldConflict`, the value to keep or None.

        Returns:
            The subscription; cancel it to keep both values again.

        Raises:
            InvalidArgumentError: No such collection or field.
        """
        return self._conflict_policies.add(collection, field, policy)

    def _resolve(self, collection: str, record_id: str, field: str, value: Any) -> object:
        return self.collection(collection).resolve(record_id, field, value)

    def records_needing_update(self) -> list[tuple[str, str, int]]:
        """The records a newer version of the app wrote: (id, collection, record schema
        version). They are kept and synced on; reading one raises
        `RecordFromNewerAppError` until the app is updated."""
        # Ids and versions only: no patient data is read.
        return self.replica.store.newer_records()

    def export_documents(self, record_ids: Iterable[str]) -> dict[str, bytes]:
        """Records as plain Automerge documents (``Automerge.save()`` bytes), by id.

        JavaScript or Rust Automerge ``load()`` reads them; `crdt.record_schemas`
        says how each field is stored. One audited ``export`` access.

        Args:
            record_ids: The records to export.

        Returns:
            The saved bytes of each record, by id.

        Raises:
            RecordNotFoundError: A record is not held here (nothing is exported).
        """
        return export_documents(self, record_ids)

    def export_document(self, record_id: str) -> bytes:
        """One record as a plain Automerge document (see `export_documents`).

        Raises:
            RecordNotFoundError: The record is not held here.
        """
        return export_documents(self, [record_id])[record_id]

    def fhir_export(
        self,
        patient_id: str | None = None,
        *,
        kind: Literal["collection", "transaction"] = "collection",
        base_url: str | None = None,
    ) -> dict[str, Any]:
        """One patient's records, or every patient's, as a FHIR R4 Bundle (a JSON-ready
        dict; see docs/fhir.md for the mapping). Needs the ``fhir`` extra. One audited
        ``export`` access.

        Args:
            patient_id: The patient, or None for every patient of the store.
            kind: "collection", or "transaction" (each entry a PUT, for loading into a
                FHIR server).
            base_url: A FHIR base URL, for absolute fullUrls and blob URLs.

        Raises:
            RecordNotFoundError: No such patient here.
        """
        return fhir_export(self, patient_id, kind=kind, base_url=base_url)

    def fhir_import(self, bundle: bytes | str | Mapping[str, Any]) -> FhirImportReport:
        """Create or update patients, wounds, conditions, allergies and medications
        from a FHIR R4 Bundle (JSON text or a decoded dict). Needs the ``fhir`` extra.

        Patients are matched by Coherency's identifier, else by MRN; a second import
        of the same bundle writes nothing. The whole bundle is read and validated
        first, and written in one transaction: a bad bundle changes nothing. One
        audited ``import`` access.

        Returns:
            Counts of created, updated and unchanged records, and what did not map.

        Raises:
            fhir_interop.FhirError: Malformed or invalid FHIR (nothing written).
            RecordValidationError: A mapped value is invalid (nothing written).
        """
        return fhir_import(self, bundle)

    def import_documents(self, documents: Mapping[str, bytes] | Sequence[bytes]) -> SyncReport:
        """Merge plain Automerge documents, through the checks a sync merge makes.

        Each document must be a record of this clinic that satisfies its schema and
        the published field kinds, and each of its new changes must be signed by a
        device this store trusts (see docs/sdk.md, "Interoperability"). A refused
        document is reported with its reason; the others are merged in one
        transaction. One audited ``import`` access.

        Args:
            documents: Saved bytes by record id, or a list of saved bytes.

        Returns:
            What was stored (`received`) and what was refused, why (`rejected`).
        """
        return import_documents(self, documents)

    def collection(self, name: str) -> Collection[Any]:
        """The collection called `name` (patients, wounds, assessments, notes,
        conditions, allergies, medications, care_plans, decisions, intents, directory,
        availability, catalogue, invoices, notices)."""
        collections: dict[str, Collection[Any]] = {
            "patients": self.patients,
            "wounds": self.wounds,
            "assessments": self.assessments,
            "notes": self.notes,
            "conditions": self.conditions,
            "allergies": self.allergies,
            "medications": self.medications,
            "care_plans": self.care_plans,
            "decisions": self.decisions,
            "intents": self.intents,
            "directory": Collection(self.replica, Directory),
            "availability": Collection(self.replica, Availability),
            "catalogue": Collection(self.replica, Catalogue),
            "invoices": self.invoices,
            "notices": self.notices,
        }
        try:
            return collections[name]
        except KeyError:
            raise InvalidArgumentError(f"no collection {name!r}") from None

    def find(self, record_id: str) -> Collection[Any]:
        """The collection holding record `record_id`.

        Raises:
            RecordNotFoundError: No record has that id.
        """
        # Which collection holds an id says what kind of record it is (a patient, a
        # wound): a read of patient data, audited like any.
        with self.replica.access("find", "*") as access:
            access.record_ids.append(record_id)
            name = self.replica.store.collection_of(record_id)
            if name is None:
                raise RecordNotFoundError(f"no record {record_id}")
            return self.collection(name)

    # ---------------------------------------------------------------- intents
    def intent_status(self, intent_id: str) -> IntentStatus:
        """Where intent `intent_id` stands: ``pending`` until the server's decision is
        on this device, then the decision's status, with the decision.

        Raises:
            RecordNotFoundError: No such intent on this device.
        """
        return self.intents.status(intent_id)

    def list_intents(
        self,
        kind: str | None = None,
        state: str | None = None,
        *,
        patient_id: str | None = None,
    ) -> list[IntentStatus]:
        """Intents with where they stand, oldest first: of one `kind`
        (``"appointment.cancel"``) or family (``"appointment"``, ``"visit"``), in one
        `state` (``"pending"``, ``"accepted"``, ``"accepted_alternative"``,
        ``"rejected"``), about one patient.

        Raises:
            InvalidArgumentError: An unknown kind, family or state (a ValueError).
        """
        return self.intents.statuses(kind=kind, state=state, patient_id=patient_id)

    def on_decision(
        self, callback: DecisionCallback, *, deliver: Deliver | None = None
    ) -> Subscription:
        """Call `callback` with each server decision this store receives, until the
        returned subscription is cancelled.

        Each decision is reported once per store, whichever way it arrived (`sync`, a
        bundle import, a sync session), after the transaction that stored it commits,
        in the thread that committed it (or through `deliver`); never again, also after
        reopening. Decisions that arrived while no callback was registered (or through
        another process, such as `coherency sync`) are reported to `callback` at once.
        A callback that raises is logged (``edge_sdk``) and does not stop the sync.
        """
        return self._notices.subscribe(callback, deliver=deliver)

    # ---------------------------------------------------------------- sync
    def sync_session(self) -> SyncSession:
        """A sync session over this store, for any transport (in memory, HTTP, file)."""
        return self.replica.sync_session()

    def enroll(
        self,
        server_url: str,
        token: str,
        *,
        name: str = "",
        allow_insecure_http: bool = False,
    ) -> Enrollment:
        """Enrol this device with a sync server, using a one-time token from staff.

        `server_url` is ``https://...``; plain ``http://`` only to this machine, unless
        `allow_insecure_http` (remembered with the enrolment; only on a network you
        trust). Needs the `[server]` extra (httpx). See `HttpTransport.enroll`.

        Raises:
            ServerAddressError: `server_url` cannot work (no scheme, another scheme,
                malformed, a ``.invalid`` host); nothing was sent.
            InsecureServerError: Plain http to another host without the opt-in.
            EnrolmentError: The server refused the token or the clinic does not match.
            ServerUnreachableError: The server did not answer.
        """
        from edge_sdk._http_transport import HttpTransport

        enrollment = HttpTransport.enroll(
            self.replica,
            server_url,
            token,
            name=name,
            allow_insecure_http=allow_insecure_http,
        )
        if self._server is not None:  # it holds the previous enrolment's token and key
            self._server.close()
            self._server = None
        return enrollment

    def sync(
        self,
        *,
        progress: Callable[[SyncProgress], None] | None = None,
        wait: float = 0.0,
        blobs: bool = True,
        retry: RetryPolicy | None = None,
        transport: SyncTransport | None = None,
    ) -> SyncResult:
        """Push local changes to the enrolled server, then pull the clinic's changes.

        Safe to cut at any point and call again: nothing is lost or applied twice.
        `wait` > 0 long-polls the pull; `progress` is called as batches and pages go.
        By default the enrolled server is reached over HTTP (the `[server]` extra,
        httpx) with `retry`, one connection kept between syncs; pass `transport` to
        sync through another (a `MemoryTransport`, your own `HttpTransport`). Its
        start, end or failure changes `sync_status`.

        Raises:
            NotEnrolledError: No `transport` and the store was never enrolled (`enroll`).
            DeviceRevokedError: The server revoked this device.
            ServerUnreachableError: The server did not answer within the retry budget.
            ServerAddressError: The enrolled server's URL cannot work.
            ServerCertificateError: The server's TLS certificate did not verify.
            SyncCancelledError: The transport was interrupted (nothing is lost).
        """
        try:
            if transport is None:
                transport = self._server_transport(retry)
        except Exception as exc:
            self._status.failed(exc)
            raise
        self._status.started(transport)
        try:
            result = sync_replica(
                self.replica, transport, progress=progress, wait=wait, blobs=blobs
            )
        except BaseException as exc:
            self._status.failed(exc)
            raise
        self._status.succeeded()
        return result

    def sync_status(self) -> SyncStatus:
        """Where this device's sync stands: connected or not, to what, when it last
        synced, what waits to go up (records and blobs), the last error, whether a
        sync or the background loop is running. See `on_sync_status` for changes."""
        return self._status.current()

    def on_sync_status(
        self, callback: Callable[[SyncStatus], None], deliver: Deliver | None = None
    ) -> Subscription:
        """Call `callback` with each new `SyncStatus`: when a sync starts, ends or
        fails, when the background loop starts or stops, and when a committed local
        write changes what waits to go up (at most once per transaction).

        Args:
            callback: Told each new status.
            deliver: Where it runs (see `edge_sdk.Deliver`); None: the thread that
                changed it (a sync thread, the thread that wrote).

        Returns:
            The subscription; cancel it to stop the calls.
        """
        return self._status.subscribe(callback, deliver)

    def start_sync(
        self,
        *,
        wait: float = 25.0,
        blobs: bool = True,
        pause: float = 5.0,
        push_delay: float = 0.5,
        retry: RetryPolicy | None = None,
        transport: SyncTransport | None = None,
        on_result: Callable[[SyncResult], None] | None = None,
        on_unreachable: Callable[[ServerUnreachableError], None] | None = None,
    ) -> BackgroundSync:
        """Keep this device in sync in a daemon thread until `BackgroundSync.stop`.

        Each round syncs, its pull long-polling up to `wait` seconds; a local write
        wakes it to push `push_delay` seconds later; an outage is waited out (`pause`
        seconds after the retry policy gave up). `stop` abandons a long poll in flight
        at once and loses nothing. An error retrying cannot fix (a revoked device,
        refused credentials, an untrusted edge box) ends the loop: `sync_status` says
        so, and `stop` raises it. `blobs`, `retry` and `transport` are as for `sync`;
        `on_result` and `on_unreachable` are registered before the loop starts (as
        `BackgroundSync.on_result` and `on_unreachable` would, in the loop's thread).

            with client.start_sync() as background:
                run_the_app()

        Raises:
            NotEnrolledError: No `transport` and the store was never enrolled.
            ValueError: A negative `wait`, `pause` or `push_delay`.
        """
        if transport is None:
            transport = self._server_transport(retry)

        def one_round(through: SyncTransport, poll: float) -> SyncResult:
            return self.sync(wait=poll, blobs=blobs, transport=through)

        loop = BackgroundSync(
            one_round, transport, self._status, wait=wait, pause=pause, push_delay=push_delay
        )
        if on_result is not None:
            loop.on_result(on_result)
        if on_unreachable is not None:
            loop.on_unreachable(on_unreachable)
        self._loops = [kept for kept in self._loops if kept.running]
        self._loops.append(loop)
        return loop.start()

    def verification_status(self) -> VerificationStatus:
        """Where the verification of records from a first sync stands.

        A sync that starts from nothing (a new or restored device) stores the records
        the server sends from the server's own description of them, and verifies each
        afterwards in the background, exactly as a merge would (schema, clinic,
        signatures of enrolled devices) and against that description. No read ever
        shows a record before it is verified: a read verifies the ones it would return
        first. A record that fails is quarantined (kept out of the store, logged, and
        journalled in the audit chain) and listed here.
        """
        return self.replica.verification.status()

    def wait_verified(self, timeout: float | None = None) -> VerificationStatus:
        """Block until every record from a first sync is verified (or `timeout`
        seconds passed); see `verification_status`."""
        return self.replica.verification.wait(timeout)

    def _server_transport(
        self, retry: RetryPolicy | None, *, any_policy: bool = False
    ) -> HttpTransport:
        """The transport to the enrolled server, kept between syncs and model updates
        (a `--watch` loop syncs every few seconds): one connection pool and token.

        A new one (a new connection, and a token request on its first call) replaces it
        only when the server or the policy changed; with `any_policy` (a caller with no
        policy of its own: model updates, the audit witness) the kept one serves
        whatever its policy, so that a sync with its own `retry` between them does not
        build the transport anew each time.
        """
        from edge_sdk._http_transport import HttpTransport

        enrollment = self.replica.enrollment
        policy = retry or RetryPolicy()
        if self._server is not None and enrollment is not None:
            kept = self._server
            if kept.serves(enrollment.server_url, kept.retry if any_policy else policy):
                return kept
        if self._server is not None:
            self._server.close()
            self._server = None
        self._server = HttpTransport(self.replica, retry=policy)  # NotEnrolledError
        return self._server

    # ---------------------------------------------------------------- edge boxes
    def find_edge_boxes(self, timeout: float = 3.0) -> list[EdgeBoxRoute]:
        """The clinic edge boxes on the LAN this device may sync with.

        Browses mDNS for `timeout` seconds (`discover_edge_boxes`; the ``[edge]``
        extra) and keeps only boxes advertising this device's clinic whose advertised
        fingerprint equals one central pinned (`replica.edge_boxes`): an
        advertisement is a hint, never trust. One route per box, its addresses in
        the order found.

        Raises:
            ImportError: zeroconf (the ``[edge]`` extra) is not installed.
        """
        pins = self.replica.edge_boxes
        if not pins:
            return []
        found = discover_edge_boxes(timeout=timeout, clinic_id=self.clinic_id)
        return routes_to_pinned(found, pins, clinic_id=self.clinic_id)

    def edge_transport(
        self, route_or_url: EdgeBoxRoute | str, box_id: str | None = None
    ) -> HttpTransport:
        """A transport to a clinic edge box, trusting only its pinned certificate
        (`HttpTransport.for_edge_box`); sync through it with ``client.sync(transport=...)``.

        Args:
            route_or_url: A route from `find_edge_boxes` (its URLs are tried in order
                until one completes a pinned TLS handshake), or an ``https://`` URL.
            box_id: With a URL, the pinned box expected there (may be left out when
                central pinned exactly one box).

        Raises:
            UntrustedEdgeBoxError: No pin for the box, or every address answered with
                another certificate.
            ServerUnreachableError: No address of the route answered.
            InsecureServerError: The URL is not ``https://``.
        """
        from edge_sdk._http_pinning import handshake
        from edge_sdk._http_transport import HttpTransport

        if isinstance(route_or_url, str):
            pin = self._edge_pin(box_id)
            return HttpTransport.for_edge_box(self.replica, pin, route_or_url)
        pin = route_or_url.pin
        problem: SyncError = ServerUnreachableError(f"edge box {pin.box_id} has no address")
        for url in route_or_url.urls:
            try:
                handshake(pin, url)
            except (ServerUnreachableError, UntrustedEdgeBoxError) as exc:
                # Another machine may hold that address now: try the box's next one.
                problem = exc
                continue
            return HttpTransport.for_edge_box(self.replica, pin, url)
        raise problem

    def _edge_pin(self, box_id: str | None) -> EdgeBoxPin:
        pins = self.replica.edge_boxes
        if box_id is None and len(pins) == 1:
            return pins[0]
        for pin in pins:
            if pin.box_id == box_id:
                return pin
        raise UntrustedEdgeBoxError(
            f"the central server vouched for no edge box {box_id!r}"
            if box_id is not None
            else f"say which edge box (box_id): the central server pinned {len(pins)} of them",
            box_id=box_id or "",
        )

    @property
    def models(self) -> ModelStore:
        """The wound models on this device (`<store>/models`): `client.models.runner()`.

        Once enrolled, it takes only models signed for the device's organisation by the
        artifact key pinned at enrolment.
        """
        return model_store(self.replica)

    def update_model(self, *, threads: int = 1, source: ModelSource | None = None) -> ModelUpdate:
        """Install the server's current wound model if it is not the installed one.

        The model is verified against the artifact key pinned at enrolment (signature,
        bound to the device's organisation, then size and SHA-256) and run once with
        `threads` threads before it replaces the current one. By default it comes from
        the enrolled server over HTTP (the `[server]` extra, httpx), through the
        connection `sync` keeps; pass `source` to fetch it from another `ModelSource`.

        Raises:
            NotEnrolledError: The store was never enrolled (`enroll`).
            ModelVerificationError: The model is tampered with, unsigned, signed by
                another key, or does not run; the previous model stays in use.
            ServerUnreachableError: The server did not answer within the retry budget.
            InvalidArgumentError: `threads` is below 1 (a ValueError).
        """
        if threads < 1:
            raise InvalidArgumentError(f"threads must be at least 1, not {threads}")
        if source is None:
            source = self._server_transport(None, any_policy=True)
        return update_model(self.replica, source, threads=threads)

    # ---------------------------------------------------------------- access
    def add_access_listener(
        self, listener: AccessListener, *, deliver: Deliver | None = None
    ) -> Subscription:
        """Call `listener` with an `AccessEvent` after every read or write of patient
        data, once it is in the audit log (and its write committed).

        A listener that raises is logged (``edge_sdk``) and never reaches the caller:
        the write it was told of stands, and retrying it would write twice.

        Args:
            listener: Called with each `AccessEvent`.
            deliver: Where to run it (see `Listeners`); None: in the accessing thread.

        Returns:
            The subscription; `Subscription.cancel` stops the listener.
        """
        return self.replica.access.add_listener(listener, deliver=deliver)


def enrollment_of(client: EdgeClient) -> Enrollment | None:
    """The store's enrolment, or None if it was never enrolled."""
    return client.replica.enrollment


def _finish_blob_rotation(store: Store, blobs: EncryptedFileBlobStore) -> None:
    """Move every blob to the next blob key, if a rotation to one was started."""
    next_key = store.get_meta("blob_key_next")
    if not next_key:
        return
    blobs.rekey(bytes.fromhex(next_key))
    with store.transaction():
        store.set_meta("blob_key", next_key)
        store.delete_meta("blob_key_next")
