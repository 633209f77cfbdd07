"""The dashboard's queues and audit pages over HTTP, on SQLite and PostgreSQL: one item
of each queue seeded through the real services and API (a booking requested by a
tablet's intent, an order placed by one, payments charged through the REST API, a
prescription about to expire), shown to its clinic's staff only and audited; each
action changes the state exactly as the API would (read back through the API), not
without the CSRF token, and not for a role the API refuses; the audit page's
checkpoint and verification; a patient's accounting of disclosures."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from crdt import DecisionStatus, IntentKind
from sync_server.audit.log import latest_checkpoint
from sync_server.audit.tables import AuditEvent
from sync_server.audit.verify import verify_log
from sync_server.bookings.tables import Booking
from sync_server.payments.invoices import Charge, bill
from tests.server.bookings_world import BookingWorld, build_world, local
from tests.server.commerce_world import Shop, build_shop, decide, patient_of, place
from tests.server.dashboard_world import StaffAccount, new_staff, sign_in


@dataclass
class Seeded:
    """Clinic A (bookings) with a booked appointment; clinic B (a shop) with an order
    to pick, a succeeded and a failed payment, and a prescription about to expire."""

    server: Any
    world: BookingWorld
    shop: Shop
    booking_id: str
    booking_patient: str
    order_id: str
    patient_b: str
    payment_id: str
    failed_payment_id: str
    prescription_id: str
    staff_a: StaffAccount
    staff_b: StaffAccount

    def api(self, account: StaffAccount) -> httpx.Client:
        """A JSON API client acting as `account`."""
        token, _ = self.server.app.state.signing_key.issue_access_token(
            subject=account.user_id,
            kind="user",
            clinic_id=account.clinic_id,
            organisation_id=self.server.organisation_id,
            role=account.role,
            ttl=timedelta(minutes=15),
        )
        client: httpx.Client = self.server.http(token)
        return client


def _invoice(server: Any, clinic_id: str, patient_id: str, price: int) -> str:
    with server.db.write() as session:
        return bill(
            session=session,
            organisation_id=server.organisation_id,
            clinic_id=clinic_id,
            patient_id=patient_id,
            charges=[Charge("visit", None, "dressing change", 1, price, "EUR")],
            now=datetime.now(UTC),
        ).id


@pytest.fixture
def seeded(server: Any) -> Iterator[Seeded]:
    world = build_world(server, doctors=1, caregivers=0)
    shop = build_shop(server)
    try:
        tablet = world.tablet()
        patient = tablet.patient("Queuedwell")
        intent = tablet.intent(
            IntentKind.APPOINTMENT_REQUEST,
            patient_id=patient.id,
            service=world.review,
            starts_at=local(world.monday, 9),
            provider_id=world.doctors[0],
        )
        tablet.sync(patient, intent)
        decision = tablet.decision(intent.id)
        assert decision is not None and decision.status is DecisionStatus.ACCEPTED
        booking_id = str((decision.outcome or {})["booking_id"])

        foam = shop.product("Foam", price=1250)
        shop.receive(foam, 20)
        shop_tablet = shop.tablet()
        patient_b = patient_of(shop_tablet, "Ordersby")
        placed = decide(shop_tablet, place(shop_tablet, patient_b, [(foam, 2)]))
        assert placed.status is DecisionStatus.ACCEPTED, placed
        order_id = str((placed.outcome or {})["order_id"])
        prescription_id = shop.prescribe(
            patient_b, product_class="foam", valid_until=datetime.now(UTC).date() + timedelta(5)
        )

        staff_a = new_staff(server, world.clinic_id, role="staff")
        staff_b = new_staff(server, shop.clinic_id, role="staff")
        made = Seeded(
            server, world, shop, booking_id, patient.id, order_id, patient_b, "", "",
            prescription_id, staff_a, staff_b,
        )  # fmt: skip
        with made.api(staff_b) as api:
            paid = api.post(
                f"/v1/invoices/{_invoice(server, shop.clinic_id, patient_b, 5000)}/pay",
                json={"amount": 5000, "currency": "EUR", "payment_method": "tok_success"},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            assert paid.status_code == 200, paid.text
            declined = api.post(
                f"/v1/invoices/{_invoice(server, shop.clinic_id, patient_b, 700)}/pay",
                json={"amount": 700, "currency": "EUR", "payment_method": "tok_decline"},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            assert declined.status_code == 402, declined.text
        made.payment_id = paid.json()["payment_id"]
        made.failed_payment_id = declined.json()["payment"]["payment_id"]
        yield made
    finally:
        world.close()
        shop.close()


def _row(html: str, kind: str, item_id: str) -> str:
    """The table row of one queue item ('' if the page has none)."""
    start = html.find(f'<tr id="{kind}-{item_id}"')
    if start < 0:
        return ""
    return html[start : html.index("</tr>", start)]


def _read_ids(server: Any, user_id: str, collection: str) -> set[str]:
    """Record ids of `collection` that `user_id`'s audited reads returned."""
    with server.db.read() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.actor_id == user_id, AuditEvent.action == "read")
        ).all()
    found: set[str] = set()
    for event in events:
        found.update(json.loads(event.target or "{}").get(collection, []))
    return found


