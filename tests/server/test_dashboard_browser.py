"""The staff dashboard in a real browser (Debian's chromium through Playwright)
against a live server on loopback."""

from __future__ import annotations

from typing import Any

from crdt import IntentKind
from sync_server.bookings.tables import Booking
from sync_server.commerce.tables import Order
from tests.server.bookings_world import build_world, local
from tests.server.browser_world import OUTPUT, browser_sign_in
from tests.server.commerce_world import build_shop, decide, patient_of, place
from tests.server.dashboard_world import new_staff


def test_sign_in_with_totp_and_sign_out(server: Any, chromium: Any) -> None:
    account = new_staff(server, server.new_clinic())
    context = chromium.new_context()
    try:
        page = context.new_page()
        browser_sign_in(page, server, account)
        assert page.get_by_role("heading", name="Patients").is_visible()
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=OUTPUT / f"patients-{server.backend}.png", full_page=True)
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/dashboard/sign-in")
        page.goto(f"{server.url}/dashboard/patients")
        assert page.url.endswith("/dashboard/sign-in")
    finally:
        context.close()


def test_act_on_queue_items_in_place(server: Any, chromium: Any) -> None:
    shop = build_shop(server)
    world = build_world(server, doctors=1, caregivers=0)
    try:
        foam = shop.product("Foam", price=1250)
        shop.receive(foam, 10)
        tablet = shop.tablet()
        patient = patient_of(tablet, "Pickering")
        placed = decide(tablet, place(tablet, patient, [(foam, 1)]))
        order_id = str((placed.outcome or {})["order_id"])
        booker = world.tablet()
        booked = booker.patient("Bookham")
        intent = booker.intent(
            IntentKind.APPOINTMENT_REQUEST,
            patient_id=booked.id,
            service=world.review,
            starts_at=local(world.monday, 10),
            provider_id=world.doctors[0],
        )
        booker.sync(booked, intent)
        decision = booker.decision(intent.id)
        assert decision is not None and decision.outcome is not None
        booking_id = str(decision.outcome["booking_id"])
    finally:
        shop.close()
        world.close()
    account = new_staff(server, None, role="admin")  # sees both clinics
    context = chromium.new_context()
    try:
        page = context.new_page()
        refused: list[str] = []
        page.on(
            "console",
            lambda message: (
                refused.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        browser_sign_in(page, server, account)
        page.get_by_role("link", name="Queues").first.click()
        page.wait_for_url("**/dashboard/queues")
        row = page.locator(f"#order-{order_id}")
        assert "Pickering" in row.inner_text()
        row.get_by_role("button", name="Mark picked").click()
        page.get_by_role("status").filter(has_text="Order is now picked.").wait_for()
        # A form with several buttons sends the one clicked.
        page.locator(f"#booking-{booking_id}").get_by_role("button", name="Confirm").click()
        page.get_by_role("status").filter(has_text="Appointment is now confirmed.").wait_for()
        assert page.url.endswith("/dashboard/queues")  # updated in place, no navigation
        with server.db.read() as session:
            order = session.get(Order, order_id)
            booking = session.get(Booking, booking_id)
            assert order is not None and order.state == "picked"
            assert booking is not None and booking.state == "confirmed"
        assert refused == []
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=OUTPUT / f"queues-{server.backend}.png", full_page=True)
    finally:
        context.close()
