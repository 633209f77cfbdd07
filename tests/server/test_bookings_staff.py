"""Bookings as staff handle them, over real HTTP on SQLite and PostgreSQL: the
directory and schedules (roles, scoping, round trips, published reference data), free
slots, staff actions and refused transitions, quality flags and caregiver ratings,
iCalendar feeds, and ``coherency server seed-demo``."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import icalendar
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from cli.main import cli
from crdt import DecisionStatus, Directory, IntentKind, RecordDocument, directory_id
from sync_server.audit.tables import AuditEvent
from sync_server.identity.tables import User
from sync_server.identity.tenancy import ensure_clinic, ensure_organisation
from sync_server.identity.users import create_user
from sync_server.sync.tables import Document

from .bookings_world import BookingWorld, build_world, local, next_monday

PASSWORD = "correct horse battery staple"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def user(server: Any, role: str, organisation_id: str, clinic_id: str | None) -> User:
    with server.db.write() as session:
        made, _ = create_user(
            session=session,
            username=unique(role),
            password=PASSWORD,
            role=role,
            organisation_id=organisation_id,
            clinic_id=clinic_id,
            with_totp=False,
        )
    return made


def client(server: Any, account: User) -> httpx.Client:
    token, _ = server.app.state.signing_key.issue_access_token(
        subject=account.id,
        kind="user",
        clinic_id=account.clinic_id,
        organisation_id=account.organisation_id,
        role=account.role,
        ttl=timedelta(minutes=10),
    )
    http: httpx.Client = server.http(token)
    return http


@dataclass
class Org:
    """A fresh organisation with clinics A and B, its staff, and a stranger."""

    server: Any
    organisation_id: str = ""
    clinic_a: str = ""
    clinic_b: str = ""
    http: dict[str, httpx.Client] = field(default_factory=dict)

    def setup(self) -> Org:
        with self.server.db.write() as session:
            self.organisation_id = ensure_organisation(session=session, name=unique("org")).id
            self.clinic_a = ensure_clinic(
                session=session, name=unique("a"), organisation_id=self.organisation_id
            ).id
            self.clinic_b = ensure_clinic(
                session=session, name=unique("b"), organisation_id=self.organisation_id
            ).id
            other = ensure_organisation(session=session, name=unique("other")).id
        org = self.organisation_id
        self.http = {
            "admin": client(self.server, user(self.server, "admin", org, None)),
            "staff_a": client(self.server, user(self.server, "staff", org, self.clinic_a)),
            "clinician_a": client(self.server, user(self.server, "clinician", org, self.clinic_a)),
            "staff_b": client(self.server, user(self.server, "staff", org, self.clinic_b)),
            "stranger": client(self.server, user(self.server, "admin", other, None)),
        }
        _, device = self.server.device_token(self.clinic_a)
        self.http["device"] = self.server.http(device)
        return self

    def close(self) -> None:
        for http in self.http.values():
            http.close()


@pytest.fixture
def org(server: Any) -> Iterator[Org]:
    made = Org(server).setup()
    yield made
    made.close()


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["error"]["code"])


def directory_of(server: Any, clinic_id: str) -> Directory:
    with server.db.read() as session:
        data = session.scalar(select(Document.data).where(Document.id == directory_id(clinic_id)))
    assert data is not None, "no directory record published"
    record = RecordDocument.load(bytes(data)).read()
    assert isinstance(record, Directory)
    return record


# ---------------------------------------------------------------- directory
def test_directory_round_trip_roles_and_scope(org: Org) -> None:
    staff, http = org.http["staff_a"], org.http
    zone = ok(
        staff.put(
            f"/v1/directory/clinics/{org.clinic_a}/timezone", json={"timezone": "Europe/Berlin"}
        )
    )
    assert zone["timezone"] == "Europe/Berlin"
    assert error_code(
        staff.put(f"/v1/directory/clinics/{org.clinic_a}/timezone", json={"timezone": "Mars/Base"}),
        400,
    )
    # Clinic B is out of staff A's scope: 404, like a missing clinic.
    assert (
        error_code(
            staff.put(f"/v1/directory/clinics/{org.clinic_b}/timezone", json={"timezone": "UTC"}),
            404,
        )
        == "not_found"
    )

    service = {"code": unique("review"), "name": "Wound review", "duration_minutes": 30}
    ok(staff.post("/v1/directory/services", json=service), 201)
    assert error_code(staff.post("/v1/directory/services", json=service), 409) == "service_exists"
    assert service["code"] in {s["code"] for s in ok(staff.get("/v1/directory/services"))}

    doctor = ok(
        staff.post(
            "/v1/directory/providers",
            json={
                "name": "Dr Vogt",
                "kind": "doctor",
                "clinic_id": org.clinic_a,
                "specialisations": ["wound care"],
                "services": [service["code"]],
            },
        ),
        201,
    )
    unknown = {"name": "Dr X", "kind": "doctor", "clinic_id": org.clinic_a, "services": ["nope"]}
    assert error_code(staff.post("/v1/directory/providers", json=unknown), 400)
    nurse_without_clinic = {"name": "Nurse Y", "kind": "nurse"}
    assert error_code(staff.post("/v1/directory/providers", json=nurse_without_clinic), 400)
    carer = ok(
        staff.post(
            "/v1/directory/providers",
            json={
                "name": "Ali Kaya",
                "kind": "caregiver",
                "skills": ["NPWT", "compression"],
                "areas": ["mitte"],
                "languages": ["de", "tr"],
            },
        ),
        201,
    )
    assert carer["clinic_id"] is None and carer["skills"] == ["NPWT", "compression"]

    # Filters.
    listed = ok(staff.get("/v1/directory/providers"))
    assert {p["id"] for p in listed} == {doctor["id"], carer["id"]}
    assert [
        p["id"] for p in ok(staff.get("/v1/directory/providers", params={"kind": "doctor"}))
    ] == [doctor["id"]]
    by_skill = ok(staff.get("/v1/directory/providers", params={"skill": "NPWT", "area": "mitte"}))
    assert [p["id"] for p in by_skill] == [carer["id"]]
    assert ok(staff.get("/v1/directory/providers", params={"skill": "wound dressing"})) == []

    # Weekly hours: PUT replaces, GET reads back.
    week = {"hours": [{"weekday": d, "start": "09:00", "end": "12:00"} for d in range(5)]}
    put = ok(staff.put(f"/v1/directory/providers/{doctor['id']}/hours", json=week))
    assert put["timezone"] == "Europe/Berlin" and len(put["hours"]) == 5
    got = ok(staff.get(f"/v1/directory/providers/{doctor['id']}/hours"))
    assert got["hours"] == week["hours"]
    bad = {"hours": [{"weekday": 0, "start": "12:00", "end": "09:00"}]}
    assert error_code(staff.put(f"/v1/directory/providers/{doctor['id']}/hours", json=bad), 400)

    # The published directory follows, in every clinic of the organisation.
    for clinic in (org.clinic_a, org.clinic_b):
        names = {p.name for p in directory_of(org.server, clinic).providers}
        assert {"Dr Vogt", "Ali Kaya"} <= names

    # Update and deactivate.
    renamed = ok(
        staff.patch(f"/v1/directory/providers/{doctor['id']}", json={"name": "Dr Lena Vogt"})
    )
    assert renamed["name"] == "Dr Lena Vogt"
    gone = ok(staff.patch(f"/v1/directory/providers/{doctor['id']}", json={"active": False}))
    assert gone["active"] is False
    assert doctor["id"] not in {p["id"] for p in ok(staff.get("/v1/directory/providers"))}
    everyone = ok(staff.get("/v1/directory/providers", params={"include_inactive": True}))
    assert doctor["id"] in {p["id"] for p in everyone}
    assert "Dr Lena Vogt" not in {p.name for p in directory_of(org.server, org.clinic_a).providers}

    # Roles: clinicians read, devices are refused, other clinics and organisations see 404.
    clinician = http["clinician_a"]
    assert ok(clinician.get(f"/v1/directory/providers/{carer['id']}"))["id"] == carer["id"]
    assert ok(clinician.get(f"/v1/directory/providers/{doctor['id']}/hours"))
    assert error_code(clinician.post("/v1/directory/services", json=service), 403) == "forbidden"
    assert error_code(
        clinician.patch(f"/v1/directory/providers/{carer['id']}", json={"active": False}), 403
    )
    assert error_code(http["device"].get("/v1/directory/providers"), 403) == "staff_only"
    assert error_code(http["staff_b"].get(f"/v1/directory/providers/{doctor['id']}"), 404)
    assert error_code(
        http["staff_b"].patch(f"/v1/directory/providers/{doctor['id']}", json={"name": "x"}), 404
    )
    # ... though clinic B's staff see the organisation's caregivers.
    assert ok(http["staff_b"].get(f"/v1/directory/providers/{carer['id']}"))
    assert error_code(http["stranger"].get(f"/v1/directory/providers/{carer['id']}"), 404)
    assert ok(http["stranger"].get("/v1/directory/providers")) == []

    with org.server.db.read() as session:
        actions = set(
            session.scalars(
                select(AuditEvent.action).where(AuditEvent.target == doctor["id"])
            ).all()
        )
    assert {"provider-create", "provider-update", "weekly-hours-set"} <= actions


def test_holidays_close_free_slots_and_removing_them_opens_them_again(org: Org) -> None:
    staff = org.http["staff_a"]
    ok(
        staff.put(
            f"/v1/directory/clinics/{org.clinic_a}/timezone", json={"timezone": "Europe/Berlin"}
        )
    )
    code = unique("dress")
    ok(
        staff.post(
            "/v1/directory/services",
            json={"code": code, "name": "Dressing", "duration_minutes": 15},
        ),
        201,
    )
    nurse = ok(
        staff.post(
            "/v1/directory/providers",
            json={
                "name": "Nurse Nia",
                "kind": "nurse",
                "clinic_id": org.clinic_a,
                "services": [code],
            },
        ),
        201,
    )
    week = {"hours": [{"weekday": d, "start": "09:00", "end": "10:00"} for d in range(5)]}
    ok(staff.put(f"/v1/directory/providers/{nurse['id']}/hours", json=week))
    monday = next_monday()
    query = {"clinic_id": org.clinic_a, "service": code, "from": str(monday), "to": str(monday)}
    slots = ok(staff.get("/v1/slots", params=query))
    assert [datetime.fromisoformat(s["starts_at"]) for s in slots] == [
        local(monday, 9, m) for m in (0, 15, 30, 45)
    ]
    assert {s["provider_id"] for s in slots} == {nurse["id"]}

    holiday = ok(
        staff.post(
            "/v1/directory/exceptions",
            json={"day": str(monday), "kind": "holiday", "clinic_id": org.clinic_a, "note": "fête"},
        ),
        201,
    )
    assert ok(staff.get("/v1/slots", params=query)) == []
    listed = ok(
        staff.get(
            "/v1/directory/exceptions",
            params={
                "from": str(monday - timedelta(days=1)),
                "to": str(monday),
                "clinic_id": org.clinic_a,
            },
        )
    )
    assert [e["id"] for e in listed] == [holiday["id"]]
    assert error_code(org.http["staff_b"].delete(f"/v1/directory/exceptions/{holiday['id']}"), 404)
    assert error_code(
        org.http["clinician_a"].delete(f"/v1/directory/exceptions/{holiday['id']}"), 403
    )
    bad = {
        "day": str(monday),
        "kind": "holiday",
        "clinic_id": org.clinic_a,
        "start": "09:00",
        "end": "10:00",
    }
    assert error_code(staff.post("/v1/directory/exceptions", json=bad), 400)
    assert staff.delete(f"/v1/directory/exceptions/{holiday['id']}").status_code == 204
    assert error_code(staff.delete(f"/v1/directory/exceptions/{holiday['id']}"), 404)
    assert len(ok(staff.get("/v1/slots", params=query))) == 4
    too_long = {**query, "to": str(monday + timedelta(days=40))}
    assert error_code(staff.get("/v1/slots", params=too_long), 400)
    assert error_code(staff.get("/v1/slots", params={**query, "service": "nope"}), 404)


# ---------------------------------------------------------------- bookings
@dataclass
class Desk:
    """A booking world (shared test organisation) and its staff's HTTP clients."""

    world: BookingWorld
    staff: httpx.Client
    clinician: httpx.Client
    other_clinic: httpx.Client


