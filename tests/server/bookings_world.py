"""A clinic set up for booking tests on a live server: a directory (two wound-care
doctors, one nurse, caregivers), weekly hours in Europe/Berlin, and tablets that
write patients and intents and push and pull them over HTTP like the SDK does."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from crdt import (
    Decision,
    Entry,
    EntryKind,
    Intent,
    IntentKind,
    Patient,
    RecordDocument,
    SyncMessage,
    decision_id,
    decode_message,
    encode_message,
    new_record_id,
)
from sync_server.bookings.directory import (
    add_provider,
    add_service,
    set_clinic_timezone,
    set_weekly_hours,
)
from sync_server.bookings.reference import publish_reference
from sync_server.identity.principals import Principal

MEDIA = {"content-type": "application/vnd.coherency.sync"}
BERLIN = ZoneInfo("Europe/Berlin")


def next_monday(after_days: int = 7) -> date:
    """A Monday at least `after_days` from today (bookings must be in the future)."""
    day = date.today() + timedelta(days=after_days)
    return day + timedelta(days=(7 - day.weekday()) % 7)


def local(day: date, hh: int, mm: int = 0) -> datetime:
    """`day` at hh:mm in Berlin, as an aware datetime."""
    return datetime.combine(day, time(hh, mm), tzinfo=BERLIN)


@dataclass
class Tablet:
    """An enrolled device of the clinic with its own HTTP client."""

    device_id: str
    http: httpx.Client
    world: BookingWorld
    cursor: int = 0
    held: dict[str, bytes] = field(default_factory=dict)

    def patient(self, family: str = "Okafor") -> RecordDocument:
        return RecordDocument.create(
            Patient,
            {"given_name": "Ada", "family_name": family, "birth_date": date(1950, 3, 1)},
            device_id=self.device_id,
            clinic_id=self.world.clinic_id,
            signer=self.world.server.signer(self.device_id),
        )

    def intent(
        self,
        kind: IntentKind,
        *,
        patient_id: str | None = None,
        subject_id: str | None = None,
        **details: Any,
    ) -> RecordDocument:
        for name, value in details.items():
            if isinstance(value, datetime):
                details[name] = value.isoformat()
        return RecordDocument.create(
            Intent,
            {
                "kind": kind,
                "patient_id": patient_id,
                "subject_id": subject_id,
                "details": details,
            },
            device_id=self.device_id,
            clinic_id=self.world.clinic_id,
            record_id=new_record_id(),
            signer=self.world.server.signer(self.device_id),
        )

    def push(self, *documents: RecordDocument, raw: bytes | None = None) -> dict[str, Any]:
        body = raw if raw is not None else wire(*documents)
        response = self.http.post("/v1/sync/push", content=body, headers=MEDIA)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def pull(self) -> dict[str, bytes]:
        """Pull everything new (all pages); returns what this pull brought."""
        got: dict[str, bytes] = {}
        while True:
            response = self.http.get("/v1/sync/pull", params={"cursor": self.cursor})
            assert response.status_code == 200, response.text
            message = decode_message(response.content)
            for entry in message.entries:
                got[entry.doc_id] = entry.payload
            self.cursor = int(message.control["cursor"])
            if not message.control["more"]:
                break
        self.held.update(got)
        return got

    def sync(self, *documents: RecordDocument) -> dict[str, Any]:
        """Push then pull, as the SDK's sync does."""
        answer = self.push(*documents)
        self.pull()
        return answer

    def decision(self, intent_id: str) -> Decision | None:
        data = self.held.get(decision_id(intent_id))
        if data is None:
            return None
        record = RecordDocument.load(data).read()
        assert isinstance(record, Decision)
        return record


def wire(*documents: RecordDocument) -> bytes:
    return encode_message(
        SyncMessage({}, tuple(Entry(EntryKind.DOC, d.id, d.save()) for d in documents))
    )


@dataclass
class BookingWorld:
    """One clinic of the test organisation with its booking directory."""

    server: Any
    clinic_id: str
    staff: Principal
    doctors: list[str]
    nurse: str
    caregivers: list[str]
    monday: date
    review: str  # service codes
    dressing: str
    north: str  # caregiver areas: both caregivers serve the north, the first the south
    south: str
    tablets: list[Tablet] = field(default_factory=list)

    def tablet(self) -> Tablet:
        device_id, token = self.server.device_token(self.clinic_id)
        tablet = Tablet(device_id, self.server.http(token), self)
        self.tablets.append(tablet)
        return tablet

    def close(self) -> None:
        for tablet in self.tablets:
            tablet.http.close()

    def publish(self) -> None:
        with self.server.db.write() as session:
            publish_reference(
                session=session,
                clinic_ids=[self.clinic_id],
                signer=self.server.server_signer(),
                now=datetime.now(UTC),
            )


def build_world(server: Any, *, doctors: int = 2, caregivers: int = 2) -> BookingWorld:
    """A fresh clinic in Berlin: `doctors` wound-care doctors and a nurse working
    Monday to Friday 09:00-12:00 (30-minute wound reviews, 15-minute dressings),
    caregivers doing wound dressing and compression in two areas, 08:00-16:00."""
    clinic_id = server.new_clinic()
    staff = Principal("user", str(uuid.uuid4()), None, server.organisation_id, "admin")
    suffix = uuid.uuid4().hex[:6]
    review, dressing = f"review-{suffix}", f"dressing-{suffix}"
    with server.db.write() as session:
        set_clinic_timezone(
            session=session, principal=staff, clinic_id=clinic_id, timezone="Europe/Berlin"
        )
        add_service(
            session=session,
            principal=staff,
            code=review,
            name="Wound review",
            duration_minutes=30,
            specialisation="wound care",
        )
        add_service(
            session=session,
            principal=staff,
            code=dressing,
            name="Dressing change",
            duration_minutes=15,
        )
        doctor_ids = []
        for n in range(doctors):
            doctor = add_provider(
                session=session,
                principal=staff,
                name=f"Dr Doctor {n}",
                kind="doctor",
                clinic_id=clinic_id,
                specialisations=["wound care"],
                services=[review, dressing],
            )
            doctor_ids.append(doctor.id)
        nurse = add_provider(
            session=session,
            principal=staff,
            name="Nurse Nia",
            kind="nurse",
            clinic_id=clinic_id,
            services=[dressing],
        )
        caregiver_ids = []
        for n in range(caregivers):
            caregiver = add_provider(
                session=session,
                principal=staff,
                name=f"Carer {n}",
                kind="caregiver",
                clinic_id=None,
                skills=["wound dressing", "compression"],
                areas=[f"north-{suffix}", f"south-{suffix}"] if n == 0 else [f"north-{suffix}"],
                languages=["en", "de"] if n == 0 else ["en"],
            )
            caregiver_ids.append(caregiver.id)
        for provider in [*doctor_ids, nurse.id]:
            set_weekly_hours(
                session=session,
                principal=staff,
                provider_id=provider,
                hours=[(d, "09:00", "12:00") for d in range(5)],
            )
        for provider in caregiver_ids:
            set_weekly_hours(
                session=session,
                principal=staff,
                provider_id=provider,
                hours=[(d, "08:00", "16:00") for d in range(5)],
                timezone="Europe/Berlin",
            )
    return BookingWorld(
        server,
        clinic_id,
        staff,
        doctor_ids,
        nurse.id,
        caregiver_ids,
        next_monday(),
        review,
        dressing,
        f"north-{suffix}",
        f"south-{suffix}",
    )
