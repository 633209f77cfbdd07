"""The staff dashboard in a real browser (Debian's chromium through Playwright)
against a live server on loopback."""

from __future__ import annotations

import random
import string
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page
from sqlalchemy import update

from crdt import IntentKind
from sync_server.bookings.tables import Booking
from sync_server.commerce.tables import Order
from sync_server.dashboard.web import SESSION_COOKIE
from sync_server.db import utcnow
from sync_server.identity.tables import RefreshToken
from tests.server import dashboard_seed
from tests.server.bookings_world import build_world, local
from tests.server.browser_world import (
    OUTPUT,
    assert_accessible,
    axe_violations,
    browser_sign_in,
    screenshot,
)
from tests.server.commerce_world import build_shop, decide, patient_of, place
from tests.server.dashboard_seed import SeededWound, enrolment_token
from tests.server.dashboard_world import new_staff, seed_patient, seed_wound
from tests.server.scan_world import ply_of, seed_scan, wound_cloud

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


# ------------------------------------------------- acceptance run (helper T's tests)
# A clinic seeded through the real paths (a tablet syncing records and scan blobs,
# `tests/server/dashboard_seed.py`), then the dashboard driven as staff would.


@pytest.fixture(scope="module")
def seeded(server: Any, tmp_path_factory: pytest.TempPathFactory) -> SeededWound:
    """A patient with a healing and a stalled wound, 12 assessments and a 100,000-point
    scan, synced by an enrolled tablet into a clinic of its own."""
    clinic = server.new_clinic()
    name = "".join(random.choices(string.ascii_lowercase, k=8)).capitalize()
    return dashboard_seed.seed_wound(
        server.url,
        enrolment_token(server.db, clinic),
        tmp_path_factory.mktemp("seed-tablet") / "store",
        family_name=f"Seed{name.lower()}",
        mrn=f"MRN-{name.upper()}",
        assessments=12,
        scan_points=100_000,
    )


def _order_to_pick(server: Any) -> str:
    """A supplies order placed and accepted in a clinic of the organisation (it waits
    in the queues to be picked); returns its id."""
    shop = build_shop(server)
    try:
        foam = shop.product("Foam", price=1250)
        shop.receive(foam, 10)
        tablet = shop.tablet()
        placed = decide(tablet, place(tablet, patient_of(tablet, "Pickwick"), [(foam, 1)]))
        return str((placed.outcome or {})["order_id"])
    finally:
        shop.close()


def _search(page: Page, text: str) -> None:
    """Type `text` in the search and wait for htmx to have swapped the results in."""
    page.get_by_label("Name or MRN").fill(text)
    with page.expect_response("**/dashboard/patients/search"):
        page.get_by_role("button", name="Search").click()
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-settling')")


