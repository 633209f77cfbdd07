"""FHIR import, without a store: records -> FHIR -> records keeps every mapped field, a
bundle from another system maps what it can and lists the rest, and malformed input is
a clear error."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from crdt import Patient
from fhir_interop import FhirError, FhirValidationError, bundle, patient_resources, read_bundle
from tests.fhir_samples import META, sample_records

# Shaped like an EHR's export: other resource types, fields and extensions we do not
# map, references by urn:uuid fullUrl, no Coherency identifiers.
FOREIGN: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {
            "fullUrl": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0001",
            "resource": {
                "resourceType": "Patient",
                "id": "ehr-17",
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
                        "valueCode": "F",
                    }
                ],
                "identifier": [
                    {
                        "type": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                    "code": "MR",
                                }
                            ]
                        },
                        "system": "http://hospital.example/mrn",
                        "value": "H-998",
                    }
                ],
                "name": [{"use": "official", "family": "Hopper", "given": ["Grace", "Brewster"]}],
                "gender": "female",
                "birthDate": "1946-12-09",
                "maritalStatus": {"text": "widowed"},
                "telecom": [
                    {"system": "phone", "value": "555-0100"},
                    {"system": "fax", "value": "555-0199"},
                ],
                "address": [{"line": ["1 Navy Way"], "city": "Arlington", "country": "US"}],
            },
        },
        {
            "fullUrl": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0002",
            "resource": {
                "resourceType": "Practitioner",
                "id": "dr-1",
                "name": [{"family": "Lister"}],
            },
        },
        {
            "fullUrl": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0003",
            "resource": {
                "resourceType": "Encounter",
                "id": "enc-1",
                "status": "finished",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "AMB",
                },
                "subject": {"reference": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0001"},
            },
        },
        {
            "fullUrl": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0004",
            "resource": {
                "resourceType": "Condition",
                "id": "cond-1",
                "identifier": [{"system": "http://hospital.example/problems", "value": "PL-1"}],
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {
                    "coding": [
                        {
                            "system": "http://snomed.info/sct",
                            "code": "38341003",
                            "display": "Hypertension",
                        }
                    ]
                },
                "subject": {"reference": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0001"},
                "encounter": {"reference": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0003"},
                "onsetDateTime": "2001-04-02T00:00:00Z",
                "severity": {"text": "moderate"},
            },
        },
        {
            "fullUrl": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0005",
            "resource": {
                "resourceType": "AllergyIntolerance",
                "id": "alg-1",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"text": "latex"},
                "patient": {"reference": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0001"},
                "criticality": "high",
                "reaction": [{"manifestation": [{"text": "urticaria"}], "severity": "moderate"}],
            },
        },
        {
            "fullUrl": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0006",
            "resource": {
                "resourceType": "MedicationStatement",
                "id": "med-1",
                "status": "active",
                "medicationCodeableConcept": {"text": "amlodipine 5 mg"},
                "subject": {"reference": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0001"},
                "effectiveDateTime": "2019-01-01",
                "dosage": [{"text": "once daily"}],
                "informationSource": {"reference": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0002"},
            },
        },
        {
            "fullUrl": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0007",
            "resource": {
                "resourceType": "Observation",
                "id": "bp-1",
                "status": "final",
                "code": {"text": "blood pressure"},
                "subject": {"reference": "urn:uuid:3f1c7c36-7b1c-4c2e-9a39-1f2a0c5b0001"},
            },
        },
    ],
}


def record_values(record: Any) -> dict[str, Any]:
    """A record's data fields as JSON values (what a round trip must keep)."""
    dumped = record.model_dump(
        mode="json", exclude={"created_at", "created_by", "updated_at", "updated_by"}
    )
    return {key: value for key, value in dumped.items() if key not in ("clinic_id", "deleted")}


