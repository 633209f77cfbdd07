"""The server's replicas of clinical records: merges of pushed documents, change feed.

Every clinic has its own change feed: `Clinic.feed_seq` is the last sequence number
given out, and each document row carries the number of its latest change. A push takes
the clinic row's lock first (``SELECT ... FOR UPDATE`` on PostgreSQL, the write lock on
SQLite), so the pushes of one clinic commit in sequence order and a pull that has seen
sequence *n* has seen everything below it.

Pushed documents go through `crdt.apply_documents`, the same validation devices use
(parse, id, scope policy, schema after merge, immutable fields); each document and its
projection row are written in the push's one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from crdt import (
    COLLECTIONS,
    DEFAULT_LIMITS,
    DocumentLimits,
    Entry,
    EntryKind,
    MessageTooLargeError,
    Record,
    RecordDocument,
    RecordHint,
    Rejection,
    SyncMessage,
    SyncProtocolError,
    SyncReport,
    apply_documents,
    decode_message,
    encode_message,
)
from sync_server.audit.events import Actor, DocumentsPulled, DocumentsPushed, purpose_of
from sync_server.audit.services import record_event
from sync_server.db import insert_many, utcnow
from sync_server.errors import Conflict, Invalid, NotFound, PayloadTooLarge
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.sync.authorship import ClinicDirectory, ServerSigner
from sync_server.sync.projections import PROJECTIONS, patient_of, projection_row
from sync_server.sync.tables import Document

__all__ = [
    "MESSAGE_ENVELOPE",
    "PullPage",
    "PushResult",
    "decode_push",
    "encode_pull",
    "pull_page",
    "push_documents",
    "record_pull",
    "upserted_record",
    "write_documents",
]

log = logging.getLogger("sync_server.sync")

MESSAGE_ENVELOPE = 4096
"""Bytes a wire message's framing may take beside its documents: a document must fit a
message with this much to spare."""
_ENTRY_OVERHEAD = 64
_LOOKUP_CHUNK = 500
_PATIENT_COLLECTIONS = frozenset(
    name for name, schema in COLLECTIONS.items() if "patient_id" in schema.model_fields
) | {"patients"}
"""Collections whose records belong to one patient."""


@dataclass(slots=True)
class PushResult:
    """What a push did, document by document."""

    accepted: list[str] = field(default_factory=list)  # stored new or changed
    unchanged: list[str] = field(default_factory=list)  # the server already had it all
    rejected: list[Rejection] = field(default_factory=list)
    cursor: int = 0  # the clinic's feed sequence after the push


@dataclass(slots=True)
class PullPage:
    """One page of a clinic's change feed."""

    entries: list[Entry]
    cursor: int  # pass back as the next pull's cursor
    more: bool  # another page is ready now
    feed_seq: int  # the clinic's newest sequence number
    patients: tuple[str, ...] = ()  # the patients whose records the page holds
    hints: dict[str, Entry] = field(default_factory=dict)  # RECORD entries, by doc id


def decode_push(
    message: bytes,
    *,
    max_message_size: int,
    max_documents: int,
    max_changes: int,
    limits: DocumentLimits,
) -> list[tuple[str, bytes]]:
    """The (doc id, saved document) pairs a pushed wire message carries.

    Blocking (CPU): call it off the event loop. The entry count is checked before any
    entry is read, and what loading every document would cost (changes, measured from
    their chunk headers) before any is loaded.

    Raises:
        Invalid: ``malformed_message`` (not a usable crdt wire message) or
            ``bad_entry`` (an entry that is not a whole document).
        PayloadTooLarge: More than `max_documents` documents (``too_many_documents``),
            or more than `max_changes` changes in all (``push_too_costly``: send fewer
            documents per push).
    """
    try:
        decoded = decode_message(message, max_size=max_message_size, max_entries=max_documents)
    except MessageTooLargeError:
        raise PayloadTooLarge(
            f"a push may carry at most {max_documents} documents and {max_message_size} bytes",
            code="too_many_documents",
        ) from None
    except SyncProtocolError as exc:
        raise Invalid(f"unusable sync message: {exc}", code="malformed_message") from None
    if any(entry.kind is not EntryKind.DOC for entry in decoded.entries):
        raise Invalid("a push carries whole documents (DOC entries) only", code="bad_entry")
    total = 0
    for entry in decoded.entries:
        total += limits.measure(entry.payload)[0]
        if total > max_changes:
            raise PayloadTooLarge(
                f"the documents of this push hold more than {max_changes} changes in all; "
                "push fewer documents at a time",
                code="push_too_costly",
            )
    return [(entry.doc_id, entry.payload) for entry in decoded.entries]


