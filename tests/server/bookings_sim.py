"""A seeded simulation of devices booking through the server.

One seed is one clinic (of an organisation of its own) with two doctors, a nurse and
a caregiver, and a handful of devices that go offline and online and, in an order
`random.Random(seed)` picks, write appointment requests, reschedules and cancels
(only of bookings they learned from decisions), caregiver visit requests, and sync.
Deliveries go wrong the ways they do in the field: pushes carry already-pushed
documents again (retries), a push is applied but its answer lost (a cut: the device
does not advance and sends it all again later), pushes are split and shuffled so an
intent can arrive before the patient it names, and intents travel through another
device (relays). After a final sync of every device, `check` asserts:

- no two active bookings of a provider overlap (SQL), and each active booking holds
  exactly its own steps, an inactive one none;
- every intent has exactly one decision: one `intent_decisions` row and one decision
  document, and at most one booking;
- every device holds the decisions of all the intents it wrote.

A `Link` carries pushes and pulls: `ServiceLink` calls the sync service functions in
process (fast: hundreds of seeds a minute), `HttpLink` goes over a live server.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, aliased

from crdt import (
    Decision,
    DecisionStatus,
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
from edge_sdk import DeviceIdentity
from sync_server import Settings
from sync_server.bookings.deciders import register
from sync_server.bookings.directory import (
    add_provider,
    add_service,
    set_clinic_timezone,
    set_weekly_hours,
)
from sync_server.bookings.tables import ACTIVE_STATES, Booking, BookingClaim
from sync_server.db import Database
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic, Device, Organisation
from sync_server.intents.desk import IntentDesk
from sync_server.intents.tables import IntentDecision
from sync_server.models.signing import ArtifactKey
from sync_server.sync.authorship import ServerSigner
from sync_server.sync.documents import pull_page, push_documents
from sync_server.sync.tables import Document

__all__ = ["HttpLink", "Link", "ServiceLink", "SimFailure", "Stats", "simulate"]

BERLIN = ZoneInfo("Europe/Berlin")


class SimFailure(AssertionError):
    """A seed broke an invariant; the message names the seed."""


# ---------------------------------------------------------------- links
class Link(Protocol):
    """How a device's pushes and pulls reach the server."""

    def enrol(self, device: SimDevice) -> None:
        """Get ready to carry `device`'s traffic (it is registered already)."""

    def push(self, device: SimDevice, documents: list[tuple[str, bytes]]) -> list[str]:
        """Push; returns the ids the server accepted."""

    def pull(self, device: SimDevice) -> dict[str, bytes]:
        """Pull every page after the device's cursor and advance it."""


@dataclass
class ServiceLink:
    """The sync service functions called in process, each in its own transaction,
    with the desk the app builds (bookings handlers registered)."""

    db: Database
    settings: Settings
    signer: ServerSigner = field(init=False)
    desk: IntentDesk = field(init=False)

    def __post_init__(self) -> None:
        self.signer = ServerSigner(
            ArtifactKey.load_or_create(self.settings.resolved_artifact_key_file)
        )
        self.desk = IntentDesk()
        register(self.desk)

    def enrol(self, device: SimDevice) -> None:
        """Nothing to do: in process, a device's pushes carry its principal."""

    def push(self, device: SimDevice, documents: list[tuple[str, bytes]]) -> list[str]:
        principal = device.principal
        decide = partial(self._decide, principal=principal)
        with self.db.write() as session:
            result = push_documents(
                session=session,
                principal=principal,
                incoming=documents,
                max_message_size=self.settings.max_message_size,
                server_key=self.signer.public_key,
                limits=self.settings.document_limits,
                decide=decide,
            )
        if result.rejected:
            raise AssertionError(f"push refused {result.rejected}")
        return result.accepted

    def _decide(
        self, session: Session, intents: list[RecordDocument], *, principal: Principal
    ) -> None:
        assert principal.clinic_id is not None
        self.desk.decide(
            session=session,
            organisation_id=principal.organisation_id,
            clinic_id=principal.clinic_id,
            device_id=principal.id,
            intents=intents,
            signer=self.signer,
        )

    def pull(self, device: SimDevice) -> dict[str, bytes]:
        got: dict[str, bytes] = {}
        while True:
            with self.db.read() as session:
                page = pull_page(
                    session=session,
                    principal=device.principal,
                    cursor=device.cursor,
                    limit=self.settings.pull_page_size,
                    max_message_size=self.settings.max_message_size,
                )
            got.update((e.doc_id, e.payload) for e in page.entries)
            device.cursor = page.cursor
            if not page.more:
                return got


