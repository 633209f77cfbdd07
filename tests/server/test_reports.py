"""A clinic's report agrees with its records: every figure of `clinic_report` on a
seeded clinic is recomputed here in plain Python from the rows themselves (read
whole, not through figures.py's SQL); the Parquet export reads back in DuckDB with the
same rows and no names; the PDF's text holds the figures; the routes keep to the
caller's scope and roles and audit the read; the CLI writes all three."""

from __future__ import annotations

import io
import json
import statistics
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from pypdf import PdfReader
from sqlalchemy import select

from cli.main import cli
from sync_server.audit.tables import AuditEvent
from sync_server.bookings.tables import Booking, Provider
from sync_server.commerce.tables import Location, Lot, Order, Reservation
from sync_server.dashboard.healing import Sample, area_reduction
from sync_server.dashboard.report_charts import report_charts
from sync_server.payments.tables import Invoice, LedgerPosting, LedgerTransaction, Payment
from sync_server.reports.exports import TABLES, export_parquet
from sync_server.reports.figures import ClinicReport, MoneyFigures, clinic_report
from sync_server.reports.pdf import render_pdf
from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

from .reports_world import CLOSED_DAY, END, MONTH, START, ReportWorld, seed_world
from .test_staff import Tenancy


@pytest.fixture(scope="module")
def world(server: Any) -> tuple[Tenancy, ReportWorld]:
    tenancy = Tenancy(server).setup()
    seeded = seed_world(
        server.db,
        organisation_id=tenancy.organisation_id,
        clinic_id=tenancy.clinic_a,
        other_clinic_id=tenancy.clinic_b,
    )
    return tenancy, seeded


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _in(moment: datetime | None) -> bool:
    return moment is not None and START <= moment < END


def _report(server: Any, clinic_id: str) -> ClinicReport:
    with server.db.read() as session:
        return clinic_report(session=session, clinic_id=clinic_id, start=START, end=END)


