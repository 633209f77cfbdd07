"""The dashboard's reports page: a seeded clinic's figures, charts that are accessible
images with their data as tables, the wounds not on track linking to their pages, the
clinic picker limited to the caller's scope, another organisation's clinic Not found,
and the PDF route's document holding the clinic's name."""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

import pytest
from pypdf import PdfReader

from sync_server.identity.tenancy import ensure_clinic, ensure_organisation
from sync_server.reports.figures import ClinicReport, clinic_report

from .dashboard_world import audited_reads, new_staff, sign_in
from .reports_world import END, MONTH, START, ReportWorld, seed_world
from .test_staff import Tenancy


@pytest.fixture(scope="module")
def world(server: Any) -> tuple[ReportWorld, str]:
    # An organisation of its own: the seeded invoices carry no gapless numbers, and the
    # session's organisation is held to them (test_payments).
    name = f"Reports Clinic {uuid.uuid4().hex[:6]}"
    with server.db.write() as session:
        organisation = ensure_organisation(session=session, name=f"reports-{uuid.uuid4()}").id
        clinic = ensure_clinic(session=session, name=name, organisation_id=organisation).id
        other = ensure_clinic(
            session=session, name=f"other-{uuid.uuid4()}", organisation_id=organisation
        ).id
    seeded = seed_world(
        server.db,
        organisation_id=organisation,
        clinic_id=clinic,
        other_clinic_id=other,
    )
    return seeded, name


def _report(server: Any, clinic_id: str) -> ClinicReport:
    with server.db.read() as session:
        return clinic_report(session=session, clinic_id=clinic_id, start=START, end=END)


def _row(html: str, label: str) -> str:
    found = re.search(rf'<th scope="row">{re.escape(label)}</th><td class="num">([^<]*)</td>', html)
    assert found, f"no row {label!r}"
    return found.group(1)


def test_the_page_shows_the_clinics_figures_charts_and_wounds(server: Any, world: Any) -> None:
    seeded, name = world
    expected = _report(server, seeded.clinic_id)
    staff = new_staff(server, seeded.clinic_id, organisation_id=seeded.organisation_id)
    client, _ = sign_in(server, staff)
    try:
        picker = client.get("/dashboard/reports")
        assert picker.status_code == 200
        # A clinic-bound account is offered its own clinic only.
        assert re.findall(r'<option value="([^"]+)"', picker.text) == [seeded.clinic_id]
        assert 'href="/dashboard/reports" aria-current="page"' in picker.text

        page = client.get(
            "/dashboard/reports", params={"clinic_id": seeded.clinic_id, "month": MONTH}
        )
    finally:
        client.close()
    assert page.status_code == 200, page.text
    html = page.text
    assert name in html
    w, h, a = expected.wounds, expected.healing, expected.appointments
    assert _row(html, "Wounds seen") == str(w.seen) and w.seen > 10
    assert _row(html, "Wounds healed") == str(w.healed)
    assert _row(html, "Reduction known at week 4") == str(h.known)
    assert _row(html, "Appointments") == str(a.total) and a.total > 0
    assert _row(html, "Booked minutes") == str(a.booked_minutes)
    assert _row(html, "Visits") == str(expected.visits.total)
    assert _row(html, "Units picked") == str(expected.supplies.units_picked)
    assert expected.money, "the seed moved money"
    for m in expected.money:
        assert f"{m.revenue / 100:,.2f} {m.currency}" in html

    # Charts: accessible images (role, title, description) with the data as tables.
    svgs = re.findall(r"<svg class=\"chart bars\"[^>]*>.*?</svg>", html, re.S)
    assert len(svgs) == 2 + len(expected.money)
    for svg in svgs:
        assert 'role="img"' in svg
        title = re.search(r'<title id="([^"]+)">([^<]+)</title>', svg)
        assert title and title.group(2).strip()
        assert f'aria-labelledby="{title.group(1)} ' in svg and "<desc " in svg
    wounds_chart = svgs[0]
    assert f"seen: {w.seen}; healed: {w.healed}" in wounds_chart
    assert len(re.findall(r"<rect ", wounds_chart)) == 4
    states = "; ".join(f"{s.replace('_', ' ')}: {n}" for s, n in sorted(a.by_state.items()))
    assert states in svgs[1]
    assert html.count("as a table</summary>") == len(svgs)

    # Every wound not on track links to its wound page.
    assert h.not_on_track
    for x in h.not_on_track:
        assert f'href="/dashboard/wounds/{x.wound_id}"' in html
    assert f'href="/dashboard/reports/{seeded.clinic_id}/{MONTH}.pdf"' in html
    # Audited like the API's report: a read of the wounds not on track.
    reads = [t for outcome, t in audited_reads(server, staff.user_id) if outcome == "ok"]
    assert any(set(t.get("wounds", [])) == {x.wound_id for x in h.not_on_track} for t in reads), (
        reads
    )


def test_the_pdf_route_and_the_scope(server: Any, world: Any) -> None:
    seeded, name = world
    admin = new_staff(server, None, role="admin", organisation_id=seeded.organisation_id)
    elsewhere = Tenancy(server).setup()  # another organisation's clinics
    client, _ = sign_in(server, admin)
    try:
        pdf = client.get(f"/dashboard/reports/{seeded.clinic_id}/{MONTH}.pdf")
        foreign = client.get(
            "/dashboard/reports", params={"clinic_id": elsewhere.clinic_a, "month": MONTH}
        )
        foreign_pdf = client.get(f"/dashboard/reports/{elsewhere.clinic_a}/{MONTH}.pdf")
        picker = client.get("/dashboard/reports")
        bad_month = client.get(f"/dashboard/reports/{seeded.clinic_id}/2025-13.pdf")
        hostile = client.get(
            "/dashboard/reports", params={"clinic_id": "x' or 1=1", "month": MONTH}
        )
    finally:
        client.close()
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.headers["cache-control"] == "no-store"
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.content)).pages)
    assert name in text and "Appointments by state" in text

    for answer in (foreign, foreign_pdf):
        assert answer.status_code == 404
        assert "Not found" in answer.text and elsewhere.clinic_a not in answer.text
    options = re.findall(r'<option value="([^"]+)"', picker.text)
    assert seeded.clinic_id in options and elsewhere.clinic_a not in options
    assert bad_month.status_code == 400 and "invalid_month" in bad_month.text
    assert hostile.status_code in (400, 422) and "<h1>" in hostile.text
