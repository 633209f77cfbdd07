"""The staff dashboard in a real browser (Debian's chromium through Playwright)
against a live server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.server.browser_world import OUTPUT, browser_sign_in
from tests.server.dashboard_world import new_staff
from tests.server.test_dashboard_wound import seed_patient, seed_wound

ROOT = Path(__file__).resolve().parents[2]

_FIRST_PAINT = """() => new Promise(done => new PerformanceObserver((list, observer) => {
    const first = list.getEntries().find(e => e.name === 'first-contentful-paint');
    if (first) { observer.disconnect(); done(first.startTime); }
}).observe({type: 'paint', buffered: true}))"""
"""When the page (just loaded) first drew content, in ms after navigation started."""


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


def test_a_wound_page_with_50_assessments_draws_its_healing_curve(
    server: Any, chromium: Any
) -> None:
    clinic = server.new_clinic()
    patient = seed_patient(server, clinic, "Nightingale")
    areas = [(day * 1.5, 20.0 * 0.985**day) for day in range(50)]
    wound, _ = seed_wound(server, clinic, patient, areas)
    account = new_staff(server, clinic)
    context = chromium.new_context()
    try:
        page = context.new_page()
        refused: list[str] = []
        page.on(
            "console", lambda m: refused.append(m.text) if "Content Security" in m.text else None
        )
        browser_sign_in(page, server, account)
        page.goto(f"{server.url}/dashboard/wounds/{wound}")
        curve = page.locator("svg.chart.curve")
        assert curve.get_attribute("role") == "img"
        box = curve.bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 50
        area = page.locator("svg.chart.curve path.series-area")
        assert area.evaluate("p => p.getTotalLength()") > 100
        assert area.evaluate("p => p.getBBox().width") > 100
        assert page.locator("svg.chart.curve circle").count() == 50
        volume = page.locator("svg.chart.curve path.series-volume")
        assert volume.evaluate("p => p.getTotalLength()") > 100
        assert page.locator("svg.chart.tissue g.bar").count() == 50
        assert page.get_by_text("On track:").is_visible()
        assert page.locator("ol.timeline > li").count() == 50
        assert refused == []  # nothing on the page broke the CSP
        axe = (ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js").read_text()
        page.evaluate(axe)
        violations = page.evaluate(
            "async () => (await axe.run(document, {resultTypes: ['violations']}))"
            ".violations.filter(v => v.impact === 'serious' || v.impact === 'critical')"
            ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
        )
        assert violations == []
        OUTPUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=OUTPUT / f"wound-{server.backend}.png", full_page=True)
        weight = page.evaluate(
            "performance.getEntriesByType('navigation').concat("
            "performance.getEntriesByType('resource')).reduce((s, e) => s + e.encodedBodySize, 0)"
        )
        paints = []
        for _ in range(5):
            page.goto(f"{server.url}/dashboard/wounds/{wound}")
            paints.append(page.evaluate(_FIRST_PAINT))
        median = sorted(paints)[len(paints) // 2]
        print(
            f"wound page, 50 assessments, {server.backend}: first contentful paint median "
            f"{median:.0f} ms of {[round(p) for p in paints]}, page weight {weight} bytes"
        )
        # The goal is 500 ms (measured: ~250-320 ms here); twice that as the bound,
        # so the check survives the machine's other work but still catches a slow page.
        assert median < 1000
    finally:
        context.close()
