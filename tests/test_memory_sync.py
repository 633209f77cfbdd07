"""The sync algorithm over the in-memory transport: no server, the server's semantics.

Several replicas converge through a `MemoryHub`; pushes and pulls cut in flight lose
and duplicate nothing; pulls resume at their cursor; a hub restored from a backup is
resynced; blob uploads and downloads resume where they broke off.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest

from crdt import Decision, Entry, EntryKind, RecordDocument, SyncMessage, encode_message
from edge_sdk import (
    BlobDownload,
    EdgeClient,
    MemoryHub,
    MemoryTransport,
    PushAnswer,
    ServerUnreachableError,
    SyncTransport,
    UploadState,
    sync_replica,
    watch_sync,
)
from tests.conftest import add_patient, connect

MiB = 1024 * 1024
T = TypeVar("T")


class Faulty:
    """A transport that fails chosen calls, before or after the hub acts on them.

    `fail(method, call_number, phase)` decides; a failure is a `ServerUnreachableError`
    (what a transport raises once its retries are spent).
    """

    def __init__(self, inner: SyncTransport, fail: Callable[[str, int, str], bool]) -> None:
        self.inner = inner
        self.fail = fail
        self.calls: dict[str, int] = {}
        self.failures = 0

    @property
    def peer_id(self) -> str:
        return self.inner.peer_id

    @property
    def requests(self) -> int:
        return self.inner.requests

    @property
    def retries(self) -> int:
        return self.inner.retries

    def directory(self) -> dict[str, bytes]:
        return self._call("directory", self.inner.directory)

    def _call(self, method: str, run: Callable[[], T]) -> T:
        number = self.calls[method] = self.calls.get(method, 0) + 1
        if self.fail(method, number, "before"):
            self.failures += 1
            raise ServerUnreachableError(f"{method} #{number} cut before it was sent")
        answer = run()
        if self.fail(method, number, "after"):
            self.failures += 1
            raise ServerUnreachableError(f"{method} #{number}: the answer was lost")
        return answer

    def push(self, message: bytes) -> PushAnswer:
        return self._call("push", lambda: self.inner.push(message))

    def pull(self, *, cursor: int, limit: int, wait: float) -> bytes:
        return self._call("pull", lambda: self.inner.pull(cursor=cursor, limit=limit, wait=wait))

    def declare_upload(self, *, sha256: str, size: int) -> UploadState:
        return self._call(
            "declare_upload", lambda: self.inner.declare_upload(sha256=sha256, size=size)
        )

    def send_chunk(self, *, upload_id: str, offset: int, data: bytes) -> UploadState | None:
        return self._call(
            "send_chunk",
            lambda: self.inner.send_chunk(upload_id=upload_id, offset=offset, data=data),
        )

    def download(self, *, sha256: str, start: int) -> BlobDownload:
        return self._call("download", lambda: self.inner.download(sha256=sha256, start=start))


# ---------------------------------------------------------------- convergence


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_replicas_converge_through_a_hub_and_stay_in_their_clinic(
    tmp_store: Any, snapshot: Callable[[EdgeClient], Any], seed: int
) -> None:
    rng = random.Random(seed)
    hub = MemoryHub(page_size=4)  # several pages per pull
    a, b, c = tmp_store("a"), tmp_store("b"), tmp_store("c")
    other = tmp_store("other", clinic_id="clinic-elsewhere")
    shared = add_patient(a, "Shared")
    a.sync(transport=connect(hub, a))
    for client in (b, c):
        client.sync(transport=connect(hub, client))
    elsewhere = add_patient(other, "Elsewhere")
    for _ in range(4):
        for client in (a, b, c, other):  # offline edits on every device
            action = rng.choice(["add", "update", "note"])
            if action == "add":
                add_patient(client, f"P{rng.randrange(1000)}")
            elif action == "update" and client is not other:
                client.patients.update(shared, mrn=f"MRN-{rng.randrange(1000)}")
            else:
                target = elsewhere if client is other else shared
                client.notes.add(patient_id=target, author="Dr X", text=f"n{rng.random()}")
        order = [a, b, c, other]
        rng.shuffle(order)
        for client in order:
            client.sync(transport=connect(hub, client))
    for _ in range(2):  # let every device hear the last pushes
        for client in (a, b, c, other):
            client.sync(transport=connect(hub, client))
    assert snapshot(a) == snapshot(b) == snapshot(c)
    assert hub.document_heads(a.clinic_id) == a.replica.document_heads()
    assert not set(a.replica.document_heads()) & set(other.replica.document_heads())
    assert other.patients.get(elsewhere).family_name == "Elsewhere"


def test_a_second_sync_moves_nothing_and_a_device_is_not_sent_its_own_push(
    tmp_store: Any,
) -> None:
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    patient = add_patient(a, "Okafor")
    first = a.sync(transport=connect(hub, a))
    assert first.pushed == [patient] and first.pulled == []
    pulled = b.sync(transport=connect(hub, b))
    assert pulled.pulled == [patient]
    again = a.sync(transport=connect(hub, a))
    # One request for the clinic's device directory, one pull: nothing pushed.
    assert again.pushed == [] and again.pulled == [] and again.requests == 2


# ---------------------------------------------------------------- the hub's rules


def test_the_hub_refuses_server_owned_documents_and_other_clinics_ids(tmp_store: Any) -> None:
    hub = MemoryHub()
    a, stranger = tmp_store("a"), tmp_store("stranger", clinic_id="clinic-elsewhere")
    patient = add_patient(a, "Okafor")
    a.sync(transport=connect(hub, a))
    decision = RecordDocument.create(
        Decision,
        {"intent_id": patient, "status": "accepted"},
        device_id=a.device_id,
        clinic_id=a.clinic_id,
    )
    forged = RecordDocument.load(a.replica.store.saved_document(patient) or b"")
    message = encode_message(
        SyncMessage(
            {},
            (
                Entry(EntryKind.DOC, decision.id, decision.save()),
                Entry(EntryKind.DOC, patient, forged.save()),
            ),
        )
    )
    answer = connect(hub, a).push(message)
    assert [r.doc_id for r in answer.rejected] == [decision.id]
    assert "server-owned" in answer.rejected[0].reason
    assert answer.unchanged == [patient]
    # Another clinic's device may not write a record of this clinic under its id.
    answer = connect(hub, stranger).push(message)
    assert {r.doc_id for r in answer.rejected} == {decision.id, patient}
    assert patient not in hub.document_heads(stranger.clinic_id)


def test_server_written_decisions_sync_down_read_only(tmp_store: Any) -> None:
    hub = MemoryHub()
    a = tmp_store("a")
    patient = add_patient(a, "Okafor")
    decision = RecordDocument.create(
        Decision,
        {"intent_id": patient, "status": "rejected", "reason": "slot taken"},
        device_id=hub.server_device_id,
        clinic_id=a.clinic_id,
        now=datetime(2025, 1, 1, tzinfo=UTC),
    )
    hub.write_documents(a.clinic_id, [decision])  # signed by the hub, as a server signs
    result = a.sync(transport=connect(hub, a))
    assert decision.id in result.pulled
    assert a.decisions.get(decision.id).reason == "slot taken"
    # Pushing again never sends the decision back up.
    assert a.sync(transport=connect(hub, a)).pushed == []


# ---------------------------------------------------------------- cuts and resumes


@pytest.mark.parametrize("phase", ["before", "after"])
def test_a_cut_push_is_sent_again_and_duplicates_nothing(tmp_store: Any, phase: str) -> None:
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    ids = {add_patient(a, f"Family{i}") for i in range(10)}
    cut = Faulty(connect(hub, a), lambda method, n, when: method == "push" and when == phase)
    with pytest.raises(ServerUnreachableError):
        a.sync(transport=cut)
    assert hub.feed(a.clinic_id) == (len(ids) if phase == "after" else 0)
    again = a.sync(transport=connect(hub, a))
    if phase == "after":  # the hub took the first push; the resend changes nothing
        assert again.pushed == [] and again.unchanged == len(ids)
    else:
        assert set(again.pushed) == ids
    assert hub.feed(a.clinic_id) == len(ids)
    assert set(b.sync(transport=connect(hub, b)).pulled) == ids
    assert len(b.patients.list()) == len(ids)


def test_a_pull_cut_between_pages_resumes_at_its_cursor(tmp_store: Any) -> None:
    hub = MemoryHub(page_size=3)
    a, b = tmp_store("a"), tmp_store("b")
    ids = {add_patient(a, f"Family{i}") for i in range(10)}
    a.sync(transport=connect(hub, a))
    cursors: list[int] = []

    def third_page_lost(method: str, number: int, phase: str) -> bool:
        return method == "pull" and number == 3 and phase == "after"

    cut = Faulty(connect(hub, b), third_page_lost)
    with pytest.raises(ServerUnreachableError):
        b.sync(transport=cut)
    held = set(b.replica.document_heads())
    assert len(held) == 6  # two pages of three were stored with their cursor

    class Watching(MemoryTransport):
        def pull(self, *, cursor: int, limit: int, wait: float) -> bytes:
            cursors.append(cursor)
            return super().pull(cursor=cursor, limit=limit, wait=wait)

    rest = b.sync(
        transport=Watching(
            hub, device_id=b.device_id, clinic_id=b.clinic_id, public_key=b.identity.public_key
        )
    )
    assert cursors[0] == 6
    assert set(rest.pulled) == ids - held
    assert set(b.replica.document_heads()) == ids


def test_pull_pages_grow_from_a_small_first_one_to_the_largest(
    tmp_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first page is small (nothing overlaps its fetch); each after it asks for
    twice as many documents as the one before, up to the largest page."""
    monkeypatch.setattr("edge_sdk._sync.FIRST_PULL_PAGE_DOCUMENTS", 2)
    monkeypatch.setattr("edge_sdk._sync.PULL_PAGE_DOCUMENTS", 8)
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    ids = {add_patient(a, f"Family{i}") for i in range(25)}
    a.sync(transport=connect(hub, a))
    asked: list[tuple[int, int]] = []

    class Watching(MemoryTransport):
        def pull(self, *, cursor: int, limit: int, wait: float) -> bytes:
            asked.append((cursor, limit))
            return super().pull(cursor=cursor, limit=limit, wait=wait)

    result = b.sync(
        transport=Watching(
            hub, device_id=b.device_id, clinic_id=b.clinic_id, public_key=b.identity.public_key
        )
    )
    assert asked == [(0, 2), (2, 4), (6, 8), (14, 8), (22, 8)]
    assert set(result.pulled) == ids == set(b.replica.document_heads())