@dataclass
class HttpLink:
    """A live server (the tests' `server` fixture): each device its own client."""

    server: Any
    clients: dict[str, Any] = field(default_factory=dict)

    def enrol(self, device: SimDevice) -> None:
        _, token = self.server.device_token(
            device.principal.clinic_id,
            device_id=device.principal.id,
            public_key=device.identity.public_key,
        )
        self.clients[device.principal.id] = self.server.http(token)

    def push(self, device: SimDevice, documents: list[tuple[str, bytes]]) -> list[str]:
        body = encode_message(
            SyncMessage({}, tuple(Entry(EntryKind.DOC, i, d) for i, d in documents))
        )
        response = self.clients[device.principal.id].post(
            "/v1/sync/push",
            content=body,
            headers={"content-type": "application/vnd.coherency.sync"},
        )
        assert response.status_code == 200, response.text
        answer = response.json()
        if answer["rejected"]:
            raise AssertionError(f"push refused {answer['rejected']}")
        return list(answer["accepted"])

    def pull(self, device: SimDevice) -> dict[str, bytes]:
        got: dict[str, bytes] = {}
        while True:
            response = self.clients[device.principal.id].get(
                "/v1/sync/pull", params={"cursor": device.cursor}
            )
            assert response.status_code == 200, response.text
            message = decode_message(response.content)
            got.update((e.doc_id, e.payload) for e in message.entries)
            device.cursor = int(message.control["cursor"])
            if not message.control["more"]:
                return got

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


# ---------------------------------------------------------------- the world
@dataclass
class SimClinic:
    organisation_id: str
    clinic_id: str
    doctors: list[str]
    nurse: str
    caregiver: str
    review: str
    dressing: str
    area: str
    days: list[date]


@dataclass
class SimDevice:
    principal: Principal
    identity: DeviceIdentity
    patient: RecordDocument
    online: bool = True
    cursor: int = 0
    outbox: dict[str, bytes] = field(default_factory=dict)  # written, not known delivered
    sent: dict[str, bytes] = field(default_factory=dict)  # known delivered (retry material)
    relays: dict[str, bytes] = field(default_factory=dict)  # others' intents to carry
    held: dict[str, bytes] = field(default_factory=dict)  # pulled from the server
    mine: list[str] = field(default_factory=list)  # the intents it wrote
    kinds: dict[str, IntentKind] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.principal.id[:8]

    def bookings(self) -> list[str]:
        """Appointments this device learned from its decisions (maybe stale)."""
        found: list[str] = []
        for intent_id in self.mine:
            decision = self.decision(intent_id)
            if decision is None or decision.status is DecisionStatus.REJECTED:
                continue
            outcome = decision.outcome or {}
            if outcome.get("kind") == "appointment" and outcome["booking_id"] not in found:
                found.append(outcome["booking_id"])
        return found

    def decision(self, intent_id: str) -> Decision | None:
        data = self.held.get(decision_id(intent_id))
        if data is None:
            return None
        record = RecordDocument.load(data).read()
        assert isinstance(record, Decision)
        return record


