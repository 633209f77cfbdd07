"""The dashboard's wound page over HTTP: the timeline, the healing curve and its flag,
the tissue chart, clinic scope and the audit of the page view.

Wounds and assessments are seeded as the projections a sync push writes: records
validated by the crdt schemas, dumped and projected by `projection_row` (the page reads
only the projections)."""

from __future__ import annotations

import re
import time
import uuid
from contextlib import closing
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, select, update

from sync_server.audit.tables import AuditEvent, BreakGlassGrant
from sync_server.dashboard.healing import wound_view
from sync_server.dashboard.web import templates
from sync_server.sync.tables import WoundRow
from tests.server.dashboard_world import (
    audited_reads,
    new_staff,
    seed_patient,
    seed_wound,
    sign_in,
)

SLOW = [(0, 10.0), (7, 9.8), (14, 9.5), (21, 9.0), (35, 8.4)]  # 13 % at day 28
FAST = [(0, 10.0), (7, 8.0), (14, 6.5), (28, 4.0), (42, 2.0)]  # 60 % at day 28


def _hrefs(html: str) -> list[str]:
    return re.findall(r'(?:href|src|action)="([^"]*)"', html)


def test_the_page_shows_every_assessment_and_flags_a_slow_wound(server: Any) -> None:
    clinic = server.new_clinic()
    family = f"Nightingale{uuid.uuid4().hex[:6]}"
    patient = seed_patient(server, clinic, family)
    slow, slow_ids = seed_wound(server, clinic, patient, [*SLOW, (30, 1.0)], deleted_days=(30,))
    fast, fast_ids = seed_wound(server, clinic, patient, FAST, site="sacrum")
    client, _ = sign_in(server, new_staff(server, clinic))
    with closing(client):
        page = client.get(f"/dashboard/wounds/{slow}")
        other = client.get(f"/dashboard/wounds/{fast}")
    assert page.status_code == 200 and other.status_code == 200
    html = page.text
    assert "Wound: left heel" in html and "pressure" in html
    assert f'href="/dashboard/patients/{patient}"' in html
    shown = re.findall(r'<li id="assessment-([0-9a-f-]+)">', html)
    assert shown == slow_ids  # every assessment not deleted, oldest first
    assert "Not on track:" in html and "On track:" not in html
    # interpolated between day 21 (9.0) and day 35 (8.4): 8.7 cm², 13 %
    assert "shrank by only 13.0 %" in html and "8.70 cm²" in html
    for figure in ("12.50 cm", "4.25 \u00d7 3.00 cm", "6.5 / 3.2 mm", "3.00 cm³", "(measured)"):
        assert figure in html, figure
    assert "wound-seg 2.3.1, confidence 87 %" in html
    assert "Quality flags (1):" in html and "low light" in html
    assert html.count(">View in 3D<") == 1
    assert f'href="/dashboard/assessments/{slow_ids[0]}/scan"' in html
    assert "Clinician: Nurse Okafor" in html

    fast_html = other.text
    assert "On track:" in fast_html and "Not on track" not in fast_html
    assert "shrank by 60.0 %" in fast_html
    assert re.findall(r'<li id="assessment-([0-9a-f-]+)">', fast_html) == fast_ids

    for answer in (page, other):
        assert " style=" not in answer.text and "<script>" not in answer.text
        assert not re.search(r"<[^>]+\son[a-z]+=", answer.text)
        for url in _hrefs(answer.text):
            assert family not in url and "Ada" not in url, url
        assert family not in answer.text  # the wound page does not even name the patient


