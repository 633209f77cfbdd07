"""A multi-document sync session between two replicas, independent of transport.

Each side makes a `SyncSession` over its own `DocumentStore` and the two exchange the
bytes that `poll` returns and `receive` takes, in any transport, until neither has
anything left to send. The exchange:

1. Each side offers the heads of every document it holds (OFFER entries).
2. When a side has the peer's whole offer, it sends documents the peer lacks as saved
   bytes (DOC: one round trip) and starts Automerge's sync protocol (SYNC) for
   documents both hold with different heads.
3. Every received document is validated before it is stored: it must parse, belong
   to the id it travels under, pass the session's policy, satisfy its schema after the
   merge, and keep its immutable fields. A refused document is stored not at all, is
   reported in `SyncReport.rejected`, and is sent back to the peer as REJECT.

The session does no I/O of its own: the store does, in one `put_documents` call per
received message so that a message's merges land in one transaction.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from automerge import core as am

from crdt._authorship import KeyDirectory
from crdt._document import RecordDocument
from crdt._errors import (
    CrdtError,
    DocumentError,
    DocumentTooCostlyError,
    MalformedMessageError,
    MergeRejectedError,
    MessageTooLargeError,
)
from crdt._ids import actor_for_device
from crdt._limits import DEFAULT_LIMITS, DocumentLimits
from crdt._schemas import schema_versions
from crdt._wire import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Entry,
    EntryKind,
    RecordHint,
    SyncMessage,
    decode_message,
    encode_message,
    entry_size,
)

__all__ = [
    "DocumentStore",
    "MemoryDocumentStore",
    "Policy",
    "Rejection",
    "SyncReport",
    "SyncSession",
    "apply_documents",
    "check_new_document",
    "refusal_reason",
    "run_in_memory",
]

Policy = Callable[[RecordDocument], "str | None"]
"""Returns why a received document may not be stored here, or None to accept it."""

_HEAD_SIZE = 32
_MESSAGE_OVERHEAD = 512  # header, control JSON and count: generous, checked on encode


class DocumentStore(Protocol):
    """What a sync session needs from a replica's storage.

    A store may also offer two batch reads, which sessions and `apply_documents` use
    when present (one query for many documents instead of one each):
    ``saved_documents(ids) -> dict[str, bytes]`` (the saved bytes of those held) and
    ``held(ids) -> set[str]`` (which of `ids` it holds).

    And a pair for documents new to the receiver, which sessions use when both sides
    have their half and read records alike (the same `schema_versions`): a sender's
    ``hinted_documents(ids) -> dict[str, tuple[bytes, RecordHint | None]]`` (the saved
    bytes of those held, each with a hint of exactly those bytes where it can give
    one), and a receiver's ``put_claimed(docs, hints) -> set[str]``, which may store
    documents it does not hold from their hints (RECORD payloads by id) and verify them
    later, returning the ids it so stored (the session merges the others with every
    check). A receiver that offers it verifies what it stored this way before any read
    shows it, and quarantines what fails.
    """

    def document_heads(self) -> Mapping[str, Sequence[bytes]]:
        """Every document this replica shares with the peer, with its sorted heads."""
        ...

    def get_document(self, doc_id: str) -> RecordDocument | None:
        """The stored document, or None."""
        ...

    def saved_document(self, doc_id: str) -> bytes | None:
        """The stored document's saved bytes, or None (sent as is to a peer lacking it)."""
        ...

    def put_documents(self, documents: Sequence[RecordDocument]) -> None:
        """Store new or merged documents, all in one transaction."""
        ...


@dataclass(frozen=True, slots=True)
class Rejection:
    """A document one side refused, and why."""

    doc_id: str
    reason: str


@dataclass(slots=True)
class SyncReport:
    """What a session (or a bundle import) did."""

    received: set[str] = field(default_factory=set)  # ids stored new or changed here
    sent: set[str] = field(default_factory=set)  # ids sent to the peer
    rejected: list[Rejection] = field(default_factory=list)  # refused here
    refused_by_peer: list[Rejection] = field(default_factory=list)
    messages_sent: int = 0
    messages_received: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0