def furnish(db: Database, organisation_id: str | None = None) -> SimClinic:
    """A new clinic in Berlin (in a new organisation unless one is given): two
    wound-care doctors and a nurse Monday and Tuesday 09:00-12:00, one caregiver
    08:00-12:00."""
    suffix = uuid.uuid4().hex[:8]
    clinic_id = str(uuid.uuid4())
    with db.write() as session:
        if organisation_id is None:
            organisation_id = str(uuid.uuid4())
            session.add(Organisation(id=organisation_id, name=f"sim-{suffix}"))
            session.flush()
        session.add(
            Clinic(id=clinic_id, organisation_id=organisation_id, name=f"sim-{suffix}", feed_seq=0)
        )
        session.flush()
        staff = Principal("user", str(uuid.uuid4()), None, organisation_id, "admin")
        set_clinic_timezone(
            session=session, principal=staff, clinic_id=clinic_id, timezone="Europe/Berlin"
        )
        review, dressing, area = f"review-{suffix}", f"dressing-{suffix}", f"area-{suffix}"
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
        doctors = [
            add_provider(
                session=session,
                principal=staff,
                name=f"Dr {n}",
                kind="doctor",
                clinic_id=clinic_id,
                specialisations=["wound care"],
                services=[review, dressing],
            ).id
            for n in range(2)
        ]
        nurse = add_provider(
            session=session,
            principal=staff,
            name="Nurse",
            kind="nurse",
            clinic_id=clinic_id,
            services=[dressing],
        ).id
        caregiver = add_provider(
            session=session,
            principal=staff,
            name="Carer",
            kind="caregiver",
            clinic_id=None,
            skills=["wound dressing"],
            areas=[area],
            languages=["en"],
        ).id
        for provider in [*doctors, nurse]:
            set_weekly_hours(
                session=session,
                principal=staff,
                provider_id=provider,
                hours=[(d, "09:00", "12:00") for d in (0, 1)],
            )
        set_weekly_hours(
            session=session,
            principal=staff,
            provider_id=caregiver,
            hours=[(d, "08:00", "12:00") for d in (0, 1)],
            timezone="Europe/Berlin",
        )
    monday = date.today() + timedelta(days=7)
    monday += timedelta(days=(7 - monday.weekday()) % 7)
    return SimClinic(
        organisation_id,
        clinic_id,
        doctors,
        nurse,
        caregiver,
        review,
        dressing,
        area,
        [monday, monday + timedelta(days=1)],
    )


def new_device(db: Database, clinic: SimClinic, link: Link, rng: random.Random) -> SimDevice:
    device_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    identity = DeviceIdentity(device_id, Ed25519PrivateKey.generate())
    with db.write() as session:
        session.add(
            Device(id=device_id, clinic_id=clinic.clinic_id, public_key=identity.public_key)
        )
    principal = Principal("device", device_id, clinic.clinic_id, clinic.organisation_id, "device")
    patient = RecordDocument.create(
        Patient,
        {"given_name": "Sim", "family_name": device_id[:8], "birth_date": date(1950, 1, 1)},
        device_id=device_id,
        clinic_id=clinic.clinic_id,
        signer=identity,
    )
    device = SimDevice(principal, identity, patient)
    device.outbox[patient.id] = patient.save()
    link.enrol(device)
    return device


# ---------------------------------------------------------------- one seed
@dataclass
class Stats:
    """What the simulation did, summed over seeds."""

    seeds: int = 0
    intents: int = 0
    pushes: int = 0
    cuts: int = 0
    retries: int = 0
    relays: int = 0
    accepted: int = 0
    rejected: int = 0

    def add(self, other: Stats) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def simulate(
    seed: int,
    *,
    db: Database,
    link: Link,
    organisation_id: str | None = None,
    devices: int | None = None,
    steps: int | None = None,
) -> Stats:
    """Run seed `seed`; raise `SimFailure` naming it if an invariant breaks."""
    rng = random.Random(seed)
    clinic = furnish(db, organisation_id)
    fleet = [new_device(db, clinic, link, rng) for _ in range(devices or rng.randint(2, 5))]
    stats = Stats(seeds=1)
    sim = _Run(rng, clinic, fleet, link, stats)
    try:
        for _ in range(steps or rng.randint(8, 24)):
            sim.step()
        sim.finish()
        check(db, clinic, fleet)
    except Exception as exc:
        raise SimFailure(f"seed {seed}: {exc}") from exc
    return stats


