"""The sync API over real HTTP: push, pull, scope, idempotency, long polls, bad input.

Devices here speak the wire format directly (documents made with `crdt`), so each
refusal can be aimed precisely; `test_sync_client.py` drives the SDK's client.
"""

from __future__ import annotations

import threading
import time
from datetime import date
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from crdt import (
    Decision,
    Entry,
    EntryKind,
    Patient,
    RecordDocument,
    SyncMessage,
    decode_message,
    encode_message,
)
from sync_server.audit.tables import AuditEvent
from sync_server.sync.tables import Document, PatientRow

MEDIA = {"content-type": "application/vnd.coherency.sync"}


def patient(
    server: Any, clinic_id: str, device_id: str, family: str = "Lovelace"
) -> RecordDocument:
    """A new patient record, signed by its device (as the SDK signs every write)."""
    return RecordDocument.create(
        Patient,
        {"given_name": "Ada", "family_name": family, "birth_date": date(1990, 1, 2)},
        device_id=device_id,
        clinic_id=clinic_id,
        signer=server.signer(device_id),
    )


def body(*documents: RecordDocument) -> bytes:
    return encode_message(
        SyncMessage({}, tuple(Entry(EntryKind.DOC, d.id, d.save()) for d in documents))
    )


def push(http: httpx.Client, *documents: RecordDocument) -> dict[str, Any]:
    response = http.post("/v1/sync/push", content=body(*documents), headers=MEDIA)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def pull(http: httpx.Client, cursor: int = 0, **params: Any) -> tuple[dict[str, bytes], Any]:
    response = http.get("/v1/sync/pull", params={"cursor": cursor, **params})
    assert response.status_code == 200, response.text
    message = decode_message(response.content)
    return {e.doc_id: e.payload for e in message.entries}, message.control


def database_state(server: Any) -> tuple[int, int, int]:
    with server.db.read() as session:
        return (
            session.scalar(select(func.count()).select_from(Document)) or 0,
            session.scalar(select(func.count()).select_from(PatientRow)) or 0,
            session.scalar(select(func.max(Document.seq))) or 0,
        )


def test_a_pushed_record_reaches_the_other_device_of_the_clinic(server: Any) -> None:
    clinic = server.new_clinic()
    a_id, a_token = server.device_token(clinic)
    _, b_token = server.device_token(clinic)
    doc = patient(server, clinic, a_id)
    with server.http(a_token) as a, server.http(b_token) as b:
        answer = push(a, doc)
        assert answer["accepted"] == [doc.id]
        assert answer["rejected"] == [] and answer["cursor"] >= 1
        docs, control = pull(b)
        assert list(docs) == [doc.id]
        assert RecordDocument.load(docs[doc.id]).heads == doc.heads
        assert control["cursor"] == answer["cursor"] and control["more"] is False
        # The pushing device is not sent its own version back, but its cursor moves.
        own, own_control = pull(a)
        assert own == {} and own_control["cursor"] == answer["cursor"]
        # Nothing new after the cursor.
        again, _ = pull(b, control["cursor"])
        assert again == {}
    with server.db.read() as session:
        row = session.get(PatientRow, doc.id)
        assert row is not None and row.family_name == "Lovelace" and row.clinic_id == clinic


def test_pushes_are_idempotent(server: Any) -> None:
    clinic = server.new_clinic()
    device, token = server.device_token(clinic)
    doc = patient(server, clinic, device)
    with server.http(token) as http:
        first = push(http, doc)
        before = database_state(server)
        second = push(http, doc, doc)
        assert second["accepted"] == [] and second["unchanged"] == [doc.id]
        assert second["cursor"] == first["cursor"]
    assert database_state(server) == before


def test_concurrent_edits_merge_on_the_server(server: Any) -> None:
    clinic = server.new_clinic()
    a_id, a_token = server.device_token(clinic)
    b_id, b_token = server.device_token(clinic)
    base = patient(server, clinic, a_id)
    with server.http(a_token) as a, server.http(b_token) as b:
        push(a, base)
        theirs = RecordDocument.load(pull(b)[0][base.id], device_id=b_id)
        ours = base.fork(device_id=a_id)
        ours.update({"mrn": "MRN-1"}, device_id=a_id, signer=server.signer(a_id))
        theirs.update({"sex": "female"}, device_id=b_id, signer=server.signer(b_id))
        push(a, ours)
        push(b, theirs)
        merged = RecordDocument.load(pull(a)[0][base.id])
    record = merged.read()
    assert record.mrn == "MRN-1" and record.sex == "female"


def test_a_device_never_receives_another_clinics_documents(server: Any) -> None:
    ours, theirs = server.new_clinic(), server.new_clinic()
    a_id, a_token = server.device_token(ours)
    _, c_token = server.device_token(theirs)
    with server.http(a_token) as a, server.http(c_token) as c:
        push(a, patient(server, ours, a_id))
        docs, control = pull(c)
        assert docs == {} and control["cursor"] == 0


