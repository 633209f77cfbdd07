"""Staff exports and the clinic-wide lists: every row, the columns, CSV quoting and
spreadsheet safety, filters, keyset pages, clinic scoping and the audit log. Every test
runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from crdt import ClinicalNote, RecordDocument
from sync_server.audit.tables import AuditEvent
from sync_server.sync.exports import COLUMNS, export_rows
from sync_server.sync.listing import AssessmentFilters
from sync_server.sync.tables import AssessmentRow, Document

from .test_staff import Tenancy

_SEQ = itertools.count(1_000_000)


@pytest.fixture
def tenancy(server: Any) -> Tenancy:
    return Tenancy(server).setup()


def scan(
    tenancy: Tenancy,
    clinic_id: str,
    patient_id: str,
    wound_id: str,
    captured_at: str,
    *,
    area: float | None = 4.2,
    tissue: dict[str, float] | None = None,
) -> str:
    """An assessment row with figures, model output and a tissue mix."""
    aid = str(uuid.uuid4())
    model = (
        None
        if tissue is None
        else {"model_id": "wound-seg", "model_version": "1", "tissue_composition": tissue,
              "confidence": 0.9}
    )  # fmt: skip
    record = {
        "id": aid,
        "wound_id": wound_id,
        "patient_id": patient_id,
        "captured_at": captured_at,
        "measurements": {"area_cm2": area, "volume_cm3": 1.5, "area_method": "measured"},
        "model_output": model,
        "quality_flags": ["low_light"],
        "blobs": [],
    }
    with tenancy.server.db.write() as session:
        session.add(
            AssessmentRow(
                id=aid,
                clinic_id=clinic_id,
                deleted=False,
                conflicted=False,
                updated_at=captured_at,
                record=json.dumps(record),
                wound_id=wound_id,
                patient_id=patient_id,
                captured_at=captured_at.replace("+00:00", "") + ".000000Z"
                if "." not in captured_at
                else captured_at,
                device_id=str(uuid.uuid4()),
                area_cm2=area,
                volume_cm3=1.5,
                model_id=None if model is None else "wound-seg",
            )
        )
    return aid


def note(tenancy: Tenancy, clinic_id: str, patient_id: str, text: str) -> str:
    """A note document, stored as a push stores it (notes have no projection)."""
    device = str(uuid.uuid4())
    doc = RecordDocument.create(
        ClinicalNote,
        {"patient_id": patient_id, "author": "Dr Who", "text": text},
        device_id=device,
        clinic_id=clinic_id,
    )
    with tenancy.server.db.write() as session:
        session.add(
            Document(
                id=doc.id,
                clinic_id=clinic_id,
                collection="notes",
                heads=b"".join(sorted(doc.heads)),
                data=doc.save(),
                seq=next(_SEQ),
                patient_id=patient_id,
            )
        )
    return doc.id


def exports(server: Any, request_ids: set[str]) -> list[AuditEvent]:
    with server.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "export", AuditEvent.request_id.in_(request_ids))
                .order_by(AuditEvent.id)
            )
        )


def rows_of(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def test_csv_export_has_every_row_the_columns_and_safe_cells(tenancy: Tenancy, server: Any) -> None:
    a = tenancy.clinic_a
    risky = tenancy.patient(a, '=HYPERLINK("http://x")', 'O\'Brien, "Jr"', mrn="+44")
    other = tenancy.patient(a, "Ada", "-Lovelace")
    tenancy.patient(tenancy.clinic_b, "Grace", "Hopper")
    wound = tenancy.wound(a, risky, "@heel")
    scan(tenancy, a, risky, wound, "2024-05-01T10:00:00+00:00",
         tissue={"granulation": 70.0, "slough": 30.0, "hypergranulation": 1.5})  # fmt: skip
    scan(tenancy, a, risky, wound, "2024-05-02T10:00:00+00:00", area=None)
    clinician = tenancy.user("clinician", a)
    with tenancy.client(clinician) as c:
        patients = c.get("/v1/staff/export/patients", params={"format": "csv"})
        assert patients.headers["content-type"].startswith("text/csv")
        assert patients.text.splitlines()[0] == ",".join(COLUMNS["patients"])
        got = {row["id"]: row for row in rows_of(patients)}
        assert set(got) == {risky, other}  # clinic A only
        assert got[risky]["given_name"] == '\'=HYPERLINK("http://x")'
        assert got[risky]["family_name"] == 'O\'Brien, "Jr"'  # quoted, round-trips
        assert got[risky]["mrn"] == "'+44"
        assert got[other]["family_name"] == "'-Lovelace"

        wounds = rows_of(c.get("/v1/staff/export/wounds"))
        assert [(w["id"], w["body_site"]) for w in wounds] == [(wound, "'@heel")]

        scans = rows_of(c.get("/v1/staff/export/assessments", params={"format": "csv"}))
        assert len(scans) == 2
        by_time = {s["captured_at"][:10]: s for s in scans}
        first = by_time["2024-05-01"]
        assert first["area_cm2"] == "4.2" and first["volume_cm3"] == "1.5"
        assert first["tissue_granulation_pct"] == "70.0"
        assert first["tissue_slough_pct"] == "30.0"
        assert first["tissue_necrosis_pct"] == ""
        assert json.loads(first["tissue_other"]) == {"hypergranulation": 1.5}
        assert first["model_id"] == "wound-seg" and first["model_confidence"] == "0.9"
        assert json.loads(first["quality_flags"]) == ["low_light"]
        assert first["area_method"] == "measured"
        assert by_time["2024-05-02"]["area_cm2"] == ""


def test_ndjson_export_and_notes(tenancy: Tenancy, server: Any) -> None:
    a = tenancy.clinic_a
    patient = tenancy.patient(a, "Ada", "Lovelace")
    wound = tenancy.wound(a, patient, "heel")
    scan(tenancy, a, patient, wound, "2024-05-01T10:00:00+00:00", tissue={"necrosis": 5.0})
    first = note(tenancy, a, patient, "=cmd|' /C calc'!A0\nsecond line, with a comma")
    note(tenancy, tenancy.clinic_b, tenancy.patient(tenancy.clinic_b, "G", "H"), "not yours")
    staff = tenancy.user("staff", a)
    with tenancy.client(staff) as c:
        response = c.get("/v1/staff/export/assessments", params={"format": "ndjson"})
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.text.splitlines()]
        assert len(lines) == 1
        assert list(lines[0]) == list(COLUMNS["assessments"])
        assert lines[0]["tissue_necrosis_pct"] == 5.0 and lines[0]["area_cm2"] == 4.2
        assert lines[0]["quality_flags"] == ["low_light"]

        notes = c.get("/v1/staff/export/notes", params={"format": "ndjson"})
        exported = [json.loads(line) for line in notes.text.splitlines()]
        assert [n["id"] for n in exported] == [first]
        assert exported[0]["text"].startswith("=cmd")  # JSON is not a spreadsheet
        as_csv = rows_of(c.get("/v1/staff/export/notes"))
        assert as_csv[0]["text"] == "'=cmd|' /C calc'!A0\nsecond line, with a comma"


def test_export_filters_and_refusals(tenancy: Tenancy, server: Any) -> None:
    a = tenancy.clinic_a
    p1 = tenancy.patient(a, "Ada", "Lovelace")
    p2 = tenancy.patient(a, "Alan", "Turing")
    w1 = tenancy.wound(a, p1, "heel")
    w2 = tenancy.wound(a, p2, "sacrum")
    early = scan(tenancy, a, p1, w1, "2024-01-01T10:00:00+00:00", area=2.0)
    late = scan(tenancy, a, p1, w1, "2024-06-01T10:00:00+00:00", area=9.0, tissue={"slough": 1.0})
    other = scan(tenancy, a, p2, w2, "2024-03-01T10:00:00+00:00", area=5.0)
    clinician = tenancy.user("clinician", a)

    def exported(**params: Any) -> list[str]:
        with tenancy.client(clinician) as c:
            return sorted(r["id"] for r in rows_of(c.get("/v1/staff/export/assessments",
                                                            params=params)))  # fmt: skip

    assert exported() == sorted([early, late, other])
    assert exported(patient_id=p1) == sorted([early, late])
    assert exported(wound_id=w2) == [other]
    assert exported(captured_from="2024-02-01", captured_before="2024-06-01T10:00:00Z") == [other]
    assert exported(min_area_cm2=4, max_area_cm2=6) == [other]
    assert exported(has_model_output=True) == [late]
    with tenancy.client(clinician) as c:
        for params, code in (
            ({"min_area_cm2": 5, "max_area_cm2": 1}, "empty_range"),
            ({"captured_from": "2024-02-01", "captured_before": "2024-01-01"}, "empty_range"),
            ({"captured_from": "9999-12-31T23:00:00-05:00"}, "bad_time"),
        ):
            refused = c.get("/v1/staff/export/assessments", params=params)
            assert refused.status_code == 400, (params, refused.text)
            assert refused.json()["error"]["code"] == code
        refused = c.get("/v1/staff/export/patients", params={"has_model_output": True})
        assert refused.json()["error"]["code"] == "filter_not_applicable"
        for path, params in (
            ("/v1/staff/export/invoices", {}),
            ("/v1/staff/export/patients", {"format": "xlsx"}),
            ("/v1/staff/export/assessments", {"min_area_cm2": "nan"}),
            ("/v1/staff/export/assessments", {"captured_from": "yesterday"}),
        ):
            bad = c.get(path, params=params)
            assert bad.status_code == 422, (path, params, bad.text)
            assert "error" in bad.json()
        assert rows_of(c.get("/v1/staff/export/patients", params={"patient_id": p2}))[0]["id"] == p2


def test_staff_of_one_clinic_cannot_export_another_and_exports_are_audited(
    tenancy: Tenancy, server: Any
) -> None:
    a, b = tenancy.clinic_a, tenancy.clinic_b
    pa = tenancy.patient(a, "Ada", "Lovelace")
    pb = tenancy.patient(b, "Grace", "Hopper")
    clinician = tenancy.user("clinician", a)
    admin = tenancy.user("admin", None)
    with tenancy.client(clinician) as c:
        hidden = c.get("/v1/staff/export/patients", params={"clinic_id": b})
        assert hidden.status_code == 404
        assert hidden.json()["error"]["code"] == "clinic_not_found"
        own = c.get("/v1/staff/export/patients", params={"format": "ndjson"})
        assert [json.loads(line)["id"] for line in own.text.splitlines()] == [pa]
    with tenancy.client(admin) as c:
        needs_clinic = c.get("/v1/staff/export/patients")
        assert needs_clinic.status_code == 400
        assert needs_clinic.json()["error"]["code"] == "clinic_required"
        of_b = c.get("/v1/staff/export/patients", params={"clinic_id": b, "patient_id": pb})
        assert [r["id"] for r in rows_of(of_b)] == [pb]
    request_ids = {own.headers["x-request-id"], of_b.headers["x-request-id"],
                   hidden.headers["x-request-id"]}  # fmt: skip
    events = exports(server, request_ids)
    assert [(e.actor_id, e.clinic_id, e.outcome) for e in events] == [
        (clinician.id, a, "started"),
        (clinician.id, a, "ok rows=1"),
        (admin.id, b, "started"),
        (admin.id, b, "ok rows=1"),
    ]
    assert events[1].patients == pa and events[3].patients == pb
    assert json.loads(events[2].target) == {"kind": "patients", "format": "csv",
                                            "patient_id": pb}  # fmt: skip


def test_the_export_streams_a_batch_at_a_time(tenancy: Tenancy, server: Any) -> None:
    a = tenancy.clinic_a
    patient = tenancy.patient(a, "Ada", "Lovelace")
    wound = tenancy.wound(a, patient, "heel")
    made = {scan(tenancy, a, patient, wound, f"2024-05-{day:02d}T10:00:00+00:00")
            for day in range(1, 11)}  # fmt: skip
    opened = 0

    def session_for() -> Any:
        nonlocal opened
        opened += 1
        return server.db.read()

    batches = export_rows(
        session_for, kind="assessments", clinic_id=a, filters=AssessmentFilters(), batch_size=3
    )
    first = next(batches)
    assert len(first) == 3 and opened == 1  # one batch read, the rest not yet
    rest = [row for batch in batches for row in batch]
    assert {row["id"] for row in first + rest} == made
    assert opened == 5  # 3 + 3 + 3 + 1, then an empty read ends it


def test_clinic_assessment_list_pages_by_keyset(tenancy: Tenancy, server: Any) -> None:
    a = tenancy.clinic_a
    patient = tenancy.patient(a, "Ada", "Lovelace")
    wound = tenancy.wound(a, patient, "heel")
    made = [scan(tenancy, a, patient, wound, f"2024-05-{day:02d}T10:00:00+00:00")
            for day in range(1, 8)]  # fmt: skip
    clinician = tenancy.user("clinician", a)
    with tenancy.client(clinician) as c:
        first = c.get("/v1/staff/assessments", params={"limit": 3})
        assert first.status_code == 200, first.text
        assert [i["id"] for i in first.json()["items"]] == made[:3]
        # A record inserted before the cursor does not shift the next page.
        scan(tenancy, a, patient, wound, "2024-04-01T10:00:00+00:00")
        second = c.get("/v1/staff/assessments",
                       params={"limit": 3, "cursor": first.json()["next_cursor"]})  # fmt: skip
        assert [i["id"] for i in second.json()["items"]] == made[3:6]
        third = c.get("/v1/staff/assessments",
                      params={"limit": 3, "cursor": second.json()["next_cursor"]})  # fmt: skip
        assert [i["id"] for i in third.json()["items"]] == made[6:]
        assert third.json()["next_cursor"] is None
        filtered = c.get("/v1/staff/assessments", params={"captured_from": "2024-05-06"})
        assert [i["id"] for i in filtered.json()["items"]] == made[5:]
        for cursor in ("not-a-cursor", "W10", "WyJhIl0"):
            bad = c.get("/v1/staff/assessments", params={"cursor": cursor})
            assert bad.status_code == 400, cursor
            assert bad.json()["error"]["code"] == "bad_cursor"
        assert (
            c.get("/v1/staff/assessments", params={"clinic_id": tenancy.clinic_b}).status_code
            == 404
        )


def test_notes_list_and_totals(tenancy: Tenancy, server: Any) -> None:
    a = tenancy.clinic_a
    patient = tenancy.patient(a, "Ada", "Lovelace")
    tenancy.patient(a, "Gone", "Away", deleted=True)
    wound = tenancy.wound(a, patient, "heel")
    scan(tenancy, a, patient, wound, "2024-05-01T10:00:00+00:00")
    written = sorted(note(tenancy, a, patient, f"note {i}") for i in range(5))
    staff = tenancy.user("staff", a)
    with tenancy.client(staff) as c:
        page = c.get("/v1/staff/notes", params={"limit": 3})
        assert page.status_code == 200, page.text
        assert [n["id"] for n in page.json()["items"]] == written[:3]
        assert page.json()["items"][0]["author"] == "Dr Who"
        rest = c.get("/v1/staff/notes", params={"limit": 3, "cursor": page.json()["next_cursor"]})
        assert [n["id"] for n in rest.json()["items"]] == written[3:]
        assert rest.json()["next_cursor"] is None
        totals = c.get("/v1/staff/totals")
        assert totals.status_code == 200, totals.text
        assert totals.json() == {"clinic_id": a, "patients": 1, "wounds": 1,
                                 "assessments": 1, "notes": 5}  # fmt: skip
        assert c.get("/v1/staff/totals", params={"clinic_id": tenancy.clinic_b}).status_code == 404
    with server.db.read() as session:
        audited = session.scalar(
            select(AuditEvent).where(AuditEvent.request_id == page.headers["x-request-id"])
        )
    assert audited is not None and audited.action == "read" and audited.patients == patient


def test_server_export_command(tenancy: Tenancy, server: Any, tmp_path: Any) -> None:
    from click.testing import CliRunner

    from cli.main import cli

    a = tenancy.clinic_a
    patient = tenancy.patient(a, "=Ada", "Lovelace")
    wound = tenancy.wound(a, patient, "heel")
    made = scan(tenancy, a, patient, wound, "2024-05-01T10:00:00+00:00", tissue={"slough": 2.0})
    where = ["--data-dir", str(server.settings.data_dir)]
    if server.settings.database_url:
        where += ["--database-url", str(server.settings.database_url)]
    runner = CliRunner()
    to_stdout = runner.invoke(
        cli, ["server", "export", *where, "--clinic", a, "--kind", "patients"]
    )
    assert to_stdout.exit_code == 0, to_stdout.output
    assert to_stdout.stdout.splitlines()[0] == ",".join(COLUMNS["patients"])
    assert f"{patient},{a},Lovelace,'=Ada" in to_stdout.stdout
    out = tmp_path / "scans.ndjson"
    summary = runner.invoke(
        cli,
        ["server", "export", *where, "--clinic", a, "--kind", "assessments", "--format",
         "ndjson", "--out", str(out), "--model-output", "--from", "2024-04-01", "--json"],
    )  # fmt: skip
    assert summary.exit_code == 0, summary.output
    assert json.loads(summary.stdout) == {"clinic_id": a, "kind": "assessments",
                                          "format": "ndjson", "rows": 1}  # fmt: skip
    [line] = out.read_text().splitlines()
    assert out.stat().st_mode & 0o777 == 0o600  # patient data: readable by this user only
    assert json.loads(line)["id"] == made and json.loads(line)["tissue_slough_pct"] == 2.0
    with server.db.read() as session:
        audited = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "export", AuditEvent.clinic_id == a)
        ).all()
    assert [(e.actor_kind, e.outcome) for e in audited] == [
        ("system", "started"), ("system", "ok rows=1"), ("system", "started"),
        ("system", "ok rows=1"),
    ]  # fmt: skip
    for args, code, message in (
        (["--clinic", "no-such-clinic", "--kind", "notes", "--out", str(tmp_path / "x")], 4,
         "no clinic"),
        (["--clinic", a, "--kind", "patients", "--min-area", "1"], 2, "not a filter"),
        (["--clinic", a, "--kind", "assessments", "--from", "yesterday"], 2, "ISO 8601"),
        (["--clinic", a, "--kind", "patients", "--json"], 2, "--out"),
    ):  # fmt: skip
        refused = runner.invoke(cli, ["server", "export", *where, *args])
        assert refused.exit_code == code, (args, refused.output)
        assert message in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "x").exists()