def test_each_queue_shows_its_clinic_only_and_audits_the_reads(seeded: Seeded) -> None:
    server = seeded.server
    a, _ = sign_in(server, seeded.staff_a)
    b, _ = sign_in(server, seeded.staff_b)
    with closing(a), closing(b):
        page_a, page_b = a.get("/dashboard/queues"), b.get("/dashboard/queues")
    assert page_a.status_code == page_b.status_code == 200
    booking = _row(page_a.text, "booking", seeded.booking_id)
    assert "pending" in booking and "Queuedwell" in booking and "Confirm" in booking
    assert _row(page_b.text, "booking", seeded.booking_id) == ""
    for kind, item in (
        ("order", seeded.order_id),
        ("payment", seeded.payment_id),
        ("payment", seeded.failed_payment_id),
        ("prescription", seeded.prescription_id),
    ):
        assert "Ordersby" in _row(page_b.text, kind, item), (kind, page_b.text)
        assert _row(page_a.text, kind, item) == "", kind
    assert "Mark picked" in _row(page_b.text, "order", seeded.order_id)
    assert "failed" in _row(page_b.text, "payment", seeded.failed_payment_id)
    assert "Refund" in _row(page_b.text, "payment", seeded.payment_id)
    assert "Ordersby" not in page_a.text and "Queuedwell" not in page_b.text

    # The reads are audited like the API's, with the records shown (and nothing else).
    assert _read_ids(server, seeded.staff_a.user_id, "bookings") == {seeded.booking_id}
    assert _read_ids(server, seeded.staff_a.user_id, "orders") == set()
    assert _read_ids(server, seeded.staff_b.user_id, "orders") == {seeded.order_id}
    assert _read_ids(server, seeded.staff_b.user_id, "prescriptions") == {seeded.prescription_id}
    assert _read_ids(server, seeded.staff_b.user_id, "payments") == {
        seeded.payment_id,
        seeded.failed_payment_id,
    }
    assert _read_ids(server, seeded.staff_b.user_id, "patients") == {seeded.patient_b}