@pytest.mark.parametrize("case", ["other-clinic", "server-owned", "foreign-id", "invalid"])
def test_refused_documents_are_reported_and_nothing_of_them_is_stored(
    server: Any, case: str
) -> None:
    ours, theirs = server.new_clinic(), server.new_clinic()
    device, token = server.device_token(ours)
    good = patient(server, ours, device)
    if case == "other-clinic":
        bad = patient(server, theirs, device)
    elif case == "server-owned":
        bad = RecordDocument.create(
            Decision,
            {"intent_id": "intent-1", "status": "accepted"},
            device_id=device,
            clinic_id=ours,
        )
    elif case == "foreign-id":
        other_device, other_token = server.device_token(theirs)
        taken = patient(server, theirs, other_device)
        with server.http(other_token) as other:
            push(other, taken)
        bad = RecordDocument.load(taken.save(), device_id=device)  # their record, our push
    else:
        bad = patient(server, ours, device)
    before = database_state(server)
    payload = [good, bad]
    raw = body(*payload)
    if case == "invalid":
        raw = encode_message(
            SyncMessage(
                {},
                (
                    Entry(EntryKind.DOC, good.id, good.save()),
                    Entry(EntryKind.DOC, bad.id, b"not an automerge document"),
                ),
            )
        )
    with server.http(token) as http:
        response = http.post("/v1/sync/push", content=raw, headers=MEDIA)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["accepted"] == [good.id]
    assert [r["doc_id"] for r in answer["rejected"]] == [bad.id]
    assert answer["rejected"][0]["reason"]
    after = database_state(server)
    assert after[0] == before[0] + 1  # only the good document
    with server.db.read() as session:
        stored = session.get(Document, bad.id)
        if case == "foreign-id":
            assert stored is not None and stored.clinic_id == theirs  # untouched
        else:
            assert stored is None


def test_a_server_owned_record_syncs_down_and_cannot_be_changed_by_a_device(
    server: Any,
) -> None:
    from sync_server.sync.documents import write_documents

    clinic = server.new_clinic()
    device, token = server.device_token(clinic)
    signer = server.server_signer()
    decision = RecordDocument.create(
        Decision,
        {"intent_id": "intent-7", "status": "rejected", "reason": "slot taken"},
        device_id=signer.device_id,
        clinic_id=clinic,
    )
    with server.db.write() as session:
        write_documents(session=session, clinic_id=clinic, documents=[decision], signer=signer)
    with server.http(token) as http:
        docs, _ = pull(http)
        assert RecordDocument.load(docs[decision.id]).read().reason == "slot taken"
        edited = RecordDocument.load(docs[decision.id], device_id=device)
        edited.update({"status": "accepted"}, device_id=device, signer=server.signer(device))
        answer = push(http, edited)
    assert [r["doc_id"] for r in answer["rejected"]] == [decision.id]
    assert "server-owned" in answer["rejected"][0]["reason"]
    with server.db.read() as session:
        stored = session.get(Document, decision.id)
        assert stored is not None
        assert RecordDocument.load(stored.data).read().status == "rejected"


def test_pull_pages_follow_the_cursor(server: Any) -> None:
    clinic = server.new_clinic()
    a_id, a_token = server.device_token(clinic)
    _, b_token = server.device_token(clinic)
    docs = [patient(server, clinic, a_id, f"Family{i}") for i in range(25)]
    with server.http(a_token) as a, server.http(b_token) as b:
        push(a, *docs)
        seen: list[str] = []
        cursor, pages = 0, 0
        while True:
            page, control = pull(b, cursor, limit=10)
            seen += list(page)
            cursor, pages = control["cursor"], pages + 1
            if not control["more"]:
                break
    assert sorted(seen) == sorted(d.id for d in docs)
    assert pages == 3


def test_a_cursor_ahead_of_the_feed_is_a_409(server: Any) -> None:
    clinic = server.new_clinic()
    _, token = server.device_token(clinic)
    with server.http(token) as http:
        response = http.get("/v1/sync/pull", params={"cursor": 10_000})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "cursor_ahead"


def test_a_long_poll_wakes_when_another_device_pushes(server: Any) -> None:
    clinic = server.new_clinic()
    a_id, a_token = server.device_token(clinic)
    _, b_token = server.device_token(clinic)
    doc = patient(server, clinic, a_id)
    result: dict[str, Any] = {}

    def wait_for_it() -> None:
        with server.http(b_token) as b:
            started = time.monotonic()
            result["docs"], result["control"] = pull(b, 0, wait=8)
            result["seconds"] = time.monotonic() - started

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    time.sleep(0.5)
    with server.http(a_token) as a:
        push(a, doc)
    waiter.join(timeout=15)
    assert list(result["docs"]) == [doc.id]
    assert result["seconds"] < 5  # woken by the push, not by the 8 s timeout