def test_every_figure_agrees_with_a_recomputation(server: Any, world: Any) -> None:
    _, seeded = world
    clinic = seeded.clinic_id
    report = _report(server, clinic)
    with server.db.read() as session:
        wounds = {w.id: w for w in session.scalars(select(WoundRow))}
        assessments = [a for a in session.scalars(select(AssessmentRow)) if a.clinic_id == clinic]
        bookings = [b for b in session.scalars(select(Booking)) if b.clinic_id == clinic]
        worked = {
            b.provider_id
            for b in session.scalars(select(Booking))
            if b.clinic_id == clinic and b.state != "cancelled" and _in(b.starts_at)
        }
        providers = [
            p
            for p in session.scalars(select(Provider))
            if p.clinic_id == clinic and (p.active or p.id in worked)
        ]
        locations = {loc.id for loc in session.scalars(select(Location)) if loc.clinic_id == clinic}
        lots = {lot.id: lot for lot in session.scalars(select(Lot))}
        orders = {o.id: o for o in session.scalars(select(Order)) if o.clinic_id == clinic}
        reservations = list(session.scalars(select(Reservation)))
        invoices = {i.id: i for i in session.scalars(select(Invoice)) if i.clinic_id == clinic}
        transactions = {t.id: t for t in session.scalars(select(LedgerTransaction))}
        postings = list(session.scalars(select(LedgerPosting)))
        payments = list(session.scalars(select(Payment)))

    # Wounds: seen, healed, median time to heal.
    live = [a for a in assessments if not a.deleted and not wounds[a.wound_id].deleted]
    before_end = [a for a in live if _t(a.captured_at) < END]
    seen = {a.wound_id for a in live if _in(_t(a.captured_at))}
    assert report.wounds.seen == len(seen) > 10
    healed = [w for w in seen if wounds[w].status == "healed"]
    assert report.wounds.healed == len(healed) > 0
    spans = []
    for w in healed:
        times = [_t(a.captured_at) for a in before_end if a.wound_id == w]
        if len(set(times)) > 1:  # one assessment: healed, but no time to heal
            spans.append((max(times) - min(times)).total_seconds() / 86400)
    assert report.wounds.median_days_to_heal == pytest.approx(statistics.median(spans))

    # The 4-week rule over every measured assessment (not only the SQL's three).
    known, on_track, off = 0, 0, {}
    for w in seen:
        samples = [
            Sample(_t(a.captured_at), a.area_cm2)
            for a in before_end
            if a.wound_id == w and a.area_cm2 is not None
        ]
        found = area_reduction(samples, weeks=4, threshold_percent=40.0)
        if found.on_track is None:
            continue
        known += 1
        on_track += bool(found.on_track)
        if not found.on_track:
            off[w] = found.reduction_percent
    assert report.healing.known == known > 5
    assert report.healing.on_track == on_track
    assert report.healing.share_on_track == pytest.approx(on_track / known)
    assert {x.wound_id: x.reduction_percent for x in report.healing.not_on_track} == {
        w: pytest.approx(r, abs=0.006) for w, r in off.items()
    }
    assert off, "the seed has wounds not on track"
    assert all(x.patient_id == wounds[x.wound_id].patient_id for x in report.healing.not_on_track)

    # Assessments per wound per month.
    months: dict[str, list[str]] = {}
    for a in live:
        if _in(_t(a.captured_at)):
            months.setdefault(a.captured_at[:7], []).append(a.wound_id)
    assert [(m.month, m.assessments, m.wounds) for m in report.assessments_by_month] == [
        (m, len(ids), len(set(ids))) for m, ids in sorted(months.items())
    ]

    # Appointments: states, utilisation against the nurse's hours, late cancellations.
    appointments = [b for b in bookings if b.kind == "appointment" and _in(b.starts_at)]
    a = report.appointments
    assert a.by_state == dict(Counter(b.state for b in appointments))
    assert a.no_shows == sum(b.state == "no_show" for b in appointments) > 0
    assert a.late_cancellations == sum(
        b.state == "cancelled" and b.late_cancellation for b in appointments
    )
    booked = sum(
        (min(b.ends_at, END) - b.starts_at).total_seconds() // 60
        for b in appointments
        if b.state != "cancelled"
    )
    assert a.booked_minutes == booked
    weekdays = [
        START.date() + timedelta(days=d)
        for d in range((END - START).days)
        if (START.date() + timedelta(days=d)).weekday() < 5
    ]
    offered = 8 * 60 * len([d for d in weekdays if d != CLOSED_DAY]) * len(providers)
    assert a.offered_minutes == offered
    assert a.utilisation == pytest.approx(booked / offered, abs=1e-4)

    # Visits and ratings.
    visits = [b for b in bookings if b.kind == "visit" and _in(b.starts_at)]
    ratings = [b.rating for b in visits if b.state == "completed" and b.rating is not None]
    v = report.visits
    assert (v.total, v.completed, v.missed, v.cancelled) == (
        len(visits),
        sum(b.state == "completed" for b in visits),
        sum(b.state == "missed" for b in visits),
        sum(b.state == "cancelled" for b in visits),
    )
    assert v.rated == len(ratings) > 0
    assert v.mean_rating == pytest.approx(statistics.mean(ratings), abs=1e-3)
    assert v.ratings == dict(sorted(Counter(ratings).items()))

    # Supplies.
    placed = [o for o in orders.values() if _in(o.created_at)]
    s = report.supplies
    assert s.orders_by_state == dict(Counter(o.state for o in placed))
    assert s.order_totals == {"EUR": sum(o.total for o in placed if o.state != "cancelled")}
    picked = sum(
        r.quantity
        for r in reservations
        if r.order_id in {o.id for o in placed}
        and r.state == "picked"
        and lots[r.lot_id].location_id in locations
    )
    here = [lot for lot in lots.values() if lot.location_id in locations]
    on_hand = sum(lot.on_hand for lot in here)
    assert (s.units_picked, s.units_on_hand) == (picked, on_hand)
    assert s.stock_turns == pytest.approx(picked / on_hand, abs=1e-4)
    expired = [lot for lot in here if lot.on_hand > 0 and lot.expires_on < END.date()]
    assert (s.expired_lots, s.expired_units) == (len(expired), sum(x.on_hand for x in expired))
    assert s.expired_lots > 0

    # Money, per currency.
    expected: dict[str, dict[str, int]] = {}

    def add(currency: str, key: str, amount: int) -> None:
        row = expected.setdefault(
            currency,
            dict.fromkeys(
                ("revenue", "refunds", "collected", "outstanding", "outstanding_invoices"), 0
            ),
        )
        row[key] += amount

    for p in postings:
        tx = transactions[p.transaction_id]
        if tx.invoice_id in invoices and _in(tx.created_at):
            if p.account.startswith("revenue:"):
                add(tx.currency, "revenue", -p.amount)
            elif p.account == "refunds":
                add(tx.currency, "refunds", p.amount)
    for pay in payments:
        if pay.invoice_id in invoices and pay.status == "succeeded" and _in(pay.settled_at):
            add(pay.currency, "collected", pay.captured)
    for inv in invoices.values():
        if inv.status == "open" and inv.issued_at is not None and inv.issued_at < END:
            add(inv.currency, "outstanding", inv.total - inv.paid)
            add(inv.currency, "outstanding_invoices", 1)
    got = {
        m.currency: {
            "revenue": m.revenue,
            "refunds": m.refunds,
            "collected": m.collected,
            "outstanding": m.outstanding,
            "outstanding_invoices": m.outstanding_invoices,
        }
        for m in report.money
    }
    assert got == expected
    assert sum(row["revenue"] for row in got.values()) > 0
    assert sum(row["refunds"] for row in got.values()) > 0


