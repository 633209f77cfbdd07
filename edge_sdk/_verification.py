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
  verifies the rest, in chunks, soon after the sync, checking each chunk without the
  store's lock (reads and writes wait only for the short transaction recording it).
  A store closed before that finished resumes it when it is opened again.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from crdt import (
    DEFAULT_LIMITS,
    CrdtError,
    DocumentStore,
    FieldConflict,
    KeyDirectory,
    RecordDocument,
    RecordHint,
    apply_documents,
    check_new_document,
    refusal_reason,
)
from edge_sdk._access import AccessGate
from edge_sdk._errors import StoreError
from edge_sdk._store import PROJECTIONS, Claim, Store, UnverifiedDocument, projection_row

__all__ = [
    "QuarantinedRecord",
    "Verification",
    "VerificationStatus",
    "Verifying",
    "split_claims",
]

log = logging.getLogger("edge_sdk.verification")

CHUNK = 256
"""Documents checked per round in the background: read in one go, checked without the
store's lock, their outcome recorded in one transaction."""


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


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What checking one claim found."""

    claim: Claim
    reason: str | None  # why it fails, or None when it holds
    retry: bool = False  # refused for a signer the directory did not know yet
    conflicts: tuple[FieldConflict, ...] = ()  # its conflicted fields, when it holds
    merged: RecordDocument | None = None
    """A document that passed every check a merge makes but that this code cannot read
    (a newer app wrote it), so no claim of its record can be compared: stored as a merge
    stores it, the claim dropped."""


class _Directory(KeyDirectory, Protocol):
    @property
    def missing(self) -> set[str]: ...  # asked for and not found since this thread cleared it


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
        store = self._store
        try:
            while not self._stop.is_set():
                ids = store.unverified(limit=CHUNK)
                if not ids:
                    break
                # The checks run without the store's lock (it is taken for the read and
                # for the transaction that records the outcome), so the app's reads
                # and the sync never wait for a chunk's signatures.
                outcomes = [self._check(claim) for claim in store.claims(ids)]
                with store.transaction():
                    self._record(ids, outcomes)
                self._wake()
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
        with store.transaction():
            self._record(doc_ids, [self._check(claim) for claim in store.claims(doc_ids)])
        self._wake()

    def _record(self, asked: Sequence[str], outcomes: Sequence[_Outcome]) -> None:
        """Keep what the checks of the documents `asked` for found, in the caller's
        transaction: the conflict rows and the verified mark of each document that
        passed, the quarantine of each that failed. A document verified by another
        thread since, or changed, is left to that thread (or to the next check); one no
        longer stored (its storing rolled back) is no longer awaited."""
        store = self._store
        claims = store.still_claimed(asked, [o.claim for o in outcomes])
        current = {claim.doc_id for claim in claims}
        good: list[str] = []
        merged: list[RecordDocument] = []
        for outcome in outcomes:
            doc_id = outcome.claim.doc_id
            if doc_id not in current:
                continue
            if outcome.reason is not None:
                self._quarantine(doc_id, outcome.reason, retry=outcome.retry)
                continue
            if outcome.merged is not None:
                merged.append(outcome.merged)
                continue
            good.append(doc_id)
            if outcome.conflicts:
                store.execute("DELETE FROM conflicts WHERE doc_id = ?", (doc_id,))
                for conflict in outcome.conflicts:
                    store.execute(
                        "INSERT INTO conflicts(doc_id, collection, field) VALUES (?, ?, ?)",
                        (conflict.record_id, conflict.collection, conflict.field),
                    )
        store.verified(good)
        store.verified_as_merged(merged)

    def _wake(self) -> None:
        # Waiters evaluate their predicate without the store's lock, so the order cannot
        # deadlock when this is called with the store's lock held (from `Store.settle`).
        with self._idle:
            self._idle.notify_all()

    def _check(self, claim: Claim) -> _Outcome:
        """Check one claim against its document; reads nothing from the store but the
        directory, so it may run in any thread without the store's lock."""
        replica = self._replica
        directory = replica.directory
        directory.missing.clear()  # this thread's misses
        try:
            document = check_new_document(
                claim.doc_id,
                claim.data,
                device_id=replica.device_id,
                policy=replica.policy,
                authorship=directory,
            )
        except CrdtError as exc:
            return _Outcome(claim, refusal_reason(exc), retry=bool(directory.missing))
        collection = claim.collection
        if document.collection != collection:
            return _Outcome(
                claim, f"sent as a {collection} record, but it is a {document.collection} one"
            )
        if b"".join(sorted(document.heads)) != claim.heads:
            return _Outcome(claim, "the heads sent with it are not the document's heads")
        if document.newer_than_schema:
            return _Outcome(claim, None, merged=document)
        record = document.read()
        conflicts = tuple(document.conflicts())
        expected = projection_row(
            collection, record.model_dump(mode="json"), record.model_dump_json(), bool(conflicts)
        )
        stored = claim.projection
        if stored is None:
            return _Outcome(claim, "the record sent with it was not stored")
        for name, value in expected.items():
            same = (
                _json(stored.get(name)) == json.loads(value)
                if name == "record"
                else stored.get(name) == value
            )
            if not same:
                return _Outcome(
                    claim, f"the record sent with it differs from the document ({name})"
                )
        return _Outcome(claim, None, conflicts=conflicts)

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