def test_a_hub_restored_from_a_backup_is_resynced(
    tmp_store: Any, snapshot: Callable[[EdgeClient], Any]
) -> None:
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    add_patient(a, "Early")
    a.sync(transport=connect(hub, a))
    backup = hub.snapshot()
    for i in range(5):
        add_patient(a, f"Later{i}")
    a.sync(transport=connect(hub, a))
    b.sync(transport=connect(hub, b))
    hub.restore(backup)  # the hub lost the later changes; a's cursor is past its feed
    resync = a.sync(transport=connect(hub, a))
    assert resync.cursor == 1  # pulled again from the start
    result = a.sync(transport=connect(hub, a))
    assert len(result.pushed) == 5 and result.unchanged == 1  # what the hub lost, again
    assert hub.document_heads(a.clinic_id) == a.replica.document_heads()
    b.sync(transport=connect(hub, b))
    assert snapshot(a) == snapshot(b)


def test_a_long_poll_returns_as_soon_as_another_device_pushes(tmp_store: Any) -> None:
    hub = MemoryHub()
    reader, writer = tmp_store("reader"), tmp_store("writer")
    reader.sync(transport=connect(hub, reader))
    outcome: dict[str, Any] = {}

    def wait_for_news() -> None:
        started = time.monotonic()
        outcome["result"] = reader.sync(transport=connect(hub, reader), wait=20)
        outcome["seconds"] = time.monotonic() - started

    waiting = threading.Thread(target=wait_for_news)
    waiting.start()
    time.sleep(0.2)
    patient = add_patient(writer, "Waited")
    writer.sync(transport=connect(hub, writer))
    waiting.join(timeout=20)
    assert outcome["result"].pulled == [patient]
    assert outcome["seconds"] < 10


