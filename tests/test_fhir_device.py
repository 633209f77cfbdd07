"""FHIR on the device: `EdgeClient.fhir_export` and `fhir_import` round-trip a store's
records, import is idempotent, a foreign bundle matches patients by MRN, and a bad
bundle changes nothing."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edge_sdk import EdgeClient, RecordNotFoundError, RecordValidationError
from fhir_interop import FhirError, validate
from tests.conftest import StoreFactory, take_snapshot
from tests.fhir_samples import sample_records
from tests.test_fhir_import import FOREIGN


def data(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in type(record).data_fields()}


def fill(client: EdgeClient, patient_id: str = "p-0001") -> None:
    """The sample patient's records, written through the SDK under their own ids."""
    records = sample_records(patient_id)
    created = client.patients.add(**data(records.patient))
    ids = {records.patient.id: created.id}
    for wound in records.wounds:
        ids[wound.id] = client.wounds.add(**{**data(wound), "patient_id": created.id}).id
    for collection, items in (
        ("conditions", records.conditions),
        ("allergies", records.allergies),
        ("medications", records.medications),
    ):
        for item in items:
            client.collection(collection).add(**{**data(item), "patient_id": created.id})
    for plan in records.care_plans:
        client.care_plans.add(
            **{**data(plan), "patient_id": created.id, "wound_id": ids[plan.wound_id]}
        )
    for assessment in records.assessments:
        client.assessments.add(
            **{**data(assessment), "patient_id": created.id, "wound_id": ids[assessment.wound_id]}
        )


def contents(client: EdgeClient) -> dict[str, list[dict[str, Any]]]:
    """Every patient, wound, condition, allergy and medication, data fields only."""
    out = {}
    for name in ("patients", "wounds", "conditions", "allergies", "medications"):
        out[name] = sorted(
            (data(record) | {"id": record.id} for record in client.collection(name).list()),
            key=lambda values: values["id"],
        )
    return out


def test_export_one_patient_and_all(tmp_store: StoreFactory) -> None:
    client = tmp_store("a")
    fill(client)
    fill(client, "p-0002")
    patient = client.patients.list()[0]
    one = client.fhir_export(patient.id)
    validate(one)
    kinds = [entry["resource"]["resourceType"] for entry in one["entry"]]
    assert kinds.count("Patient") == 1
    assert kinds.count("Observation") == 4
    assert {"Condition", "AllergyIntolerance", "MedicationStatement", "CarePlan"} <= set(kinds)
    everyone = client.fhir_export(kind="transaction")
    validate(everyone)
    assert [e["resource"]["resourceType"] for e in everyone["entry"]].count("Patient") == 2
    assert everyone["entry"][0]["request"]["method"] == "PUT"
    with pytest.raises(RecordNotFoundError):
        client.fhir_export("nobody")


def test_round_trip_between_stores_and_import_is_idempotent(tmp_store: StoreFactory) -> None:
    source = tmp_store("a")
    fill(source)
    exported = source.fhir_export()
    target = tmp_store("b")
    report = target.fhir_import(exported)
    # One patient, two wounds, two conditions, one allergy, one medication.
    assert (report.created, report.updated, report.unchanged) == (7, 0, 0)
    assert any("resource type not mapped" in line for line in report.unmapped)
    assert contents(target) == contents(source)
    before = take_snapshot(target)
    again = target.fhir_import(exported)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 7)
    assert take_snapshot(target) == before  # nothing written
    # Importing into the store that exported it writes nothing either.
    assert source.fhir_import(exported).unchanged == 7


def test_an_import_updates_what_changed(tmp_store: StoreFactory) -> None:
    client = tmp_store("a")
    fill(client)
    exported = client.fhir_export()
    changed = copy.deepcopy(exported)
    patient = changed["entry"][0]["resource"]
    patient["name"][0]["family"] = "King"
    report = client.fhir_import(changed)
    assert (report.created, report.updated, report.unchanged) == (0, 1, 6)
    assert client.patients.list()[0].family_name == "King"


