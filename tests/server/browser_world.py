"""A real browser for the dashboard tests: Debian's chromium driven by Playwright
(Playwright's own browser downloads do not work here), with WebGL on SwiftShader (no
GPU), signed in through the real sign-in form."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from playwright.sync_api import Browser, Page, sync_playwright

from tests.server.dashboard_world import StaffAccount

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--enable-unsafe-swiftshader", "--use-angle=swiftshader"]
OUTPUT = ROOT / "build" / "test-output" / "dashboard"
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


AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core from npm (``cd web && npm ci``), run in the page by `axe_violations`."""
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa")
"""The rules `axe_violations` runs: WCAG 2.1 levels A and AA."""
BLOCKING_IMPACTS = frozenset({"serious", "critical"})


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """The WCAG 2.1 A/AA violations of impact serious or critical that axe-core finds
    in `page` as it is now (each: rule id, impact, help, and the offending nodes' HTML).

    axe is injected by evaluating its source through the DevTools protocol, which the
    page's Content-Security-Policy (no inline scripts) does not apply to.
    """
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    results = page.evaluate(
        """async (tags) => {
            const found = await window.axe.run(document, {
                runOnly: {type: "tag", values: tags},
                resultTypes: ["violations"],
            });
            return found.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => n.html.slice(0, 200)),
            }));
        }""",
        list(WCAG_TAGS),
    )
    return [v for v in cast(list[dict[str, Any]], results) if v["impact"] in BLOCKING_IMPACTS]


def assert_accessible(page: Page, what: str) -> None:
    """Fail, listing them, if axe finds serious or critical WCAG 2.1 A/AA violations."""
    found = axe_violations(page)
    assert not found, f"{what} ({page.url}): " + "; ".join(
        f"{v['id']} ({v['impact']}): {v['help']}: {v['nodes']}" for v in found
    )


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot of `page` as ``OUTPUT/name.png``; returns its path."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path