@pytest.fixture
def desk(server: Any) -> Iterator[Desk]:
    world = build_world(server)
    other = server.new_clinic()
    made = Desk(
        world,
        client(server, user(server, "staff", server.organisation_id, world.clinic_id)),
        client(server, user(server, "clinician", server.organisation_id, world.clinic_id)),
        client(server, user(server, "staff", server.organisation_id, other)),
    )
    yield made
    for http in (made.staff, made.clinician, made.other_clinic):
        http.close()
    world.close()


def book(world: BookingWorld, when: datetime, provider: str) -> tuple[Any, str]:
    tablet = world.tablet()
    patient = tablet.patient("Okafor")
    intent = tablet.intent(
        IntentKind.APPOINTMENT_REQUEST,
        patient_id=patient.id,
        service=world.review,
        starts_at=when,
        provider_id=provider,
    )
    tablet.sync(patient, intent)
    decision = tablet.decision(intent.id)
    assert decision is not None and decision.status is DecisionStatus.ACCEPTED
    assert decision.outcome is not None
    return tablet, str(decision.outcome["booking_id"])


def events_of(http: httpx.Client, path: str) -> list[icalendar.Event]:
    response = http.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/calendar")
    calendar = icalendar.Calendar.from_ical(response.content)
    return list(calendar.walk("VEVENT"))


