"""Automatic logoff in the browser: a signed-in page clears itself once the session has
been idle for `staff_idle_seconds` (the server has ended it by then), so patient data
does not stay on an unattended screen."""

from __future__ import annotations

from typing import Any

from tests.server.browser_world import browser_sign_in
from tests.server.dashboard_world import new_staff


def test_an_unattended_page_signs_itself_out(server: Any, chromium: Any) -> None:
    idle = server.settings.staff_idle_seconds
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.clock.install()
        browser_sign_in(page, server, new_staff(server, server.new_clinic()))
        assert page.get_by_role("heading", name="Patients").is_visible()
        page.clock.fast_forward((idle - 5) * 1000)
        assert page.url.endswith("/dashboard/patients"), "signed out before the limit"
        page.clock.fast_forward(10_000)
        page.wait_for_url("**/dashboard/sign-in?ended=session_idle_expired")
        assert page.get_by_text("signed out after a period of inactivity").is_visible()
    finally:
        context.close()
