"""Access control around the audit log: patients and purpose on events, break-glass
grants, idle expiry of staff sessions, the accounting of disclosures and audit search.

Every test runs on SQLite and on PostgreSQL, each in an organisation of its own.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, update

from crdt import (
    GENESIS,
    ClinicalNote,
    Entry,
    EntryKind,
    Patient,
    RecordDocument,
    SyncMessage,
    canonical_json,
    chain_hash,
)
from crdt import encode_message as encode
from sync_server.audit.tables import AuditEvent, AuditPatient, BreakGlassGrant
from sync_server.identity.tables import RefreshToken, User
from sync_server.identity.tenancy import ensure_clinic, ensure_organisation
from sync_server.identity.users import create_user
from sync_server.sync.records import blob_patients
from sync_server.sync.tables import AssessmentRow, Document, PatientRow, WoundRow

PASSWORD = "correct horse battery staple"
NAME = "Zebedee"  # a patient's name: it must never reach the audit data
REASON = "unconscious in the emergency room, own clinic closed"
SYNC = {"content-type": "application/vnd.coherency.sync"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


@dataclass
class World:
    """An organisation of its own with two clinics, staff, patients and records."""

    server: Any
    organisation_id: str = ""
    clinic_a: str = ""
    clinic_b: str = ""
    users: list[User] = field(default_factory=list)

    def setup(self) -> World:
        with self.server.db.write() as session:
            self.organisation_id = ensure_organisation(session=session, name=unique("org")).id
            self.clinic_a = ensure_clinic(
                session=session, name=unique("a"), organisation_id=self.organisation_id
            ).id
            self.clinic_b = ensure_clinic(
                session=session, name=unique("b"), organisation_id=self.organisation_id
            ).id
        return self

    def user(self, role: str, clinic_id: str | None) -> User:
        with self.server.db.write() as session:
            user, _ = create_user(
                session=session,
                username=unique(role),
                password=PASSWORD,
                role=role,
                organisation_id=self.organisation_id,
                clinic_id=clinic_id,
                with_totp=False,
            )
        return user

    def client(self, user: User) -> httpx.Client:
        token, _ = self.server.app.state.signing_key.issue_access_token(
            subject=user.id,
            kind="user",
            clinic_id=user.clinic_id,
            organisation_id=user.organisation_id,
            role=user.role,
            ttl=timedelta(minutes=5),
        )
        return self.server.http(token)

    def patient(self, clinic_id: str) -> str:
        pid = str(uuid.uuid4())
        with self.server.db.write() as session:
            session.add(
                PatientRow(
                    id=pid,
                    clinic_id=clinic_id,
                    deleted=False,
                    conflicted=False,
                    updated_at="2026-05-01T10:00:00Z",
                    record=json.dumps({"id": pid, "family_name": NAME}),
                    given_name="Ada",
                    family_name=NAME,
                    birth_date="1950-01-02",
                    sex="female",
                    mrn=None,
                )
            )
        return pid

    def wound(self, clinic_id: str, patient_id: str) -> str:
        wid = str(uuid.uuid4())
        with self.server.db.write() as session:
            session.add(
                WoundRow(
                    id=wid,
                    clinic_id=clinic_id,
                    deleted=False,
                    conflicted=False,
                    updated_at="2026-05-01T10:00:00Z",
                    record=json.dumps({"id": wid, "patient_id": patient_id}),
                    patient_id=patient_id,
                    body_site="left heel",
                    etiology="pressure",
                    status="open",
                    onset="2026-04-01",
                )
            )
        return wid

    def assessment(self, clinic_id: str, patient_id: str, wound_id: str, sha256: str) -> str:
        aid = str(uuid.uuid4())
        record = {"id": aid, "blobs": [{"sha256": sha256, "size": 3, "kind": "cloud"}]}
        with self.server.db.write() as session:
            session.add(
                AssessmentRow(
                    id=aid,
                    clinic_id=clinic_id,
                    deleted=False,
                    conflicted=False,
                    updated_at="2026-05-01T10:00:00Z",
                    record=json.dumps(record, separators=(",", ":")),
                    wound_id=wound_id,
                    patient_id=patient_id,
                    captured_at="2026-05-01T10:00:00.000000Z",
                    device_id="device-1",
                )
            )
        return aid

    def events(self, **where: Any) -> list[AuditEvent]:
        with self.server.db.read() as session:
            query = select(AuditEvent).where(
                AuditEvent.clinic_id.in_([self.clinic_a, self.clinic_b])
            )
            for name, value in where.items():
                query = query.where(getattr(AuditEvent, name) == value)
            return list(session.scalars(query.order_by(AuditEvent.seq)))


def no_names(rows: list[AuditEvent]) -> bool:
    text = " ".join(f"{r.target}{r.outcome}{r.patients}{r.purpose}" for r in rows)
    return NAME not in text and "emergency" not in text


# ---------------------------------------------------------------- break-glass
def test_break_glass_grant_use_expiry_and_review(server: Any) -> None:
    world = World(server).setup()
    clinician = world.user("clinician", world.clinic_a)
    admin = world.user("admin", None)
    patient = world.patient(world.clinic_b)
    wound = world.wound(world.clinic_b, patient)
    world.assessment(world.clinic_b, patient, wound, "ab" * 32)
    with world.client(clinician) as c, world.client(admin) as a:
        assert c.get(f"/v1/patients/{patient}").status_code == 404
        asked = c.post("/v1/audit/break-glass", json={"patient_id": patient, "reason": REASON})
        assert asked.status_code == 201, asked.text
        grant = asked.json()
        assert grant["reason"] == REASON and grant["clinic_id"] == world.clinic_b
        lasts = datetime.fromisoformat(grant["expires_at"]) - datetime.fromisoformat(
            grant["granted_at"]
        )
        assert lasts == timedelta(minutes=server.settings.break_glass_minutes)

        assert c.get(f"/v1/patients/{patient}").status_code == 200
        wounds = c.get(f"/v1/patients/{patient}/wounds")
        assert [w["id"] for w in wounds.json()["items"]] == [wound]
        assert len(c.get(f"/v1/wounds/{wound}/assessments").json()["items"]) == 1
        reads = world.events(actor_id=clinician.id, action="read", outcome="ok")
        assert len(reads) == 3
        assert {(r.purpose, r.patients, r.clinic_id) for r in reads} == {
            ("break-glass", patient, world.clinic_b)
        }
        (granted,) = world.events(action="break-glass-grant")
        assert granted.target == grant["id"] and granted.patients == patient
        assert no_names(world.events())

        # Expired: the clinic's patient is refused again, now with 403.
        with server.db.write() as session:
            session.execute(
                update(BreakGlassGrant)
                .where(BreakGlassGrant.id == grant["id"])
                .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
            )
        expired = c.get(f"/v1/patients/{patient}")
        assert expired.status_code == 403 and code(expired) == "break_glass_expired"
        assert c.get(f"/v1/wounds/{wound}/assessments").status_code == 403

        # Review, by admins only, once.
        assert c.get("/v1/audit/break-glass").status_code == 403
        listed = a.get("/v1/audit/break-glass", params={"unreviewed": "true"})
        assert [g["id"] for g in listed.json()] == [grant["id"]]
        reviewed = a.post(f"/v1/audit/break-glass/{grant['id']}/review", json={"note": "ok"})
        assert reviewed.status_code == 200, reviewed.text
        assert reviewed.json()["reviewed_by"] == admin.id
        again = a.post(f"/v1/audit/break-glass/{grant['id']}/review", json={"note": "ok"})
        assert again.status_code == 409 and code(again) == "already_reviewed"
        assert a.get("/v1/audit/break-glass", params={"unreviewed": "true"}).json() == []
        assert len(world.events(action="break-glass-review", actor_id=admin.id)) == 1


def test_break_glass_refusals(server: Any) -> None:
    world = World(server).setup()
    clinician = world.user("clinician", world.clinic_a)
    admin = world.user("admin", None)
    own = world.patient(world.clinic_a)
    stranger = World(server).setup()
    foreign = stranger.patient(stranger.clinic_b)
    with world.client(clinician) as c, world.client(admin) as a:

        def ask(http: httpx.Client, body: Any) -> httpx.Response:
            return http.post("/v1/audit/break-glass", json=body)

        mine = ask(c, {"patient_id": own, "reason": REASON})
        assert mine.status_code == 409 and code(mine) == "break_glass_not_needed"
        assert ask(c, {"patient_id": foreign, "reason": REASON}).status_code == 404
        assert ask(c, {"patient_id": str(uuid.uuid4()), "reason": REASON}).status_code == 404
        assert code(ask(a, {"patient_id": own, "reason": REASON})) == "break_glass_not_allowed"
        for bad in (
            {"patient_id": own, "reason": "   "},
            {"patient_id": own},
            {"patient_id": "x" * 10_000, "reason": REASON},
            {"patient_id": own, "reason": "r" * 100_000},
            [],
        ):
            assert ask(c, bad).status_code in (413, 422), bad
        review = a.post("/v1/audit/break-glass/nope/review", json={"note": "n"})
        assert review.status_code == 404
    with server.db.read() as session:
        assert (
            session.scalar(select(BreakGlassGrant).where(BreakGlassGrant.patient_id == own)) is None
        )


# ---------------------------------------------------------------- idle logoff
def _log_in(server: Any, user: User) -> dict[str, Any]:
    with server.http() as http:
        answer = http.post("/v1/auth/login", json={"username": user.username, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _idle_for(server: Any, user: User, seconds: float) -> None:
    with server.db.write() as session:
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.subject_id == user.id)
            .values(last_used_at=datetime.now(UTC) - timedelta(seconds=seconds))
        )


def test_idle_staff_sessions_expire(server: Any) -> None:
    world = World(server).setup()
    user = world.user("staff", world.clinic_a)
    idle = server.settings.staff_idle_seconds

    # Active: a request after a short pause notes the activity.
    session = _log_in(server, user)
    with server.http(session["access_token"]) as http:
        assert http.get("/v1/patients").status_code == 200
        _idle_for(server, user, idle / 2)
        assert http.get("/v1/patients").status_code == 200
    with server.db.read() as db:
        last = db.scalars(
            select(RefreshToken.last_used_at).where(RefreshToken.subject_id == user.id)
        )
        assert all(t is not None and t > datetime.now(UTC) - timedelta(seconds=60) for t in last)

    # Idle: the access token is refused, and the refresh token with it.
    _idle_for(server, user, idle + 1)
    with server.http(session["access_token"]) as http:
        refused = http.get("/v1/patients")
        assert refused.status_code == 401 and code(refused) == "session_idle_expired"
        again = http.post("/v1/auth/refresh", json={"refresh_token": session["refresh_token"]})
        assert again.status_code == 401
    assert len(world.events(actor_id=user.id, action="read")) == 2  # not the refused one
    with server.db.read() as db:
        expired = db.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "session-idle-expired", AuditEvent.actor_id == user.id
            )
        ).all()
    assert len(expired) == 1

    # A refresh after the idle time is refused too, with the same code.
    second = _log_in(server, user)
    _idle_for(server, user, idle + 1)
    with server.http() as http:
        late = http.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert late.status_code == 401 and code(late) == "session_idle_expired"

    # Logging out ends the session's access tokens too.
    third = _log_in(server, user)
    with server.http(third["access_token"]) as http:
        assert http.post(
            "/v1/auth/logout", json={"refresh_token": third["refresh_token"]}
        ).is_success
        ended = http.get("/v1/patients")
    assert ended.status_code == 401 and code(ended) == "session_ended"


# ---------------------------------------------------------------- disclosures and search
def test_disclosures_list_exactly_a_patients_accesses(server: Any) -> None:
    world = World(server).setup()
    clinician = world.user("clinician", world.clinic_a)
    staff = world.user("staff", world.clinic_a)
    other_staff = world.user("staff", world.clinic_b)
    mine, theirs = world.patient(world.clinic_a), world.patient(world.clinic_a)
    world.wound(world.clinic_a, mine)
    before = datetime.now(UTC) - timedelta(seconds=5)
    with world.client(clinician) as c, world.client(staff) as s:
        assert c.get(f"/v1/patients/{mine}").status_code == 200
        assert c.get(f"/v1/patients/{mine}/wounds").status_code == 200
        assert s.get(f"/v1/patients/{theirs}").status_code == 200

        answer = s.get("/v1/audit/disclosures", params={"patient_id": mine})
        assert answer.status_code == 200, answer.text
        rows = answer.json()
        assert [(r["kind"], r["operation"], r["actor_id"], r["role"]) for r in rows] == [
            ("read", "R", clinician.id, "clinician"),
            ("read", "R", clinician.id, "clinician"),
        ]
        assert {r["purpose"] for r in rows} == {"treatment"}
        assert json.loads(rows[0]["records"]) == {"patients": [mine]}
        assert json.loads(rows[1]["records"])["wounds"]
        assert all(r["patients"] == mine and r["address"] for r in rows)
        assert theirs not in answer.text and NAME not in answer.text

        as_csv = s.get("/v1/audit/disclosures", params={"patient_id": mine, "format": "csv"})
        assert as_csv.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(as_csv.text)))
        assert [row["seq"] for row in table] == [str(r["seq"]) for r in rows]
        assert {row["actor_id"] for row in table} == {clinician.id}
        accepted = s.get(
            "/v1/audit/disclosures", params={"patient_id": mine}, headers={"accept": "text/csv"}
        )
        assert accepted.text == as_csv.text

        window = {"patient_id": mine, "since": before.isoformat(), "until": before.isoformat()}
        assert s.get("/v1/audit/disclosures", params=window).json() == []
        later = {"patient_id": mine, "since": before.isoformat()}
        assert len(s.get("/v1/audit/disclosures", params=later).json()) == 2

        # Readers: the patient's clinic's staff (and admins), never clinicians.
        forbidden = c.get("/v1/audit/disclosures", params={"patient_id": mine})
        assert forbidden.status_code == 403 and code(forbidden) == "audit_readers_only"
    with world.client(other_staff) as o:
        assert o.get("/v1/audit/disclosures", params={"patient_id": mine}).status_code == 404
    searched = world.events(action="audit-search", actor_id=staff.id)
    assert len(searched) == 5
    assert json.loads(searched[0].target or "") == {"patient_id": mine, "scope": "disclosures"}
    assert searched[0].outcome == "rows=2" and searched[0].patients is None
    assert no_names(world.events())


def test_disclosures_and_search_refuse_hostile_input(server: Any) -> None:
    world = World(server).setup()
    staff = world.user("staff", world.clinic_a)
    patient = world.patient(world.clinic_a)
    with world.client(staff) as s:
        for params in (
            {"patient_id": patient, "since": "yesterday"},
            {"patient_id": patient, "since": "2026-02-30T00:00:00Z"},
            {"patient_id": patient, "limit": 10**12},
            {"patient_id": patient, "format": "xml"},
            {"patient_id": "p" * 1000},
            {},
        ):
            assert s.get("/v1/audit/disclosures", params=params).status_code == 422, params
        for params in (
            {"patient_id": patient, "since": "2026-01-01T00:00:00"},  # no UTC offset
            {"patient_id": patient, "until": "9999-12-31T23:59:59-14:00"},  # overflows UTC
            {"patient_id": patient, "since": "0001-01-01T00:00:00+14:00"},
        ):
            refused = s.get("/v1/audit/disclosures", params=params)
            assert refused.status_code == 400 and code(refused) == "bad_time", params
            assert s.get("/v1/audit/events", params=params).status_code == 400
        for params in (
            {"limit": 0},
            {"limit": 10**9},
            {"cursor": "abc"},
            {"cursor": -1},
            {"cursor": 2**70},
            {"user_id": "u" * 65},
            {"since": "not a time"},
        ):
            assert s.get("/v1/audit/events", params=params).status_code == 422, params


def test_sync_and_blob_events_name_their_patients(server: Any) -> None:
    clinic = server.new_clinic()
    a_id, a_token = server.device_token(clinic)
    b_id, b_token = server.device_token(clinic)
    signer = server.signer(a_id)
    person = RecordDocument.create(
        Patient,
        {"given_name": "Ada", "family_name": NAME, "birth_date": date(1950, 1, 2)},
        device_id=a_id,
        clinic_id=clinic,
        signer=signer,
    )
    note = RecordDocument.create(
        ClinicalNote,
        {"patient_id": person.id, "author": "nurse", "text": "granulating well"},
        device_id=a_id,
        clinic_id=clinic,
        signer=signer,
    )
    message = encode(
        SyncMessage({}, tuple(Entry(EntryKind.DOC, d.id, d.save()) for d in (person, note)))
    )
    with server.http(a_token) as a, server.http(b_token) as b:
        assert a.post("/v1/sync/push", content=message, headers=SYNC).status_code == 200
        assert b.get("/v1/sync/pull", params={"cursor": 0}).status_code == 200
    with server.db.read() as session:
        stored = dict(
            session.execute(
                select(Document.id, Document.patient_id).where(Document.clinic_id == clinic)
            ).all()
        )
        events = {
            e.action: e
            for e in session.scalars(select(AuditEvent).where(AuditEvent.clinic_id == clinic))
        }
        sha = "cd" * 32
        session.add(
            AssessmentRow(
                id=str(uuid.uuid4()),
                clinic_id=clinic,
                deleted=False,
                conflicted=False,
                updated_at="2026-05-01T10:00:00Z",
                record=json.dumps({"blobs": [{"sha256": sha}]}, separators=(",", ":")),
                wound_id="w",
                patient_id=person.id,
                captured_at="2026-05-01T10:00:00.000000Z",
                device_id=a_id,
            )
        )
        session.flush()
        assert blob_patients(session=session, clinic_id=clinic, sha256=sha) == (person.id,)
        assert blob_patients(session=session, clinic_id=clinic, sha256="ef" * 32) == ()
    assert stored == {person.id: person.id, note.id: person.id}
    push, pull = events["sync-push"], events["sync-pull"]
    assert (push.patients, push.purpose, push.actor_id) == (person.id, "treatment", a_id)
    assert (pull.patients, pull.purpose, pull.actor_id) == (person.id, "treatment", b_id)
    assert NAME not in f"{push.target}{pull.target}"


def test_an_event_naming_many_patients_has_a_patient_row_for_each(server: Any) -> None:
    """A push and a pull of many patients' records: each event's `audit_patients`
    rows are exactly the patients it names, once each (the accounting of disclosures
    reads those rows)."""
    clinic = server.new_clinic()
    a_id, a_token = server.device_token(clinic)
    _, b_token = server.device_token(clinic)
    signer = server.signer(a_id)
    people = [
        RecordDocument.create(
            Patient,
            {"given_name": f"P{i}", "family_name": NAME, "birth_date": date(1950, 1, 2)},
            device_id=a_id,
            clinic_id=clinic,
            signer=signer,
        )
        for i in range(40)
    ]
    notes = [  # a second record of some patients: named once in each event
        RecordDocument.create(
            ClinicalNote,
            {"patient_id": person.id, "author": "nurse", "text": "granulating well"},
            device_id=a_id,
            clinic_id=clinic,
            signer=signer,
        )
        for person in people[:10]
    ]
    message = encode(
        SyncMessage({}, tuple(Entry(EntryKind.DOC, d.id, d.save()) for d in people + notes))
    )
    with server.http(a_token) as a, server.http(b_token) as b:
        assert a.post("/v1/sync/push", content=message, headers=SYNC).status_code == 200
        assert b.get("/v1/sync/pull", params={"cursor": 0}).status_code == 200
    with server.db.read() as session:
        events = {
            e.action: e
            for e in session.scalars(select(AuditEvent).where(AuditEvent.clinic_id == clinic))
        }
        rows = {
            action: list(
                session.scalars(
                    select(AuditPatient.patient_id).where(AuditPatient.event_id == event.id)
                )
            )
            for action, event in events.items()
        }
    everyone = sorted(p.id for p in people)
    for action in ("sync-push", "sync-pull"):
        assert sorted(rows[action]) == everyone
        assert sorted((events[action].patients or "").split(",")) == everyone


def test_search_filters_and_pages(server: Any) -> None:
    world = World(server).setup()
    clinician = world.user("clinician", world.clinic_a)
    staff = world.user("staff", world.clinic_a)
    admin = world.user("admin", None)
    staff_b = world.user("staff", world.clinic_b)
    one, two = world.patient(world.clinic_a), world.patient(world.clinic_a)
    with world.client(clinician) as c:
        for patient in (one, two, one):
            assert c.get(f"/v1/patients/{patient}").status_code == 200
    with world.client(staff) as s:
        by_user = s.get("/v1/audit/events", params={"user_id": clinician.id}).json()
        assert [e["actor_id"] for e in by_user["items"]] == [clinician.id] * 3
        seqs = [e["seq"] for e in by_user["items"]]
        assert seqs == sorted(seqs, reverse=True) and by_user["next_cursor"] is None

        by_patient = s.get("/v1/audit/events", params={"patient_id": one}).json()["items"]
        assert len(by_patient) == 2 and {e["patients"] for e in by_patient} == {one}
        both = {"patient_id": two, "user_id": clinician.id}
        assert len(s.get("/v1/audit/events", params=both).json()["items"]) == 1
        assert s.get("/v1/audit/events", params={"device_id": clinician.id}).json()["items"] == []

        walked: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"user_id": clinician.id, "limit": 1}
            if cursor is not None:
                params["cursor"] = cursor
            page = s.get("/v1/audit/events", params=params).json()
            walked += [e["seq"] for e in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert walked == seqs

        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert s.get("/v1/audit/events", params={"since": future}).json()["items"] == []
        assert len(s.get("/v1/audit/events", params={"until": future}).json()["items"]) >= 3
    with world.client(admin) as a:
        assert len(a.get("/v1/audit/events", params={"user_id": clinician.id}).json()["items"]) == 3
    with world.client(staff_b) as o:
        assert o.get("/v1/audit/events", params={"user_id": clinician.id}).json()["items"] == []
    with world.client(clinician) as c:
        assert c.get("/v1/audit/events").status_code == 403


def test_disclosures_include_the_events_devices_pushed(server: Any) -> None:
    world = World(server).setup()
    staff = world.user("staff", world.clinic_a)
    nurse = world.user("clinician", world.clinic_a)
    mine, theirs = world.patient(world.clinic_a), world.patient(world.clinic_a)
    device_id, token = server.device_token(world.clinic_a)
    previous = GENESIS
    pushed = []
    for seq, patients in enumerate(([mine], [theirs], [mine, theirs], []), start=1):
        canonical = canonical_json(
            {
                "v": 1,
                "seq": seq,
                "at": f"2026-05-0{seq}T10:00:00.000000Z",
                "device_id": device_id,
                "user": nurse.id,
                "operation": "R",
                "action": "read",
                "collection": "patients",
                "records": patients,
                "patients": patients,
                "outcome": "ok",
                "purpose": "treatment",
            }
        )
        previous = chain_hash(previous, canonical)
        pushed.append(
            {
                "seq": seq,
                "canonical": base64.b64encode(canonical).decode(),
                "hash": previous.hex(),
            }
        )
    with server.http(token) as device:
        answer = device.post("/v1/audit/device-events", json={"events": pushed})
        assert answer.status_code == 200, answer.text
    with world.client(staff) as s:
        rows = s.get("/v1/audit/disclosures", params={"patient_id": mine}).json()
        from_devices = [r for r in rows if r["source"] == "device"]
        assert [r["seq"] for r in from_devices] == [1, 3]
        assert {(r["device_id"], r["actor_id"], r["kind"]) for r in from_devices} == {
            (device_id, nurse.id, "read")
        }
        assert from_devices[0]["at"].startswith("2026-05-01T10:00:00")
        window = {"patient_id": mine, "since": "2026-05-02T00:00:00Z"}
        later = [r for r in s.get("/v1/audit/disclosures", params=window).json()]
        assert [r["seq"] for r in later if r["source"] == "device"] == [3]
        as_csv = s.get("/v1/audit/disclosures", params={"patient_id": mine, "format": "csv"})
        assert [r["source"] for r in csv.DictReader(io.StringIO(as_csv.text))] == [
            r["source"] for r in rows
        ]