def push_documents(
    *,
    session: Session,
    principal: Principal,
    incoming: Sequence[tuple[str, bytes]],
    max_message_size: int,
    server_key: bytes,
    limits: DocumentLimits = DEFAULT_LIMITS,
    request_id: str | None = None,
    decide: Callable[[Session, list[RecordDocument]], object] | None = None,
    max_intents: int | None = None,
) -> PushResult:
    """Merge a device's pushed documents into its clinic's replicas, in `session`'s
    transaction, and audit the push. Refused documents are reported and nothing of
    them is stored; a document too large to be pulled again in a message of
    `max_message_size` bytes is refused, and so is one with a new change not signed by
    an enrolled device of its clinic (or the server, whose key is `server_key`).

    `decide` is given the push's intents (new, or held before but never decided) once
    they are stored, in the same transaction: the decisions it writes commit with the
    push or not at all (`sync_server.intents.IntentDesk.decide`).

    Raises:
        NotFound: The caller has no clinic, or it no longer exists.
        PayloadTooLarge: ``push_too_costly``: more than `max_intents` intents (each is
            decided while the clinic's feed is held); nothing of the push is stored.
    """
    clinic_id = principal.clinic_id
    if clinic_id is None:
        raise NotFound("the caller has no clinic to push to")
    clinic = session.execute(
        select(Clinic).where(Clinic.id == clinic_id).with_for_update()
    ).scalar_one_or_none()
    if clinic is None:
        raise NotFound("the caller's clinic no longer exists")
    ids = list(dict.fromkeys(doc_id for doc_id, _ in incoming))
    existing = _lookup(session, ids)
    result = PushResult()
    foreign = {doc_id for doc_id, row in existing.items() if row.clinic_id != clinic_id}
    for doc_id in sorted(foreign):
        result.rejected.append(
            Rejection(doc_id, "the id belongs to a record outside this device's clinic")
        )
    pushed_heads: dict[str, list[bytes]] = {}
    intents: dict[str, RecordDocument] = {}

    def policy(document: RecordDocument) -> str | None:
        pushed_heads[document.id] = document.heads
        if document.collection == "intents":
            intents[document.id] = document
            if max_intents is not None and len(intents) > max_intents:
                raise PayloadTooLarge(
                    f"a push may carry at most {max_intents} intents; push fewer at a time",
                    code="push_too_costly",
                )
        return _device_policy(principal, document)

    store = _TransactionStore(session, clinic, existing, principal)
    report = SyncReport()
    apply_documents(
        store,
        [(doc_id, data) for doc_id, data in incoming if doc_id not in foreign],
        device_id=principal.id,
        policy=policy,
        report=report,
        limits=limits,
        authorship=ClinicDirectory(session, server_key=server_key),
    )
    late = store.flush(pushed_heads, max_document_size=max_message_size - MESSAGE_ENVELOPE)
    result.rejected += report.rejected + late
    report.received -= {r.doc_id for r in late}
    refused = {r.doc_id for r in result.rejected}
    result.accepted = [doc_id for doc_id in ids if doc_id in report.received]
    result.unchanged = [
        doc_id for doc_id in ids if doc_id not in report.received and doc_id not in refused
    ]
    if decide is not None:
        deliverable = [doc for doc_id, doc in intents.items() if doc_id not in refused]
        if deliverable:
            decide(session, deliverable)
    result.cursor = clinic.feed_seq
    patients = [store.patients.get(doc_id) for doc_id in result.accepted] + [
        existing[doc_id].patient_id for doc_id in result.unchanged if doc_id in existing
    ]
    record_event(
        session=session,
        event=DocumentsPushed(
            actor=Actor.of(principal),
            clinic_id=clinic_id,
            patient_ids=tuple(p for p in patients if p is not None),
            purpose=purpose_of(principal),
            accepted=tuple(result.accepted),
            unchanged=tuple(result.unchanged),
            rejected=tuple(r.doc_id for r in result.rejected),
        ),
        request_id=request_id,
    )
    return result


