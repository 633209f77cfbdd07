"""The sync algorithm: a replica and the replica it syncs with, over any `SyncTransport`.

`sync_replica` pushes, then pulls:

1. Push: every document whose heads differ from what the other side was last known to
   hold travels whole (one `crdt` wire message per batch). The answer says which it
   accepted, already had, or refused; the other side is then recorded as holding
   exactly the heads of the bytes sent (a refused document is not sent again until it
   changes: the same bytes would be refused again). A batch cut off in flight is sent
   again next time: merges are idempotent. The next batch is read (one query) and
   encoded while the other side works on this one.
2. Pull: the other side's change feed from the saved cursor, page by page. Each page's
   documents, the new cursor and the other side's heads are stored in one
   transaction, so a cut between pages resumes at the next page and nothing is
   applied twice. The next page is fetched while one is merged. A feed behind the
   cursor (a server restored from a backup) makes the replica forget what it thought
   the other side held and pull from the start.
3. The device's audit chain follows the documents (`push_audit`): the events the
   server has not acknowledged, append-only; the signed checkpoint it answers with is
   checked and kept. A refused chain is reported (`SyncResult.audit_error`) and loses
   nothing: the events stay, and go again next time.
4. Blobs that records reference travel after the records: uploads resume from the
   other side's offset, downloads are verified against their SHA-256.

No network code here: the transport moves the bytes.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from crdt import (
    COLLECTIONS,
    DEFAULT_MAX_MESSAGE_SIZE,
    Entry,
    EntryKind,
    RecordDocument,
    Rejection,
    SyncMessage,
    SyncProtocolError,
    SyncReport,
    apply_documents,
    decode_message,
    encode_message,
)
from edge_sdk._audit_push import push_audit
from edge_sdk._blob_transfer import fetch_blob, send_blob
from edge_sdk._errors import (
    AuditPushError,
    BlobError,
    BlobMissingError,
    CursorAheadError,
    PushTooLargeError,
    SyncError,
    translated_errors,
)
from edge_sdk._replica import Replica
from edge_sdk._store import Store, UnverifiedDocument
from edge_sdk._sync_types import ProgressCallback, SyncProgress, SyncResult
from edge_sdk._transport import PushAnswer, ReportsMissingBlobs, SyncTransport
from edge_sdk._verification import split_claims

__all__ = [
    "FIRST_PULL_PAGE_DOCUMENTS",
    "PULL_PAGE_DOCUMENTS",
    "PUSH_BATCH_DOCUMENTS",
    "blob_peer",
    "sync_replica",
    "unsent_blobs",
    "unsent_records",
]

log = logging.getLogger("edge_sdk.sync")

_Outgoing = tuple[str, bytes, list[bytes]]
"""A document going out in a push: its id, saved bytes and the heads of those bytes."""

PUSH_BATCH_DOCUMENTS = 1000
"""Documents per push message (fewer when the size cap is reached first)."""
PULL_PAGE_DOCUMENTS = 5000
"""Documents asked for per pull page (the other side may send fewer)."""
FIRST_PULL_PAGE_DOCUMENTS = 500
"""Documents asked for in a sync's first pull page: nothing overlaps its fetch, so a
small one lets the merge start early. Each page after it is fetched while the one
before merges, and asks for up to twice as many documents (at most
`PULL_PAGE_DOCUMENTS`): a jump from the first page straight to the largest left the
merge waiting on the other side for most of that page's fetch."""
_PAGE_GROWTH = 2


@translated_errors()
def sync_replica(
    replica: Replica,
    transport: SyncTransport,
    *,
    progress: ProgressCallback | None = None,
    wait: float = 0.0,
    blobs: bool = True,
) -> SyncResult:
    """Push the replica's changes through `transport`, then pull the other side's.

    Safe to cut at any point and run again: nothing is lost or applied twice. `wait` >
    0 makes the pull a long poll: it returns as soon as the other side has something
    new, or after `wait` seconds. With `blobs`, scan blobs the records reference are
    uploaded and fetched too.

    Raises:
        DeviceRevokedError: The other side revoked this device.
        ServerUnreachableError: The other side did not answer within the retry budget.
        SyncError: The other side refused a push or a pull, or sent an unusable answer.
    """
    result = SyncResult()
    requests, retries = transport.requests, transport.retries
    try:
        run = _Run(replica, transport, result, progress or _ignore)
        run.push()
        run.push_audit()
        if blobs:
            run.upload_blobs()
        # Who may author the clinic's records, as the other side knows it now: every
        # change pulled next is checked against it (a revoked device drops out).
        replica.set_directory(transport.directory())
        replica.verification.retry_quarantined()
        run.pull(wait=wait)
        replica.verification.start()
        if blobs:
            run.download_blobs()
    finally:
        result.requests = transport.requests - requests
        result.retries = transport.retries - retries
    return result