def apply_documents(
    store: DocumentStore,
    incoming: Iterable[tuple[str, bytes]],
    *,
    device_id: str,
    policy: Policy | None = None,
    report: SyncReport | None = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
    authorship: KeyDirectory | None = None,
) -> SyncReport:
    """Validate and merge whole saved documents into `store`, in one `put_documents`.

    Used for DOC entries and for sync bundles. Merging a document already held is
    harmless: equal heads change nothing. A document over `limits` is refused alone,
    measured before it is loaded; with `authorship`, so is one whose new changes are
    not signed by enrolled devices of its clinic.
    """
    report = report if report is not None else SyncReport()
    accepted: dict[str, RecordDocument] = {}
    incoming = list(incoming)
    batch_held: Callable[[Sequence[str]], set[str]] | None = getattr(store, "held", None)
    held = batch_held([doc_id for doc_id, _ in incoming]) if batch_held is not None else None
    for doc_id, data in incoming:
        try:
            doc = _checked_load(doc_id, data, device_id=device_id, policy=policy, limits=limits)
            current = accepted.get(doc_id)
            if current is None and (held is None or doc_id in held):
                current = store.get_document(doc_id)
            if current is None:
                _check_authorship(doc, authorship)
                accepted[doc_id] = doc
            elif current.merge(doc, limits=limits, authorship=authorship):
                accepted[doc_id] = current
        except CrdtError as exc:
            report.rejected.append(Rejection(doc_id, _reason(exc)))
    if accepted:
        store.put_documents(list(accepted.values()))
        report.received.update(accepted)
    return report


def check_new_document(
    doc_id: str,
    data: bytes,
    *,
    device_id: str,
    policy: Policy | None = None,
    limits: DocumentLimits = DEFAULT_LIMITS,
    authorship: KeyDirectory | None = None,
) -> RecordDocument:
    """Every check `apply_documents` makes of a document new to a replica, alone: it
    parses within `limits`, is the record `doc_id`, satisfies its schema and its frozen
    fields, passes `policy`, and (with `authorship`) every change is signed by an
    enrolled device of its clinic. Returns the loaded document.

    Raises:
        CrdtError: A check failed (`MergeRejectedError` carries the reason).
    """
    doc = _checked_load(doc_id, data, device_id=device_id, policy=policy, limits=limits)
    _check_authorship(doc, authorship)
    return doc


def refusal_reason(exc: CrdtError) -> str:
    """The reason a check refused a document, as a sync report states it."""
    return _reason(exc)


