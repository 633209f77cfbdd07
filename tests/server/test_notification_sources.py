"""The periodic notification sources (`sweep_notices`) on both databases: each source
records its event once however often the sweep runs, skips what it should (a cancelled
or moved booking, a used-up or revoked prescription, a wound on track, stock above the
reorder level), and what leaves the app for them holds no PHI."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from sync_server.bookings.tables import Booking, Provider
from sync_server.commerce.prescriptions import EXPIRY_DAYS
from sync_server.commerce.tables import Location, Lot, Prescription, Product
from sync_server.notifications import SandboxPush, SandboxSms, deliver_due
from sync_server.notifications.channels import InApp
from sync_server.notifications.events import NoticeKind
from sync_server.notifications.sources import SweepRules, sweep_notices
from sync_server.notifications.tables import NotificationDelivery, NotificationEvent
from tests.server.dashboard_world import T0, seed_patient, seed_wound

NOW = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def _events(server: Any, clinic_id: str) -> list[NotificationEvent]:
    with server.db.read() as session:
        return list(
            session.scalars(
                select(NotificationEvent)
                .where(NotificationEvent.clinic_id == clinic_id)
                .order_by(NotificationEvent.dedupe_key)
            )
        )


def _sweep(server: Any, clinic_id: str, now: datetime = NOW, **rules: Any) -> Any:
    return sweep_notices(server.db, now=now, rules=SweepRules(**rules), clinic_ids=[clinic_id])


def _provider(server: Any, clinic_id: str) -> str:
    provider_id = str(uuid.uuid4())
    with server.db.write() as session:
        session.add(
            Provider(
                id=provider_id,
                organisation_id=server.organisation_id,
                clinic_id=clinic_id,
                name="Dr Test",
                kind="doctor",
            )
        )
    return provider_id


def _booking(server: Any, clinic_id: str, provider_id: str, starts_at: datetime) -> str:
    booking_id = str(uuid.uuid4())
    with server.db.write() as session:
        session.add(
            Booking(
                id=booking_id,
                organisation_id=server.organisation_id,
                clinic_id=clinic_id,
                kind="appointment",
                provider_id=provider_id,
                patient_id=str(uuid.uuid4()),
                service="consult",
                starts_at=starts_at,
                ends_at=starts_at + timedelta(minutes=30),
                state="confirmed",
                intent_id=str(uuid.uuid4()),
            )
        )
    return booking_id


def _set_booking(server: Any, booking_id: str, **values: Any) -> None:
    if "starts_at" in values:  # a move keeps the length
        values["ends_at"] = values["starts_at"] + timedelta(minutes=30)
    with server.db.write() as session:
        session.execute(update(Booking).where(Booking.id == booking_id).values(**values))


def test_reminders_come_once_each_and_never_for_a_cancelled_or_moved_time(server: Any) -> None:
    clinic = server.new_clinic()
    provider = _provider(server, clinic)
    tomorrow = _booking(server, clinic, provider, NOW + timedelta(hours=20))
    soon = _booking(server, clinic, provider, NOW + timedelta(hours=1))
    far = _booking(server, clinic, provider, NOW + timedelta(days=3))
    cancelled = _booking(server, clinic, provider, NOW + timedelta(hours=10))
    _set_booking(server, cancelled, state="cancelled")
    moved = _booking(server, clinic, provider, NOW + timedelta(hours=12))

    # Moved to three days out before its reminder is due: no reminder now.
    _set_booking(server, moved, starts_at=NOW + timedelta(days=3, hours=5))
    first = _sweep(server, clinic)
    second = _sweep(server, clinic)
    assert (first.reminders, second.reminders) == (2, 0)
    keys = [e.dedupe_key for e in _events(server, clinic)]
    stamp = int((NOW + timedelta(hours=20)).timestamp())
    assert f"reminder:24h:{tomorrow}:{stamp}" in keys
    assert [k.split(":")[:3] for k in keys] == sorted(
        [["reminder", "24h", tomorrow], ["reminder", "2h", soon]]
    )
    assert not any(far in k or cancelled in k or moved in k for k in keys)

    # 18 hours on: the first booking is 2 hours away, the moved one not yet due.
    later = NOW + timedelta(hours=18)
    assert _sweep(server, clinic, later).reminders == 1
    assert _sweep(server, clinic, later).reminders == 0
    # Moved again, into tomorrow: it gets a 24 h reminder for its new time.
    new_start = later + timedelta(hours=6)
    _set_booking(server, moved, starts_at=new_start)
    assert _sweep(server, clinic, later).reminders == 1
    kinds = sorted((e.kind, e.detail["booking_id"]) for e in _events(server, clinic))
    assert kinds == sorted(
        [
            (str(NoticeKind.REMINDER_24H), tomorrow),
            (str(NoticeKind.REMINDER_2H), tomorrow),
            (str(NoticeKind.REMINDER_2H), soon),
            (str(NoticeKind.REMINDER_24H), moved),
        ]
    )
    moved_event = next(e for e in _events(server, clinic) if e.detail["booking_id"] == moved)
    assert moved_event.dedupe_key.endswith(f":{int(new_start.timestamp())}")
    # Each reminder goes to the patient, in-app and by push.
    with server.db.read() as session:
        channels = session.scalars(
            select(NotificationDelivery.channel).where(NotificationDelivery.clinic_id == clinic)
        ).all()
    assert sorted(set(channels)) == ["in_app", "push"] and len(channels) == 8


def _product(server: Any) -> str:
    product_id = str(uuid.uuid4())
    with server.db.write() as session:
        session.add(
            Product(
                id=product_id,
                organisation_id=server.organisation_id,
                sku=f"SKU-{product_id[:8]}",
                name="Foam dressing 10x10",
                category="dressing",
                product_class="foam dressing",
                unit="box of 10",
                price=1200,
                currency="EUR",
            )
        )
    return product_id


def _prescription(
    server: Any, patient_id: str, product_id: str, prescriber: str, valid_until: date, **kw: Any
) -> str:
    prescription_id = str(uuid.uuid4())
    with server.db.write() as session:
        session.add(
            Prescription(
                id=prescription_id,
                organisation_id=server.organisation_id,
                patient_id=patient_id,
                product_id=product_id,
                quantity=2,
                refills=0,
                quantity_total=2,
                quantity_remaining=kw.get("remaining", 2),
                prescriber_id=prescriber,
                signature="signed",
                issued_on=valid_until - timedelta(days=90),
                valid_until=valid_until,
                revoked_at=kw.get("revoked_at"),
            )
        )
    return prescription_id


def test_an_expiring_prescription_tells_its_patient_once(server: Any) -> None:
    clinic = server.new_clinic()
    prescriber = _provider(server, clinic)
    product = _product(server)
    patient = seed_patient(server, clinic, "Quixotefeather", mrn="MRN-7731-QX")
    today = NOW.date()
    due = _prescription(server, patient, product, prescriber, today + timedelta(days=EXPIRY_DAYS))
    _prescription(server, patient, product, prescriber, today + timedelta(days=EXPIRY_DAYS + 1))
    _prescription(server, patient, product, prescriber, today - timedelta(days=1))
    _prescription(server, patient, product, prescriber, today + timedelta(days=3), remaining=0)
    _prescription(server, patient, product, prescriber, today, revoked_at=NOW)
    assert _sweep(server, clinic).prescriptions == 1
    assert _sweep(server, clinic).prescriptions == 0
    [event] = _events(server, clinic)
    assert event.kind == str(NoticeKind.PRESCRIPTION_EXPIRING)
    assert event.detail["prescription_id"] == due
    with server.db.read() as session:
        recipients = set(
            session.scalars(
                select(NotificationDelivery.recipient).where(
                    NotificationDelivery.event_id == event.id
                )
            )
        )
    assert recipients == {f"patient:{patient}"}


def test_a_wound_not_on_track_tells_the_staff_once(server: Any) -> None:
    clinic = server.new_clinic()
    patient = seed_patient(server, clinic, "Quixotefeather")
    stalled, _ = seed_wound(server, clinic, patient, [(0, 10.0), (14, 9.0), (28, 8.0)])
    healing, _ = seed_wound(server, clinic, patient, [(0, 10.0), (14, 7.0), (28, 5.0)])
    early, _ = seed_wound(server, clinic, patient, [(0, 10.0), (7, 9.9)])
    now = T0 + timedelta(days=30)
    assert _sweep(server, clinic, now).wounds == 1
    assert _sweep(server, clinic, now).wounds == 0
    [event] = _events(server, clinic)
    assert event.kind == str(NoticeKind.WOUND_NOT_ON_TRACK)
    assert event.detail["wound_id"] == stalled
    assert round(event.detail["reduction_percent"], 6) == 20.0
    # The dashboard's threshold decides: at 15 % the stalled wound is on track.
    other = server.new_clinic()
    patient2 = seed_patient(server, other, "Quixotefeather")
    seed_wound(server, other, patient2, [(0, 10.0), (28, 8.0)])
    assert _sweep(server, other, now, healing_threshold_percent=15.0).wounds == 0
    assert {healing, early}.isdisjoint(e.detail["wound_id"] for e in _events(server, clinic))


def test_low_stock_tells_the_staff_once_a_day_per_product_and_location(server: Any) -> None:
    clinic = server.new_clinic()
    low, plenty, expired_only = _product(server), _product(server), _product(server)
    location = str(uuid.uuid4())
    today = NOW.date()
    with server.db.write() as session:
        session.add(
            Location(
                id=location,
                organisation_id=server.organisation_id,
                kind="clinic",
                name="store",
                clinic_id=clinic,
            )
        )
        session.flush()
        for product, on_hand, reserved, expires in (
            (low, 6, 3, today + timedelta(days=200)),  # 3 available
            (plenty, 9, 1, today + timedelta(days=200)),  # 8 available
            (expired_only, 50, 0, today - timedelta(days=1)),  # 0 usable
        ):
            session.add(
                Lot(
                    id=str(uuid.uuid4()),
                    product_id=product,
                    location_id=location,
                    lot_code="L1",
                    expires_on=expires,
                    on_hand=on_hand,
                    reserved=reserved,
                )
            )
    assert _sweep(server, clinic, low_stock_units=5).low_stock == 2
    assert _sweep(server, clinic, low_stock_units=5).low_stock == 0
    events = _events(server, clinic)
    assert sorted(e.detail["product_id"] for e in events) == sorted([low, expired_only])
    assert {e.detail["available"] for e in events} == {3, 0}
    # The next day, still low: told again, once.
    assert _sweep(server, clinic, NOW + timedelta(days=1), low_stock_units=5).low_stock == 2
    assert _sweep(server, clinic, NOW + timedelta(days=1), low_stock_units=5).low_stock == 0


def test_swept_notices_leave_no_phi_outside_the_app(server: Any) -> None:
    clinic = server.new_clinic()
    patient = seed_patient(server, clinic, "Quixotefeather", mrn="MRN-7731-QX")
    seed_wound(server, clinic, patient, [(0, 13.37), (28, 12.5)], site="left lateral malleolus")
    prescriber = _provider(server, clinic)
    _prescription(server, patient, _product(server), prescriber, NOW.date() + timedelta(days=2))
    _booking(server, clinic, prescriber, NOW + timedelta(hours=3))
    run = sweep_notices(server.db, now=T0 + timedelta(days=29), clinic_ids=[clinic])  # the wound
    run2 = _sweep(server, clinic)  # the prescription and the reminder
    assert (run.wounds, run2.prescriptions, run2.reminders) == (1, 1, 1)
    sms, push = SandboxSms(), SandboxPush()
    channels = {
        "sms": sms,
        "push": push,
        "in_app": InApp(server.db, server.server_signer()),
        "email": sms,
    }
    deliver_due(server.db, channels, owner="w", clinic_ids=[clinic])
    bodies = [m.body for m in push.sent()] + [m.body for m in sms.sent()]
    assert bodies
    for body in bodies:
        for value in ("Ada", "Quixotefeather", "MRN-7731-QX", "malleolus", "13.37", "12.5"):
            assert value.lower() not in body.lower()