def _ignore(_progress: SyncProgress) -> None:
    pass


def blob_peer(peer_id: str) -> str:
    """The name under which the blobs a peer holds are tracked."""
    return peer_id + ":blobs"


def unsent_records(store: Store, peer_id: str) -> list[tuple[str, str]]:
    """(id, collection) of the documents a push to `peer_id` would send: those this
    device may write whose heads differ from what the peer was last known to hold."""
    return [
        (doc_id, collection)
        for doc_id, collection in store.unsent_to(peer_id)
        if collection in COLLECTIONS and COLLECTIONS[collection].device_writable
    ]


def _referenced_blobs(store: Store) -> dict[str, int]:
    """SHA-256 and size of every blob the store's records reference."""
    found: dict[str, int] = {}
    # Records awaiting verification count as claimed: a blob is checked against its
    # SHA-256 whoever names it, and one of a record quarantined later is inert.
    for record in store.query_records("assessments", settle=False):
        for ref in record.get("blobs") or ():
            found[str(ref["sha256"])] = int(ref["size"])
    return found


def unsent_blobs(
    replica: Replica, peer_id: str, referenced: Mapping[str, int] | None = None
) -> list[str]:
    """SHA-256 of the blobs held here, referenced by records, that `peer_id` was not
    yet known to hold (what an upload to it would send), sorted.

    `referenced`: the store's referenced blobs, when the caller has just read them."""
    files = replica.blob_files
    sent = replica.store.peer_heads(blob_peer(peer_id))
    if referenced is None:
        referenced = _referenced_blobs(replica.store)
    return [sha for sha in sorted(referenced) if sha not in sent and files.exists(sha)]


