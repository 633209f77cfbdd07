"""The staff dashboard in a real browser (Debian's chromium through Playwright)
against a live server on loopback."""

from __future__ import annotations

from typing import Any

from tests.server.browser_world import OUTPUT, browser_sign_in
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
