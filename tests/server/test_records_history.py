"""The medical history (conditions, allergies, medications) and wound care plans
through a real server: they sync to the other devices of the clinic and no further, the
server knows whose they are, and staff export them. Every test runs on SQLite and on
PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from edge_sdk import EdgeClient
from sync_server.audit.tables import AuditEvent
from sync_server.sync.exports import COLUMNS, export_rows
from sync_server.sync.listing import AssessmentFilters
from sync_server.sync.tables import Document

from .test_staff import Tenancy
from .test_sync_client import FAST, Devices, sync_with

NEW = ("conditions", "allergies", "medications", "care_plans")


@pytest.fixture
def tenancy(server: Any) -> Tenancy:
    return Tenancy(server).setup()


@pytest.fixture
def devices(tmp_path: Path, server: Any) -> Iterator[Devices]:
    made = Devices(tmp_path, server)
    yield made
    for client in made.clients:
        client.close()


def history_of(client: EdgeClient) -> dict[str, Any]:
    """A patient with a wound, and one record of each new collection."""
    patient = client.patients.add(
        given_name="Adaeze",
        family_name="Okonkwo",
        birth_date="1950-03-01",
        emergency_contacts=[{"name": "Chidi Okonkwo", "relationship": "son"}],
        insurance=[{"payer": "Acme Health", "member_id": "AC-1"}],
    )
    wound = client.wounds.add(patient_id=patient.id, body_site="left heel", etiology="diabetic")
    return {
        "patient": patient.id,
        "wound": wound.id,
        "conditions": client.conditions.add(
            patient_id=patient.id,
            description="Type 2 diabetes",
            code={"system": "http://snomed.info/sct", "code": "44054006", "display": "T2DM"},
            onset="2010-06-01",
        ).id,
        "allergies": client.allergies.add(
            patient_id=patient.id, substance="=zinc oxide tape", category="environment"
        ).id,
        "medications": client.medications.add(
            patient_id=patient.id, medication="metformin", dosage="500 mg twice daily"
        ).id,
        "care_plans": client.care_plans.add(
            patient_id=patient.id,
            wound_id=wound.id,
            goals=["closed by week 12", "no infection"],
            dressing="hydrofibre",
            dressing_every_days=3,
        ).id,
    }


def test_the_new_records_reach_the_clinics_devices_and_no_other(
    tenancy: Tenancy, server: Any, devices: Devices
) -> None:
    first = devices.new(tenancy.clinic_a, "first")
    second = devices.new(tenancy.clinic_a, "second")
    stranger = devices.new(tenancy.clinic_b, "stranger")
    made = history_of(first)
    pushed = sync_with(first, retry=FAST)
    assert pushed.refused_by_server == []
    assert {made[c] for c in NEW} <= set(pushed.pushed)

    pulled = sync_with(second, retry=FAST)
    assert {made[c] for c in NEW} <= set(pulled.pulled)
    assert second.conditions.get(made["conditions"]).code.code == "44054006"
    assert second.care_plans.for_wound(made["wound"])[0].goals == (
        "closed by week 12",
        "no infection",
    )
    patient = second.patients.get(made["patient"])
    assert patient.emergency_contacts[0].relationship == "son"
    assert patient.insurance[0].payer == "Acme Health"

    # A concurrent edit of two fields on two devices: both reach everyone.
    first.medications.update(made["medications"], status="on-hold")
    second.medications.update(made["medications"], dosage="500 mg once daily")
    for client in (first, second, first):
        sync_with(client, retry=FAST)
    for client in (first, second):
        merged = client.medications.get(made["medications"])
        assert (merged.status, merged.dosage) == ("on-hold", "500 mg once daily")

    assert sync_with(stranger, retry=FAST).pulled == []
    for collection in NEW:
        assert stranger.collection(collection).list() == []
    with server.db.read() as session:
        stored = {
            row.id: (row.collection, row.clinic_id, row.patient_id)
            for row in session.scalars(
                select(Document).where(Document.id.in_([made[c] for c in NEW]))
            )
        }
    assert stored == {made[c]: (c, tenancy.clinic_a, made["patient"]) for c in NEW}


def test_a_merge_that_puts_a_course_out_of_order_is_refused_by_the_server(
    tenancy: Tenancy, devices: Devices
) -> None:
    first = devices.new(tenancy.clinic_a, "first")
    second = devices.new(tenancy.clinic_a, "second")
    made = history_of(first)
    sync_with(first, retry=FAST)
    sync_with(second, retry=FAST)
    first.conditions.update(made["conditions"], abatement="2012-01-01")
    second.conditions.update(made["conditions"], onset="2015-01-01")  # later than abatement
    sync_with(first, retry=FAST)
    refused = sync_with(second, retry=FAST).refused_by_server
    assert [r.doc_id for r in refused] == [made["conditions"]]
    assert "abatement is before onset" in refused[0].reason


def rows(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def test_staff_export_the_medical_history_and_care_plans(
    tenancy: Tenancy, server: Any, devices: Devices
) -> None:
    a, b = tenancy.clinic_a, tenancy.clinic_b
    device = devices.new(a, "ward")
    made = history_of(device)
    other = history_of(device)  # a second patient
    device.allergies.delete(other["allergies"])
    sync_with(device, retry=FAST)
    theirs = devices.new(b, "elsewhere")
    history_of(theirs)
    sync_with(theirs, retry=FAST)

    with tenancy.client(tenancy.user("staff", a)) as c:
        for kind in NEW:
            exported = rows(c.get(f"/v1/staff/export/{kind}"))
            assert list(exported[0]) == list(COLUMNS[kind])
            expected = {made[kind], other[kind]} - {other["allergies"]}
            assert {r["id"] for r in exported} == expected
        [condition] = rows(
            c.get("/v1/staff/export/conditions", params={"patient_id": made["patient"]})
        )
        assert (condition["code_system"], condition["code"], condition["code_display"]) == (
            "http://snomed.info/sct",
            "44054006",
            "T2DM",
        )
        assert (condition["onset"], condition["clinical_status"]) == ("2010-06-01", "active")
        allergies = rows(c.get("/v1/staff/export/allergies", params={"include_deleted": True}))
        assert {r["id"]: r["deleted"] for r in allergies} == {
            made["allergies"]: "false",
            other["allergies"]: "true",
        }
        assert "'=zinc oxide tape" in {r["substance"] for r in allergies}  # spreadsheet-safe
        plans = c.get(
            "/v1/staff/export/care_plans",
            params={"format": "ndjson", "wound_id": made["wound"]},
        )
        [plan] = [json.loads(line) for line in plans.text.splitlines()]
        assert plan["id"] == made["care_plans"] and plan["patient_id"] == made["patient"]
        assert plan["goals"] == ["closed by week 12", "no infection"]
        assert plan["dressing_every_days"] == 3
        of_wound = c.get("/v1/staff/export/wounds", params={"wound_id": made["wound"]})
        assert [r["id"] for r in rows(of_wound)] == [made["wound"]]
        refused = c.get("/v1/staff/export/medications", params={"wound_id": made["wound"]})
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "filter_not_applicable"
        hidden = c.get("/v1/staff/export/conditions", params={"clinic_id": b})
        assert hidden.status_code == 404
        assert hidden.json()["error"]["code"] == "clinic_not_found"

    with server.db.read() as session:
        audited = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "export", AuditEvent.clinic_id == a)
            .order_by(AuditEvent.id)
        ).all()
    assert "ok rows=2" in [e.outcome for e in audited]


def test_the_export_of_documents_reads_a_batch_at_a_time(
    tenancy: Tenancy, server: Any, devices: Devices
) -> None:
    device = devices.new(tenancy.clinic_a, "ward")
    patient = device.patients.add(given_name="A", family_name="B", birth_date="1950-01-01")
    made = {
        device.conditions.add(patient_id=patient.id, description=f"condition {i}").id
        for i in range(7)
    }
    sync_with(device, retry=FAST)
    opened = 0

    def session_for() -> Any:
        nonlocal opened
        opened += 1
        return server.db.read()

    batches = export_rows(
        session_for,
        kind="conditions",
        clinic_id=tenancy.clinic_a,
        filters=AssessmentFilters(),
        batch_size=3,
    )
    first = next(batches)
    assert len(first) == 3 and opened == 1
    rest = [row for batch in batches for row in batch]
    assert {row["id"] for row in first + rest} == made
    assert opened == 4  # 3 + 3 + 1, then an empty read ends it
