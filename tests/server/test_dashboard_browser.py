"""The staff dashboard in a real browser (Debian's chromium through Playwright)
against a live server on loopback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crdt import IntentKind
from sync_server.bookings.tables import Booking
from sync_server.commerce.tables import Order
from tests.server.bookings_world import build_world, local
from tests.server.browser_world import OUTPUT, browser_sign_in
from tests.server.commerce_world import build_shop, decide, patient_of, place
from tests.server.dashboard_world import new_staff
from tests.server.scan_world import ply_of, seed_scan, wound_cloud
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