def pull_page(
    *,
    session: Session,
    principal: Principal,
    cursor: int,
    limit: int,
    max_message_size: int,
    records: bool = False,
) -> PullPage:
    """The caller's clinic's documents changed after `cursor`, oldest change first.

    A device is not sent back a version that is exactly what it pushed itself (its
    cursor still moves past it). A page stops at `limit` documents or when the next
    would not fit a message of `max_message_size` bytes. With `records`, each document
    that has a projection row is followed by a `crdt.RecordHint` (its collection,
    heads and record JSON), so that a replica new to it can store it without loading
    it first (and verify it after).

    Raises:
        NotFound: The caller has no clinic, or it no longer exists.
        Conflict: ``cursor_ahead``: the cursor is past the clinic's feed (a restored
            server); pull again from 0.
    """
    clinic_id = principal.clinic_id
    if clinic_id is None:
        raise NotFound("the caller has no clinic to pull from")
    feed_seq = session.execute(
        select(Clinic.feed_seq).where(Clinic.id == clinic_id)
    ).scalar_one_or_none()
    if feed_seq is None:
        raise NotFound("the caller's clinic no longer exists")
    if cursor > feed_seq:
        raise Conflict(
            f"cursor {cursor} is ahead of the clinic's feed ({feed_seq}); pull again from 0",
            code="cursor_ahead",
        )
    max_bytes = max_message_size - MESSAGE_ENVELOPE
    rows = session.execute(
        select(
            Document.id,
            Document.seq,
            Document.origin_device,
            Document.data,
            Document.patient_id,
            Document.collection,
            Document.heads,
        )
        .where(Document.clinic_id == clinic_id, Document.seq > cursor)
        .order_by(Document.seq)
        .limit(limit + 1)
    ).all()
    hints = _record_hints(session, rows[:limit]) if records else {}
    entries: list[Entry] = []
    sent_hints: dict[str, Entry] = {}
    patients: dict[str, None] = {}
    size = 0
    new_cursor = cursor
    more = len(rows) > limit
    for doc_id, seq, origin, data, patient_id, _, _ in rows[:limit]:
        if origin is not None and origin == principal.id:
            new_cursor = seq
            continue
        entry = Entry(EntryKind.DOC, doc_id, bytes(data))
        if len(entry.payload) + _ENTRY_OVERHEAD > max_bytes:
            # Pushes refuse documents this large; one stored before that rule (or by
            # hand) must not stop the clinic's feed: skip it and say so.
            log.error("document %s (%d bytes) exceeds the pull size cap", doc_id, len(data))
            new_cursor = seq
            continue
        hint = hints.get(doc_id)
        needed = len(entry.payload) + _ENTRY_OVERHEAD
        if hint is not None:
            needed += len(hint.payload) + _ENTRY_OVERHEAD
            if needed > max_bytes:  # the document fits alone: send it without its hint
                needed, hint = len(entry.payload) + _ENTRY_OVERHEAD, None
        if entries and size + needed > max_bytes:
            more = True
            break
        entries.append(entry)
        if hint is not None:
            sent_hints[doc_id] = hint
        if patient_id is not None:
            patients[patient_id] = None
        size += needed
        new_cursor = seq
    return PullPage(entries, new_cursor, more, int(feed_seq), tuple(patients), sent_hints)


def _record_hints(session: Session, rows: Sequence[Any]) -> dict[str, Entry]:
    """RECORD entries for the rows whose collection has a projection: the projection
    row is written in the document's transaction, so it is the record of these bytes."""
    heads = {row.id: bytes(row.heads) for row in rows}
    wanted: dict[str, list[str]] = {}
    for row in rows:
        if row.collection in PROJECTIONS:
            wanted.setdefault(row.collection, []).append(row.id)
    hints: dict[str, Entry] = {}
    for collection, ids in wanted.items():
        model: Any = PROJECTIONS[collection]
        for start in range(0, len(ids), _LOOKUP_CHUNK):
            chunk = ids[start : start + _LOOKUP_CHUNK]
            found = session.execute(
                select(model.id, model.record, model.conflicted).where(model.id.in_(chunk))
            ).all()
            for doc_id, record_json, conflicted in found:
                joined = heads[doc_id]
                hint = RecordHint(
                    collection,
                    tuple(joined[i : i + 32] for i in range(0, len(joined), 32)),
                    record_json,
                    bool(conflicted),
                )
                hints[doc_id] = Entry(EntryKind.RECORD, doc_id, hint.encode())
    return hints


