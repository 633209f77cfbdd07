"""The device's encrypted database: SQLCipher 4 through `sqlcipher3`, via `sqlite-utils`.

One file holds the Automerge bytes of every record (the source of truth) and the
projection tables that make records queryable (patients by name and MRN, wounds by
patient, assessments by wound and date, notes by patient, intents by kind and
patient, decisions by intent, availability by day, invoices by patient, status and
number). A document and its projection rows
are always written in one transaction, so they never disagree.

Decisions received from elsewhere (sync, a bundle, a session) are also queued in the
``decision_inbox`` table in that transaction, until they are reported to the app
(`EdgeClient.on_decision`). Listeners added with `Store.add_commit_listener` hear of
every committed transaction that stored documents.

The device's audit log lives here too (``audit_events``: the hash chain of every
access, written by `edge_sdk._audit`; ``audit_checkpoints``: the server's signed
checkpoints that cover it).

A store made by an older version is brought up to `SCHEMA_VERSION` when it is opened
(`_MIGRATIONS`: new tables only, each step in one transaction).

Automatic logoff: a store opened with `idle_lock_after` seconds locks itself after that
long without use: the connection is closed (SQLCipher drops the key with it) and every
call raises `StoreLockedError` until `unlock` is given the data key again.

The database key is the raw 256-bit data key (no SQLCipher passphrase KDF: the key
provider already did the slow part). WAL mode with ``synchronous=FULL``: a write that
returned is on disk. Temporary tables and sort spills stay in memory, so no plaintext
temp file is ever written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlcipher3
import sqlite_utils

from crdt import COLLECTIONS, RecordDocument, RecordHint, sortable_time
from edge_sdk._errors import StoreClosedError, StoreCorruptError, StoreError, StoreLockedError
from edge_sdk._notify import Listeners, Subscription

__all__ = [
    "PROJECTIONS",
    "RECORD_VERSIONS_META",
    "Claim",
    "Store",
    "UnverifiedDocument",
    "Written",
    "projection_row",
    "record_versions",
]

SCHEMA_VERSION = 8
RECORD_VERSIONS_META = "record_versions"
"""Store metadata: the record schema version of each collection the store's records
were last upgraded to (JSON; absent: every collection at version 1)."""
_PAGE_SIZE = 4096  # SQLCipher 4's default; the store never changes it
_IN_LIST = 500  # ids per `IN (...)` list, within SQLite's limit on variables

# Projection columns per collection (beyond id, clinic_id, deleted, updated_at,
# conflicted and the full record JSON). They are what list filters may use.
PROJECTIONS: Mapping[str, dict[str, type]] = {
    "patients": {
        "given_name": str,
        "family_name": str,
        "birth_date": str,
        "sex": str,
        "mrn": str,
        "search_text": str,  # casefolded names and MRN, for Unicode-aware search
    },
    "wounds": {
        "patient_id": str,
        "body_site": str,
        "etiology": str,
        "status": str,
        "onset": str,
    },
    "assessments": {
        "wound_id": str,
        "patient_id": str,
        "captured_at": str,
        "device_id": str,
        "clinician": str,
        "area_cm2": float,
        "volume_cm3": float,
        "max_depth_mm": float,
    },
    "notes": {
        "patient_id": str,
        "wound_id": str,
        "author": str,
    },
    "conditions": {  # the patient's medical history
        "patient_id": str,
        "clinical_status": str,
        "onset": str,
    },
    "allergies": {
        "patient_id": str,
        "clinical_status": str,
    },
    "medications": {
        "patient_id": str,
        "status": str,
    },
    "care_plans": {  # one wound's treatment
        "patient_id": str,
        "wound_id": str,
        "status": str,
        "review_on": str,
    },
    "decisions": {  # server-owned: synced down, never written on a device
        "intent_id": str,
        "status": str,
    },
    "intents": {  # immutable once written; the server answers each with a decision
        "kind": str,
        "patient_id": str,
        "subject_id": str,
    },
    "directory": {},  # server-owned reference data: one record per clinic
    "availability": {  # server-owned reference data: one record per clinic and day
        "day": str,
    },
    "catalogue": {},  # server-owned reference data: one record per clinic
    "invoices": {  # server-owned: a patient's invoice, paid with payment intents
        "number": str,
        "patient_id": str,
        "status": str,
    },
    "notices": {  # server-owned: in-app notifications, newest first per recipient
        "recipient": str,
        "patient_id": str,
        "kind": str,
        "created_at": str,
    },
}
# Timestamp columns that queries compare and sort: stored as `sortable_time` text.
_TIME_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "assessments": ("captured_at",),
    "notices": ("created_at",),
}
_INDEXES: Mapping[str, list[list[str]]] = {
    "patients": [["family_name", "given_name"], ["mrn"]],
    "wounds": [["patient_id"]],
    "assessments": [["wound_id", "captured_at"], ["patient_id"]],
    "notes": [["patient_id"], ["wound_id"]],
    "conditions": [["patient_id"]],
    "allergies": [["patient_id"]],
    "medications": [["patient_id"]],
    "care_plans": [["patient_id"], ["wound_id"]],
    "decisions": [["intent_id"]],
    "intents": [["kind"], ["patient_id"], ["subject_id"]],
    "directory": [],
    "availability": [["day"]],
    "catalogue": [],
    "invoices": [["patient_id"], ["number"]],
    "notices": [["recipient", "created_at"], ["patient_id"]],
}


class Written(frozenset[str]):
    """What one committed transaction stored: the collections (the set itself), and
    the ids of the documents stored, verified or taken out, per collection (`ids`)."""

    ids: Mapping[str, frozenset[str]]

    def __new__(cls, ids: Mapping[str, set[str] | frozenset[str]]) -> Written:
        written = super().__new__(cls, ids)
        written.ids = {collection: frozenset(found) for collection, found in ids.items()}
        return written


CommitListener = Callable[[Written], None]
"""Called after a transaction that stored documents commits, with what it stored."""
LockListener = Callable[[], None]
"""Called after the store locked itself (idle) or was locked, in the locking thread."""


def _translate(exc: BaseException, path: Path) -> StoreError:
    text = str(exc)
    if "closed database" in text:
        return StoreClosedError(f"{path}: the store was closed; open it again to use it")
    if "locked" in text or "busy" in text:
        return StoreLockedError(f"{path}: the store is locked by another process ({text})")
    return StoreCorruptError(f"{path}: the database is damaged or truncated ({text})")


@dataclass(frozen=True, slots=True)
class UnverifiedDocument:
    """A document as its sender describes it, stored before it is verified."""

    doc_id: str
    collection: str
    data: bytes  # the saved Automerge bytes
    heads: Sequence[bytes]  # what the sender says are its heads
    record: Mapping[str, Any]  # the record the sender says it holds, as JSON values
    record_json: str  # the same, as the sender's compact JSON
    conflicted: bool
    projection: Mapping[str, Any]  # its projection row (`projection_row` of the above)


@dataclass(frozen=True, slots=True)
class Claim:
    """An unverified document as the store holds it, for its verification."""

    doc_id: str
    collection: str
    heads: bytes  # the claimed heads, sorted and joined as the store keeps them
    data: bytes  # the saved Automerge bytes
    projection: Mapping[str, Any] | None  # the stored projection row (None: none held)


class Store:
    """An open SQLCipher database of one replica. Not for app developers directly."""

    def __init__(
        self,
        conn: Any,
        path: Path,
        data_key: bytes,
        *,
        idle_lock_after: float | None = None,
    ) -> None:
        self._connection: Any = conn
        self.path = path
        self._data_key: bytes | None = data_key
        self._db = sqlite_utils.Database(conn)
        self._depth = 0
        self._lock = threading.RLock()
        # Ids of the documents stored in the open transaction, per collection.
        self._written: dict[str, set[str]] = {}
        # While `settle` holds the lock, commits (of the verification) wait here to be
        # told to the commit listeners once the lock is released.
        self._settling = 0
        self._deferred: dict[str, set[str]] = {}
        self._commit_listeners: Listeners[Written] = Listeners("commit")
        self._lock_listeners: list[LockListener] = []
        self._closed = False
        # Documents stored from a sender's claim, not yet verified (id -> collection),
        # and what verifies them (set by the replica); see `put_unverified`.
        self._pending: dict[str, str] = {}
        self._verifier: Callable[[Sequence[str]], None] | None = None
        # False once `outdated` found the upgrade queue empty, until something is
        # queued: the check after every commit then costs no query.
        self._outdated_queued = True
        if idle_lock_after is not None and idle_lock_after <= 0:
            raise ValueError(f"idle_lock_after must be positive or None, not {idle_lock_after}")
        self.idle_lock_after = idle_lock_after
        """Seconds without use after which the store locks itself (None: never)."""
        self._last_used = time.monotonic()
        self._timer: threading.Timer | None = None
        self._arm_timer(idle_lock_after)

    # ------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: Path,
        data_key: bytes,
        *,
        create: bool = False,
        idle_lock_after: float | None = None,
    ) -> Store:
        """Open (or, with `create`, initialise) the database at `path` with `data_key`.

        Args:
            path: The database file.
            data_key: The raw 256-bit SQLCipher key.
            create: Create a new database (the file must not exist).
            idle_lock_after: Lock the store after this many seconds without use.

        Raises:
            StoreCorruptError: The file does not decrypt or is damaged.
        """
        if not create and not path.exists():
            raise StoreCorruptError(f"{path}: database file is missing")
        if create:
            # SQLite gives the -wal and -shm files the database file's mode.
            path.touch(mode=0o600, exist_ok=False)
        conn = _connect(path, data_key, create=create)
        try:
            store = cls(conn, path, data_key)
            if create:
                store._create_schema()
            else:
                store._check_schema()
            store._pending = {
                str(doc_id): str(collection)
                for doc_id, collection in conn.execute(
                    "SELECT u.doc_id, d.collection FROM unverified u"
                    " JOIN documents d ON d.id = u.doc_id"
                )
            }
        except (sqlcipher3.DatabaseError, sqlite3.DatabaseError) as exc:
            conn.close()
            raise _translate(exc, path) from None
        except BaseException:
            conn.close()
            raise
        store.idle_lock_after = idle_lock_after
        store.touch()
        return store

    # ------------------------------------------------------------ automatic logoff
    @property
    def _conn(self) -> Any:
        """The open connection; raises `StoreLockedError` once the store has locked."""
        conn = self._connection
        if conn is None:
            if self._closed:
                raise StoreClosedError(f"{self.path}: the store was closed; open it again")
            raise StoreLockedError(
                f"{self.path}: the store locked itself after being idle; unlock it with "
                "the key provider to go on"
            )
        now = time.monotonic()
        idle = self.idle_lock_after
        if idle is not None and now - self._last_used > idle and not self._depth:
            self.lock()
            return self._conn  # raises
        self._last_used = now
        return conn

    @property
    def db(self) -> sqlite_utils.Database:
        """The database through `sqlite-utils` (raises `StoreLockedError` when locked)."""
        self._conn  # noqa: B018 - the lock check
        return self._db

    @property
    def data_key(self) -> bytes:
        """The data key (raises `StoreLockedError` when locked)."""
        self._conn  # noqa: B018 - the lock check
        assert self._data_key is not None
        return self._data_key

    @property
    def locked(self) -> bool:
        """True once the store has locked (or been closed)."""
        return self._connection is None

    def lock(self) -> None:
        """Close the connection and drop the data key: every call raises
        `StoreLockedError` until `unlock`. Waits for a transaction in progress."""
        with self._lock:
            conn, self._connection = self._connection, None
            if conn is None:
                return
            self._data_key = None
            self._db = sqlite_utils.Database(memory=True)  # drops its hold on the connection
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            with contextlib.suppress(sqlcipher3.DatabaseError):
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        for listener in list(self._lock_listeners):
            listener()

    def unlock(self, data_key: bytes) -> None:
        """Open the connection again with `data_key` (from the key provider).

        Raises:
            WrongKeyError: Not this store's key (as `StoreCorruptError` here: the
                client checks the key first).
            StoreClosedError: The store was closed, not locked.
        """
        with self._lock:
            if self._closed:
                raise StoreClosedError(f"{self.path}: the store was closed; open it again")
            if self._connection is not None:
                return
            conn = _connect(self.path, data_key, create=False)
            self._connection = conn
            self._data_key = data_key
            self._db = sqlite_utils.Database(conn)
            self._last_used = time.monotonic()
            self._arm_timer(self.idle_lock_after)

    def touch(self) -> None:
        """Count as used now (and start the idle timer, if one is set)."""
        self._last_used = time.monotonic()
        self._arm_timer(self.idle_lock_after)

    def add_lock_listener(self, listener: LockListener) -> None:
        """Call `listener` after the store locks (to drop other keys held in memory)."""
        self._lock_listeners.append(listener)

    def _arm_timer(self, delay: float | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if delay is None or self._connection is None:
            return
        timer = threading.Timer(delay, self._idle_check)
        timer.daemon = True
        timer.name = "store-idle-lock"
        self._timer = timer
        timer.start()

    def _idle_check(self) -> None:
        """The timer fired: lock if idle long enough, else look again when it would be."""
        idle = self.idle_lock_after
        if idle is None:
            return
        with self._lock:
            if self._connection is None:
                return
            left = self._last_used + idle - time.monotonic()
            if left > 0 or self._depth:
                self._arm_timer(max(left, 0.05))
                return
        self.lock()

    def close(self) -> None:
        """Checkpoint the WAL and close the connection."""
        self.lock()
        self._closed = True

    def _create_schema(self) -> None:
        db = self.db
        with self.transaction():
            db.table("meta").create({"key": str, "value": str}, pk="key")
            db.table("identity").create(
                {"device_id": str, "private_key": bytes, "public_key": bytes}, pk="device_id"
            )
            db.table("documents").create(
                {
                    "id": str,
                    "collection": str,
                    "clinic_id": str,
                    "heads": bytes,
                    "data": bytes,
                    "seq": int,
                },
                pk="id",
            )
            db.table("documents").create_index(["seq"])
            for collection in PROJECTIONS:
                self._create_projection(collection)
            db.table("conflicts").create(
                {"doc_id": str, "collection": str, "field": str}, pk=("doc_id", "field")
            )
            db.table("peers").create(
                {"peer_id": str, "doc_id": str, "heads": bytes}, pk=("peer_id", "doc_id")
            )
            db.table("trusted_signers").create(
                {"device_id": str, "public_key": bytes, "first_seen": str}, pk="device_id"
            )
            _create_decision_inbox(db)
            _create_audit_tables(self)
            _create_verification_tables(self)
            _create_evolution_tables(self)
            _create_notice_tables(self)
            db.table("meta").insert_all(
                [
                    {"key": "schema_version", "value": str(SCHEMA_VERSION)},
                    {"key": RECORD_VERSIONS_META, "value": json.dumps(record_versions())},
                ]
            )

    def _create_projection(self, collection: str) -> None:
        table = self.db.table(collection)
        table.create(
            {
                "id": str,
                "clinic_id": str,
                **PROJECTIONS[collection],
                "deleted": int,
                "conflicted": int,
                "updated_at": str,
                "record": str,
            },
            pk="id",
        )
        for index in _INDEXES[collection]:
            table.create_index(index)

    def _check_schema(self) -> None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = int(row[0]) if row is not None and str(row[0]).isdigit() else None
        if found is None or not 1 <= found <= SCHEMA_VERSION:
            raise StoreCorruptError(
                f"{self.path}: store schema version {row[0] if row else 'none'}, "
                f"expected {SCHEMA_VERSION} or older"
            )
        for version in range(found + 1, SCHEMA_VERSION + 1):
            with self.transaction():
                _MIGRATIONS[version](self)
                self.set_meta("schema_version", str(version))

    def _migrate_to_2(self) -> None:
        """Version 2: intents and the server's reference data get projections, and
        received decisions queue in an inbox until reported. Decisions a version-1
        store already holds were received before anyone could be told: not queued."""
        for collection in ("intents", "decisions", "directory", "availability"):
            self._add_projection(collection)
        if not self.db.table("decision_inbox").exists():
            _create_decision_inbox(self.db)

    def _migrate_to_3(self) -> None:
        """Version 3: the server's catalogue and invoices (commerce) get projections."""
        for collection in ("catalogue", "invoices"):
            self._add_projection(collection)

    def _migrate_to_4(self) -> None:
        """Version 4: the device's hash-chained audit log and the checkpoints kept."""
        _create_audit_tables(self)

    def _migrate_to_5(self) -> None:
        """Version 5: documents stored from a sender's claim await verification."""
        _create_verification_tables(self)

    def _migrate_to_6(self) -> None:
        """Version 6: record schema evolution (records to upgrade, records a newer app
        wrote) and the conflicts the app's resolution policies have handled."""
        _create_evolution_tables(self)

    def _migrate_to_7(self) -> None:
        """Version 7: the patient's medical history (conditions, allergies, medications)
        and wound care plans get projections."""
        for collection in ("conditions", "allergies", "medications", "care_plans"):
            self._add_projection(collection)

    def _migrate_to_8(self) -> None:
        """Version 8: the server's in-app notices get a projection, and the device
        keeps which of them were seen here."""
        self._add_projection("notices")
        _create_notice_tables(self)

    def _add_projection(self, collection: str) -> None:
        """Create a projection table an older store lacks, and project the documents
        of that collection it already holds."""
        if self.db.table(collection).exists():
            return
        self._create_projection(collection)
        rows = self.execute(
            "SELECT data FROM documents WHERE collection = ?", (collection,)
        ).fetchall()
        self._project([RecordDocument.load(bytes(row[0])) for row in rows])

    # ------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction (re-entrant: nested blocks join the outer one).

        After the outermost one commits, the commit listeners hear which documents of
        which collections it stored (`Written`), outside the lock, so they may use the
        store (a commit made by the verification `settle` runs is told once `settle`
        has released the lock).
        """
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlcipher3.DatabaseError as exc:  # locked, busy, or closed
                raise _translate(exc, self.path) from None
            self._depth = 1
            self._written = {}
            try:
                yield
            except BaseException as exc:
                self._depth = 0
                self._conn.execute("ROLLBACK")
                if isinstance(exc, sqlcipher3.DatabaseError):  # e.g. a damaged page met mid-write
                    raise _translate(exc, self.path) from None
                raise
            self._depth = 0
            try:
                self._conn.execute("COMMIT")
            except sqlcipher3.DatabaseError as exc:
                self._conn.execute("ROLLBACK")
                raise _translate(exc, self.path) from None
            written, self._written = self._written, {}
            if written and self._settling:
                _merge(self._deferred, written)
                return
        if written:
            self._tell(written)

    def _tell(self, written: Mapping[str, set[str]]) -> None:
        # A listener that fails is logged: the transaction has committed, and the
        # writer must not see an error for it (a caller who retried would write twice).
        self._commit_listeners.notify(Written(written))

    def _wrote(self, collection: str, ids: Iterable[str]) -> None:
        """Note documents of `collection` stored (or verified, or removed) in the open
        transaction, for the commit listeners."""
        self._written.setdefault(collection, set()).update(ids)

    @contextlib.contextmanager
    def consistent(self) -> Iterator[None]:
        """Reads that see no other thread's transaction half-written (the connection is
        shared, and a transaction's writes are visible on it before they commit)."""
        with self._lock:
            yield

    def add_commit_listener(self, listener: CommitListener) -> Subscription:
        """Call `listener` after each committed transaction that stored documents, with
        what it stored (`Written`: the collections, and `ids` per collection), in the
        thread that committed. A listener that raises is logged, never raised to the
        writer; cancel the returned subscription to stop it."""
        return self._commit_listeners.add(listener)

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> _Rows:
        """Run one SQL statement and fetch its rows, translating driver errors.

        Under the store's lock: the connection is shared by the app's threads and the
        sync thread, and the driver's statement cache is not safe to use from two at
        once; a read also waits for another thread's transaction to end, so it never
        sees one half-written.
        """
        with self._lock:
            try:
                cursor = self._conn.execute(sql, params)
                # SQLite reads pages as rows are fetched: a damaged page surfaces here.
                return _Rows(cursor.fetchall(), cursor.description)
            except sqlcipher3.DatabaseError as exc:
                raise _translate(exc, self.path) from None

    def _select_in(self, select: str, ids: Sequence[str]) -> _Rows:
        """The rows of `select` (a statement ending in ``IN``) for `ids`: one statement
        per 500 ids, within SQLite's limit on a statement's variables, all read under
        the store's lock."""
        found: list[Any] = []
        description = None
        with self._lock:
            for start in range(0, len(ids), _IN_LIST):
                chunk = ids[start : start + _IN_LIST]
                rows = self.execute(f"{select} ({','.join('?' * len(chunk))})", chunk)
                found.extend(rows.fetchall())
                description = rows.description
        return _Rows(found, description)

    # ------------------------------------------------------------ metadata
    def get_meta(self, key: str) -> str | None:
        """A value of the store's metadata table."""
        row = self.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a value of the store's metadata table."""
        self.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def delete_meta(self, key: str) -> None:
        """Remove a value of the store's metadata table (if present)."""
        self.execute("DELETE FROM meta WHERE key = ?", (key,))

    # ------------------------------------------------------------ documents
    def document_heads(self) -> dict[str, list[bytes]]:
        """Every document id with its sorted heads."""
        self.settle()
        rows = self.execute("SELECT id, heads FROM documents").fetchall()
        return {row[0]: _split(row[1]) for row in rows}

    def get_document(self, doc_id: str, *, device_id: str | None = None) -> RecordDocument | None:
        """Load a stored document, or None."""
        self.settle((doc_id,))
        row = self.execute("SELECT data FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return None if row is None else RecordDocument.load(row[0], device_id=device_id)

    def saved_document(self, doc_id: str) -> bytes | None:
        """The stored document's bytes, or None."""
        self.settle((doc_id,))
        row = self.execute("SELECT data FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def saved_documents(self, doc_ids: Sequence[str]) -> dict[str, bytes]:
        """The saved bytes of those of `doc_ids` the store holds (a few queries)."""
        self.settle(doc_ids)
        rows = self._select_in("SELECT id, data FROM documents WHERE id IN", doc_ids)
        return {str(row[0]): bytes(row[1]) for row in rows.fetchall()}

    def hinted_documents(
        self, doc_ids: Sequence[str]
    ) -> dict[str, tuple[bytes, RecordHint | None]]:
        """The saved bytes of those of `doc_ids` the store holds, each with a
        `crdt.RecordHint` of exactly those bytes (its heads, its projection's record
        JSON and conflict flag), or None for a collection without a projection. The
        documents and their projection rows are read under one hold of the store's
        lock, so a write in between cannot pair bytes with another version's record."""
        self.settle(doc_ids)
        with self._lock:
            rows = self._select_in(
                "SELECT id, collection, heads, data FROM documents WHERE id IN", doc_ids
            ).fetchall()
            projected: dict[str, tuple[str, bool]] = {}
            for found in self._projections_of(rows, "id, record, conflicted"):
                for doc_id, record_json, conflicted in found.fetchall():
                    projected[str(doc_id)] = (str(record_json), bool(conflicted))
        out: dict[str, tuple[bytes, RecordHint | None]] = {}
        for doc_id, collection, heads, data in rows:
            projection = projected.get(str(doc_id))
            hint = (
                None
                if projection is None
                else RecordHint(str(collection), tuple(_split(bytes(heads))), *projection)
            )
            out[str(doc_id)] = (bytes(data), hint)
        return out

    def saved_with_heads(self, doc_id: str) -> tuple[bytes, list[bytes]] | None:
        """A document's saved bytes and the heads of exactly those bytes, or None."""
        self.settle((doc_id,))
        row = self.execute("SELECT data, heads FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return None if row is None else (bytes(row[0]), _split(bytes(row[1])))

    def saved_with_heads_of(self, ids: Sequence[str]) -> dict[str, tuple[bytes, list[bytes]]]:
        """`saved_with_heads` of many documents, read in a few queries (not one per id);
        ids the store does not hold are left out."""
        self.settle(ids)
        rows = self._select_in("SELECT id, data, heads FROM documents WHERE id IN", ids)
        return {
            str(doc_id): (bytes(data), _split(bytes(heads)))
            for doc_id, data, heads in rows.fetchall()
        }

    def has_documents(self) -> bool:
        """True if the store holds at least one document."""
        return self.execute("SELECT 1 FROM documents LIMIT 1").fetchone() is not None

    def held(self, ids: Sequence[str]) -> set[str]:
        """Which of `ids` the store holds (looked up in a few queries, not one per id)."""
        rows = self._select_in("SELECT id FROM documents WHERE id IN", ids)
        return {str(row[0]) for row in rows.fetchall()}

    def collection_of(self, doc_id: str) -> str | None:
        """The collection a stored document belongs to, or None."""
        row = self.execute("SELECT collection FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return None if row is None else str(row[0])

    def put_documents(self, documents: Sequence[RecordDocument]) -> None:
        """Store documents and their projections, all in one transaction.

        A decision this store did not hold before is queued in the decision inbox.
        """
        if not documents:
            return
        with self.transaction():
            decisions = [d.id for d in documents if d.collection == "decisions"]
            new_decisions = sorted(set(decisions) - self._projected("decisions", decisions))
            # seq orders the local change feed: numbered from the newest one inside
            # the write transaction (the store's lock is held), so concurrent writers
            # cannot share a number, and one lookup serves the whole batch.
            row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM documents").fetchone()
            seq = int(row[0])
            doc_rows = []
            for document in documents:
                seq += 1
                doc_rows.append(
                    (
                        document.id,
                        document.collection,
                        document.values()["clinic_id"]
                        if document.newer_than_schema
                        else document.dumped()["clinic_id"],
                        b"".join(document.heads),
                        document.save(),
                        seq,
                    )
                )
            self._conn.executemany(
                "INSERT OR REPLACE INTO documents(id, collection, clinic_id, heads, data, seq)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                doc_rows,
            )
            self._project([d for d in documents if not d.newer_than_schema])
            self._keep_versions(documents)
            if new_decisions:
                self._conn.executemany(
                    "INSERT OR IGNORE INTO decision_inbox(id) VALUES (?)",
                    [(doc_id,) for doc_id in new_decisions],
                )
            for document in documents:
                self._wrote(document.collection, (document.id,))

    def put_unverified(self, documents: Sequence[UnverifiedDocument]) -> None:
        """Store documents new to this store from their sender's claim (heads, record
        and projection) without loading them; they await verification.

        Every read that would show one (its record, its document, a query of its
        collection, the change feed, the heads offered to a peer) verifies it first
        through the verifier the replica set (`set_verifier`), so an unverified record
        is never presented; the replica verifies the rest in the background.
        """
        if not documents:
            return
        with self.transaction():
            row = self.execute("SELECT COALESCE(MAX(seq), 0) FROM documents").fetchone()
            last = int(row[0])
            projections: dict[str, list[tuple[Any, ...]]] = {}
            doc_rows = []
            for seq, document in enumerate(documents, start=last + 1):
                doc_rows.append(
                    (
                        document.doc_id,
                        document.collection,
                        document.record["clinic_id"],
                        b"".join(sorted(document.heads)),
                        document.data,
                        seq,
                    )
                )
                projections.setdefault(document.collection, []).append(
                    tuple(document.projection.values())
                )
                self._pending[document.doc_id] = document.collection
            self._conn.executemany(
                "INSERT INTO documents(id, collection, clinic_id, heads, data, seq)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                doc_rows,
            )
            for collection, rows in projections.items():
                self._conn.executemany(_projection_insert(collection), rows)
            self._conn.executemany(
                "INSERT OR REPLACE INTO unverified(doc_id) VALUES (?)",
                [(document.doc_id,) for document in documents],
            )
            for document in documents:
                self._wrote(document.collection, (document.doc_id,))

    def set_verifier(self, verifier: Callable[[Sequence[str]], None]) -> None:
        """What verifies unverified documents before a read shows them: it is called
        with their ids, and must verify or quarantine each (`verified`, `quarantine`)."""
        self._verifier = verifier

    def unverified(self, *, limit: int | None = None) -> list[str]:
        """Ids of documents awaiting verification (at most `limit`)."""
        with self._lock:
            ids = list(self._pending)
        return ids if limit is None else ids[:limit]

    @property
    def unverified_count(self) -> int:
        """How many documents await verification (without taking the store's lock)."""
        return len(self._pending)

    def settle(self, ids: Sequence[str] | None = None, *, collection: str | None = None) -> None:
        """Verify the unverified documents among `ids` (all of them when None, or all
        of `collection`) before a read shows them."""
        if not self._pending:
            return
        with self._lock:
            self._settling += 1
            try:
                self._settle(ids, collection)
            finally:
                self._settling -= 1
                deferred = self._deferred if not self._settling else {}
                if deferred:
                    self._deferred = {}
        if deferred:
            self._tell(deferred)

    def _settle(self, ids: Sequence[str] | None, collection: str | None) -> None:
        if ids is not None:
            todo = [doc_id for doc_id in ids if doc_id in self._pending]
        elif collection is not None:
            todo = [d for d, c in self._pending.items() if c == collection]
        else:
            todo = list(self._pending)
        if not todo:
            return
        if self._verifier is None:
            raise StoreError(
                f"{self.path}: {len(todo)} records await verification and nothing "
                "verifies them (open the store through its replica)"
            )
        self._verifier(todo)

    def claims(self, doc_ids: Sequence[str]) -> list[Claim]:
        """What the store holds of those of `doc_ids` still awaiting verification: the
        sender's claim to check against the document (read in a few queries)."""
        with self._lock:
            todo = [doc_id for doc_id in doc_ids if doc_id in self._pending]
            rows = self._select_in(
                "SELECT id, collection, heads, data FROM documents WHERE id IN", todo
            ).fetchall()
            projected: dict[str, dict[str, Any]] = {}
            for found in self._projections_of(rows, "*"):
                names = [column[0] for column in found.description]
                for values in found.fetchall():
                    projected[str(values[0])] = dict(zip(names, values, strict=True))
        return [
            Claim(str(i), str(c), bytes(h), bytes(d), projected.get(str(i))) for i, c, h, d in rows
        ]

    def _projections_of(self, documents: Sequence[Any], columns: str) -> Iterator[_Rows]:
        """For each projected collection among `documents` (rows of id, collection,
        ...): `columns` of those documents' projection rows (call under the lock)."""
        for collection in sorted({str(row[1]) for row in documents} & set(PROJECTIONS)):
            ids = [str(row[0]) for row in documents if row[1] == collection]
            yield self._select_in(f"SELECT {columns} FROM {collection} WHERE id IN", ids)

    def still_claimed(self, asked: Sequence[str], claims: Sequence[Claim]) -> list[Claim]:
        """Those of `claims` still awaiting verification with the heads they were read
        with; those of `asked` whose document is no longer stored (the transaction that
        stored it from a claim rolled back) stop awaiting it. One read, in the
        transaction that records the verification."""
        with self.transaction():
            waiting = [doc_id for doc_id in asked if doc_id in self._pending]
            rows = self._select_in("SELECT id, heads FROM documents WHERE id IN", waiting)
            heads = {str(row[0]): bytes(row[1]) for row in rows.fetchall()}
            gone = [doc_id for doc_id in waiting if doc_id not in heads]
            self._conn.executemany(
                "DELETE FROM unverified WHERE doc_id = ?", [(doc_id,) for doc_id in gone]
            )
            for doc_id in gone:
                del self._pending[doc_id]
            return [
                claim
                for claim in claims
                if claim.doc_id in self._pending and heads.get(claim.doc_id) == claim.heads
            ]

    def verified(self, doc_ids: Sequence[str]) -> None:
        """Mark documents verified (inside the verifier's transaction). A decision among
        them is queued in the decision inbox now, as `put_documents` queues one merged
        with every check."""
        with self.transaction():
            self._conn.executemany(
                "DELETE FROM unverified WHERE doc_id = ?", [(doc_id,) for doc_id in doc_ids]
            )
            self._conn.executemany(
                "INSERT OR IGNORE INTO decision_inbox(id) VALUES (?)",
                [(doc_id,) for doc_id in doc_ids if self._pending.get(doc_id) == "decisions"],
            )
            for doc_id in doc_ids:
                collection = self._pending.pop(doc_id, None)
                if collection is not None:  # now shown by reads: a change to live queries
                    self._wrote(collection, (doc_id,))

    def verified_as_merged(self, documents: Sequence[RecordDocument]) -> None:
        """Store unverified documents that passed every check of a merge as a merge
        stores them (one a newer app wrote: kept, not projected, listed as needing an
        update), dropping their claimed projection rows (inside the verifier's
        transaction)."""
        if not documents:
            return
        with self.transaction():
            for document in documents:
                collection = self._pending.pop(document.id, None)
                if collection in PROJECTIONS:
                    self.execute(f"DELETE FROM {collection} WHERE id = ?", (document.id,))
                self.execute("DELETE FROM unverified WHERE doc_id = ?", (document.id,))
            self.put_documents(documents)

    def quarantine(self, doc_id: str, reason: str, *, retry: bool, at: str) -> None:
        """Take an unverified document out of the store into quarantine, with why."""
        with self.transaction():
            row = self.execute(
                "SELECT collection, heads, data FROM documents WHERE id = ?", (doc_id,)
            ).fetchone()
            if row is not None:
                collection = str(row[0])
                self.execute(
                    "INSERT OR REPLACE INTO quarantine"
                    "(doc_id, collection, heads, data, reason, at, retry)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (doc_id, collection, bytes(row[1]), bytes(row[2]), reason, at, int(retry)),
                )
                self.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
                self._wrote(collection, (doc_id,))
                if collection in PROJECTIONS:
                    self.execute(f"DELETE FROM {collection} WHERE id = ?", (doc_id,))
                self.execute("DELETE FROM conflicts WHERE doc_id = ?", (doc_id,))
                self.execute("DELETE FROM peers WHERE doc_id = ?", (doc_id,))
            self.execute("DELETE FROM unverified WHERE doc_id = ?", (doc_id,))
            self._pending.pop(doc_id, None)

    def quarantined(self) -> list[tuple[str, str, str, str, bool]]:
        """(id, collection, reason, when, retry) of every quarantined document."""
        rows = self.execute(
            "SELECT doc_id, collection, reason, at, retry FROM quarantine ORDER BY at, doc_id"
        ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3]), bool(r[4])) for r in rows]

    def quarantined_data(self, doc_ids: Sequence[str]) -> list[tuple[str, bytes]]:
        """(id, saved bytes) of quarantined documents."""
        found = []
        for doc_id in doc_ids:
            row = self.execute("SELECT data FROM quarantine WHERE doc_id = ?", (doc_id,)).fetchone()
            if row is not None:
                found.append((doc_id, bytes(row[0])))
        return found

    def release(self, doc_ids: Sequence[str]) -> None:
        """Drop quarantined documents (stored again by a full merge, or given up)."""
        self._conn.executemany(
            "DELETE FROM quarantine WHERE doc_id = ?", [(doc_id,) for doc_id in doc_ids]
        )

    def feed_seq(self) -> int:
        """The newest number of the store's local change feed (0 when empty)."""
        with self._lock:
            row = self.execute("SELECT COALESCE(MAX(seq), 0) FROM documents").fetchone()
        return int(row[0])

    def changed_since(self, seq: int, *, limit: int) -> list[tuple[str, int, bytes, bytes]]:
        """(id, seq, heads, saved bytes) of the documents last written after `seq`,
        oldest write first, at most `limit`: a page of the store's change feed (what an
        edge box serves its devices). Committed writes only."""
        self.settle()
        with self._lock:
            rows = self.execute(
                "SELECT id, seq, heads, data FROM documents WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [(str(r[0]), int(r[1]), bytes(r[2]), bytes(r[3])) for r in rows]

    def _project(self, documents: Sequence[RecordDocument]) -> None:
        """Write the projection and conflict rows of stored documents."""
        projections: dict[str, list[tuple[Any, ...]]] = {}
        conflict_rows = []
        for document in documents:
            conflicts = document.conflicts()
            row = projection_row(
                document.collection,
                document.dumped(),
                document.read().model_dump_json(),
                bool(conflicts),
            )
            projections.setdefault(document.collection, []).append(tuple(row.values()))
            conflict_rows += [(c.record_id, c.collection, c.field) for c in conflicts]
        for collection, rows in projections.items():
            self._conn.executemany(_projection_insert(collection), rows)
        self._conn.executemany(
            "DELETE FROM conflicts WHERE doc_id = ?", [(document.id,) for document in documents]
        )
        if conflict_rows:
            self._conn.executemany(
                "INSERT INTO conflicts(doc_id, collection, field) VALUES (?, ?, ?)",
                conflict_rows,
            )

    def _keep_versions(self, documents: Sequence[RecordDocument]) -> None:
        """Queue records an older version wrote for their upgrade; keep those a newer
        one wrote out of the projections (listed in ``newer_records`` instead)."""
        newer = [d for d in documents if d.newer_than_schema]
        self._conn.executemany(
            "DELETE FROM newer_records WHERE doc_id = ?",
            [(d.id,) for d in documents if not d.newer_than_schema],
        )
        for document in newer:
            self._conn.execute(f"DELETE FROM {document.collection} WHERE id = ?", (document.id,))
            self._conn.execute("DELETE FROM conflicts WHERE doc_id = ?", (document.id,))
        self._conn.executemany(
            "INSERT OR REPLACE INTO newer_records(doc_id, collection, version) VALUES (?, ?, ?)",
            [(d.id, d.collection, d.schema_version) for d in newer],
        )
        outdated = [(d.id,) for d in documents if d.needs_upgrade]
        if outdated:
            self._outdated_queued = True
            self._conn.executemany(
                "INSERT OR IGNORE INTO outdated_records(doc_id) VALUES (?)", outdated
            )

    def newer_records(self) -> list[tuple[str, str, int]]:
        """(id, collection, record schema version) of the records a newer app wrote."""
        rows = self.execute(
            "SELECT doc_id, collection, version FROM newer_records ORDER BY collection, doc_id"
        ).fetchall()
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    def newer_version(self, doc_id: str) -> int | None:
        """The record schema version of `doc_id` if a newer app wrote it, else None."""
        row = self.execute(
            "SELECT version FROM newer_records WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def queue_outdated(self) -> None:
        """Queue for upgrade every record of a collection whose record schema version
        is newer in this code than when the store was last upgraded (once per bump)."""
        raw = self.get_meta(RECORD_VERSIONS_META)
        kept: dict[str, int] = json.loads(raw) if raw else {}
        current = record_versions()
        behind = [name for name, version in current.items() if kept.get(name, 1) < version]
        if not behind and raw:
            return
        with self.transaction():
            self._outdated_queued = True
            for name in behind:
                self.execute(
                    "INSERT OR IGNORE INTO outdated_records(doc_id)"
                    " SELECT id FROM documents WHERE collection = ?",
                    (name,),
                )
            self.set_meta(RECORD_VERSIONS_META, json.dumps(current))

    def outdated(self, *, limit: int) -> list[str]:
        """Up to `limit` ids of records queued for upgrade."""
        with self._lock:  # no queueing between the empty answer and its note
            if not self._outdated_queued:
                return []
            rows = self.execute(
                "SELECT doc_id FROM outdated_records ORDER BY doc_id LIMIT ?", (limit,)
            ).fetchall()
            self._outdated_queued = bool(rows)
        return [str(row[0]) for row in rows]

    def upgraded(self, doc_ids: Sequence[str]) -> None:
        """Take `doc_ids` off the upgrade queue (in the caller's transaction, if any)."""
        self._conn.executemany(
            "DELETE FROM outdated_records WHERE doc_id = ?", [(i,) for i in doc_ids]
        )

    def _projected(self, collection: str, ids: Sequence[str]) -> set[str]:
        """Which of `ids` the projection of `collection` holds."""
        rows = self._select_in(f"SELECT id FROM {collection} WHERE id IN", ids)
        return {str(row[0]) for row in rows.fetchall()}

    # ------------------------------------------------------------ decision inbox
    def take_decision_inbox(self) -> list[str]:
        """The ids of the decisions queued since they were received, oldest first,
        removed from the queue in the same transaction."""
        with self.transaction():
            rows = self.execute("SELECT id FROM decision_inbox ORDER BY rowid").fetchall()
            self.execute("DELETE FROM decision_inbox")
        return [str(row[0]) for row in rows]

    # ------------------------------------------------------------ projections
    def get_record(self, collection: str, record_id: str) -> dict[str, Any] | None:
        """The projected record JSON of one record, or None."""
        self.settle((record_id,))
        row = self.execute(f"SELECT record FROM {collection} WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def query_records(
        self,
        collection: str,
        where: Sequence[str] = (),
        params: Sequence[Any] = (),
        *,
        order_by: str = "id",
        limit: int | None = None,
        offset: int = 0,
        settle: bool = True,
    ) -> list[dict[str, Any]]:
        """Projected records matching SQL conditions on projection columns.

        `settle=False` includes records awaiting verification as their sender claimed
        them: only for bookkeeping that never shows them (which blobs to fetch).
        """
        rows = self.query_json(
            collection, where, params, order_by=order_by, limit=limit, offset=offset, settle=settle
        )
        return [json.loads(row) for row in rows]

    def query_json(
        self,
        collection: str,
        where: Sequence[str] = (),
        params: Sequence[Any] = (),
        *,
        order_by: str = "id",
        limit: int | None = None,
        offset: int = 0,
        settle: bool | None = True,
    ) -> list[str]:
        """`query_records`, each record as the JSON text the projection holds.

        `settle=None` leaves records awaiting verification out instead of verifying
        them first (live queries: they see each such record once it is verified).
        """
        rows = self.query_rows(
            collection,
            ("record",),
            where,
            params,
            order_by=order_by,
            limit=limit,
            offset=offset,
            settle=settle,
        )
        return [str(row[0]) for row in rows]

    def query_rows(
        self,
        collection: str,
        columns: Sequence[str],
        where: Sequence[str] = (),
        params: Sequence[Any] = (),
        *,
        order_by: str = "id",
        limit: int | None = None,
        offset: int = 0,
        settle: bool | None = True,
    ) -> list[tuple[Any, ...]]:
        """`columns` of the projection rows of `collection` matching `where` (SQL on
        projection columns, the caller's values in `params`), as `query_json` selects
        them. Column names and `order_by` come from code, never from a user."""
        if settle:
            self.settle(collection=collection)
        conditions = list(where)
        if settle is None and self._pending:
            conditions.append("id NOT IN (SELECT doc_id FROM unverified)")
        sql = f"SELECT {', '.join(columns)} FROM {collection}"
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        sql += f" ORDER BY {order_by}"
        if limit is not None or offset:
            sql += f" LIMIT {-1 if limit is None else int(limit)} OFFSET {int(offset)}"
        return [tuple(row) for row in self.execute(sql, params).fetchall()]

    def conflicted_documents(self) -> list[str]:
        """Ids of documents with at least one conflicted field."""
        self.settle()
        rows = self.execute("SELECT DISTINCT doc_id FROM conflicts ORDER BY doc_id").fetchall()
        return [row[0] for row in rows]

    # ------------------------------------------------------------ peers
    def peer_heads(self, peer_id: str) -> dict[str, list[bytes]]:
        """What we last knew peer `peer_id` to hold."""
        rows = self.execute(
            "SELECT doc_id, heads FROM peers WHERE peer_id = ?", (peer_id,)
        ).fetchall()
        return {row[0]: _split(row[1]) for row in rows}

    def set_peer_heads(self, peer_id: str, heads: Mapping[str, Sequence[bytes]]) -> None:
        """Record that peer `peer_id` holds these documents at these heads."""
        with self.transaction():
            self._conn.executemany(
                "INSERT OR REPLACE INTO peers(peer_id, doc_id, heads) VALUES (?, ?, ?)",
                [(peer_id, doc_id, b"".join(sorted(h))) for doc_id, h in heads.items()],
            )

    def unsent_to(self, peer_id: str) -> list[tuple[str, str]]:
        """(id, collection) of every document whose heads differ from what peer
        `peer_id` was last known to hold, in the order they were last written."""
        self.settle()
        rows = self.execute(
            "SELECT d.id, d.collection FROM documents d LEFT JOIN peers p"
            " ON p.peer_id = ? AND p.doc_id = d.id"
            " WHERE p.heads IS NULL OR p.heads != d.heads ORDER BY d.seq",
            (peer_id,),
        ).fetchall()
        return [(str(doc_id), str(collection)) for doc_id, collection in rows]

    def count_unsent(self, peer_id: str, collections: Sequence[str]) -> int:
        """How many documents of `collections` `unsent_to(peer_id)` would list, counted
        in SQL and without verifying anything first (a record awaiting verification
        came from a peer with its heads, so it is not waiting to go up)."""
        if not collections:
            return 0
        marks = ", ".join("?" * len(collections))
        row = self.execute(
            "SELECT COUNT(*) FROM documents d LEFT JOIN peers p"
            " ON p.peer_id = ? AND p.doc_id = d.id"
            f" WHERE (p.heads IS NULL OR p.heads != d.heads) AND d.collection IN ({marks})",
            (peer_id, *collections),
        ).fetchone()
        return int(row[0])

    def forget_peer_documents(self, peer_id: str, doc_ids: Sequence[str]) -> None:
        """Forget that peer `peer_id` holds these documents (it lost them)."""
        with self.transaction():
            self._conn.executemany(
                "DELETE FROM peers WHERE peer_id = ? AND doc_id = ?",
                [(peer_id, doc_id) for doc_id in doc_ids],
            )

    def forget_peers(self, *peer_ids: str) -> None:
        """Forget everything we knew these peers to hold."""
        with self.transaction():
            for peer_id in peer_ids:
                self.execute("DELETE FROM peers WHERE peer_id = ?", (peer_id,))

    def trusted_signer(self, device_id: str) -> tuple[bytes, str] | None:
        """The public key trusted for a bundle signer, and since when; or None."""
        row = self.execute(
            "SELECT public_key, first_seen FROM trusted_signers WHERE device_id = ?", (device_id,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), str(row[1]))

    def trust_signer(self, device_id: str, public_key: bytes, first_seen: str) -> bytes:
        """Trust `public_key` as the signing key of `device_id` from now on, unless a key
        is trusted for it already (another thread got there first): returns the key
        trusted."""
        with self._lock:
            self.execute(
                "INSERT INTO trusted_signers(device_id, public_key, first_seen) VALUES (?, ?, ?)"
                " ON CONFLICT(device_id) DO NOTHING",
                (device_id, public_key, first_seen),
            )
            trusted = self.trusted_signer(device_id)
        if trusted is None:  # cannot happen: inserted above, or there before
            raise StoreError(f"{self.path}: the signer {device_id} was not kept")
        return trusted[0]

    def rekey(self, data_key: bytes) -> None:
        """Re-encrypt every page of the database under a new data key."""
        with self._lock:
            self.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            # SQLCipher cannot rekey a database in WAL mode.
            self.execute("PRAGMA journal_mode = DELETE")
            self.execute(f"PRAGMA rekey = \"x'{data_key.hex()}'\"")
            self.execute("PRAGMA journal_mode = WAL")
            self._data_key = data_key


class _Rows:
    """The rows of one statement, all fetched."""

    __slots__ = ("_rows", "description")

    def __init__(self, rows: list[Any], description: Any) -> None:
        self._rows = rows
        self.description = description
        """The driver's column descriptions of the query."""

    def fetchone(self) -> Any:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[Any]:
        rows, self._rows = self._rows, []
        return rows


@functools.cache
def _projection_insert(collection: str) -> str:
    """The INSERT of one projection row, its columns in `projection_row`'s order."""
    columns = ["id", "clinic_id", *PROJECTIONS[collection], "deleted", "conflicted"]
    columns += ["updated_at", "record"]
    marks = ", ".join("?" for _ in columns)
    return f"INSERT OR REPLACE INTO {collection}({', '.join(columns)}) VALUES ({marks})"


def projection_row(
    collection: str, dumped: Mapping[str, Any], record_json: str, conflicted: bool
) -> dict[str, Any]:
    """The projection row of a record of `collection` (`dumped`: its JSON values)."""
    row: dict[str, Any] = {"id": dumped["id"], "clinic_id": dumped["clinic_id"]}
    measurements = dumped.get("measurements") or {}
    for column in PROJECTIONS[collection]:
        row[column] = dumped[column] if column in dumped else measurements.get(column)
    if collection == "patients":
        row["search_text"] = search_text(
            dumped["given_name"], dumped["family_name"], dumped.get("mrn") or ""
        )
    for column in _TIME_COLUMNS.get(collection, ()):
        row[column] = sortable_time(row[column])
    row["deleted"] = int(bool(dumped["deleted"]))
    row["conflicted"] = int(conflicted)
    row["updated_at"] = dumped["updated_at"]
    row["record"] = record_json  # pydantic's compact JSON of the same values
    return row


def _connect(path: Path, data_key: bytes, *, create: bool) -> Any:
    """A configured SQLCipher connection to `path`, keyed with `data_key`."""
    if not create and (size := path.stat().st_size) < _PAGE_SIZE:
        # SQLite takes a file shorter than one page for an empty database and would
        # write a fresh one over it: refuse before connecting.
        raise StoreCorruptError(f"{path}: the database is truncated ({size} bytes)")
    try:
        conn = sqlcipher3.connect(str(path), isolation_level=None, check_same_thread=False)
    except sqlcipher3.DatabaseError as exc:
        raise _translate(exc, path) from None
    try:
        # SQLCipher logs failed HMAC checks to stderr; the caller gets an error.
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA key = \"x'{data_key.hex()}'\"")
        conn.execute("PRAGMA cipher_memory_security = OFF")
        # Reading the schema is the first page decryption: a wrong key or a
        # damaged first page fails here, before anything is written.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        conn.execute("PRAGMA busy_timeout = 10000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreCorruptError(f"{path}: could not enable WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn
    except (sqlcipher3.DatabaseError, sqlite3.DatabaseError) as exc:
        conn.close()
        raise _translate(exc, path) from None
    except BaseException:
        conn.close()
        raise


def _create_audit_tables(store: Store) -> None:
    # seq is the chain's own numbering (1, 2, ...), never reused.
    store.execute(
        "CREATE TABLE IF NOT EXISTS audit_events"
        " (seq INTEGER PRIMARY KEY, canonical BLOB NOT NULL, hash BLOB NOT NULL)"
    )
    store.execute(
        "CREATE TABLE IF NOT EXISTS audit_checkpoints ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT, peer TEXT NOT NULL,"
        " head_seq INTEGER NOT NULL, head_hash BLOB NOT NULL,"
        " checkpoint TEXT NOT NULL, leaf_index INTEGER NOT NULL, leaf BLOB NOT NULL,"
        " inclusion TEXT NOT NULL, public_key BLOB NOT NULL, received_at TEXT NOT NULL)"
    )


def _create_verification_tables(store: Store) -> None:
    store.execute("CREATE TABLE IF NOT EXISTS unverified (doc_id TEXT PRIMARY KEY)")
    # retry: refused for a signer the replica's directory did not know yet; checked
    # again once the directory is fresher.
    store.execute(
        "CREATE TABLE IF NOT EXISTS quarantine (doc_id TEXT PRIMARY KEY,"
        " collection TEXT NOT NULL, heads BLOB NOT NULL, data BLOB NOT NULL,"
        " reason TEXT NOT NULL, at TEXT NOT NULL, retry INTEGER NOT NULL)"
    )


def _create_evolution_tables(store: Store) -> None:
    # outdated: records written at an older record schema version, to upgrade.
    # newer: records a newer app wrote, kept unread (no projection row) until an update.
    store.execute("CREATE TABLE IF NOT EXISTS outdated_records (doc_id TEXT PRIMARY KEY)")
    store.execute(
        "CREATE TABLE IF NOT EXISTS newer_records (doc_id TEXT PRIMARY KEY,"
        " collection TEXT NOT NULL, version INTEGER NOT NULL)"
    )
    # The conflicts a resolution policy was run on (values: which concurrent values).
    store.execute(
        "CREATE TABLE IF NOT EXISTS handled_conflicts (doc_id TEXT NOT NULL,"
        " field TEXT NOT NULL, conflict_values TEXT NOT NULL, PRIMARY KEY (doc_id, field))"
    )


def record_versions() -> dict[str, int]:
    """The record schema version of each collection this code writes and reads."""
    return {name: schema.schema_version for name, schema in COLLECTIONS.items()}


def _create_notice_tables(store: Store) -> None:
    # Device-local: which notices were seen on this device (never replicated: a notice
    # is a server-owned record).
    store.execute(
        "CREATE TABLE IF NOT EXISTS notices_seen"
        " (notice_id TEXT PRIMARY KEY, seen_at TEXT NOT NULL)"
    )


def _create_decision_inbox(db: sqlite_utils.Database) -> None:
    db.table("decision_inbox").create({"id": str}, pk="id")


_MIGRATIONS: Mapping[int, Callable[[Store], None]] = {
    2: Store._migrate_to_2,
    3: Store._migrate_to_3,
    4: Store._migrate_to_4,
    5: Store._migrate_to_5,
    6: Store._migrate_to_6,
    7: Store._migrate_to_7,
    8: Store._migrate_to_8,
}
"""The step that brings a store of the version before up to each version."""

SEARCH_SEPARATOR = "\x1f"


def search_text(*parts: str) -> str:
    """The projected search column: each part casefolded, each preceded by a separator.

    SQLite's LIKE folds case for ASCII only; casefolding here lets "MÜ" find "Müller".
    """
    return "".join(SEARCH_SEPARATOR + fold(part) for part in parts)


def fold(text: str) -> str:
    """Text as search compares it: composed (NFC), then casefolded."""
    if text.isascii():  # the common case, and the same answer: ASCII is NFC already
        return text.lower()
    return unicodedata.normalize("NFC", text).casefold()


def _merge(into: dict[str, set[str]], written: Mapping[str, set[str]]) -> None:
    for collection, ids in written.items():
        into.setdefault(collection, set()).update(ids)


def _split(heads: bytes) -> list[bytes]:
    return sorted(heads[i : i + 32] for i in range(0, len(heads), 32))