def test_staff_see_bookings_act_on_them_and_calendar_feeds_follow(desk: Desk) -> None:
    world, staff = desk.world, desk.staff
    doctor = world.doctors[0]
    tablet, booking_id = book(world, local(world.monday, 9), doctor)
    patient_id = ok(staff.get(f"/v1/bookings/{booking_id}"))["patient_id"]

    # Free slots no longer offer the booked one.
    query = {
        "clinic_id": world.clinic_id,
        "service": world.review,
        "from": str(world.monday),
        "to": str(world.monday),
        "provider_id": doctor,
    }
    starts = {
        datetime.fromisoformat(s["starts_at"]) for s in ok(staff.get("/v1/slots", params=query))
    }
    assert local(world.monday, 9) not in starts and local(world.monday, 9, 30) in starts

    listed = ok(
        staff.get(
            "/v1/bookings",
            params={
                "clinic_id": world.clinic_id,
                "from": str(world.monday),
                "to": str(world.monday),
            },
        )
    )
    assert [b["id"] for b in listed] == [booking_id]
    assert ok(staff.get("/v1/bookings", params={"patient_id": patient_id}))[0]["id"] == booking_id
    assert ok(staff.get("/v1/bookings", params={"provider_id": doctor, "state": "confirmed"})) == []
    assert error_code(staff.get("/v1/bookings", params={"state": "lost"}), 400)
    assert ok(desk.clinician.get(f"/v1/bookings/{booking_id}"))["state"] == "booked"
    assert error_code(desk.other_clinic.get(f"/v1/bookings/{booking_id}"), 404)
    assert ok(desk.other_clinic.get("/v1/bookings", params={"patient_id": patient_id})) == []

    # Calendar feeds: created by staff, the URL shown once.
    assert error_code(
        desk.clinician.post(
            "/v1/calendar-feeds", json={"subject_kind": "provider", "subject_id": doctor}
        ),
        403,
    )
    assert error_code(
        desk.other_clinic.post(
            "/v1/calendar-feeds", json={"subject_kind": "provider", "subject_id": doctor}
        ),
        404,
    )
    feed = ok(
        staff.post("/v1/calendar-feeds", json={"subject_kind": "provider", "subject_id": doctor}),
        201,
    )
    mine = ok(
        staff.post(
            "/v1/calendar-feeds", json={"subject_kind": "patient", "subject_id": patient_id}
        ),
        201,
    )
    assert feed["url"].endswith(feed["path"]) and feed["path"].endswith(".ics")
    assert "token" not in ok(staff.get("/v1/calendar-feeds"))[0]
    anonymous = world.server.http()
    try:
        (event,) = events_of(anonymous, feed["path"])
        assert str(event["uid"]) == f"{booking_id}@coherency"
        assert event["dtstart"].dt == local(world.monday, 9)
        assert event["dtstart"].dt.utcoffset() == timedelta(0)
        assert str(event["status"]) == "TENTATIVE"
        assert "Okafor" not in feed_text(anonymous, feed["path"])
        assert "Ada" not in feed_text(anonymous, mine["path"])
        first_sequence = int(event["sequence"])
        assert [str(e["uid"]) for e in events_of(anonymous, mine["path"])] == [str(event["uid"])]

        # Staff confirm: the event says so; confirming twice is a refused transition.
        assert (
            ok(staff.post(f"/v1/bookings/{booking_id}/state", json={"state": "confirmed"}))["state"]
            == "confirmed"
        )
        assert (
            error_code(
                staff.post(f"/v1/bookings/{booking_id}/state", json={"state": "confirmed"}), 409
            )
            == "bad_transition"
        )
        assert error_code(
            staff.post(f"/v1/bookings/{booking_id}/state", json={"state": "en_route"}), 409
        )
        assert error_code(
            desk.clinician.post(f"/v1/bookings/{booking_id}/state", json={"state": "cancelled"}),
            403,
        )
        assert error_code(
            desk.other_clinic.post(f"/v1/bookings/{booking_id}/state", json={"state": "cancelled"}),
            404,
        )
        (event,) = events_of(anonymous, feed["path"])
        assert str(event["status"]) == "CONFIRMED"

        # The patient reschedules from the tablet: same UID, new time, higher sequence.
        move = tablet.intent(
            IntentKind.APPOINTMENT_RESCHEDULE,
            patient_id=patient_id,
            subject_id=booking_id,
            starts_at=local(world.monday, 11),
        )
        tablet.sync(move)
        assert tablet.decision(move.id).status is DecisionStatus.ACCEPTED  # type: ignore[union-attr]
        (event,) = events_of(anonymous, feed["path"])
        assert str(event["uid"]) == f"{booking_id}@coherency"
        assert event["dtstart"].dt == local(world.monday, 11)
        assert int(event["sequence"]) >= first_sequence
        assert event["last-modified"].dt >= event["created"].dt

        # Staff cancel with a reason: the slot is free again, the event cancelled.
        cancelled = ok(
            staff.post(
                f"/v1/bookings/{booking_id}/state",
                json={"state": "cancelled", "reason": "doctor ill"},
            )
        )
        assert cancelled["state"] == "cancelled" and cancelled["cancel_reason"] == "doctor ill"
        starts = {
            datetime.fromisoformat(s["starts_at"]) for s in ok(staff.get("/v1/slots", params=query))
        }
        assert local(world.monday, 11) in starts
        (event,) = events_of(anonymous, feed["path"])
        assert str(event["status"]) == "CANCELLED"

        # Revoked and unknown feeds answer 404.
        assert ok(staff.delete(f"/v1/calendar-feeds/{feed['id']}"))["revoked_at"] is not None
        assert error_code(anonymous.get(feed["path"]), 404) == "not_found"
        assert error_code(anonymous.get("/v1/calendar/not-a-token.ics"), 404)
        assert len(events_of(anonymous, mine["path"])) == 1  # the patient's feed lives on
    finally:
        anonymous.close()

    with world.server.db.read() as session:
        actions = set(
            session.scalars(
                select(AuditEvent.action).where(AuditEvent.clinic_id == world.clinic_id)
            ).all()
        )
    assert {
        "booking-state",
        "calendar-feed-create",
        "calendar-feed-read",
        "calendar-feed-revoke",
        "read",
    } <= actions