def test_booking_actions_go_through_the_api_service_and_need_csrf(seeded: Seeded) -> None:
    server = seeded.server
    client, csrf = sign_in(server, seeded.staff_a)
    path = f"/dashboard/queues/bookings/{seeded.booking_id}"
    with closing(client), seeded.api(seeded.staff_a) as api:
        assert client.post(path, data={"state": "confirmed"}).status_code == 403
        forged = client.post(path, data={"state": "confirmed", "csrf_token": "x" * 64})
        assert forged.status_code == 403
        assert api.get(f"/v1/bookings/{seeded.booking_id}").json()["state"] == "booked"

        done = client.post(
            path,
            data={"state": "confirmed", "reason": "typed, then Confirm clicked"},
            headers={"HX-Request": "true", "X-CSRF-Token": csrf},
        )
        assert done.status_code == 200
        assert "Appointment is now confirmed." in done.text
        assert done.text.lstrip().startswith(f'<tr id="booking-{seeded.booking_id}"')
        confirmed = api.get(f"/v1/bookings/{seeded.booking_id}").json()
        assert confirmed["state"] == "confirmed" and confirmed["cancel_reason"] is None

        # The same move again is refused as the API refuses it: 409, shown in the row.
        again = client.post(
            path, data={"state": "confirmed"}, headers={"HX-Request": "true", "X-CSRF-Token": csrf}
        )
        assert again.status_code == 409 and "bad_transition" in again.text
        assert again.headers["X-Dashboard-Fragment"] == "1"

        # A plain form (no JavaScript) is redirected back to the queues.
        cancelled = client.post(
            path, data={"state": "cancelled", "reason": "patient in hospital", "csrf_token": csrf}
        )
        assert cancelled.status_code == 200 and cancelled.url.path == "/dashboard/queues"
        read = api.get(f"/v1/bookings/{seeded.booking_id}").json()
    assert read["state"] == "cancelled"
    with server.db.read() as session:
        booking = session.get(Booking, seeded.booking_id)
        assert booking is not None and booking.cancel_reason == "patient in hospital"
        changes = session.scalars(
            select(AuditEvent.target).where(
                AuditEvent.actor_id == seeded.staff_a.user_id,
                AuditEvent.action == "booking-state",
            )
        ).all()
    assert len(changes) == 2  # confirmed, cancelled: audited by the service, as for the API


def test_order_actions_move_the_order_like_the_api(seeded: Seeded) -> None:
    server = seeded.server
    client, csrf = sign_in(server, seeded.staff_b)
    order = f"/v1/commerce/orders/{seeded.order_id}"
    with closing(client), seeded.api(seeded.staff_b) as api:
        pick = f"/dashboard/queues/orders/{seeded.order_id}/pick"
        assert client.post(pick, headers={"HX-Request": "true"}).status_code == 403
        assert api.get(order).json()["state"] == "accepted"
        on_hand_before = sum(lot.on_hand for lot in seeded.shop.lots(_foam(api, order)))

        picked = client.post(pick, headers={"HX-Request": "true", "X-CSRF-Token": csrf})
        assert picked.status_code == 200 and "Order is now picked." in picked.text
        read = api.get(order).json()
        assert read["state"] == "picked"
        assert {r["state"] for r in read["reservations"]} == {"picked"}
        assert sum(lot.on_hand for lot in seeded.shop.lots(_foam(api, order))) == (
            on_hand_before - 2
        )

        page = client.get("/dashboard/queues").text
        assert "Mark shipped" in _row(page, "order", seeded.order_id)
        shipped = client.post(
            f"/dashboard/queues/orders/{seeded.order_id}/ship", data={"csrf_token": csrf}
        )
        assert shipped.status_code == 200 and shipped.url.path == "/dashboard/queues"
        assert api.get(order).json()["state"] == "shipped"
        assert _row(shipped.text, "order", seeded.order_id) == ""  # out of the queue

        late = client.post(pick, data={"csrf_token": csrf})
        assert late.status_code == 409 and "order_state" in late.text


def _foam(api: httpx.Client, order: str) -> str:
    lines = api.get(order).json()["lines"]
    return str(lines[0]["product_id"])