class SyncSession:
    """One side of a sync exchange. Feed it the peer's bytes; send what it polls."""

    def __init__(
        self,
        store: DocumentStore,
        *,
        device_id: str,
        policy: Policy | None = None,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        limits: DocumentLimits = DEFAULT_LIMITS,
        authorship: KeyDirectory | None = None,
    ) -> None:
        self._store = store
        self._limits = limits
        self._authorship = authorship
        self._device_id = device_id
        self._actor = actor_for_device(device_id)
        self._policy = policy
        self._max = max_message_size
        self._outbox: deque[Entry] = deque()
        self._offers_left = 0
        self._offer_started = False
        self._offer_done_sent = False
        self._peer_heads: dict[str, list[bytes]] = {}
        self._peer_offer_done = False
        self._states: dict[str, am.SyncState] = {}
        self._working: dict[str, am.Document] = {}
        self._refused: set[str] = set()
        self._takes_hints = callable(getattr(store, "put_claimed", None))
        self._peer_takes_hints = False
        self.report = SyncReport()

    @property
    def done(self) -> bool:
        """True once both offers are complete and nothing is left to send."""
        return self._offer_done_sent and self._peer_offer_done and not self._outbox

    def poll(self) -> bytes | None:
        """The next message to send to the peer, or None if there is nothing to send."""
        if not self._offer_started:
            self._offer_started = True
            for doc_id, heads in sorted(self._store.document_heads().items()):
                self._outbox.append(Entry(EntryKind.OFFER, doc_id, b"".join(sorted(heads))))
            # Not len(outbox): a side that received the peer's offer before its first
            # poll has already queued DOC/SYNC answers there.
            self._offers_left = sum(1 for e in self._outbox if e.kind is EntryKind.OFFER)
        if not self._outbox and self._offer_done_sent:
            return None
        batch: list[Entry] = []
        room = self._max - _MESSAGE_OVERHEAD
        while self._outbox and (not batch or self._next_size() <= room):
            entry = self._outbox[0]
            if entry_size(entry) > room:
                raise MessageTooLargeError(
                    f"document {entry.doc_id} ({len(entry.payload)} bytes) exceeds the "
                    f"{self._max}-byte message cap"
                )
            batch.append(self._outbox.popleft())
            room -= entry_size(entry)
            # A document's hint travels in its message (a receiver uses hints of the
            # message they came in); one that does not fit there is dropped.
            hint = self._outbox[0] if self._outbox else None
            if hint is not None and hint.kind is EntryKind.RECORD:
                self._outbox.popleft()
                if entry_size(hint) <= room:
                    batch.append(hint)
                    room -= entry_size(hint)
        offers = sum(1 for e in batch if e.kind is EntryKind.OFFER)
        self._offers_left -= offers
        control: dict[str, object] = {}
        if self.report.messages_sent == 0 and self._takes_hints:
            control["hints"] = schema_versions()  # a sender reading records alike hints
        if self._offers_left == 0 and not self._offer_done_sent:
            control["offer_done"] = True
            self._offer_done_sent = True
        for entry in batch:
            if entry.kind in (EntryKind.DOC, EntryKind.SYNC):
                self.report.sent.add(entry.doc_id)
        data = encode_message(SyncMessage(control, tuple(batch)), max_size=self._max)
        self.report.messages_sent += 1
        self.report.bytes_sent += len(data)
        return data

    def receive(self, data: bytes) -> None:
        """Apply one message from the peer.

        Raises:
            SyncProtocolError: The message is malformed; nothing of it was applied.
        """
        message = decode_message(data, max_size=self._max)
        self.report.messages_received += 1
        self.report.bytes_received += len(data)
        offers = {
            e.doc_id: _split_heads(e.payload) for e in message.entries if e.kind is EntryKind.OFFER
        }
        self._peer_heads.update(offers)
        if message.control.get("hints") == schema_versions():
            self._peer_takes_hints = True
        docs: list[tuple[str, bytes]] = []
        hints: dict[str, bytes] = {}
        synced: dict[str, RecordDocument] = {}
        for entry in message.entries:
            if entry.kind is EntryKind.OFFER:
                continue
            if entry.kind is EntryKind.RECORD:
                hints[entry.doc_id] = entry.payload
            elif entry.kind is EntryKind.DOC:
                docs.append((entry.doc_id, entry.payload))
            elif entry.kind is EntryKind.SYNC:
                accepted = self._receive_sync(entry)
                if accepted is not None:
                    synced[accepted.id] = accepted
            else:
                reason = entry.payload.decode("utf-8", errors="replace")
                self.report.refused_by_peer.append(Rejection(entry.doc_id, reason))
        rejected_before = len(self.report.rejected)
        if docs and hints and self._takes_hints:
            wanted = {doc_id for doc_id, _ in docs} - self._refused
            claimed = self._store.put_claimed(  # type: ignore[attr-defined]
                [(doc_id, data) for doc_id, data in docs if doc_id in wanted],
                {doc_id: hint for doc_id, hint in hints.items() if doc_id in wanted},
            )
            self.report.received.update(claimed)
            docs = [(doc_id, data) for doc_id, data in docs if doc_id not in claimed]
        if docs or synced:
            if synced:
                self._store.put_documents(list(synced.values()))
                self.report.received.update(synced)
            apply_documents(
                self._store,
                docs,
                device_id=self._device_id,
                policy=self._policy,
                report=self.report,
                limits=self._limits,
                authorship=self._authorship,
            )
        for rejection in self.report.rejected[rejected_before:]:
            self._refuse(rejection.doc_id, rejection.reason, already_reported=True)
        if message.control.get("offer_done") and not self._peer_offer_done:
            self._peer_offer_done = True
            self._answer_offer()

    # ---------------------------------------------------------------- internals
    def _answer_offer(self) -> None:
        lacking: list[str] = []
        for doc_id, heads in sorted(self._store.document_heads().items()):
            peer = self._peer_heads.get(doc_id)
            if peer is None:
                lacking.append(doc_id)
            elif sorted(heads) != peer:
                self._start_sync(doc_id)
        hinted = getattr(self._store, "hinted_documents", None)
        if self._peer_takes_hints and hinted is not None:
            found: dict[str, tuple[bytes, RecordHint | None]] = hinted(lacking)
            for doc_id in lacking:
                data, hint = found.get(doc_id, (None, None))
                if data is not None:
                    self._outbox.append(Entry(EntryKind.DOC, doc_id, data))
                    if hint is not None:
                        self._outbox.append(Entry(EntryKind.RECORD, doc_id, hint.encode()))
            return
        saved = _saved_documents(self._store, lacking)
        for doc_id in lacking:
            data = saved.get(doc_id)
            if data is not None:
                self._outbox.append(Entry(EntryKind.DOC, doc_id, data))

    def _next_size(self) -> int:
        """The size of the next entry, with the hint that must travel with it."""
        entry = self._outbox[0]
        size = entry_size(entry)
        if entry.kind is EntryKind.DOC and len(self._outbox) > 1:
            hint = self._outbox[1]
            if hint.kind is EntryKind.RECORD:
                size += entry_size(hint)
        return size

    def _start_sync(self, doc_id: str) -> None:
        work = self._working_doc(doc_id)
        state = self._states.setdefault(doc_id, am.SyncState())
        message = work.generate_sync_message(state)
        if message is not None:
            self._outbox.append(Entry(EntryKind.SYNC, doc_id, message.encode()))

    def _working_doc(self, doc_id: str) -> am.Document:
        work = self._working.get(doc_id)
        if work is None:
            stored = self._store.get_document(doc_id)
            work = stored.automerge.fork() if stored is not None else am.Document()
            work.set_actor(self._actor)
            self._working[doc_id] = work
        return work

    def _receive_sync(self, entry: Entry) -> RecordDocument | None:
        doc_id = entry.doc_id
        if doc_id in self._refused:
            return None
        work = self._working_doc(doc_id)
        state = self._states.setdefault(doc_id, am.SyncState())
        before = sorted(work.get_heads())
        try:
            work.receive_sync_message(state, am.Message.decode(entry.payload))
        except Exception as exc:  # the binding raises bare Exception
            self._refuse(doc_id, f"unusable sync message: {exc}")
            return None
        accepted: RecordDocument | None = None
        if sorted(work.get_heads()) != before:
            try:
                accepted = self._accept_synced(doc_id, work)
            except CrdtError as exc:
                self._refuse(doc_id, _reason(exc))
                return None
        reply = work.generate_sync_message(state)
        if reply is not None:
            self._outbox.append(Entry(EntryKind.SYNC, doc_id, reply.encode()))
        return accepted

    def _accept_synced(self, doc_id: str, work: am.Document) -> RecordDocument:
        stored = self._store.get_document(doc_id)
        if stored is None:
            # The first changes may arrive over several messages; only a document with
            # a record in it can be judged (and stored).
            fresh = _checked_load(
                doc_id,
                work.save(),
                device_id=self._device_id,
                policy=self._policy,
                limits=self._limits,
            )
            _check_authorship(fresh, self._authorship)
            return fresh
        snapshot = work.fork()
        snapshot.set_actor(self._actor)
        if self._policy is not None:
            reason = self._policy(RecordDocument(snapshot, stored.schema))
            if reason is not None:
                raise MergeRejectedError(doc_id, reason)
        stored.adopt(snapshot, limits=self._limits, authorship=self._authorship)
        return stored

    def _refuse(self, doc_id: str, reason: str, *, already_reported: bool = False) -> None:
        if not already_reported:
            self.report.rejected.append(Rejection(doc_id, reason))
        self._refused.add(doc_id)
        self._states.pop(doc_id, None)
        self._working.pop(doc_id, None)
        self._outbox.append(Entry(EntryKind.REJECT, doc_id, reason.encode("utf-8")[:4096]))


