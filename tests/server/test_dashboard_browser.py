"""The staff dashboard in a real browser (Debian's chromium through Playwright)
against a live server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.server.browser_world import OUTPUT, browser_sign_in
from tests.server.dashboard_world import new_staff
from tests.server.scan_world import ply_of, seed_scan, wound_cloud


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


_BACKGROUND_SHARE = """(canvas) => {
  const copy = document.createElement("canvas");
  copy.width = canvas.width;
  copy.height = canvas.height;
  const context = copy.getContext("2d");
  context.drawImage(canvas, 0, 0);
  const pixels = context.getImageData(0, 0, copy.width, copy.height).data;
  let drawn = 0, outline = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    const [r, g, b] = [pixels[i], pixels[i + 1], pixels[i + 2]];
    if (Math.abs(r - 0x20) + Math.abs(g - 0x24) + Math.abs(b - 0x2a) > 12) drawn++;
    if (r > 200 && g > 180 && b < 60) outline++;
  }
  return {drawn: drawn / (pixels.length / 4), outline, width: copy.width, height: copy.height};
}"""


def test_the_scan_is_drawn_in_3d(server: Any, chromium: Any, tmp_path: Path) -> None:
    seeded = seed_scan(server, tmp_path, ply_of(wound_cloud(200_000)))
    account = new_staff(server, seeded.clinic_id)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    try:
        page = context.new_page()
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on(
            "console",
            lambda m: (
                problems.append(m.text)
                if m.type == "error" and "Failed to load resource" not in m.text
                else None
            ),
        )
        page.on(
            "response",
            lambda r: (
                problems.append(f"{r.status} {r.url}")
                if r.status >= 400 and not r.url.endswith("/favicon.ico")
                else None
            ),
        )
        browser_sign_in(page, server, account)
        page.goto(f"{server.url}/dashboard/assessments/{seeded.assessment_id}/scan")
        canvas = page.locator('canvas[data-state="drawn"]')
        canvas.wait_for(timeout=30_000)
        assert canvas.get_attribute("data-points") == "200000"
        assert "Showing 200,000 points" in page.locator("#scan-status").inner_text()
        share = canvas.evaluate(_BACKGROUND_SHARE)
        assert share["width"] > 300 and share["height"] > 200, share
        assert share["drawn"] > 0.10, share  # the points cover the view, not the background
        assert share["outline"] > 50, share  # the yellow boundary is drawn
        interactive = page.evaluate("performance.getEntriesByName('scan-interactive')[0].startTime")
        assert interactive > 0
        # The keyboard turns the view: the picture changes.
        before = canvas.screenshot()
        canvas.focus()
        for key in ("ArrowLeft", "ArrowLeft", "ArrowUp", "+"):
            page.keyboard.press(key)
        page.wait_for_timeout(200)
        assert canvas.screenshot() != before
        assert problems == []  # no CSP violation or script error
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=OUTPUT / f"scan-{server.backend}.png", full_page=True)
    finally:
        context.close()
