"""``coherency server fhir-export`` and `sync_server.export_fhir`: a patient's or a whole
clinic's validated FHIR Bundle from the server's database, audited; the clinic gathered
in a fixed number of queries. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import event, select

import fhir_interop
from crdt import Patient, Wound, WoundAssessment
from sync_server.audit.tables import AuditEvent
from sync_server.fhir.gathering import gather_clinic, gather_patients

from .test_fhir_endpoint import FhirWorld, build_world


@pytest.fixture(scope="module")
def world(server: Any, tmp_path_factory: pytest.TempPathFactory) -> FhirWorld:
    return build_world(server, tmp_path_factory.mktemp("fhir-export"))


def _where(server: Any) -> list[str]:
    where = ["--data-dir", str(server.settings.data_dir)]
    if server.settings.database_url:
        where += ["--database-url", str(server.settings.database_url)]
    return where


def test_cli_exports_a_patient_and_a_clinic_as_valid_bundles(
    world: FhirWorld, server: Any, tmp_path: Path
) -> None:
    from cli.main import cli

    runner = CliRunner()
    out = tmp_path / "patient.json"
    done = runner.invoke(
        cli,
        ["server", "fhir-export", *_where(server), "--patient", world.patient, "--out", str(out),
         "--kind", "transaction", "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    bundle = json.loads(out.read_text())
    assert out.stat().st_mode & 0o777 == 0o600  # patient data: readable by this user only
    fhir_interop.validate(bundle)
    assert bundle["type"] == "transaction"
    resources = [e["resource"] for e in bundle["entry"]]
    assert all(e["request"]["method"] == "PUT" for e in bundle["entry"])
    assert {r["resourceType"] for r in resources} >= {"Patient", "Observation", "Appointment"}
    summary = json.loads(done.stdout)
    assert summary["clinic_id"] == world.clinic_a and summary["patients"] == 1
    assert summary["resources"] == len(resources)
    assert world.other not in out.read_text()

    clinic_out = tmp_path / "clinic.json"
    done = runner.invoke(
        cli,
        ["server", "fhir-export", *_where(server), "--clinic", world.clinic_b,
         "--out", str(clinic_out)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "exported 1 patients" in done.output
    clinic = json.loads(clinic_out.read_text())
    fhir_interop.validate(clinic)
    assert clinic["type"] == "collection"
    patients = [
        e["resource"] for e in clinic["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    assert [p["id"] for p in patients] == [world.other]

    with server.db.read() as session:
        audited = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "export", AuditEvent.clinic_id.in_([world.clinic_a,
                                                                         world.clinic_b])
            ).order_by(AuditEvent.id)
        ).all()  # fmt: skip
    assert [(e.actor_kind, e.patients) for e in audited] == [
        ("system", world.patient),
        ("system", world.other),
    ]
    assert json.loads(audited[0].target or "{}")["kind"] == "fhir-transaction"


@pytest.mark.parametrize(
    "args,code,message",
    [
        (["--patient", "no-such-patient"], 4, "no patient"),
        (["--clinic", "no-such-clinic"], 4, "no clinic"),
        ([], 2, "--patient ID or --clinic ID"),
        (["--patient", "x", "--clinic", "y"], 2, "--patient ID or --clinic ID"),
    ],
)
def test_cli_refusals_are_one_line_and_write_nothing(
    server: Any, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    from cli.main import cli

    out = tmp_path / "x.json"
    refused = CliRunner().invoke(
        cli, ["server", "fhir-export", *_where(server), *args, "--out", str(out)]
    )
    assert refused.exit_code == code, refused.output
    assert message in refused.output and "Traceback" not in refused.output
    assert not out.exists()


def _patients(server: Any, clinic_id: str, how_many: int) -> None:
    """Live patients of `clinic_id`, each with a wound and an assessment (projection rows
    holding valid records, as a sync writes them)."""
    from sync_server.sync.projections import projection_row
    from sync_server.sync.tables import AssessmentRow, PatientRow, WoundRow

    at = datetime(2026, 1, 1, tzinfo=UTC)
    meta = {"clinic_id": clinic_id, "created_at": at, "created_by": "d", "updated_at": at,
            "updated_by": "d"}  # fmt: skip
    with server.db.write() as session:
        for n in range(how_many):
            patient = Patient(id=str(uuid.uuid4()), given_name="P", family_name=f"N{n}",
                              birth_date=date(1950, 1, 1), sex="female", **meta)  # fmt: skip
            wound = Wound(id=str(uuid.uuid4()), patient_id=patient.id, body_site="heel", **meta)
            assessment = WoundAssessment(
                id=str(uuid.uuid4()), wound_id=wound.id, patient_id=patient.id,
                captured_at=datetime(2026, 2, 1, tzinfo=UTC), device_id="d",
                measurements={"area_cm2": 1.0}, **meta,
            )  # fmt: skip
            for table, record in (
                (PatientRow, patient),
                (WoundRow, wound),
                (AssessmentRow, assessment),
            ):
                session.add(
                    table(
                        **projection_row(record.collection, record.model_dump(mode="json"), False)
                    )
                )


def test_a_clinic_is_gathered_in_a_fixed_number_of_queries(world: FhirWorld, server: Any) -> None:
    """No query per patient: a clinic of one patient and one of eight take as many."""
    small, large = server.new_clinic(), server.new_clinic()
    _patients(server, small, 1)
    _patients(server, large, 8)
    counts = []
    engine = server.db.engine
    for clinic, size in ((small, 1), (large, 8)):
        statements: list[str] = []

        def count(*args: Any, _into: list[str] = statements) -> None:
            _into.append(str(args[2]))

        event.listen(engine, "before_cursor_execute", count)
        try:
            with server.db.read() as session:
                gathered = gather_clinic(session=session, clinic_id=clinic)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert len(gathered) == size
        assert all(len(p.wounds) == len(p.assessments) == 1 for p in gathered)
        counts.append(len(statements))
    assert counts[0] == counts[1] <= 12, counts
    with server.db.read() as session:
        (records,) = gather_patients(
            session=session, clinic_id=world.clinic_a, patient_ids=[world.patient]
        )
        assert (
            gather_patients(session=session, clinic_id=world.clinic_b, patient_ids=[world.patient])
            == []
        )
    assert len(records.assessments) == 2 and len(records.conditions) == 1
    assert len(records.allergies) == len(records.medications) == len(records.care_plans) == 1
    assert [a.status for a in records.appointments] == ["fulfilled"]
    assert records.audit_events and all(e.id.isdigit() for e in records.audit_events)
    assert records.devices == {records.assessments[0].device_id: "fhir tablet"}


def test_coherency_fhir_export_reads_the_server_given_its_database(
    world: FhirWorld, server: Any, tmp_path: Path
) -> None:
    """``coherency fhir export --data-dir ...`` is the server's export (the device
    store's needs no database options); --all is the device's only."""
    from cli.main import cli

    runner = CliRunner()
    out = tmp_path / "patient.json"
    done = runner.invoke(
        cli,
        ["fhir", "export", *_where(server), "--patient", world.patient, "--out", str(out),
         "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    bundle = json.loads(out.read_text())
    fhir_interop.validate(bundle)
    assert json.loads(done.stdout)["clinic_id"] == world.clinic_a
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"Patient", "Observation", "Appointment", "AuditEvent"} <= kinds  # server facts
    refused = runner.invoke(
        cli, ["fhir", "export", *_where(server), "--all", "--out", str(tmp_path / "x.json")]
    )
    assert refused.exit_code == 2 and "--patient ID or --clinic ID" in refused.output
    assert not (tmp_path / "x.json").exists()