def record_pull(
    *, session: Session, principal: Principal, page: PullPage, request_id: str | None
) -> None:
    """Audit which documents a pull sent (in a short write transaction of its own: the
    page itself is read without taking the write lock)."""
    record_event(
        session=session,
        event=DocumentsPulled(
            actor=Actor.of(principal),
            clinic_id=principal.clinic_id,
            patient_ids=page.patients,
            purpose=purpose_of(principal),
            doc_ids=tuple(e.doc_id for e in page.entries),
        ),
        request_id=request_id,
    )


def encode_pull(page: PullPage, *, max_message_size: int) -> bytes:
    """A pull page as one wire message: its documents, and in its control fields
    ``cursor`` (send it next time), ``more`` and ``feed`` (the newest sequence)."""
    control = {"cursor": page.cursor, "more": page.more, "feed": page.feed_seq}
    entries: list[Entry] = []
    for entry in page.entries:
        entries.append(entry)
        hint = page.hints.get(entry.doc_id)
        if hint is not None:
            entries.append(hint)
    return encode_message(SyncMessage(control, tuple(entries)), max_size=max_message_size)


def write_documents(
    *,
    session: Session,
    clinic_id: str,
    documents: Sequence[RecordDocument],
    signer: ServerSigner,
    max_document_size: int = 8 * 1024 * 1024 - MESSAGE_ENVELOPE,
) -> int:
    """Store server-made documents (e.g. decisions) in a clinic's feed, signed by the
    server (their changes must be the server's: written as ``signer.device_id``);
    returns the clinic's new feed sequence. The caller's transaction commits them.

    Raises:
        ValueError: The server's own documents were refused (a bug, not input).
    """
    for document in documents:
        document.seal(signer)
    writer = signer.device_id
    clinic = session.execute(
        select(Clinic).where(Clinic.id == clinic_id).with_for_update()
    ).scalar_one()
    existing = _lookup(session, [d.id for d in documents])
    store = _TransactionStore(session, clinic, existing, None, writer=writer)
    store.put_documents(documents)
    refused = store.flush({}, max_document_size=max_document_size)
    if refused:
        raise ValueError(f"server documents refused: {refused}")
    return clinic.feed_seq


# ---------------------------------------------------------------- internals
def _device_policy(principal: Principal, document: RecordDocument) -> str | None:
    if document.newer_than_schema:
        # Devices keep a newer app's records unread; the server projects every record,
        # so it is updated before the apps that write a new record schema version.
        return (
            f"record schema version {document.schema_version} of {document.collection} is "
            f"newer than this server reads ({document.schema.schema_version}): update the server"
        )
    record = document.read()
    if record.clinic_id != principal.clinic_id:
        return f"record belongs to clinic {record.clinic_id}, not to this device's clinic"
    if principal.kind == "device" and not document.schema.device_writable:
        return f"{document.collection} are server-owned: devices may not write them"
    return None


def _lookup(session: Session, ids: Sequence[str]) -> dict[str, Document]:
    found: dict[str, Document] = {}
    for start in range(0, len(ids), _LOOKUP_CHUNK):
        chunk = ids[start : start + _LOOKUP_CHUNK]
        for row in session.execute(select(Document).where(Document.id.in_(chunk))).scalars():
            found[row.id] = row
    return found