class _Run:
    """One sync: its bookkeeping and its steps."""

    def __init__(
        self,
        replica: Replica,
        transport: SyncTransport,
        result: SyncResult,
        progress: ProgressCallback,
    ) -> None:
        self.replica = replica
        self.store = replica.store
        self.transport = transport
        self.result = result
        self.progress = progress
        # What the other side holds is tracked like any peer's, under its name.
        self.peer = transport.peer_id
        self.blob_peer = blob_peer(self.peer)
        self.hinted = False  # this pull asks for record hints
        self.lost: set[str] = set()  # blobs the other side's storage lost
        self.asked_lost = False  # whether `lost` was asked for in this sync

    # ------------------------------------------------------------ push
    def push(self) -> None:
        unsent = unsent_records(self.store, self.peer)
        # Intents last: the server decides an intent in the push that delivers it, so
        # the records it names (its patient) must be there by then, whatever batches
        # the push is split into.
        unsent.sort(key=lambda item: item[1] == "intents")
        todo = [doc_id for doc_id, _ in unsent]
        done = 0
        self.progress(SyncProgress("push", 0, len(todo)))
        # The next batch is read and encoded, and the answer to the last one recorded,
        # while the other side works on a batch; one push is in flight at a time, so
        # batches arrive in order.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-push") as sender:
            in_flight: tuple[list[_Outgoing], Future[PushAnswer]] | None = None
            for batch in self._batches(todo):
                message = self._encode(batch)
                answered = None if in_flight is None else self._answer(*in_flight)
                in_flight = (batch, sender.submit(self.transport.push, message))
                if answered is not None:
                    done += self._record(*answered)
                    self.progress(SyncProgress("push", done, len(todo)))
            if in_flight is not None:
                answered = self._answer(*in_flight)
                done += self._record(*answered)
                self.progress(SyncProgress("push", done, len(todo)))

    def _batches(self, ids: Sequence[str]) -> Iterator[list[_Outgoing]]:
        batch: list[_Outgoing] = []
        size = 0
        room = DEFAULT_MAX_MESSAGE_SIZE - 4096
        for start in range(0, len(ids), PUSH_BATCH_DOCUMENTS):
            chunk = ids[start : start + PUSH_BATCH_DOCUMENTS]
            found = self.store.saved_with_heads_of(chunk)  # one query, not one per document
            for doc_id in chunk:
                if doc_id not in found:
                    continue
                data, heads = found[doc_id]
                entry_bytes = len(data) + len(doc_id) + 16
                if batch and (size + entry_bytes > room or len(batch) >= PUSH_BATCH_DOCUMENTS):
                    yield batch
                    batch, size = [], 0
                batch.append((doc_id, data, heads))
                size += entry_bytes
        if batch:
            yield batch

    def _encode(self, batch: list[_Outgoing]) -> bytes:
        with self.replica.access("sync-read", "*") as access:
            access.record_ids.extend(doc_id for doc_id, _, _ in batch)
            return encode_message(
                SyncMessage({}, tuple(Entry(EntryKind.DOC, d, data) for d, data, _ in batch))
            )

    def _answer(
        self, batch: list[_Outgoing], sent: Future[PushAnswer]
    ) -> tuple[list[_Outgoing], PushAnswer | None]:
        """Wait for the answer to a batch in flight. A batch too costly for the other
        side goes again in halves, before any later batch (None: done so)."""
        try:
            return batch, sent.result()
        except PushTooLargeError as exc:
            self._split(batch, exc)
            return batch, None

    def _push_batch(self, batch: list[_Outgoing]) -> None:
        try:
            answer = self.transport.push(self._encode(batch))
        except PushTooLargeError as exc:
            self._split(batch, exc)
        else:
            self._record(batch, answer)

    def _split(self, batch: list[_Outgoing], refusal: PushTooLargeError) -> None:
        if len(batch) > 1:  # too costly at once: the halves may pass
            half = len(batch) // 2
            self._push_batch(batch[:half])
            self._push_batch(batch[half:])
            return
        self._record(
            batch,
            PushAnswer(accepted=[], unchanged=[], rejected=[Rejection(batch[0][0], str(refusal))]),
        )

    def _record(self, batch: list[_Outgoing], answer: PushAnswer | None) -> int:
        """Record what the other side answered to a batch (None: recorded already, in
        halves); returns how many documents the batch held."""
        if answer is None:
            return len(batch)
        self.result.pushed += answer.accepted
        self.result.unchanged += len(answer.unchanged)
        self.result.refused_by_server += answer.rejected
        for rejection in answer.rejected:
            log.warning("server refused document %s: %s", rejection.doc_id, rejection.reason)
        # The other side now holds at least these heads (a refused document is not
        # sent again until it changes: sending the same bytes would be refused again).
        self.store.set_peer_heads(self.peer, {doc_id: heads for doc_id, _, heads in batch})
        return len(batch)

    def push_audit(self) -> None:
        if not hasattr(self.transport, "push_audit"):
            # A transport written before device audit logs: the chain waits here.
            log.debug("transport %s cannot take the audit chain", type(self.transport))
            return
        try:
            receipt = push_audit(self.replica, self.transport)
        except AuditPushError as exc:
            # The documents went; the chain stays here, whole, for the next sync.
            log.warning("the server refused the audit chain: %s", exc)
            self.result.audit_error = str(exc)
            return
        if receipt is not None:
            self.result.audit_acknowledged = receipt.head_seq

    # ------------------------------------------------------------ pull
    def pull(self, *, wait: float) -> None:
        cursor = self.replica.cursor(self.peer)
        # A pull from the start (a new or restored device) asks for record hints, and
        # stores documents new here from them, verified in the background after.
        self.hinted = cursor == 0 and bool(getattr(self.transport, "record_hints", False))
        done = 0
        # The next page is fetched while this one is applied (the cursor of the next
        # request is known as soon as a page arrives): the network hides behind the
        # merge. Only the first request long-polls.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-pull") as fetcher:
            limit = FIRST_PULL_PAGE_DOCUMENTS
            pending: Future[SyncMessage] = fetcher.submit(self._fetch_page, cursor, wait, limit)
            while True:
                message = pending.result()
                cursor = int(message.control.get("cursor", cursor))
                feed = int(message.control.get("feed", cursor))
                more = bool(message.control.get("more"))
                if more:
                    limit = min(PULL_PAGE_DOCUMENTS, _PAGE_GROWTH * limit)
                    pending = fetcher.submit(self._fetch_page, cursor, 0.0, limit)
                self._apply_page(message.entries, cursor)
                done += sum(1 for e in message.entries if e.kind is EntryKind.DOC)
                self.progress(SyncProgress("pull", done, done + max(0, feed - cursor)))
                self.result.cursor = cursor
                if not more:
                    return

    def _fetch_page(self, cursor: int, wait: float, limit: int) -> SyncMessage:
        try:
            if self.hinted:
                hinting: Any = self.transport  # its `record_hints` says it takes `records`
                data = hinting.pull(cursor=cursor, limit=limit, wait=wait, records=True)
            else:
                data = self.transport.pull(cursor=cursor, limit=limit, wait=wait)
        except CursorAheadError:
            if cursor == 0:
                raise
            # A server restored from a backup: what we knew it held may be gone. Forget
            # it (the next push sends everything again) and pull from the start; merges
            # are idempotent, so nothing is applied twice.
            log.warning("the server's feed is behind our cursor %d; resyncing from 0", cursor)
            with self.store.transaction():
                self.store.forget_peers(self.peer, self.blob_peer)
                self.replica.set_cursor(self.peer, 0)
            return self._fetch_page(0, wait, limit)
        try:
            return decode_message(data)
        except SyncProtocolError as exc:
            raise SyncError(f"the server sent an unusable pull answer: {exc}") from None

    def _apply_page(self, entries: Sequence[Entry], cursor: int) -> None:
        docs = [(e.doc_id, e.payload) for e in entries if e.kind is EntryKind.DOC]
        server_heads: dict[str, list[bytes]] = {}
        claimed: list[UnverifiedDocument] = []
        if self.hinted:
            hints = {e.doc_id: e.payload for e in entries if e.kind is EntryKind.RECORD}
            docs, claimed = split_claims(self.store, self.replica.clinic_id, docs, hints)
            for document in claimed:
                server_heads[document.doc_id] = sorted(document.heads)

        def policy(document: RecordDocument) -> str | None:
            reason = self.replica.policy(document)
            if reason is None:
                server_heads[document.id] = document.heads
            return reason

        report = SyncReport()
        store = _PrefetchedStore(self.store, self.replica.device_id, [d for d, _ in docs])
        # A page makes many short-lived objects and no garbage cycles worth collecting
        # mid-page; pausing the cyclic collector makes a large pull ~10% faster.
        collecting = gc.isenabled()
        gc.disable()
        try:
            try:
                self._merge_page(store, docs, policy, report, cursor, server_heads, claimed)
            except _DirectoryBehind:
                # A device enrolled after the directory was fetched wrote some of these
                # changes: fetch it again and apply the page once more (nothing of the
                # first attempt was kept), so the cursor never moves past them.
                self.replica.set_directory(self.transport.directory())
                report = SyncReport()
                server_heads = {d.doc_id: sorted(d.heads) for d in claimed}
                store = _PrefetchedStore(self.store, self.replica.device_id, [d for d, _ in docs])
                self._merge_page(
                    store, docs, policy, report, cursor, server_heads, claimed, retry=False
                )
        finally:
            if collecting:
                gc.enable()
        self.result.pulled += sorted(report.received)
        self.result.rejected += report.rejected
        self.result.unverified += len(claimed)

    def _merge_page(
        self,
        store: _PrefetchedStore,
        docs: list[tuple[str, bytes]],
        policy: Callable[[RecordDocument], str | None],
        report: SyncReport,
        cursor: int,
        server_heads: dict[str, list[bytes]],
        claimed: Sequence[UnverifiedDocument] = (),
        *,
        retry: bool = True,
    ) -> None:
        directory = self.replica.directory
        with self.store.transaction():
            with self.replica.access("sync-write", "*") as access:
                if claimed:
                    self.store.put_unverified(claimed)
                    report.received.update(d.doc_id for d in claimed)
                directory.missing.clear()
                apply_documents(
                    store,
                    docs,
                    device_id=self.replica.device_id,
                    policy=policy,
                    report=report,
                    authorship=directory,
                )
                if retry and directory.missing and report.rejected:
                    raise _DirectoryBehind  # rolls the page back
                access.record_ids.extend(sorted(report.received))
            self.store.set_peer_heads(self.peer, server_heads)
            self.replica.set_cursor(self.peer, cursor)

    # ------------------------------------------------------------ blobs
    def learn_missing_blobs(self, referenced: Mapping[str, int]) -> None:
        """Ask which of the clinic's blobs the other side lost (once per sync, and only
        when the store names any blob), and forget that it held them: the ones held
        here are uploaded again next, the others are not asked for."""
        if self.asked_lost or not isinstance(self.transport, ReportsMissingBlobs):
            return
        if not referenced:
            return  # names no blob: nothing to upload or fetch, so no request
        self.asked_lost = True
        try:
            self.lost = set(self.transport.missing_blobs())
        except BlobError as exc:
            self.result.blob_errors.append(f"missing blobs: {exc}")
            return
        if self.lost:
            self.store.forget_peer_documents(self.blob_peer, sorted(self.lost))

    def upload_blobs(self) -> None:
        files = self.replica.blob_files
        referenced = _referenced_blobs(self.store)
        self.learn_missing_blobs(referenced)
        todo = unsent_blobs(self.replica, self.peer, referenced)
        for index, sha in enumerate(todo):
            self.progress(SyncProgress("upload", index, len(todo)))
            try:
                with self.replica.access("blob-read", "blobs") as access:
                    access.record_ids.append(sha)
                    send_blob(self.transport, files, sha)
            except BlobError as exc:
                self.result.blob_errors.append(f"upload {sha}: {exc}")
                continue
            self.store.set_peer_heads(self.blob_peer, {sha: []})
            self.result.blobs_uploaded.append(sha)
            self.lost.discard(sha)
        self.progress(SyncProgress("upload", len(todo), len(todo)))

    def download_blobs(self) -> None:
        files = self.replica.blob_files
        referenced = _referenced_blobs(self.store)
        wanted = [sha for sha in sorted(referenced) if not files.exists(sha)]
        if wanted:
            self.learn_missing_blobs(referenced)  # the pull may have brought the first
        # Lost by the other side: not asked for until a device uploads it again.
        self.result.blobs_missing += [sha for sha in wanted if sha in self.lost]
        todo = [sha for sha in wanted if sha not in self.lost]
        for index, sha in enumerate(todo):
            self.progress(SyncProgress("download", index, len(todo)))
            try:
                with self.replica.access("blob-write", "blobs") as access:
                    access.record_ids.append(sha)
                    fetch_blob(self.transport, files, sha, referenced[sha])
            except BlobMissingError:  # lost by the other side since we asked
                self.result.blobs_missing.append(sha)
                continue
            except BlobError as exc:  # e.g. not uploaded yet by the device that scanned it
                self.result.blob_errors.append(f"download {sha}: {exc}")
                continue
            self.store.set_peer_heads(self.blob_peer, {sha: []})
            self.result.blobs_downloaded.append(sha)
        self.progress(SyncProgress("download", len(todo), len(todo)))


class _DirectoryBehind(Exception):
    """A pulled change names a device the replica's directory does not list yet."""


class _PrefetchedStore:
    """The device store as `apply_documents` sees it during a pull page.

    Which incoming ids are already stored is read in one query, so a fresh replica
    does not look each new document up; access is audited once per page by the caller.
    """

    def __init__(self, store: Store, device_id: str, ids: Sequence[str]) -> None:
        self._store = store
        self._device_id = device_id
        self._held = store.held(ids)

    def document_heads(self) -> dict[str, list[bytes]]:
        return self._store.document_heads()

    def get_document(self, doc_id: str) -> RecordDocument | None:
        if doc_id not in self._held:
            return None
        return self._store.get_document(doc_id, device_id=self._device_id)

    def saved_document(self, doc_id: str) -> bytes | None:
        return self._store.saved_document(doc_id)

    def put_documents(self, documents: Sequence[RecordDocument]) -> None:
        self._store.put_documents(documents)
        self._held.update(d.id for d in documents)