def test_a_provider_who_left_keeps_the_hours_they_worked_in_past_reports(
    server: Any, world: Any
) -> None:
    _, seeded = world
    before = _report(server, seeded.clinic_id).appointments
    with server.db.write() as session:
        providers = session.scalars(
            select(Provider).where(Provider.clinic_id == seeded.clinic_id)
        ).all()
        for provider in providers:
            provider.active = False  # everyone left after the period...
        session.flush()
        after = clinic_report(
            session=session, clinic_id=seeded.clinic_id, start=START, end=END
        ).appointments
        # ... and the period's figures stand (an empty month after it offers nothing).
        assert (after.offered_minutes, after.utilisation) == (
            before.offered_minutes,
            before.utilisation,
        )
        later = clinic_report(
            session=session,
            clinic_id=seeded.clinic_id,
            start=END + timedelta(days=400),
            end=END + timedelta(days=430),
        ).appointments
        assert (later.offered_minutes, later.utilisation) == (0, None)
        session.rollback()  # the world is shared: nobody really left
    with server.db.read() as session:
        assert all(
            p.active
            for p in session.scalars(select(Provider).where(Provider.clinic_id == seeded.clinic_id))
        )


def test_an_empty_clinic_and_bad_periods(server: Any, world: Any) -> None:
    empty = server.new_clinic()
    report = _report(server, empty)
    assert (report.wounds.seen, report.healing.known, report.healing.share_on_track) == (0, 0, None)
    assert report.appointments.utilisation is None and report.money == ()
    from sync_server.errors import Invalid, NotFound

    with server.db.read() as session:
        with pytest.raises(Invalid):
            clinic_report(session=session, clinic_id=empty, start=END, end=START)
        with pytest.raises(Invalid):
            clinic_report(session=session, clinic_id=empty, start=datetime(2025, 3, 1), end=END)
        with pytest.raises(NotFound):
            clinic_report(session=session, clinic_id="no-such-clinic", start=START, end=END)


def test_money_is_shown_in_each_currencys_own_minor_unit(server: Any, world: Any) -> None:
    """JPY has no minor unit and KWD three decimals: the PDF, the dashboard's charts and
    its tables show each as people read it, not as hundredths."""
    _, seeded = world
    report = replace(
        _report(server, seeded.clinic_id),
        money=(
            MoneyFigures("JPY", 50_000, 2_000, 48_000, 0, 0),
            MoneyFigures("KWD", 12_345, 0, 12_345, 5, 1),
        ),
    )
    text = "\n".join(
        page.extract_text() for page in PdfReader(io.BytesIO(render_pdf(report))).pages
    )
    for shown in ("50000 JPY", "2000 JPY", "12.345 KWD", "0.005 KWD"):
        assert shown in text
    assert "500.00 JPY" not in text
    charts = {chart.key: chart for chart in report_charts(report)}
    jpy = {bar.label: (bar.value, bar.shown) for bar in charts["money-jpy"].bars}
    assert jpy["revenue"] == (50_000, "50000 JPY")
    kwd = {bar.label: (bar.value, bar.shown) for bar in charts["money-kwd"].bars}
    assert kwd["revenue"] == (pytest.approx(12.345), "12.345 KWD")