def test_acceptance_find_the_patient_open_the_wound_and_sign_out(
    server: Any, chromium: Any, seeded: SeededWound
) -> None:
    order_id = _order_to_pick(server)
    account = new_staff(server, None, role="admin")  # the organisation's: every clinic
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        browser_sign_in(page, server, account)
        # Typing the name finds the patient (htmx: the page does not navigate, and the
        # name never reaches a URL).
        _search(page, seeded.family_name)
        assert page.url == f"{server.url}/dashboard/patients"
        row = page.get_by_role("row").filter(has_text=seeded.mrn)
        assert row.count() == 1
        screenshot(page, f"patients-results-{server.backend}")
        row.get_by_role("link", name=f"{seeded.family_name}, {seeded.given_name}").click()
        page.wait_for_url(f"**/dashboard/patients/{seeded.patient_id}")
        assert page.get_by_role("heading", level=1).inner_text() == (
            f"{seeded.family_name}, {seeded.given_name}"
        )
        wounds = page.get_by_role("table", name="Wounds")
        healing = wounds.get_by_role("row").filter(has_text="left heel")
        assert healing.get_by_role("cell").nth(4).inner_text() == "12"
        stalled = wounds.get_by_role("row").filter(has_text="right lateral malleolus")
        assert stalled.get_by_role("cell").nth(4).inner_text() == "6"
        assert seeded.family_name not in page.url and seeded.mrn not in page.url
        screenshot(page, f"patient-{server.backend}")
        # The stalled wound is flagged on its page.
        stalled.get_by_role("link", name="right lateral malleolus").click()
        page.wait_for_url(f"**/dashboard/wounds/{seeded.stalled_wound_id}")
        assert "Not on track" in page.locator(".healing-status").inner_text()
        page.go_back()
        # The healing wound: on track, its curve drawn through every assessment.
        page.get_by_role("link", name="left heel").click()
        page.wait_for_url(f"**/dashboard/wounds/{seeded.wound_id}")
        assert "On track" in page.locator(".healing-status").inner_text()
        curve = page.get_by_role("img", name="Healing curve: area and volume over time")
        area = curve.locator("path.series-area")
        assert curve.locator("circle").count() == 12  # a marker per assessment
        assert area.evaluate("p => p.getTotalLength()") > 200  # a line through them
        box = area.bounding_box()
        assert box is not None and box["width"] > 200 and box["height"] > 50, box
        screenshot(page, f"wound-seeded-{server.backend}")
        # The last assessment's scan in 3D: drawn, not only present.
        page.get_by_role("link", name="View in 3D").last.click()
        page.wait_for_url(f"**/dashboard/assessments/{seeded.scan_assessment_id}/scan")
        canvas = page.locator('canvas[data-state="drawn"]')
        canvas.wait_for(timeout=60_000)
        assert canvas.get_attribute("data-points") == str(seeded.scan_points)
        share = canvas.evaluate(_BACKGROUND_SHARE)
        assert share["drawn"] > 0.05, share  # pixels other than the background
        assert share["outline"] > 20, share  # the boundary from measurement-details
        assert page.evaluate("() => performance.getEntriesByName('scan-interactive').length") == 1
        screenshot(page, f"scan-seeded-{server.backend}")
        # A queue item: the order is picked in place, through the API's own service.
        page.get_by_role("link", name="Queues").first.click()
        page.wait_for_url("**/dashboard/queues")
        page.locator(f"#order-{order_id}").get_by_role("button", name="Mark picked").click()
        page.get_by_role("status").filter(has_text="Order is now picked.").wait_for()
        with server.db.read() as session:
            order = session.get(Order, order_id)
            assert order is not None and order.state == "picked"
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/dashboard/sign-in")
        page.goto(f"{server.url}/dashboard/patients/{seeded.patient_id}")
        assert page.url.startswith(f"{server.url}/dashboard/sign-in")
        assert seeded.family_name not in page.content()
    finally:
        context.close()


def test_acceptance_staff_of_another_clinic_see_none_of_it(
    server: Any, chromium: Any, seeded: SeededWound
) -> None:
    # "staff" of another clinic: a role that may search patients and read the audit
    # log's disclosures, so only the clinic scope stands between them and the data.
    outsider = new_staff(server, server.new_clinic(), role="staff")
    context = chromium.new_context()
    try:
        page = context.new_page()
        browser_sign_in(page, server, outsider)
        for text in (seeded.family_name, seeded.mrn):
            _search(page, text)
            assert page.locator("#results").inner_text().strip() == "No patient matches."
        for path in (
            f"/dashboard/patients/{seeded.patient_id}",
            f"/dashboard/wounds/{seeded.wound_id}",
            f"/dashboard/assessments/{seeded.scan_assessment_id}/scan",
            f"/dashboard/assessments/{seeded.scan_assessment_id}/scan.bin",
            f"/dashboard/patients/{seeded.patient_id}/disclosures",
        ):
            answer = page.goto(f"{server.url}{path}")
            assert answer is not None and answer.status == 404, path
            assert page.get_by_role("heading", level=1).inner_text() == "Not found"
            html = page.content()
            assert seeded.family_name not in html and seeded.mrn not in html, path
    finally:
        context.close()