def feed_text(http: httpx.Client, path: str) -> str:
    response = http.get(path)
    assert response.status_code == 200, response.text
    return response.text


def test_visits_progress_flags_and_ratings(desk: Desk) -> None:
    world, staff = desk.world, desk.staff
    tablet = world.tablet()
    patient = tablet.patient()
    visits = [
        tablet.intent(
            IntentKind.VISIT_REQUEST,
            patient_id=patient.id,
            skill="compression",
            area=world.north,
            starts_at=local(world.monday, hour),
            caregiver_id=world.caregivers[0],
        )
        for hour in (8, 10)
    ]
    tablet.sync(patient, *visits)
    ids = []
    for visit in visits:
        decided = tablet.decision(visit.id)
        assert decided is not None and decided.status is DecisionStatus.ACCEPTED, decided
        assert decided.outcome is not None
        ids.append(str(decided.outcome["booking_id"]))
    done, missed = ids

    for state in ("en_route", "started", "completed"):
        assert ok(staff.post(f"/v1/bookings/{done}/state", json={"state": state}))["state"] == state
    assert error_code(staff.post(f"/v1/bookings/{done}/state", json={"state": "started"}), 409)
    assert error_code(staff.post(f"/v1/bookings/{missed}/state", json={"state": "no_show"}), 409)
    ok(
        staff.post(
            f"/v1/bookings/{missed}/state", json={"state": "missed", "reason": "car broke down"}
        )
    )

    review = tablet.intent(
        IntentKind.VISIT_REVIEW, patient_id=patient.id, subject_id=done, rating=2
    )
    tablet.sync(review)
    assert tablet.decision(review.id).status is DecisionStatus.ACCEPTED  # type: ignore[union-attr]

    flags = ok(staff.get("/v1/quality-flags", params={"provider_id": world.caregivers[0]}))
    assert {f["booking_id"] for f in flags} == {done, missed}
    assert ok(desk.clinician.get("/v1/quality-flags", params={"provider_id": world.caregivers[0]}))
    assert (
        ok(desk.other_clinic.get("/v1/quality-flags", params={"provider_id": world.caregivers[0]}))
        == []
    )
    flag = next(f for f in flags if f["booking_id"] == missed)
    assert error_code(desk.clinician.post(f"/v1/quality-flags/{flag['id']}/resolve"), 403)
    assert error_code(desk.other_clinic.post(f"/v1/quality-flags/{flag['id']}/resolve"), 404)
    resolved = ok(staff.post(f"/v1/quality-flags/{flag['id']}/resolve"))
    assert resolved["resolved_at"] is not None
    assert (
        ok(staff.post(f"/v1/quality-flags/{flag['id']}/resolve"))["resolved_at"]
        == resolved["resolved_at"]
    )
    left = ok(staff.get("/v1/quality-flags", params={"provider_id": world.caregivers[0]}))
    assert [f["booking_id"] for f in left] == [done]

    rating = ok(staff.get(f"/v1/caregivers/{world.caregivers[0]}/rating"))
    assert rating == {
        "provider_id": world.caregivers[0],
        "reviews": 1,
        "average": 2.0,
        "low_ratings": 1,
        "completed_visits": 1,
        "missed_visits": 1,
    }
    assert ok(desk.clinician.get(f"/v1/caregivers/{world.caregivers[0]}/rating"))["reviews"] == 1
    assert ok(desk.other_clinic.get(f"/v1/caregivers/{world.caregivers[0]}/rating"))["reviews"] == 0
    assert error_code(staff.get(f"/v1/caregivers/{world.doctors[0]}/rating"), 404)