class _TransactionStore:
    """A `crdt.DocumentStore` over one clinic inside one transaction."""

    def __init__(
        self,
        session: Session,
        clinic: Clinic,
        existing: dict[str, Document],
        principal: Principal | None,
        *,
        writer: str | None = None,
    ) -> None:
        self._session = session
        self._clinic = clinic
        self._existing = existing
        self._principal = principal
        self._writer = writer if principal is None else principal.id
        self._pending: list[RecordDocument] = []
        self.patients: dict[str, str] = {}  # doc id -> patient, of the documents written

    def document_heads(self) -> dict[str, list[bytes]]:
        raise NotImplementedError("the server does not offer heads; devices pull the feed")

    def get_document(self, doc_id: str) -> RecordDocument | None:
        row = self._existing.get(doc_id)
        if row is None or row.clinic_id != self._clinic.id:
            return None
        return RecordDocument.load(row.data, device_id=None)

    def saved_document(self, doc_id: str) -> bytes | None:
        row = self._existing.get(doc_id)
        return None if row is None else bytes(row.data)

    def put_documents(self, documents: Sequence[RecordDocument]) -> None:
        self._pending.extend(documents)

    def flush(
        self, pushed_heads: dict[str, list[bytes]], *, max_document_size: int
    ) -> list[Rejection]:
        """Write the pending documents, their feed numbers and projections.

        Returns the documents refused at this last step, none of which is stored: one
        too large to ever be pulled, one whose values the projection cannot hold, or a
        new id another clinic's push wrote first.
        """
        refused: list[Rejection] = []
        if not self._pending:
            return refused
        now = utcnow()
        doc_rows: list[dict[str, Any]] = []
        projections: dict[str, list[dict[str, Any]]] = {}
        seq = self._clinic.feed_seq
        principal = self._principal
        device = principal.id if principal is not None and principal.kind == "device" else None
        for document in self._pending:
            data = document.save()
            if len(data) > max_document_size:
                refused.append(
                    Rejection(
                        document.id,
                        f"the merged document is {len(data)} bytes, over the "
                        f"{max_document_size}-byte limit",
                    )
                )
                continue
            projection = None
            patient_id = None
            if document.collection in _PATIENT_COLLECTIONS:
                record = document.read()
                patient_id = patient_of(
                    document.collection,
                    {"id": record.id, "patient_id": getattr(record, "patient_id", None)},
                )
            if document.collection in PROJECTIONS:
                try:
                    projection = projection_row(
                        document.collection,
                        document.read().model_dump(mode="json"),
                        bool(document.conflicts()),
                    )
                except (OverflowError, ValueError) as exc:
                    refused.append(Rejection(document.id, f"unusable value: {exc}"))
                    continue
                projections.setdefault(document.collection, []).append(projection)
            seq += 1
            heads = document.heads
            exact = device is not None and pushed_heads.get(document.id) == heads
            doc_rows.append(
                {
                    "id": document.id,
                    "clinic_id": self._clinic.id,
                    "collection": document.collection,
                    "heads": b"".join(heads),
                    "data": data,
                    "seq": seq,
                    "updated_at": now,
                    "updated_by": self._writer,
                    "origin_device": device if exact else None,
                    "patient_id": patient_id,
                }
            )
            if patient_id is not None:
                self.patients[document.id] = patient_id
        self._pending.clear()
        if not doc_rows:
            return refused
        self._session.execute(
            update(Clinic).where(Clinic.id == self._clinic.id).values(feed_seq=seq)
        )
        self._clinic.feed_seq = seq
        insert_many(self._session, Document, doc_rows, upsert_where="clinic_id")
        for collection, rows in projections.items():
            insert_many(self._session, PROJECTIONS[collection], rows, upsert_where="clinic_id")
        # A new id may have been written meanwhile by another clinic's push (the
        # upserts never move a row between clinics): refuse it here too.
        new_ids = [row["id"] for row in doc_rows if row["id"] not in self._existing]
        for start in range(0, len(new_ids), _LOOKUP_CHUNK):
            chunk = new_ids[start : start + _LOOKUP_CHUNK]
            taken = self._session.scalars(
                select(Document.id).where(
                    Document.id.in_(chunk), Document.clinic_id != self._clinic.id
                )
            )
            refused += [
                Rejection(doc_id, "the id belongs to a record outside this device's clinic")
                for doc_id in taken
            ]
        return refused


def upserted_record(
    *,
    session: Session,
    schema: type[Record],
    record_id: str,
    clinic_id: str,
    values: dict[str, Any],
    now: datetime,
    author: str,
    stamped: bool = False,
) -> RecordDocument | None:
    """A server-owned record brought up to `values` as a new change of the stored
    document (devices merge it; a fresh document under the same id they could not),
    or created; None when the stored one already says `values`, so its history grows
    with real changes only. `stamped` records also get ``generated_at = now``, which
    is written with a change but never makes one."""
    stamp = {"generated_at": now.isoformat()} if stamped else {}
    stored = session.scalar(select(Document.data).where(Document.id == record_id))
    if stored is None:
        return RecordDocument.create(
            schema,
            {**values, **stamp},
            device_id=author,
            clinic_id=clinic_id,
            record_id=record_id,
            now=now,
        )
    document = RecordDocument.load(bytes(stored), device_id=author)
    current = document.read().model_dump(mode="json")
    candidate = schema.validate_values({**current, **values}).model_dump(mode="json")
    if all(candidate[name] == current[name] for name in values):
        return None
    document.update({**values, **stamp}, device_id=author, now=now)
    return document