def test_refunds_go_through_the_api_refund_once_per_form(seeded: Seeded) -> None:
    server = seeded.server
    client, csrf = sign_in(server, seeded.staff_b)
    path = f"/dashboard/queues/payments/{seeded.payment_id}/refund"
    form = {"amount": "2000", "idempotency_key": uuid.uuid4().hex, "reason": "damaged"}
    with closing(client), seeded.api(seeded.staff_b) as api:
        assert client.post(path, data=form).status_code == 403
        assert client.post(path, data={**form, "csrf_token": "nope"}).status_code == 403
        assert api.get(f"/v1/payments/{seeded.payment_id}").json()["refunded"] == 0

        headers = {"HX-Request": "true", "X-CSRF-Token": csrf}
        done = client.post(path, data=form, headers=headers)
        assert done.status_code == 200 and "Refund succeeded: 2000" in done.text
        assert api.get(f"/v1/payments/{seeded.payment_id}").json()["refunded"] == 2000
        # The same form sent twice refunds once (the API's idempotency).
        assert client.post(path, data=form, headers=headers).status_code == 200
        assert api.get(f"/v1/payments/{seeded.payment_id}").json()["refunded"] == 2000
        too_much = client.post(
            path, data={**form, "amount": "3001", "idempotency_key": uuid.uuid4().hex},
            headers=headers,
        )  # fmt: skip
        assert too_much.status_code == 409 and "refund_too_large" in too_much.text
        failed = client.post(
            f"/dashboard/queues/payments/{seeded.failed_payment_id}/refund",
            data={**form, "idempotency_key": uuid.uuid4().hex, "csrf_token": csrf},
        )
        assert failed.status_code == 409
        invoice = api.get(f"/v1/payments/{seeded.payment_id}").json()["invoice_id"]
        refunds = api.get(f"/v1/invoices/{invoice}").json()["refunds"]
    assert [(r["amount"], r["reason"]) for r in refunds] == [(2000, "damaged")]


def test_a_clinician_gets_no_buttons_and_403_when_posting(seeded: Seeded) -> None:
    server = seeded.server
    reader_a = new_staff(server, seeded.world.clinic_id, role="clinician")
    reader_b = new_staff(server, seeded.shop.clinic_id, role="clinician")
    a, csrf_a = sign_in(server, reader_a)
    b, csrf_b = sign_in(server, reader_b)
    with closing(a), closing(b), seeded.api(seeded.staff_b) as api:
        page_a, page_b = a.get("/dashboard/queues").text, b.get("/dashboard/queues").text
        booking = _row(page_a, "booking", seeded.booking_id)
        assert "Queuedwell" in booking and "<button" not in booking
        order = _row(page_b, "order", seeded.order_id)
        assert "Ordersby" in order and "<button" not in order
        assert "Ordersby" in _row(page_b, "payment", seeded.payment_id)
        assert "<button" not in _row(page_b, "payment", seeded.payment_id)

        refused = a.post(
            f"/dashboard/queues/bookings/{seeded.booking_id}",
            data={"state": "confirmed", "csrf_token": csrf_a},
        )
        assert refused.status_code == 403 and "forbidden" in refused.text
        assert (
            b.post(
                f"/dashboard/queues/orders/{seeded.order_id}/pick", data={"csrf_token": csrf_b}
            ).status_code
            == 403
        )
        assert (
            b.post(
                f"/dashboard/queues/payments/{seeded.payment_id}/refund",
                data={"csrf_token": csrf_b, "amount": "1", "idempotency_key": uuid.uuid4().hex},
            ).status_code
            == 403
        )
        # Another clinic's staff cannot act on it either (404, as for a missing one).
        other, csrf_other = sign_in(server, seeded.staff_a)
        with closing(other):
            assert (
                other.post(
                    f"/dashboard/queues/orders/{seeded.order_id}/pick",
                    data={"csrf_token": csrf_other},
                ).status_code
                == 404
            )
        order_read = api.get(f"/v1/commerce/orders/{seeded.order_id}").json()
        payment_read = api.get(f"/v1/payments/{seeded.payment_id}").json()
    assert order_read["state"] == "accepted" and payment_read["refunded"] == 0
    with server.db.read() as session:
        booking_row = session.get(Booking, seeded.booking_id)
        assert booking_row is not None and booking_row.state == "booked"