def test_watch_sync_yields_what_moved_and_waits_out_an_outage(tmp_store: Any) -> None:
    hub = MemoryHub()
    reader, writer = tmp_store("reader"), tmp_store("writer")
    patient = add_patient(writer, "Watched")
    writer.sync(transport=connect(hub, writer))
    # The first pull is lost on the way: reported, waited out, then the loop goes on.
    flaky = Faulty(connect(hub, reader), lambda method, n, phase: (method, n) == ("pull", 1))
    outages: list[ServerUnreachableError] = []
    rounds = watch_sync(reader, wait=2, pause=0, on_unreachable=outages.append, transport=flaky)
    first = next(rounds)
    assert first.pulled == [patient]
    assert len(outages) == 1 and flaky.failures == 1
    # Quiet rounds are not yielded: the next one is the writer's next change.
    outcome: list[Any] = []
    waiting = threading.Thread(target=lambda: outcome.append(next(rounds)))
    waiting.start()
    time.sleep(0.2)
    assert outcome == []
    later = add_patient(writer, "Later")
    writer.sync(transport=connect(hub, writer))
    waiting.join(timeout=20)
    assert [r.pulled for r in outcome] == [[later]]


# ---------------------------------------------------------------- blobs


@pytest.fixture
def scanned(tmp_store: Any) -> Iterator[tuple[EdgeClient, str]]:
    """A store with an assessment referring to a 5 MiB + 3 byte scan blob."""
    client = tmp_store("scanner")
    data = os.urandom(5 * MiB + 3)
    ref = client.blobs.put_bytes(data)
    patient = add_patient(client, "Scanned")
    wound = client.wounds.add(patient_id=patient, body_site="left heel")
    client.assessments.add(
        wound_id=wound.id,
        patient_id=patient,
        captured_at=datetime(2025, 1, 1, tzinfo=UTC),
        device_id=client.device_id,
        blobs=[{"sha256": ref.sha256, "size": ref.size, "kind": "point-cloud"}],
    )
    yield client, ref.sha256