def test_round_trip_keeps_every_mapped_field() -> None:
    records = sample_records()
    text = json.dumps(bundle(patient_resources(records), "transaction"))
    mapped = read_bundle(text)
    assert len(mapped.patients) == 1
    imported = mapped.patients[0]
    assert imported.record_id == "p-0001"
    assert imported.mrns == ("MRN-p-0001",)
    # Rebuilt from the metadata and the imported values alone, field by field.
    patient = Patient.model_validate({**META, "id": "p-0001", **imported.values})
    for name in Patient.data_fields():
        assert getattr(patient, name) == getattr(records.patient, name), name
    by_id = {record.record_id: record for record in imported.records}
    originals = [*records.wounds, *records.conditions, *records.allergies, *records.medications]
    assert sorted(by_id) == sorted(r.id for r in originals)
    for original in originals:
        back = by_id[original.id]
        assert back.collection == original.collection
        values = {k: v for k, v in back.values.items() if v is not None}
        rebuilt = type(original).model_validate(
            {**META, "id": original.id, "patient_id": original.patient_id, **values}
        )
        for name in type(original).data_fields():
            assert getattr(rebuilt, name) == getattr(original, name), (original.id, name)
    # What is exported but not imported is listed, not silently dropped.
    assert "Observation/p-0001-a0-size: resource type not mapped" in mapped.unmapped
    assert "CarePlan/p-0001-cp1: resource type not mapped" in mapped.unmapped


def test_a_foreign_bundle_maps_what_it_can_and_lists_the_rest() -> None:
    mapped = read_bundle(FOREIGN)
    (patient,) = mapped.patients
    assert patient.record_id is None
    assert patient.mrns == ("H-998",)
    assert patient.values["given_name"] == "Grace Brewster"
    assert patient.values["family_name"] == "Hopper"
    assert patient.values["birth_date"] == "1946-12-09"
    assert patient.values["contacts"] == (
        {"kind": "phone", "value": "555-0100"},
        {"kind": "address", "value": "1 Navy Way, Arlington, US"},
    )
    kinds = {r.collection: r for r in patient.records}
    assert kinds["conditions"].values["description"] == "Hypertension"
    assert kinds["conditions"].values["code"] == {
        "system": "http://snomed.info/sct",
        "code": "38341003",
        "display": "Hypertension",
    }
    assert kinds["conditions"].values["onset"] == "2001-04-02"
    assert kinds["allergies"].values["substance"] == "latex"
    assert kinds["allergies"].values["reaction"] == "urticaria"
    assert kinds["medications"].values["started"] == "2019-01-01"
    assert set(mapped.unmapped) >= {
        "Practitioner/dr-1: resource type not mapped",
        "Encounter/enc-1: resource type not mapped",
        "Observation/bp-1: resource type not mapped",
        "Patient/ehr-17.maritalStatus: field not mapped",
        "Patient/ehr-17.telecom(fax): not mapped",
        "Patient/ehr-17.extension(http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex):"
        " extension not mapped",
        "Condition/cond-1.encounter: field not mapped",
        "Condition/cond-1.severity: field not mapped",
        "MedicationStatement/med-1.informationSource: field not mapped",
    }
    # Ids from another system are derived from the bundle, the same every time.
    again = read_bundle(json.dumps(FOREIGN))
    assert [r.record_id for r in again.patients[0].records] == [
        r.record_id for r in patient.records
    ]
    assert again.patients[0].new_id == patient.new_id
    assert all(r.record_id.startswith("fhir-") for r in patient.records)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00not json", "not JSON"),
        ("{", "not JSON"),
        ("[]", "not a FHIR Bundle"),
        ({"resourceType": "Patient", "id": "x"}, "not a FHIR Bundle"),
    ],
)
def test_malformed_input_is_a_clear_error(data: Any, message: str) -> None:
    with pytest.raises(FhirError, match=message):
        read_bundle(data)


def test_invalid_resources_are_validation_errors() -> None:
    bad_date = copy.deepcopy(FOREIGN)
    bad_date["entry"][0]["resource"]["birthDate"] = "1946-13-45"
    with pytest.raises(FhirValidationError) as caught:
        read_bundle(bad_date)
    assert any("birthDate" in problem for problem in caught.value.problems)
    missing = copy.deepcopy(FOREIGN)
    del missing["entry"][5]["resource"]["status"]  # MedicationStatement.status is 1..1
    with pytest.raises(FhirValidationError):
        read_bundle(missing)
    no_type = {"resourceType": "Bundle"}  # Bundle.type is 1..1
    with pytest.raises(FhirValidationError):
        read_bundle(no_type)
