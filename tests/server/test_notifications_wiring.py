"""Each domain writes its notification event in the transaction of the change it
reports: with the change, once, and not when the change is refused or rolled back
(SQLite and PostgreSQL)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from crdt import DecisionStatus, IntentKind
from sync_server.audit.breakglass import grant_break_glass
from sync_server.bookings.manage import change_state
from sync_server.commerce.orders import move_order
from sync_server.db import utcnow
from sync_server.errors import Conflict
from sync_server.identity.principals import Principal
from sync_server.notifications.tables import NotificationDelivery, NotificationEvent

from .bookings_world import build_world, local
from .commerce_world import build_shop, decide, patient_of, place
from .test_bookings_staff import book


def _events(server: Any, clinic_id: str, kind: str) -> list[NotificationEvent]:
    with server.db.read() as session:
        return list(
            session.scalars(
                select(NotificationEvent).where(
                    NotificationEvent.clinic_id == clinic_id, NotificationEvent.kind == kind
                )
            )
        )


def _recipients(server: Any, event_id: str) -> list[tuple[str, str]]:
    with server.db.read() as session:
        return sorted(
            (d.channel, d.recipient)
            for d in session.scalars(
                select(NotificationDelivery).where(NotificationDelivery.event_id == event_id)
            )
        )


def test_order_decisions_and_shipping_notify_the_patient(server: Any) -> None:
    shop = build_shop(server)
    try:
        tablet = shop.tablet()
        patient = patient_of(tablet)
        stocked, empty = shop.product("Foam"), shop.product("Gauze")
        shop.receive(stocked, 10)
        accepted = place(tablet, patient, [(stocked, 2)])
        assert decide(tablet, accepted).status is DecisionStatus.ACCEPTED
        refused = place(tablet, patient, [(empty, 1)])
        assert decide(tablet, refused).status is DecisionStatus.REJECTED
        tablet.sync(accepted, refused)  # a replayed push decides nothing again
        [told] = _events(server, shop.clinic_id, "order.accepted")
        assert told.dedupe_key == f"intent:{accepted.id}"
        assert _recipients(server, told.id) == [
            ("in_app", f"patient:{patient}"),
            ("push", f"patient:{patient}"),
        ]
        [no] = _events(server, shop.clinic_id, "order.refused")
        assert no.dedupe_key == f"intent:{refused.id}"
        order_id = str(tablet.decision(accepted.id).outcome["order_id"])  # type: ignore[union-attr,index]

        def move(state: str) -> None:
            with server.db.write() as session:
                move_order(
                    session=session, principal=shop.staff, order_id=order_id, state=state,
                    now=utcnow(),
                )  # fmt: skip

        move("picked")
        # A ship rolled back with its transaction leaves no event.
        with pytest.raises(RuntimeError), server.db.write() as session:
            move_order(
                session=session, principal=shop.staff, order_id=order_id, state="shipped",
                now=utcnow(),
            )  # fmt: skip
            raise RuntimeError("the transaction failed")
        assert _events(server, shop.clinic_id, "order.shipped") == []
        move("shipped")
        with pytest.raises(Conflict):
            move("shipped")  # refused: nothing more to tell
        [shipped] = _events(server, shop.clinic_id, "order.shipped")
        assert shipped.detail == {"order_id": order_id, "state": "shipped"}
    finally:
        shop.close()


def test_a_declined_payment_notifies_the_patient(server: Any) -> None:
    shop = build_shop(server)
    try:
        tablet = shop.tablet()
        patient = patient_of(tablet)
        product = shop.product("Foam", price=2500)
        shop.receive(product, 5)
        placed = place(tablet, patient, [(product, 1)])
        decision = decide(tablet, placed)
        invoice_id = str(decision.outcome["invoice_id"])  # type: ignore[index]
        pay = tablet.intent(
            IntentKind.PAYMENT_PAY,
            subject_id=invoice_id,
            amount=2500,
            currency="EUR",
            payment_method="tok_decline",
        )
        tablet.sync(pay)
        tablet.sync(pay)
        [failed] = _events(server, shop.clinic_id, "payment.failed")
        assert failed.dedupe_key == f"intent:{pay.id}"
        assert (failed.detail["status"], failed.detail["reason"]) == (
            "rejected",
            "the card was declined",
        )
        assert ("push", f"patient:{patient}") in _recipients(server, failed.id)
    finally:
        shop.close()


def test_a_booking_decided_and_cancelled_notifies_the_patient(server: Any) -> None:
    world = build_world(server)
    try:
        _, booking_id = book(world, local(world.monday, 9), world.doctors[0])
        [decided] = _events(server, world.clinic_id, "booking.decided")
        assert decided.detail["status"] == "accepted"
        signer = server.server_signer()
        with pytest.raises(Conflict), server.db.write() as session:
            change_state(
                session=session, principal=world.staff, booking_id=booking_id,
                state="in_progress", signer=signer,
            )  # fmt: skip
        assert _events(server, world.clinic_id, "booking.cancelled") == []
        with server.db.write() as session:
            change_state(
                session=session, principal=world.staff, booking_id=booking_id,
                state="cancelled", signer=signer, reason="the doctor is ill",
            )  # fmt: skip
        [cancelled] = _events(server, world.clinic_id, "booking.cancelled")
        assert cancelled.dedupe_key == f"booking:{booking_id}:cancelled"
    finally:
        world.close()


def test_a_break_glass_grant_notifies_the_patients_clinic_staff(server: Any) -> None:
    shop = build_shop(server)
    try:
        tablet = shop.tablet()
        patient = patient_of(tablet)
        elsewhere = server.new_clinic()
        nurse = Principal("user", str(uuid.uuid4()), elsewhere, server.organisation_id, "clinician")
        own = Principal(
            "user", str(uuid.uuid4()), shop.clinic_id, server.organisation_id, "clinician"
        )
        with pytest.raises(Conflict), server.db.write() as session:
            grant_break_glass(
                session=session, principal=own, patient_id=patient, reason="x", minutes=5
            )
        assert _events(server, shop.clinic_id, "break_glass.granted") == []
        with server.db.write() as session:
            grant = grant_break_glass(
                session=session, principal=nurse, patient_id=patient, reason="fall", minutes=5
            )
        [told] = _events(server, shop.clinic_id, "break_glass.granted")
        assert told.dedupe_key == f"break-glass:{grant.id}"
        assert _recipients(server, told.id) == [
            ("email", f"staff:{shop.clinic_id}"),
            ("in_app", f"staff:{shop.clinic_id}"),
        ]
    finally:
        shop.close()