def test_a_cut_upload_resumes_at_the_hubs_offset(
    tmp_store: Any, scanned: tuple[EdgeClient, str]
) -> None:
    client, sha = scanned
    hub = MemoryHub(min_chunk_size=MiB, max_chunk_size=MiB)
    sent: list[int] = []

    def third_chunk_lost(method: str, number: int, phase: str) -> bool:
        return method == "send_chunk" and number == 3 and phase == "before"

    with pytest.raises(ServerUnreachableError):
        client.sync(transport=Faulty(connect(hub, client), third_chunk_lost))
    assert not hub.has_blob(client.clinic_id, sha)

    class Counting(MemoryTransport):
        def send_chunk(self, *, upload_id: str, offset: int, data: bytes) -> UploadState | None:
            sent.append(offset)
            return super().send_chunk(upload_id=upload_id, offset=offset, data=data)

    result = client.sync(
        transport=Counting(
            hub,
            device_id=client.device_id,
            clinic_id=client.clinic_id,
            public_key=client.identity.public_key,
        )
    )
    assert result.blobs_uploaded == [sha]
    assert sent == [2 * MiB, 3 * MiB, 4 * MiB, 5 * MiB]  # from where the hub stood
    assert hub.has_blob(client.clinic_id, sha)


def test_a_cut_download_resumes_from_the_next_byte_and_is_verified(
    tmp_store: Any, scanned: tuple[EdgeClient, str]
) -> None:
    client, sha = scanned
    hub = MemoryHub()
    client.sync(transport=connect(hub, client))
    reader = tmp_store("reader")
    starts: list[int] = []

    class BreaksOff(MemoryTransport):
        """Downloads break off after 2 MiB, twice."""

        cuts = 2

        def download(self, *, sha256: str, start: int) -> BlobDownload:
            starts.append(start)
            whole = super().download(sha256=sha256, start=start)
            if not self.cuts:
                return whole
            self.cuts -= 1

            def pieces() -> Iterator[bytes]:
                given = 0
                for piece in whole.chunks:
                    if given + len(piece) > 2 * MiB:
                        raise ConnectionError("connection reset (simulated)")
                    given += len(piece)
                    yield piece

            return BlobDownload(whole.start, whole.size, pieces(), whole.close)

    result = reader.sync(
        transport=BreaksOff(
            hub,
            device_id=reader.device_id,
            clinic_id=reader.clinic_id,
            public_key=reader.identity.public_key,
        )
    )
    assert result.blobs_downloaded == [sha]
    assert starts == [0, 2 * MiB, 4 * MiB]
    assert hashlib.sha256(reader.blobs.read_bytes(sha)).hexdigest() == sha


def test_sync_replica_runs_over_a_replica_alone(tmp_store: Any) -> None:
    """What an edge box does: the algorithm over a replica, with no `EdgeClient` call."""
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    patient = add_patient(a, "Relayed")
    sync_replica(a.replica, connect(hub, a))
    result = sync_replica(b.replica, connect(hub, b), blobs=False)
    assert result.pulled == [patient]