def test_acceptance_an_idle_session_lands_on_the_sign_in_page_saying_why(
    server: Any, chromium: Any
) -> None:
    account = new_staff(server, server.new_clinic())
    context = chromium.new_context()
    try:
        page = context.new_page()
        browser_sign_in(page, server, account)
        long_ago = utcnow() - timedelta(seconds=server.settings.staff_idle_seconds + 5)
        with server.db.write() as session:
            session.execute(
                update(RefreshToken)
                .where(RefreshToken.subject_id == account.user_id)
                .values(last_used_at=long_ago, issued_at=long_ago)
            )
        page.get_by_role("link", name="Patients").click()
        page.wait_for_url("**/dashboard/sign-in?ended=session_idle_expired")
        assert page.get_by_role("status").inner_text() == (
            "You were signed out after a period of inactivity."
        )
        assert page.get_by_role("heading", name="Sign in").is_visible()
        assert not any(c["name"] == SESSION_COOKIE for c in context.cookies())
    finally:
        context.close()


def test_every_dashboard_page_has_no_serious_accessibility_violation(
    server: Any, chromium: Any, seeded: SeededWound
) -> None:
    _order_to_pick(server)  # the queues page lists something
    account = new_staff(server, None, role="admin")  # may read the audit pages too
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/dashboard/sign-in")
        assert_accessible(page, "sign-in")
        screenshot(page, f"sign-in-{server.backend}")
        browser_sign_in(page, server, account)
        assert_accessible(page, "patients")
        _search(page, seeded.family_name)
        assert_accessible(page, "patients with results")
        _search(page, "Nobody Matches This")
        assert_accessible(page, "patients without results")
        page.goto(f"{server.url}/dashboard/patients/{seeded.patient_id}")
        assert_accessible(page, "patient")
        page.goto(f"{server.url}/dashboard/wounds/{seeded.wound_id}")
        assert_accessible(page, "wound (on track)")
        page.goto(f"{server.url}/dashboard/wounds/{seeded.stalled_wound_id}")
        assert_accessible(page, "wound (not on track)")
        page.goto(f"{server.url}/dashboard/assessments/{seeded.scan_assessment_id}/scan")
        page.locator('canvas[data-state="drawn"]').wait_for(timeout=60_000)
        assert_accessible(page, "scan in 3D")
        page.goto(f"{server.url}/dashboard/queues")
        assert page.get_by_role("button", name="Mark picked").count() >= 1
        assert_accessible(page, "queues")
        screenshot(page, f"queues-seeded-{server.backend}")
        page.goto(f"{server.url}/dashboard/audit")
        assert_accessible(page, "audit")
        screenshot(page, f"audit-{server.backend}")
        page.goto(f"{server.url}/dashboard/patients/{seeded.patient_id}/disclosures")
        assert page.get_by_role("cell").count() > 0  # the reads above are disclosed
        assert_accessible(page, "disclosures")
        screenshot(page, f"disclosures-{server.backend}")
        answer = page.goto(f"{server.url}/dashboard/patients/{uuid.uuid4()}")
        assert answer is not None and answer.status == 404
        assert_accessible(page, "error page")
        screenshot(page, f"error-{server.backend}")
    finally:
        context.close()


def test_the_axe_check_finds_a_violation_when_there_is_one(server: Any, chromium: Any) -> None:
    # The check itself: a page with an unlabelled field and an image without text
    # must fail it (else an empty result would prove nothing).
    context = chromium.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.url}/dashboard/sign-in")
        page.evaluate(
            """() => {
                document.querySelector("label[for=username]").remove();
                const img = document.createElement("img");
                img.src = "data:image/gif;base64,R0lGODlhAQABAAAAACw=";
                document.querySelector("main").append(img);
            }"""
        )
        found = {v["id"] for v in axe_violations(page)}
        assert {"label", "image-alt"} <= found, found
    finally:
        context.close()