def test_the_charts_are_accessible_svg_with_tables(server: Any) -> None:
    clinic = server.new_clinic()
    patient = seed_patient(server, clinic, "Seacole")
    wound, _ = seed_wound(server, clinic, patient, SLOW)
    client, _ = sign_in(server, new_staff(server, clinic))
    with closing(client):
        html = client.get(f"/dashboard/wounds/{wound}").text
    svgs = re.findall(
        r'<svg class="chart ([a-z]+)"[^>]*role="img"[^>]*>\s*<title id="([^"]+)">', html
    )
    assert [kind for kind, _ in svgs] == ["curve", "tissue"]
    assert 'aria-labelledby="curve-title curve-desc"' in html and '<desc id="curve-desc">' in html
    assert 'aria-labelledby="tissue-title tissue-desc"' in html
    curve = html[html.index('<svg class="chart curve"') : html.index("</svg>")]
    path = re.search(r'class="series-area" d="([^"]+)"', curve)
    assert path and path.group(1).count("L") == len(SLOW) - 1
    assert 'class="threshold"' in curve and ">40 % reduction<" in curve
    assert 'class="target"' in curve and ">week 4<" in curve
    assert curve.count("<circle") == len(SLOW)
    tissue = html[html.index('<svg class="chart tissue"') :]
    tissue = tissue[: tissue.index("</svg>")]
    assert tissue.count('<g class="bar">') == len(SLOW)
    assert 'fill="url(#tissue-1)"' in tissue and '<pattern id="tissue-1"' in tissue
    # the data as tables for screen readers: a row per assessment in each
    assert html.count("<caption>") == 2
    assert html.count("<td>2026-0") == 2 * len(SLOW)
    for name in ("granulation", "slough", "necrosis"):
        assert f"</svg> {name}</li>" in html  # the legend in text


def test_another_clinics_user_gets_a_404_and_nothing_of_the_wound(server: Any) -> None:
    clinic, other = server.new_clinic(), server.new_clinic()
    patient = seed_patient(server, clinic, "Barton")
    wound, _ = seed_wound(server, clinic, patient, SLOW, site="right shin ulcer")
    stranger = new_staff(server, other)
    client, _ = sign_in(server, stranger)
    with closing(client):
        answer = client.get(f"/dashboard/wounds/{wound}")
        missing = client.get(f"/dashboard/wounds/{uuid.uuid4()}")
    assert answer.status_code == 404 and missing.status_code == 404
    assert "text/html" in answer.headers["content-type"]
    for text in ("right shin", "Nurse Okafor", "wound-seg", '<svg class="chart', patient):
        assert text not in answer.text, text
    assert audited_reads(server, stranger.user_id)[0] == ("not_found", {"wounds": [wound]})


def test_the_page_view_is_audited_exactly(server: Any) -> None:
    clinic = server.new_clinic()
    patient = seed_patient(server, clinic, "Fry")
    wound, ids = seed_wound(server, clinic, patient, SLOW)
    account = new_staff(server, clinic)
    client, _ = sign_in(server, account)
    with closing(client):
        assert client.get(f"/dashboard/wounds/{wound}").status_code == 200
    assert audited_reads(server, account.user_id) == [
        ("ok", {"wounds": [wound]}),
        ("ok", {"assessments": ids}),
    ]
    assert _purposes(server, account.user_id) == [("treatment", patient)] * 2


def _purposes(server: Any, user_id: str) -> list[tuple[str | None, str | None]]:
    """(purpose, patients) of every read `user_id` made, oldest first."""
    with server.db.read() as session:
        events = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.actor_id == user_id, AuditEvent.action == "read")
            .order_by(AuditEvent.id)
        ).all()
        return [(e.purpose, e.patients) for e in events]


def test_a_break_glass_grant_opens_the_wound_audited_as_break_glass(server: Any) -> None:
    clinic, other = server.new_clinic(), server.new_clinic()
    patient = seed_patient(server, clinic, "Cavell")
    wound, ids = seed_wound(server, clinic, patient, FAST)
    stranger = new_staff(server, other)
    now = datetime.now(UTC)
    grant = BreakGlassGrant(
        id=str(uuid.uuid4()),
        organisation_id=server.organisation_id,
        user_id=stranger.user_id,
        patient_id=patient,
        clinic_id=clinic,
        reason="emergency admission",
        granted_at=now,
        expires_at=now + timedelta(minutes=30),
    )
    with server.db.write() as session:
        session.add(grant)
    client, _ = sign_in(server, stranger)
    with closing(client):
        opened = client.get(f"/dashboard/wounds/{wound}")
        assert opened.status_code == 200
        assert "break-glass access" in opened.text and "On track:" in opened.text
        with server.db.write() as session:
            session.execute(
                update(BreakGlassGrant)
                .where(BreakGlassGrant.id == grant.id)
                .values(expires_at=now - timedelta(minutes=1))
            )
        expired = client.get(f"/dashboard/wounds/{wound}")
    assert expired.status_code == 403 and "Cavell" not in expired.text
    assert "wound-seg" not in expired.text
    assert audited_reads(server, stranger.user_id) == [
        ("ok", {"wounds": [wound]}),
        ("ok", {"assessments": ids}),
        ("not_found", {"wounds": [wound]}),
    ]
    assert _purposes(server, stranger.user_id)[:2] == [("break-glass", patient)] * 2