def test_the_audit_page_shows_the_checkpoint_and_the_verification(server: Any) -> None:
    """The page shows the newest signed checkpoint; verifying (on request) shows what
    `verify_log` finds. The session's server is shared with tests that break the log
    on purpose, so the page is held to the verifier's own report, not to "verified"."""
    clinic = server.new_clinic()
    staff = new_staff(server, clinic, role="staff")
    clinician = new_staff(server, clinic, role="clinician")
    client, csrf = sign_in(server, staff)
    with closing(client):
        page = client.get("/dashboard/audit")
        with server.db.read() as session:
            checkpoint = latest_checkpoint(session=session)
        assert "Verified" not in page.text  # verification runs when asked
        verified = client.post("/dashboard/audit/verify", data={"csrf_token": csrf})
        fragment = client.post(
            "/dashboard/audit/verify", headers={"hx-request": "true", "x-csrf-token": csrf}
        )
        forged = client.post("/dashboard/audit/verify", data={})
    with server.db.read() as session:
        report = verify_log(
            session=session, public_key=server.app.state.artifact_key.public_key_bytes
        )
    assert page.status_code == 200 and verified.status_code == 200
    assert forged.status_code == 403
    assert checkpoint is not None
    assert f'<dd id="checkpoint-size">{checkpoint.size}</dd>' in page.text
    assert checkpoint.root.hex() in page.text
    assert server.app.state.artifact_key.public_key_bytes[:8].hex() in page.text
    assert "<h1>" not in fragment.text and "<h1>" in verified.text
    for answer in (verified, fragment):
        if report.ok:
            assert "Verified" in answer.text and "does not verify" not in answer.text
        else:
            assert "does not verify" in answer.text
            assert f"{len(report.problems)} problem" in answer.text
    refused, _ = sign_in(server, clinician)
    with closing(refused):
        answer = refused.get("/dashboard/audit")
    assert answer.status_code == 403 and "audit_readers_only" in answer.text


def test_the_disclosures_page_lists_the_reads_of_a_patient(seeded: Seeded) -> None:
    server = seeded.server
    viewer = new_staff(server, seeded.shop.clinic_id, role="staff")
    client, _ = sign_in(server, viewer)
    with closing(client):
        patient_page = client.get(f"/dashboard/patients/{seeded.patient_b}")
        assert f"/dashboard/patients/{seeded.patient_b}/disclosures" in patient_page.text
        page = client.get(f"/dashboard/patients/{seeded.patient_b}/disclosures")
        later = client.get(f"/dashboard/patients/{seeded.patient_b}/disclosures?page=2")
    assert page.status_code == 200
    rows = page.text.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    mine = [r for r in rows if viewer.user_id in r]
    assert mine and any("read (R)" in r and "ok" in r for r in mine)
    assert all("treatment" in r or "operations" in r for r in mine)
    # The tablet's push that created the patient is there too, and the order.
    assert any("device" in r for r in rows)
    assert later.status_code == 200 and "Earlier events" in later.text
    with server.db.read() as session:
        searched = session.scalars(
            select(AuditEvent).where(
                AuditEvent.actor_id == viewer.user_id, AuditEvent.action == "audit-search"
            )
        ).all()
    assert len(searched) == 2  # each page audited as a read of the audit, like the API

    # Another clinic's staff: 404 as for a missing patient; a clinician: 403.
    other, _ = sign_in(server, seeded.staff_a)
    clinician = new_staff(server, seeded.shop.clinic_id, role="clinician")
    reader, _ = sign_in(server, clinician)
    with closing(other), closing(reader):
        assert other.get(f"/dashboard/patients/{seeded.patient_b}/disclosures").status_code == 404
        refused = reader.get(f"/dashboard/patients/{seeded.patient_b}/disclosures")
        assert refused.status_code == 403
        no_link = reader.get(f"/dashboard/patients/{seeded.patient_b}").text
    assert "/disclosures" not in no_link