@dataclass
class _Run:
    rng: random.Random
    clinic: SimClinic
    fleet: list[SimDevice]
    link: Link
    stats: Stats

    def step(self) -> None:
        device = self.rng.choice(self.fleet)
        action: Callable[[SimDevice], None] = self.rng.choices(
            [
                self.toggle,
                self.request,
                self.visit,
                self.reschedule,
                self.cancel,
                self.relay,
                self.sync,
            ],
            weights=[12, 25, 6, 12, 8, 7, 30],
        )[0]
        action(device)

    # -- what a device does offline
    def toggle(self, device: SimDevice) -> None:
        device.online = not device.online

    def request(self, device: SimDevice) -> None:
        clinic, rng = self.clinic, self.rng
        service = rng.choice([clinic.review, clinic.dressing])
        provider = rng.choice([*clinic.doctors, clinic.nurse, None, None])
        details: dict[str, Any] = {"service": service, "starts_at": self.when(9, 12)}
        if provider is not None:
            details["provider_id"] = provider
        if rng.random() < 0.3:
            details["flexible"] = True
        self.write(device, IntentKind.APPOINTMENT_REQUEST, device.patient.id, None, details)

    def visit(self, device: SimDevice) -> None:
        details: dict[str, Any] = {
            "skill": "wound dressing",
            "area": self.clinic.area,
            "starts_at": self.when(8, 12),
            "duration_minutes": self.rng.choice([30, 45, 60]),
            "flexible": self.rng.random() < 0.3,
        }
        if self.rng.random() < 0.5:
            details["caregiver_id"] = self.clinic.caregiver
        self.write(device, IntentKind.VISIT_REQUEST, device.patient.id, None, details)

    def reschedule(self, device: SimDevice) -> None:
        known = device.bookings()
        if not known:
            return self.request(device)
        details: dict[str, Any] = {"starts_at": self.when(9, 12)}
        if self.rng.random() < 0.3:
            details["flexible"] = True
        if self.rng.random() < 0.3:
            details["provider_id"] = self.rng.choice(self.clinic.doctors)
        booking = self.rng.choice(known)
        self.write(device, IntentKind.APPOINTMENT_RESCHEDULE, device.patient.id, booking, details)

    def cancel(self, device: SimDevice) -> None:
        known = device.bookings()
        if not known:
            return self.request(device)
        booking = self.rng.choice(known)
        self.write(device, IntentKind.APPOINTMENT_CANCEL, device.patient.id, booking, {})

    def relay(self, device: SimDevice) -> None:
        """Hand one of this device's intents to another, which will push it too."""
        others = [d for d in self.fleet if d is not device]
        if not device.mine or not others:
            return
        intent_id = self.rng.choice(device.mine)
        data = device.outbox.get(intent_id) or device.sent[intent_id]
        self.rng.choice(others).relays[intent_id] = data
        self.stats.relays += 1

    def when(self, first_hour: int, last_hour: int) -> datetime:
        """A local time on a working day, on 15-minute marks (so 30-minute reviews
        overlap partly), sometimes on the hour's edges where nothing is worked."""
        day = self.rng.choice(self.clinic.days)
        minutes = self.rng.randrange((first_hour - 1) * 60, (last_hour + 1) * 60, 15)
        return datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=BERLIN)

    def write(
        self,
        device: SimDevice,
        kind: IntentKind,
        patient_id: str,
        subject_id: str | None,
        details: dict[str, Any],
    ) -> None:
        details = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in details.items()}
        document = RecordDocument.create(
            Intent,
            {"kind": kind, "patient_id": patient_id, "subject_id": subject_id, "details": details},
            device_id=device.principal.id,
            clinic_id=self.clinic.clinic_id,
            record_id=new_record_id(),
            signer=device.identity,
        )
        device.outbox[document.id] = document.save()
        device.mine.append(document.id)
        device.kinds[document.id] = kind
        self.stats.intents += 1

    # -- sync
    def sync(self, device: SimDevice, *, final: bool = False) -> None:
        if not device.online and not final:
            return
        rng = self.rng
        batch = {**device.outbox, **device.relays}
        if device.sent and rng.random() < 0.3:  # a retry: already-pushed documents again
            again = rng.sample(sorted(device.sent), k=min(len(device.sent), rng.randint(1, 3)))
            batch.update((i, device.sent[i]) for i in again)
            self.stats.retries += 1
        items = list(batch.items())
        rng.shuffle(items)  # intents may go before the patient they name
        if rng.random() < 0.2:
            items += rng.sample(items, k=min(len(items), 2))  # duplicated in one push
        cut_at = len(items) + 1
        if items and len(items) > 1 and rng.random() < 0.4:
            cut_at = rng.randint(1, len(items) - 1)  # sent as two pushes
        chunks = [c for c in (items[:cut_at], items[cut_at:]) if c]
        for chunk in chunks:
            self.link.push(device, chunk)
            self.stats.pushes += 1
            if not final and rng.random() < 0.15:
                self.stats.cuts += 1  # applied, but the answer is lost: nothing moves
                return
            for doc_id, data in chunk:
                device.outbox.pop(doc_id, None)
                device.relays.pop(doc_id, None)
                if doc_id in device.mine or doc_id == device.patient.id:
                    device.sent[doc_id] = data
        device.held.update(self.link.pull(device))

    def finish(self) -> None:
        for device in self.fleet:
            device.online = True
            self.sync(device, final=True)
        for device in self.fleet:  # everyone sees the decisions of the last pushes
            device.held.update(self.link.pull(device))
            for intent_id in device.mine:
                decision = device.decision(intent_id)
                if decision is None:
                    continue
                if decision.status is DecisionStatus.REJECTED:
                    self.stats.rejected += 1
                else:
                    self.stats.accepted += 1


