"""The staff dashboard in a real browser (Debian's chromium through Playwright)
against a live server on loopback."""

from __future__ import annotations

from typing import Any

from sync_server.commerce.tables import Order
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


def test_pick_an_order_from_the_queue_in_place(server: Any, chromium: Any) -> None:
    shop = build_shop(server)
    try:
        foam = shop.product("Foam", price=1250)
        shop.receive(foam, 10)
        tablet = shop.tablet()
        patient = patient_of(tablet, "Pickering")
        placed = decide(tablet, place(tablet, patient, [(foam, 1)]))
        order_id = str((placed.outcome or {})["order_id"])
    finally:
        shop.close()
    account = new_staff(server, shop.clinic_id, role="staff")
    context = chromium.new_context()
    try:
        page = context.new_page()
        browser_sign_in(page, server, account)
        page.get_by_role("link", name="Queues").first.click()
        page.wait_for_url("**/dashboard/queues")
        row = page.locator(f"#order-{order_id}")
        assert "Pickering" in row.inner_text()
        row.get_by_role("button", name="Mark picked").click()
        page.get_by_role("status").filter(has_text="Order is now picked.").wait_for()
        assert page.url.endswith("/dashboard/queues")  # updated in place, no navigation
        with server.db.read() as session:
            order = session.get(Order, order_id)
            assert order is not None and order.state == "picked"
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=OUTPUT / f"queues-{server.backend}.png", full_page=True)
    finally:
        context.close()