def run_in_memory(
    a: SyncSession,
    b: SyncSession,
    *,
    max_rounds: int = 10_000,
    channel: Callable[[bytes], list[bytes]] | None = None,
) -> int:
    """Exchange messages between two sessions until neither has anything to send.

    `channel`, if given, maps each sent message to what is delivered (drop it: [],
    duplicate it: [m, m]), so tests can model a lossy link.

    Returns:
        The number of rounds.
    """
    deliver = channel or (lambda data: [data])
    for rounds in range(1, max_rounds + 1):
        out_a, out_b = a.poll(), b.poll()
        if out_a is None and out_b is None:
            return rounds
        for data in deliver(out_a) if out_a is not None else []:
            b.receive(data)
        for data in deliver(out_b) if out_b is not None else []:
            a.receive(data)
    raise CrdtError(f"sync did not finish in {max_rounds} rounds")


class MemoryDocumentStore:
    """A `DocumentStore` kept in a dict: a shipped test double, and a relay's cache."""

    def __init__(self) -> None:
        self.documents: dict[str, RecordDocument] = {}

    def document_heads(self) -> dict[str, list[bytes]]:
        """Every document with its heads."""
        return {doc_id: doc.heads for doc_id, doc in self.documents.items()}

    def get_document(self, doc_id: str) -> RecordDocument | None:
        """The stored document, or None."""
        return self.documents.get(doc_id)

    def saved_document(self, doc_id: str) -> bytes | None:
        """The stored document's bytes, or None."""
        document = self.documents.get(doc_id)
        return None if document is None else document.save()

    def put_documents(self, documents: Sequence[RecordDocument]) -> None:
        """Store the documents."""
        for document in documents:
            self.documents[document.id] = document