# ---------------------------------------------------------------- invariants
def check(db: Database, clinic: SimClinic, fleet: list[SimDevice]) -> None:
    """Assert the simulation's invariants for one clinic."""
    written = {i for d in fleet for i in d.mine}
    with db.read() as session:
        _no_overlap(session, clinic)
        _claims_match(session, clinic)
        stored = set(
            session.scalars(
                select(Document.id).where(
                    Document.clinic_id == clinic.clinic_id, Document.collection == "intents"
                )
            )
        )
        assert stored == written, f"{len(written - stored)} intents never reached the server"
        rows = dict(
            session.execute(
                select(IntentDecision.intent_id, IntentDecision.status).where(
                    IntentDecision.clinic_id == clinic.clinic_id
                )
            ).all()
        )
        assert set(rows) == written, f"undecided: {sorted(written - set(rows))[:3]}"
        documents = set(
            session.scalars(
                select(Document.id).where(
                    Document.clinic_id == clinic.clinic_id, Document.collection == "decisions"
                )
            )
        )
        assert documents == {decision_id(i) for i in written}, "decision documents differ"
        twice = session.execute(
            select(Booking.intent_id)
            .where(Booking.clinic_id == clinic.clinic_id)
            .group_by(Booking.intent_id)
            .having(func.count() > 1)
        ).all()
        assert not twice, f"intents that made two bookings: {twice}"
    for device in fleet:
        for intent_id in device.mine:
            decision = device.decision(intent_id)
            assert decision is not None, f"device {device.name} lacks the decision of {intent_id}"
            assert str(decision.status) == rows[intent_id], f"decision {intent_id} differs"


def _no_overlap(session: Session, clinic: SimClinic) -> None:
    a, b = aliased(Booking), aliased(Booking)
    clash = session.execute(
        select(a.id, b.id, a.provider_id)
        .join(
            b,
            and_(
                a.provider_id == b.provider_id,
                a.id < b.id,
                a.starts_at < b.ends_at,
                b.starts_at < a.ends_at,
            ),
        )
        .where(
            a.organisation_id == clinic.organisation_id,
            a.state.in_(ACTIVE_STATES),
            b.state.in_(ACTIVE_STATES),
        )
    ).all()
    assert not clash, f"overlapping active bookings: {clash}"


def _claims_match(session: Session, clinic: SimClinic) -> None:
    """Each active booking holds exactly its steps; an inactive one holds none."""
    claims: dict[str, list[datetime]] = {}
    for booking_id, at in session.execute(
        select(BookingClaim.booking_id, BookingClaim.at)
        .join(Booking, Booking.id == BookingClaim.booking_id)
        .where(Booking.organisation_id == clinic.organisation_id)
    ):
        claims.setdefault(booking_id, []).append(at.astimezone(UTC))
    for booking in session.scalars(
        select(Booking).where(Booking.organisation_id == clinic.organisation_id)
    ):
        held = sorted(claims.get(booking.id, []))
        if booking.state in ACTIVE_STATES:
            start, end = booking.starts_at.astimezone(UTC), booking.ends_at.astimezone(UTC)
            expected = [
                start + timedelta(minutes=5 * n)
                for n in range((end - start) // timedelta(minutes=5))
            ]
            assert held == expected, f"booking {booking.id} holds {len(held)} steps, not its own"
            assert booking.provider_id == session.scalar(
                select(BookingClaim.provider_id)
                .where(BookingClaim.booking_id == booking.id)
                .limit(1)
            )
        else:
            assert not held, f"{booking.state} booking {booking.id} still holds time"