def split_claims(
    store: Store,
    clinic_id: str,
    docs: Sequence[tuple[str, bytes]],
    hints: Mapping[str, bytes],
) -> tuple[list[tuple[str, bytes]], list[UnverifiedDocument]]:
    """Split received documents: those new to `store` that came with a usable hint (a
    `crdt.RecordHint` payload, by id) of a record of `clinic_id`, to be stored from the
    claim and verified later, and the rest, to be merged now with every check (a
    document already held, one without a hint, one whose hint does not parse or does
    not describe a record of this clinic, or one too large to store unchecked)."""
    if not hints:
        return list(docs), []
    held = store.held([doc_id for doc_id, _ in docs])
    merged: list[tuple[str, bytes]] = []
    claimed: list[UnverifiedDocument] = []
    for doc_id, data in docs:
        payload = hints.get(doc_id)
        hint = None if payload is None or doc_id in held else _usable(doc_id, payload)
        if hint is None or len(data) > DEFAULT_LIMITS.max_bytes:
            merged.append((doc_id, data))
            continue
        record, claim, projection = hint
        if record.get("clinic_id") != clinic_id:
            merged.append((doc_id, data))  # refused with its reason by the merge
            continue
        claimed.append(
            UnverifiedDocument(
                doc_id=doc_id,
                collection=claim.collection,
                data=data,
                heads=claim.heads,
                record=record,
                record_json=claim.record_json,
                conflicted=claim.conflicted,
                projection=projection,
            )
        )
    return merged, claimed


def _usable(
    doc_id: str, payload: bytes
) -> tuple[dict[str, Any], RecordHint, dict[str, Any]] | None:
    """The record a hint claims, the hint and the record's projection row, if it is a
    hint this store can project."""
    try:
        hint = RecordHint.decode(payload)
        record = json.loads(hint.record_json)
    except (CrdtError, ValueError):
        return None  # merged with every check instead
    if (
        hint.collection not in PROJECTIONS
        or not isinstance(record, dict)
        or record.get("id") != doc_id
        or not hint.heads
    ):
        return None
    try:
        projection = projection_row(hint.collection, record, hint.record_json, hint.conflicted)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None  # not even shaped like its collection: the merge says why
    if not all(isinstance(value, _COLUMN_TYPES) for value in projection.values()):
        return None  # a column value SQLite cannot hold: merged from the bytes instead
    return record, hint, projection


_COLUMN_TYPES = (str, int, float, type(None))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value
