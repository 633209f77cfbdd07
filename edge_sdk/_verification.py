"""Deferred verification: documents stored from the sender's claim, checked after.

A first sync (a new tablet, or one restored after loss) pulls every record of the
clinic. Loading and checking each document before storing it is most of that sync's
cost, so a pull that starts from nothing asks the server for a `crdt.RecordHint` with
each document (collection, heads, record JSON) and stores the document, its heads and
its projection from that claim (`Store.put_unverified`). This module then verifies
each one exactly as a merge would (`crdt.check_new_document`: limits, id, schema,
frozen fields, clinic, and every change signed by an enrolled device), and checks the
claim against the document: the heads, and the projection row computed afresh.

- A document that passes is marked verified and gets its conflict rows.
- One that fails is **quarantined**: taken out of the store (document, projection,
  conflicts) into the `quarantine` table with the reason, logged, and journalled in
  the device's audit chain as a ``quarantine`` access (so the server hears of it). One
  refused only because its signer was not yet in the replica's directory is retried
  through a full merge after the next sync refreshed the directory.
- No read shows an unverified record: the store verifies the unverified documents a
  read would return before the read runs (`Store.settle`); a background thread
  verifies the rest, in chunks, soon after the sync. A store closed before that
  finished resumes it when it is opened again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from crdt import (
    CrdtError,
    DocumentStore,
    KeyDirectory,
    RecordDocument,
    apply_documents,
    check_new_document,
    refusal_reason,
)
from edge_sdk._access import AccessGate
from edge_sdk._errors import StoreError
from edge_sdk._store import Store, projection_row

__all__ = ["QuarantinedRecord", "Verification", "VerificationStatus", "Verifying"]

log = logging.getLogger("edge_sdk.verification")

CHUNK = 256
"""Documents verified per store transaction in the background (reads wait at most
one chunk for the store)."""


@dataclass(frozen=True, slots=True)
class QuarantinedRecord:
    """A record received from a sender whose claim did not hold, kept out of the store."""

    record_id: str
    collection: str
    reason: str
    at: str  # when it was quarantined (ISO 8601, UTC)
    retry: bool  # refused for a signer not yet known: checked again after a sync


@dataclass(frozen=True, slots=True)
class VerificationStatus:
    """Where deferred verification stands."""

    pending: int  # records stored from a sender's claim, not verified yet
    quarantined: tuple[QuarantinedRecord, ...]

    @property
    def done(self) -> bool:
        """True when no record awaits verification."""
        return self.pending == 0


class _Directory(KeyDirectory, Protocol):
    missing: set[str]  # devices asked for and not found since last cleared


class Verifying(Protocol):
    """What verification needs of a replica (an `edge_sdk.Replica`)."""

    @property
    def store(self) -> Store: ...
    @property
    def device_id(self) -> str: ...
    @property
    def directory(self) -> _Directory: ...
    @property
    def access(self) -> AccessGate: ...
    @property
    def documents(self) -> DocumentStore: ...
    def policy(self, document: RecordDocument) -> str | None: ...


class Verification:
    """A replica's deferred verification (see the module doc)."""

    def __init__(self, replica: Verifying) -> None:
        self._replica = replica
        self._store = replica.store
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._store.set_verifier(self.verify)

    # ------------------------------------------------------------ status
    def status(self) -> VerificationStatus:
        """How many records await verification, and which were quarantined."""
        return VerificationStatus(
            pending=self._store.unverified_count,
            quarantined=tuple(QuarantinedRecord(*row) for row in self._store.quarantined()),
        )

    def wait(self, timeout: float | None = None) -> VerificationStatus:
        """Block until no record awaits verification (or `timeout` seconds passed)."""
        self.start()
        store = self._store
        with self._idle:  # never take the store's lock under this one (verify does both)
            self._idle.wait_for(lambda: not store.unverified_count or not self.running, timeout)
        if store.unverified_count and not self.running:
            self.verify(self._store.unverified())  # the thread stopped (store locked?)
        return self.status()

    @property
    def running(self) -> bool:
        """True while the background thread works."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    # ------------------------------------------------------------ background
    def start(self) -> None:
        """Verify what awaits verification in a background thread (if anything does)."""
        if self.running or not self._store.unverified_count or self._stop.is_set():
            return
        self._thread = threading.Thread(target=self._run, name="edge-sdk-verification", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the background thread (what it did not verify stays pending)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                ids = self._store.unverified(limit=CHUNK)
                if not ids:
                    break
                self._store.settle(ids)
        except StoreError as exc:  # locked or closed under us: reads still verify
            log.info("background verification paused: %s", exc)
        except Exception:  # a bug must not go unseen, nor leave waiters blocked
            log.exception("background verification failed")
        finally:
            self._wake()

    # ------------------------------------------------------------ checks
    def verify(self, doc_ids: Sequence[str]) -> None:
        """Verify these unverified documents now, quarantining any that fail."""
        store = self._store
        good: list[str] = []
        with store.transaction():
            for doc_id in doc_ids:
                reason, retry = self._check(doc_id)
                if reason is None:
                    good.append(doc_id)
                else:
                    self._quarantine(doc_id, reason, retry=retry)
            store.verified(good)
        self._wake()

    def _wake(self) -> None:
        # Called with the store's lock held (from `Store.settle`): waiters evaluate
        # their predicate without the store's lock, so the order cannot deadlock.
        with self._idle:
            self._idle.notify_all()

    def _check(self, doc_id: str) -> tuple[str | None, bool]:
        """(why the document fails, whether to retry it later), or (None, False)."""
        replica, store = self._replica, self._store
        row = store.execute(
            "SELECT collection, heads, data FROM documents WHERE id = ?", (doc_id,)
        ).fetchone()
        if row is None:
            return None, False  # gone (rolled back): nothing to verify
        collection, heads, data = str(row[0]), bytes(row[1]), bytes(row[2])
        directory = replica.directory
        directory.missing.clear()
        try:
            document = check_new_document(
                doc_id,
                data,
                device_id=replica.device_id,
                policy=replica.policy,
                authorship=directory,
            )
        except CrdtError as exc:
            return refusal_reason(exc), bool(directory.missing)
        if document.collection != collection:
            return f"sent as a {collection} record, but it is a {document.collection} one", False
        if b"".join(sorted(document.heads)) != heads:
            return "the heads sent with it are not the document's heads", False
        record = document.read()
        conflicts = document.conflicts()
        expected = projection_row(
            collection, record.model_dump(mode="json"), record.model_dump_json(), bool(conflicts)
        )
        cursor = store.execute(f"SELECT * FROM {collection} WHERE id = ?", (doc_id,))
        found = cursor.fetchone()
        if found is None:
            return "the record sent with it was not stored", False
        names = [column[0] for column in cursor.description]
        stored = dict(zip(names, found, strict=True))
        for name, value in expected.items():
            same = (
                _json(stored.get(name)) == json.loads(value)
                if name == "record"
                else stored.get(name) == value
            )
            if not same:
                return f"the record sent with it differs from the document ({name})", False
        if conflicts:
            store.execute("DELETE FROM conflicts WHERE doc_id = ?", (doc_id,))
            for conflict in conflicts:
                store.execute(
                    "INSERT INTO conflicts(doc_id, collection, field) VALUES (?, ?, ?)",
                    (conflict.record_id, conflict.collection, conflict.field),
                )
        return None, False

    def _quarantine(self, doc_id: str, reason: str, *, retry: bool) -> None:
        collection = self._store.collection_of(doc_id) or "*"
        log.error("record %s (%s) failed verification, quarantined: %s", doc_id, collection, reason)
        with self._replica.access("quarantine", collection) as access:
            access.record_ids.append(doc_id)
            self._store.quarantine(
                doc_id, reason, retry=retry, at=datetime.now(UTC).isoformat(timespec="seconds")
            )

    # ------------------------------------------------------------ retries
    def retry_quarantined(self) -> list[str]:
        """Merge again, with every check, the quarantined records refused only for a
        signer the directory did not know then (call after refreshing it). Returns the
        ids now stored."""
        store = self._store
        retry = [row[0] for row in store.quarantined() if row[4]]
        if not retry:
            return []
        replica = self._replica
        with store.transaction():
            report = apply_documents(
                replica.documents,
                store.quarantined_data(retry),
                device_id=replica.device_id,
                policy=replica.policy,
                authorship=replica.directory,
            )
            store.release(sorted(report.received))
        for refused in report.rejected:
            log.warning("quarantined record %s still refused: %s", refused.doc_id, refused.reason)
        return sorted(report.received)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