def test_parquet_export_reads_back_in_duckdb(server: Any, world: Any, tmp_path: Path) -> None:
    from sync_server.audit.events import OPERATIONS, Actor

    _, seeded = world
    folder = tmp_path / "plain"
    made = export_parquet(
        server.db,
        clinic_id=seeded.clinic_id,
        folder=folder,
        actor=Actor("system"),
        purpose=OPERATIONS,
    )
    con = duckdb.connect()
    with server.db.read() as session:
        expected = {
            "patients": [
                p for p in session.scalars(select(PatientRow)) if p.clinic_id == seeded.clinic_id
            ],
            "assessments": [
                a for a in session.scalars(select(AssessmentRow)) if a.clinic_id == seeded.clinic_id
            ],
            "bookings": [
                b for b in session.scalars(select(Booking)) if b.clinic_id == seeded.clinic_id
            ],
            "invoices": [
                i for i in session.scalars(select(Invoice)) if i.clinic_id == seeded.clinic_id
            ],
        }
    for name in TABLES:
        path = str(folder / f"{name}.parquet")
        count = con.execute("SELECT count(*) FROM read_parquet(?)", [path]).fetchone()
        assert count is not None and count[0] == made.rows[name], name
    for name, rows in expected.items():
        assert made.rows[name] == len(rows) > 0, name
    areas = dict(
        con.execute(
            "SELECT id, area_cm2 FROM read_parquet(?)", [str(folder / "assessments.parquet")]
        ).fetchall()
    )
    assert areas == {a.id: a.area_cm2 for a in expected["assessments"]}
    totals = con.execute(
        "SELECT sum(total) FROM read_parquet(?)", [str(folder / "invoices.parquet")]
    ).fetchone()
    assert totals is not None and totals[0] == sum(i.total for i in expected["invoices"])
    columns = [
        r[0]
        for r in con.execute(
            "DESCRIBE SELECT * FROM read_parquet(?)", [str(folder / "patients.parquet")]
        ).fetchall()
    ]
    assert "given_name" not in columns and "mrn" not in columns and "birth_year" in columns
    everything = b"".join((folder / f"{name}.parquet").read_bytes() for name in TABLES)
    for given, _family, mrn in seeded.names:
        assert given.encode() not in everything and mrn.encode() not in everything

    named = export_parquet(
        server.db,
        clinic_id=seeded.clinic_id,
        folder=tmp_path / "named",
        actor=Actor("system"),
        purpose=OPERATIONS,
        identified=True,
    )
    names = con.execute(
        "SELECT given_name, family_name FROM read_parquet(?)",
        [str(named.folder / "patients.parquet")],
    ).fetchall()
    assert sorted(names) == sorted((g, f) for g, f, _ in seeded.names)
    assert all(
        mrn.encode() not in (named.folder / "patients.parquet").read_bytes()
        for _, _, mrn in seeded.names
    )


def _staff(tenancy: Tenancy, role: str, clinic_id: str | None) -> Any:
    return tenancy.client(tenancy.user(role, clinic_id))


