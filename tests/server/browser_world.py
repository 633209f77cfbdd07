"""A real browser for the dashboard tests: Debian's chromium driven by Playwright
(Playwright's own browser downloads do not work here), with WebGL on SwiftShader (no
GPU), signed in through the real sign-in form."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright

from tests.server.dashboard_world import StaffAccount

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--enable-unsafe-swiftshader", "--use-angle=swiftshader"]
OUTPUT = Path(__file__).resolve().parents[2] / "build" / "test-output" / "dashboard"
"""Where the browser tests save their screenshots (docs/dashboard.md shows them)."""


@contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Debian's chromium, headless, through Playwright."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def browser_sign_in(page: Page, server: Any, account: StaffAccount) -> None:
    """Sign `account` in on `page` through the sign-in form, as a person would."""
    page.goto(f"{server.url}/dashboard/sign-in")
    page.get_by_label("Username", exact=True).fill(account.username)
    page.get_by_label("Password", exact=True).fill(account.password)
    page.get_by_label("Authenticator code").fill(account.next_code())
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/patients")
