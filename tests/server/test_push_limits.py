"""What one push may cost the server: entries counted before they are read, changes
measured before documents are loaded, one costly document refused alone, and the
event loop free while a push is merged. Every body on SQLite and PostgreSQL."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from automerge import core as am

from crdt import Entry, EntryKind, Patient, RecordDocument, SyncMessage, encode_message
from sync_server.sync.tables import Document

MEDIA = {"content-type": "application/vnd.coherency.sync"}


def patient(server: Any, clinic_id: str, device_id: str, *, changes: int = 1) -> RecordDocument:
    """A patient record with `changes` changes, signed by its device (one more change)."""
    doc = RecordDocument.create(
        Patient,
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": date(1950, 3, 1)},
        device_id=device_id,
        clinic_id=clinic_id,
    )
    raw = doc.automerge
    for n in range(changes - 1):
        with raw.transaction() as tx:
            tx.put(am.ROOT, "given_name", am.ScalarType.Str, f"Ada {n}")
    signed = RecordDocument.load(raw.save(), device_id=device_id)
    signed.seal(server.signer(device_id))
    return signed


def message(*entries: tuple[str, bytes]) -> bytes:
    return encode_message(
        SyncMessage({}, tuple(Entry(EntryKind.DOC, d, data) for d, data in entries))
    )


def stored(server: Any, doc_id: str) -> bool:
    with server.db.read() as session:
        return session.get(Document, doc_id) is not None


def test_a_push_announcing_more_entries_than_allowed_is_refused_before_reading_them(
    server: Any,
) -> None:
    clinic = server.new_clinic()
    _, token = server.device_token(clinic)
    # A valid message of a million tiny entries: 7 bytes each, about 7 MB.
    entry = bytes((int(EntryKind.DOC), 1)) + b"x" + struct.pack(">I", 0)
    control = b"{}"
    body = struct.pack(">I", len(control)) + control + struct.pack(">I", 1_000_000)
    body += entry * 1_000_000
    raw = struct.pack(">4sBBII", b"CHSY", 1, 0, len(body), zlib.crc32(body)) + body
    with server.http(token) as http:
        answer = http.post("/v1/sync/push", content=raw, headers=MEDIA)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "too_many_documents"


def test_a_push_whose_documents_hold_too_many_changes_is_refused_whole(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clinic = server.new_clinic()
    device, token = server.device_token(clinic)
    monkeypatch.setattr(server.settings, "push_max_changes", 50)
    docs = [patient(server, clinic, device, changes=9) for _ in range(6)]  # 60 changes in all
    with server.http(token) as http:
        answer = http.post(
            "/v1/sync/push", content=message(*((d.id, d.save()) for d in docs)), headers=MEDIA
        )
        assert answer.status_code == 413
        assert answer.json()["error"]["code"] == "push_too_costly"
        assert not any(stored(server, d.id) for d in docs)
        half = http.post(
            "/v1/sync/push", content=message(*((d.id, d.save()) for d in docs[:3])), headers=MEDIA
        )
    assert half.status_code == 200 and sorted(half.json()["accepted"]) == sorted(
        d.id for d in docs[:3]
    )


def test_a_document_over_the_change_limit_is_refused_alone(
    server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clinic = server.new_clinic()
    device, token = server.device_token(clinic)
    monkeypatch.setattr(server.settings, "document_max_changes", 20)
    costly, fine = (
        patient(server, clinic, device, changes=30),
        patient(server, clinic, device, changes=5),
    )
    assert len(costly.save()) < 2000  # compressed: only counting the changes catches it
    with server.http(token) as http:
        answer = http.post(
            "/v1/sync/push",
            content=message((costly.id, costly.save()), (fine.id, fine.save())),
            headers=MEDIA,
        ).json()
    assert answer["accepted"] == [fine.id]
    assert answer["rejected"] == [
        {"doc_id": costly.id, "reason": "the document has 31 changes, over the limit of 20"}
    ]
    assert not stored(server, costly.id) and stored(server, fine.id)


def test_a_record_holding_nul_is_refused_alone_on_both_databases(server: Any) -> None:
    clinic = server.new_clinic()
    device, token = server.device_token(clinic)
    hostile, fine = patient(server, clinic, device), patient(server, clinic, device)
    raw = hostile.automerge
    with raw.transaction() as tx:  # written around the SDK, which refuses NUL
        tx.put(am.ROOT, "family_name", am.ScalarType.Str, "Oka\0for")
    with server.http(token) as http:
        answer = http.post(
            "/v1/sync/push",
            content=message((hostile.id, raw.save()), (fine.id, fine.save())),
            headers=MEDIA,
        )
    assert answer.status_code == 200
    assert answer.json()["accepted"] == [fine.id]
    assert "NUL character" in answer.json()["rejected"][0]["reason"]


def test_other_requests_are_answered_while_a_big_push_is_merged(server: Any) -> None:
    clinic = server.new_clinic()
    device, token = server.device_token(clinic)
    docs = [patient(server, clinic, device) for _ in range(2500)]
    raw = message(*((d.id, d.save()) for d in docs))
    done = threading.Event()
    latencies: list[float] = []

    def probe() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not done.is_set():
                started = time.perf_counter()
                assert http.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        started = time.perf_counter()
        with server.http(token) as http:
            answer = http.post("/v1/sync/push", content=raw, headers=MEDIA)
        took = time.perf_counter() - started
    finally:
        done.set()
        prober.join()
    assert answer.status_code == 200 and len(answer.json()["accepted"]) == 2500
    # The push kept a worker thread busy, never the event loop: health checks kept
    # being answered throughout (on the old code they waited for the whole decode).
    assert len(latencies) >= 3, (took, latencies)
    assert max(latencies) < max(1.0, took / 2), (took, max(latencies))


def test_the_sdk_pushes_in_halves_when_the_server_says_too_costly(
    server: Any, tmp_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync_server.identity.enrolment import create_enrolment_token

    clinic = server.new_clinic()
    with server.db.write() as session:
        token, _ = create_enrolment_token(
            session=session, clinic_id=clinic, ttl=timedelta(minutes=5)
        )
    client = tmp_store("tablet", clinic_id=clinic)
    client.enroll(server.url, token)
    with client.batch():
        ids = [
            client.patients.add(given_name="A", family_name=f"P{n}", birth_date="1950-01-01").id
            for n in range(8)
        ]
    monkeypatch.setattr(server.settings, "push_max_changes", 3)
    result = client.sync(blobs=False)
    assert sorted(result.pushed) == sorted(ids) and result.refused_by_server == []
    assert all(stored(server, i) for i in ids)
    # 8 refused (413), 4 refused, 2 + 2 taken, 4 refused, 2 + 2 taken: 7 pushes, then a pull.
    assert result.requests >= 8


def test_a_single_document_too_costly_for_the_server_is_reported_not_retried(
    server: Any, tmp_store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sync_server.identity.enrolment import create_enrolment_token

    clinic = server.new_clinic()
    with server.db.write() as session:
        token, _ = create_enrolment_token(
            session=session, clinic_id=clinic, ttl=timedelta(minutes=5)
        )
    client = tmp_store("tablet", clinic_id=clinic)
    client.enroll(server.url, token)
    record = client.patients.add(given_name="A", family_name="B", birth_date="1950-01-01")
    monkeypatch.setattr(server.settings, "push_max_changes", 1)
    client.patients.update(record.id, given_name="C")  # two changes: over the budget
    result = client.sync(blobs=False)
    assert [r.doc_id for r in result.refused_by_server] == [record.id]
    assert "push_too_costly" in result.refused_by_server[0].reason
    again = client.sync(blobs=False)
    assert again.refused_by_server == []  # not sent again until it changes