def test_routes_json_pdf_scope_roles_and_audit(server: Any, world: Any) -> None:
    tenancy, seeded = world
    clinic = seeded.clinic_id
    params = {"month": MONTH}
    with _staff(tenancy, "clinician", clinic) as c:
        answer = c.get(f"/v1/reports/clinics/{clinic}", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        direct = _report(server, clinic)
        assert body["wounds"]["seen"] == direct.wounds.seen
        assert (
            body["healing"]["not_on_track"][0]["wound_id"]
            == direct.healing.not_on_track[0].wound_id
        )
        assert body["money"][0]["currency"] == direct.money[0].currency
        same = c.get(
            f"/v1/reports/clinics/{clinic}",
            params={"start": START.isoformat(), "end": END.isoformat()},
        )
        assert same.json()["appointments"] == body["appointments"]
        pdf = c.get(f"/v1/reports/clinics/{clinic}/report.pdf", params=params)
        assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
        text = "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf.content)).pages)
        assert _clinic_name(server, clinic) in text
        assert f"Wounds seen {direct.wounds.seen}" in text
        assert f"No-shows {direct.appointments.no_shows}" in text
        assert f"Late cancellations (< 24 h) {direct.appointments.late_cancellations}" in text
        revenue = direct.money[0]
        assert (
            f"Revenue ({revenue.currency}) {revenue.revenue / 100:,.2f} {revenue.currency}" in text
        )
        # Another clinic of the organisation, out of a clinic-bound account's scope.
        assert (
            c.get(f"/v1/reports/clinics/{seeded.other_clinic_id}", params=params).status_code == 404
        )
        for bad in (
            {"month": "2025-13"},
            {"month": "March"},
            {},
            {"start": "2025-03-01T00:00:00", "end": "2025-04-01T00:00:00"},
            {"start": END.isoformat(), "end": START.isoformat()},
            {"month": MONTH, "start": START.isoformat()},
            {"start": "0001-01-01T00:00:00Z", "end": "0001-02-01T00:00:00Z"},
            {"month": "9999-12"},
        ):
            answer = c.get(f"/v1/reports/clinics/{clinic}", params=bad)
            assert answer.status_code in (400, 422), (bad, answer.text)
    with server.db.read() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.clinic_id == clinic, AuditEvent.action == "read")
        ).all()
    reads = [e for e in events if e.target and '"wounds"' in e.target and e.role == "clinician"]
    assert len(reads) == 3  # JSON twice and the PDF
    assert direct.healing.not_on_track[0].wound_id in (reads[-1].target or "")
    assert direct.healing.not_on_track[0].patient_id in (reads[-1].patients or "")

    other = Tenancy(server).setup()  # another organisation
    with _staff(other, "admin", None) as admin:
        assert admin.get(f"/v1/reports/clinics/{clinic}", params=params).status_code == 404
        assert (
            admin.get(f"/v1/reports/clinics/{clinic}/report.pdf", params=params).status_code == 404
        )
    with _staff(tenancy, "admin", None) as org_staff:
        assert (
            org_staff.get(
                f"/v1/reports/clinics/{seeded.other_clinic_id}", params=params
            ).status_code
            == 200
        )
    _, token = server.device_token(clinic)
    with server.http(token) as device:
        assert device.get(f"/v1/reports/clinics/{clinic}", params=params).status_code == 403
    with server.http() as anonymous:
        assert anonymous.get(f"/v1/reports/clinics/{clinic}", params=params).status_code == 401


def _clinic_name(server: Any, clinic_id: str) -> str:
    from sync_server.identity.tables import Clinic

    with server.db.read() as session:
        found = session.get(Clinic, clinic_id)
        assert found is not None
        return found.name


def test_cli_writes_figures_pdf_and_parquet(server: Any, world: Any, tmp_path: Path) -> None:
    _, seeded = world
    where = ["--data-dir", str(server.settings.data_dir)]
    if server.settings.database_url:
        where += ["--database-url", str(server.settings.database_url)]
    out = tmp_path / "march.pdf"
    done = CliRunner().invoke(
        cli,
        [
            "server",
            "report",
            *where,
            "--clinic",
            seeded.clinic_id,
            "--month",
            MONTH,
            "--pdf",
            str(out),
            "--parquet",
            str(tmp_path / "tables"),
            "--json",
        ],
    )
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    direct = _report(server, seeded.clinic_id)
    assert summary["report"]["wounds"]["seen"] == direct.wounds.seen
    assert summary["parquet"]["rows"]["patients"] == len(seeded.patients)
    assert out.read_bytes().startswith(b"%PDF")
    human = CliRunner().invoke(
        cli, ["server", "report", *where, "--clinic", seeded.clinic_id, "--month", MONTH]
    )
    assert human.exit_code == 0 and f"wounds seen {direct.wounds.seen}" in human.stdout
    wrong = CliRunner().invoke(
        cli, ["server", "report", *where, "--clinic", seeded.clinic_id, "--month", "2025-3x"]
    )
    assert wrong.exit_code == 2, wrong.output
    missing = CliRunner().invoke(
        cli, ["server", "report", *where, "--clinic", "nowhere", "--month", MONTH]
    )
    assert missing.exit_code == 4, missing.output
    with server.db.read() as session:
        exported = session.scalars(
            select(AuditEvent).where(
                AuditEvent.clinic_id == seeded.clinic_id, AuditEvent.action == "export"
            )
        ).all()
    assert any(e.actor_kind == "system" and "parquet" in (e.target or "") for e in exported)