def test_a_wound_with_50_assessments_renders_fast(server: Any) -> None:
    clinic = server.new_clinic()
    patient = seed_patient(server, clinic, "Saunders")
    areas = [(day * 1.5, 20.0 * 0.985**day) for day in range(50)]
    wound, _ = seed_wound(server, clinic, patient, areas)
    client, _ = sign_in(server, new_staff(server, clinic))
    timings = []
    with closing(client):
        for _ in range(5):
            started = time.perf_counter()
            answer = client.get(f"/dashboard/wounds/{wound}")
            timings.append(time.perf_counter() - started)
            assert answer.status_code == 200
    assert len(re.findall(r'<li id="assessment-', answer.text)) == 50
    median = sorted(timings)[len(timings) // 2]
    print(
        f"wound page, 50 assessments, {server.backend}: {min(timings) * 1000:.1f} ms fastest, "
        f"{median * 1000:.1f} ms median over HTTP, {len(answer.content)} bytes"
    )
    # The whole request (session check, the wound, the assessments, two audit writes):
    # its fastest of 5 (the machine is shared, so a median would measure the neighbours).
    assert min(timings) < 0.1, timings


def test_the_page_reads_the_assessments_in_one_query(server: Any) -> None:
    clinic = server.new_clinic()
    patient = seed_patient(server, clinic, "Wald")
    wound_id, ids = seed_wound(
        server, clinic, patient, [(day, 10.0 - day / 10) for day in range(50)]
    )
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    with server.db.read() as session:
        wound = session.get(WoundRow, wound_id)
        assert wound is not None
        event.listen(server.db.engine, "before_cursor_execute", count)
        try:
            view = wound_view(session=session, wound=wound, settings=server.settings)
        finally:
            event.remove(server.db.engine, "before_cursor_execute", count)
        assert [a.id for a in view.assessments] == ids
        assert len(statements) == 1 and "FROM assessments" in statements[0]
        timings = []
        for _ in range(5):
            started = time.perf_counter()
            html = templates.get_template("wound.html").render(
                view=wound_view(session=session, wound=wound, settings=server.settings),
                nav="patients",
                csrf="x",
            )
            timings.append(time.perf_counter() - started)
    assert html.count('<li id="assessment-') == 50
    print(f"wound page, 50 assessments: read and rendered in {min(timings) * 1000:.1f} ms")
    assert min(timings) < 0.05, timings


def test_a_young_wound_says_not_yet_known_and_an_empty_one_draws_no_chart(server: Any) -> None:
    clinic = server.new_clinic()
    patient = seed_patient(server, clinic, "Henderson")
    young, _ = seed_wound(server, clinic, patient, [(0, 6.0), (9, 5.0)])
    empty, _ = seed_wound(server, clinic, patient, [])
    account = new_staff(server, clinic)
    client, _ = sign_in(server, account)
    with closing(client):
        young_page = client.get(f"/dashboard/wounds/{young}").text
        empty_page = client.get(f"/dashboard/wounds/{empty}").text
    assert "Area reduction at week 4: not yet known." in young_page
    assert "no assessment near or after week 4 yet" in young_page
    assert "On track:" not in young_page and "Not on track" not in young_page
    assert '<svg class="chart curve"' in young_page
    assert "No assessment has an area yet." in empty_page
    assert "No assessments yet." in empty_page and '<svg class="chart' not in empty_page
    assert audited_reads(server, account.user_id)[-2:] == [
        ("ok", {"wounds": [empty]}),
        ("ok", {"assessments": []}),
    ]