# ---------------------------------------------------------------- seed-demo
def test_seed_demo_is_idempotent(tmp_path: Path) -> None:
    data = tmp_path / "server"
    runner = CliRunner()
    migrated = runner.invoke(cli, ["server", "migrate", "--data-dir", str(data), "--json"])
    assert migrated.exit_code == 0, migrated.output
    args = ["server", "seed-demo", "--data-dir", str(data), "--organisation", "St Hildegard"]
    first = runner.invoke(cli, [*args, "--json"])
    assert first.exit_code == 0, first.output
    seeded = json.loads(first.output)
    assert set(seeded["clinics"]) == {"Wound Clinic Berlin", "Wound Clinic Lisbon"}
    assert seeded["providers"] >= 8 and seeded["services"] >= 5
    assert seeded["created"] > 0 and seeded["records_published"] > 0
    again = runner.invoke(cli, [*args, "--json"])
    assert again.exit_code == 0, again.output
    repeated = json.loads(again.output)
    assert repeated["clinics"] == seeded["clinics"]
    assert (repeated["created"], repeated["updated"], repeated["records_published"]) == (0, 0, 0)
    human = runner.invoke(cli, args)
    assert human.exit_code == 0 and "Wound Clinic Lisbon" in human.output

    from sync_server import Settings
    from sync_server.bookings.tables import Provider, ScheduleException
    from sync_server.db import open_database
    from sync_server.identity.tables import Clinic

    with (
        open_database(Settings(data_dir=data), must_exist=True) as database,
        database.read() as session,
    ):
        providers = session.scalars(select(Provider)).all()
        assert len(providers) == seeded["providers"]
        caregivers = [p for p in providers if p.kind == "caregiver"]
        skills = {s for p in caregivers for s in json.loads(p.skills)}
        assert {"wound dressing", "compression", "NPWT"} <= skills
        zones = {c.name: c.timezone for c in session.scalars(select(Clinic))}
        assert zones == {
            "Wound Clinic Berlin": "Europe/Berlin",
            "Wound Clinic Lisbon": "Europe/Lisbon",
        }
        assert len(session.scalars(select(ScheduleException)).all()) == 2
    missing = runner.invoke(cli, ["server", "seed-demo", "--data-dir", str(tmp_path / "none")])
    assert missing.exit_code != 0 and missing.output.count("\n") <= 2