def _saved_documents(store: DocumentStore, ids: Sequence[str]) -> dict[str, bytes]:
    many = getattr(store, "saved_documents", None)
    if many is not None:
        found: dict[str, bytes] = many(ids)
        return found
    return {doc_id: data for doc_id in ids if (data := store.saved_document(doc_id)) is not None}


def _checked_load(
    doc_id: str,
    data: bytes,
    *,
    device_id: str,
    policy: Policy | None,
    limits: DocumentLimits,
) -> RecordDocument:
    doc = RecordDocument.load(data, device_id=device_id, limits=limits)
    reason = limits.check_document(doc.automerge)  # what the chunk headers did not say
    if reason is not None:
        raise DocumentTooCostlyError(reason)
    if doc.id != doc_id:
        raise DocumentError(f"document travels as {doc_id} but is record {doc.id}")
    if not doc.newer_than_schema:  # a newer version's record is kept, not judged
        kinds = doc.kind_problem()
        if kinds is not None:
            raise MergeRejectedError(doc_id, kinds)
        doc.read()  # raises RecordValidationError
    frozen = doc.frozen_problem()
    if frozen is not None:
        raise MergeRejectedError(doc_id, frozen)
    if policy is not None:
        reason = policy(doc)
        if reason is not None:
            raise MergeRejectedError(doc_id, reason)
    return doc


def _check_authorship(doc: RecordDocument, authorship: KeyDirectory | None) -> None:
    if authorship is not None:
        reason = doc.authorship(authorship)
        if reason is not None:
            raise MergeRejectedError(doc.id, reason)


def _split_heads(payload: bytes) -> list[bytes]:
    if len(payload) % _HEAD_SIZE:
        raise MalformedMessageError("offer heads are not a whole number of 32-byte hashes")
    return sorted(payload[i : i + _HEAD_SIZE] for i in range(0, len(payload), _HEAD_SIZE))


def _reason(exc: CrdtError) -> str:
    return exc.reason if isinstance(exc, MergeRejectedError) else str(exc)