def test_a_foreign_bundle_imports_what_it_can(tmp_store: StoreFactory) -> None:
    client = tmp_store("a")
    report = client.fhir_import(FOREIGN)
    assert (report.created, report.updated) == (4, 0)
    (patient,) = client.patients.list()
    assert (patient.given_name, patient.family_name, patient.mrn) == (
        "Grace Brewster",
        "Hopper",
        "H-998",
    )
    assert [c.description for c in client.conditions.for_patient(patient.id)] == ["Hypertension"]
    assert [a.substance for a in client.allergies.for_patient(patient.id)] == ["latex"]
    assert [m.medication for m in client.medications.for_patient(patient.id)] == ["amlodipine 5 mg"]
    assert "Encounter/enc-1: resource type not mapped" in report.unmapped
    assert "Patient/ehr-17.maritalStatus: field not mapped" in report.unmapped
    before = take_snapshot(client)
    again = client.fhir_import(FOREIGN)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 4)
    assert take_snapshot(client) == before


def test_a_foreign_patient_is_matched_by_mrn(tmp_store: StoreFactory) -> None:
    client = tmp_store("a")
    known = client.patients.add(
        given_name="G", family_name="Hopper", birth_date="1946-12-09", mrn="H-998"
    )
    report = client.fhir_import(FOREIGN)
    assert report.created == 3  # the condition, allergy and medication
    assert report.updated == 1  # the patient: name, sex, contacts
    (patient,) = client.patients.list()
    assert patient.id == known.id
    assert patient.given_name == "Grace Brewster"
    assert len(client.conditions.for_patient(known.id)) == 1


@pytest.mark.parametrize(
    "bad",
    [
        b"not json at all",
        '{"resourceType": "Patient", "id": "x"}',
        {**FOREIGN, "type": "nonsense"},
        {
            **FOREIGN,
            "entry": [
                *FOREIGN["entry"][:5],
                {
                    "resource": {
                        **FOREIGN["entry"][5]["resource"],
                        "effectiveDateTime": "2019-02-31",
                    }
                },
            ],
        },
    ],
)
def test_a_bad_bundle_changes_nothing(tmp_store: StoreFactory, bad: Any) -> None:
    client = tmp_store("a")
    fill(client)
    before = take_snapshot(client)
    with pytest.raises(FhirError):
        client.fhir_import(bad)
    assert take_snapshot(client) == before


def test_a_record_that_fails_its_schema_writes_nothing(tmp_store: StoreFactory) -> None:
    client = tmp_store("a")
    before = take_snapshot(client)
    broken = copy.deepcopy(FOREIGN)
    del broken["entry"][0]["resource"]["birthDate"]  # a new patient needs one
    with pytest.raises(RecordValidationError):
        client.fhir_import(broken)
    assert take_snapshot(client) == before


def test_deleted_records_are_not_exported(tmp_store: StoreFactory) -> None:
    client = tmp_store("a")
    fill(client)
    patient = client.patients.list()[0]
    (diabetes,) = [c for c in client.conditions.list() if c.description.startswith("Type 2")]
    client.conditions.delete(diabetes.id)
    ids = {e["resource"]["id"] for e in client.fhir_export(patient.id)["entry"]}
    assert diabetes.id not in ids
    assert patient.id in ids
    client.patients.delete(patient.id)
    with pytest.raises(RecordNotFoundError):
        client.fhir_export(patient.id)
    assert client.fhir_export()["entry"] == []


def test_a_store_without_a_clinic_cannot_import(tmp_path: Any) -> None:
    from edge_sdk import NotEnrolledError
    from tests.conftest import fast_provider

    with (
        EdgeClient.init(tmp_path / "s", fast_provider()) as client,
        pytest.raises(NotEnrolledError),
    ):
        client.fhir_import(FOREIGN)