def test_a_long_poll_with_nothing_new_returns_empty_after_its_wait(server: Any) -> None:
    clinic = server.new_clinic()
    _, token = server.device_token(clinic)
    with server.http(token) as http:
        started = time.monotonic()
        docs, control = pull(http, 0, wait=0.5)
    assert docs == {} and control["cursor"] == 0
    assert 0.4 < time.monotonic() - started < 5


def test_pushes_and_pulls_are_audited_without_patient_data(server: Any) -> None:
    clinic = server.new_clinic()
    a_id, a_token = server.device_token(clinic)
    _, b_token = server.device_token(clinic)
    doc = patient(server, clinic, a_id, family="Quixotically")
    with server.http(a_token) as a, server.http(b_token) as b:
        push(a, doc)
        pull(b)
    with server.db.read() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.clinic_id == clinic)).all()
    actions = {e.action for e in events}
    assert {"sync-push", "sync-pull"} <= actions
    assert all(doc.id in (e.target or "") for e in events if e.action.startswith("sync"))
    assert not any("Quixotically" in f"{e.target}{e.outcome}" for e in events)


# ---------------------------------------------------------------- bad input
def _garbage_bodies(clinic: str, device: str) -> dict[str, bytes]:
    # Only the framing matters here: the document is never merged.
    good = body(
        RecordDocument.create(
            Patient,
            {"given_name": "Ada", "family_name": "X", "birth_date": date(1990, 1, 2)},
            device_id=device,
            clinic_id=clinic,
        )
    )
    return {
        "empty": b"",
        "garbage": b"\x00\x01 this is not a sync message" * 10,
        "truncated": good[: len(good) // 2],
        "bad-crc": good[:-1] + bytes([good[-1] ^ 0xFF]),
        "offer": encode_message(SyncMessage({}, (Entry(EntryKind.OFFER, "x", b"\0" * 32),))),
        "json": b'{"documents": []}',
    }


def test_bad_sync_bodies_get_4xx_and_change_nothing(server: Any) -> None:
    clinic = server.new_clinic()
    device, token = server.device_token(clinic)
    before = database_state(server)
    with server.http(token) as http:
        for name, raw in _garbage_bodies(clinic, device).items():
            response = http.post("/v1/sync/push", content=raw, headers=MEDIA)
            assert 400 <= response.status_code < 500, (name, response.status_code)
            assert response.json()["error"]["message"], name
        oversized = b"CHSY" + b"\0" * (server.settings.max_message_size + 10)
        response = http.post("/v1/sync/push", content=oversized, headers=MEDIA)
        assert response.status_code == 413
        for params in (
            {"cursor": -1},
            {"cursor": "abc"},
            {"cursor": 2**64},
            {"wait": 10_000},
            {"limit": 0},
        ):
            response = http.get("/v1/sync/pull", params=params)
            assert response.status_code == 422, params
    assert database_state(server) == before


def test_sync_routes_refuse_callers_without_a_device_token(server: Any) -> None:
    clinic = server.new_clinic()
    device, _ = server.device_token(clinic)
    before = database_state(server)
    with server.http() as anonymous:
        assert anonymous.get("/v1/sync/pull").status_code == 401
        response = anonymous.post(
            "/v1/sync/push", content=body(patient(server, clinic, device)), headers=MEDIA
        )
        assert response.status_code == 401
    with server.http("not-a-jwt") as bad:
        assert bad.get("/v1/sync/pull").status_code == 401
    assert database_state(server) == before


def test_concurrent_pulls_of_one_clinic_never_fail(server: Any) -> None:
    clinic = server.new_clinic()
    device, token = server.device_token(clinic)
    with server.http(token) as http:
        push(http, *[patient(server, clinic, device, f"F{i}") for i in range(200)])
    _, reader = server.device_token(clinic)
    statuses: list[int] = []

    def pull_often() -> None:
        with server.http(reader) as http:
            for _ in range(5):
                statuses.append(http.get("/v1/sync/pull", params={"cursor": 0}).status_code)

    threads = [threading.Thread(target=pull_often) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 30


def test_a_record_the_projection_cannot_hold_is_refused_alone(server: Any) -> None:
    from crdt import Wound, WoundAssessment

    clinic = server.new_clinic()
    device, token = server.device_token(clinic)
    owner = patient(server, clinic, device)
    wound = RecordDocument.create(
        Wound,
        {"patient_id": owner.id, "body_site": "heel"},
        device_id=device,
        clinic_id=clinic,
        signer=server.signer(device),
    )
    extreme = RecordDocument.create(
        WoundAssessment,
        {
            "wound_id": wound.id,
            "patient_id": owner.id,
            "captured_at": "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
            "device_id": device,
        },
        device_id=device,
        clinic_id=clinic,
        signer=server.signer(device),
    )
    with server.http(token) as http:
        answer = push(http, owner, wound, extreme)
    assert sorted(answer["accepted"]) == sorted([owner.id, wound.id])
    assert [r["doc_id"] for r in answer["rejected"]] == [extreme.id]
    with server.db.read() as session:
        assert session.get(Document, extreme.id) is None
