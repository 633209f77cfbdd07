"""FHIR R4 export: every resource validates against fhir.resources R4B, the codes are
the ones the issue names, ids are reversible, and bundles are well formed."""

from __future__ import annotations

from typing import Any

import pytest

from crdt import Etiology
from fhir_interop import (
    FHIR_VERSION,
    FhirError,
    FhirValidationError,
    bundle,
    export_bundle,
    patient_resources,
    source_record_id,
    validate,
)
from fhir_interop._ids import fhir_id
from tests.fhir_samples import sample_records

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    return patient_resources(sample_records())


def of_type(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == kind]


def codes(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept.get("coding", [])}


def test_every_resource_validates_and_every_type_is_there(resources: list[dict[str, Any]]) -> None:
    for resource in resources:
        validate(resource)
    assert [r["resourceType"] for r in resources] == [
        "Patient",
        "Coverage",
        *["Condition"] * 4,
        "AllergyIntolerance",
        "MedicationStatement",
        "CarePlan",
        *["Observation"] * 4,
        *["DocumentReference"] * 2,
        *["Provenance"] * 2,
        "Appointment",
        "AuditEvent",
    ]
    assert FHIR_VERSION == "4.3.0"


@pytest.mark.parametrize("kind", ["collection", "transaction", "searchset"])
def test_bundles_validate(resources: list[dict[str, Any]], kind: str) -> None:
    doc = bundle(resources, kind)  # type: ignore[arg-type]
    validate(doc)
    assert doc["type"] == kind
    full_urls = [entry["fullUrl"] for entry in doc["entry"]]
    assert len(set(full_urls)) == len(full_urls)
    assert all(url.startswith("urn:uuid:") for url in full_urls)
    assert bundle(resources, kind)["entry"][0]["fullUrl"] == full_urls[0]  # type: ignore[arg-type]
    if kind == "transaction":
        assert doc["entry"][0]["request"] == {"method": "PUT", "url": "Patient/p-0001"}
    if kind == "searchset":
        assert {entry["search"]["mode"] for entry in doc["entry"]} == {"match"}
        assert doc["total"] == len(resources)


def test_base_url_gives_restful_full_urls_and_search_modes(resources: list[dict[str, Any]]) -> None:
    doc = bundle(
        resources, "searchset", base_url="https://h.example/fhir/R4", match_types={"Patient"}
    )
    validate(doc)
    assert doc["entry"][0]["fullUrl"] == "https://h.example/fhir/R4/Patient/p-0001"
    assert doc["entry"][0]["search"]["mode"] == "match"
    assert doc["entry"][1]["search"]["mode"] == "include"
    assert doc["total"] == 1
    attachment_urls = [
        d["content"][0]["attachment"]["url"]
        for d in of_type(
            patient_resources(sample_records(), base_url="https://h.example/fhir/R4"),
            "DocumentReference",
        )
    ]
    assert attachment_urls[0] == "https://h.example/v1/blobs/" + "ab" * 32


def test_export_bundle_of_several_patients_validates() -> None:
    doc = export_bundle([sample_records("p-1"), sample_records("p-2")], "transaction")
    validate(doc)
    patients = [
        e["resource"]["id"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient"
    ]
    assert patients == ["p-1", "p-2"]


def test_patient_identifiers_contacts_and_coverage(resources: list[dict[str, Any]]) -> None:
    patient = resources[0]
    ours, mrn = patient["identifier"]
    assert ours == {"system": "urn:coherency:patient", "value": "p-0001"}
    assert mrn["system"] == "urn:coherency:clinic:clinic-1:mrn"
    assert mrn["value"] == "MRN-p-0001"
    assert codes(mrn["type"]) == {("http://terminology.hl7.org/CodeSystem/v2-0203", "MR")}
    assert patient["name"] == [{"use": "official", "family": "Lovelace", "given": ["Ada"]}]
    assert patient["gender"] == "female"
    assert patient["birthDate"] == "1950-12-10"
    assert [t["system"] for t in patient["telecom"]] == ["phone", "email"]
    assert patient["address"][0]["text"] == "12 St James's Square, London"
    kin, emergency = patient["contact"]
    assert codes(kin["relationship"][0]) == {("http://terminology.hl7.org/CodeSystem/v2-0131", "N")}
    assert codes(emergency["relationship"][0]) == {
        ("http://terminology.hl7.org/CodeSystem/v2-0131", "C")
    }
    assert emergency["relationship"][0]["text"] == "neighbour"
    assert emergency["name"]["text"] == "Mary Somerville"
    coverage = of_type(resources, "Coverage")[0]
    assert coverage["id"] == "p-0001-coverage-1"
    assert coverage["payor"] == [{"display": "Health Fund"}]
    assert coverage["subscriberId"] == "HF-123"
    assert [(c["type"]["coding"][0]["code"], c["value"]) for c in coverage["class"]] == [
        ("plan", "Gold"),
        ("group", "G-7"),
    ]
    assert coverage["period"] == {"start": "2025-01-01", "end": "2027-01-01"}


def test_wound_condition_codes_body_site_and_status(resources: list[dict[str, Any]]) -> None:
    heel, sacrum = of_type(resources, "Condition")[:2]
    assert (SNOMED, "280137006") in codes(heel["code"])  # diabetic foot ulcer
    assert codes(heel["bodySite"][0]) == {(SNOMED, "84607009"), (SNOMED, "7771000")}  # heel, left
    assert heel["bodySite"][0]["text"] == "left heel"
    assert heel["clinicalStatus"]["coding"][0]["code"] == "active"
    assert heel["onsetDateTime"] == "2026-01-05"
    assert heel["category"][0]["coding"][0]["code"] == "problem-list-item"
    assert (SNOMED, "399912005") in codes(sacrum["code"])  # pressure injury
    assert sacrum["clinicalStatus"]["coding"][0]["code"] == "resolved"  # healed
    assert sacrum["id"] == "p-0001.cw2"  # the ':' escaped
    assert codes(sacrum["bodySite"][0]) == {(SNOMED, "50938007")}


def test_every_etiology_has_a_snomed_code() -> None:
    from fhir_interop._codes import ETIOLOGY_CODES

    assert set(ETIOLOGY_CODES) == set(Etiology)
    assert all(
        concept.system == SNOMED and concept.code.isdigit() for concept in ETIOLOGY_CODES.values()
    )


def test_right_and_bilateral_laterality() -> None:
    from fhir_interop._export import body_site

    assert codes(body_site("Right knee")) == {(SNOMED, "63464009"), (SNOMED, "24028007")}
    assert (SNOMED, "51440002") in codes(body_site("both heels bilateral"))
    assert body_site("abdomen") == {"text": "abdomen"}


def test_size_panel_uses_loinc_and_ucum(resources: list[dict[str, Any]]) -> None:
    size = next(r for r in of_type(resources, "Observation") if r["id"].endswith("-size"))
    assert codes(size["code"]) == {(LOINC, "72287-6")}
    assert size["category"][0]["coding"][0]["code"] == "exam"
    members = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in size["component"]}
    assert members["39126-8"] == {"value": 3.0, "unit": "cm", "system": UCUM, "code": "cm"}
    assert members["39125-0"]["value"] == 1.8
    assert members["39127-6"] == {"value": 0.4, "unit": "cm", "system": UCUM, "code": "cm"}  # 4 mm
    assert members["89260-4"] == {"value": 4.2, "unit": "cm2", "system": UCUM, "code": "cm2"}
    assert members["volume"]["code"] == "cm3"
    local = [
        c["code"]["coding"][0]["system"]
        for c in size["component"]
        if c["code"]["coding"][0]["code"] == "volume"
    ]
    assert local == ["https://coherency.example/fhir/CodeSystem/wound-measure"]
    assert size["effectiveDateTime"] == "2026-03-01T09:30:00+00:00"
    assert size["subject"] == {"reference": "Patient/p-0001"}
    assert size["focus"] == [{"reference": "Condition/p-0001-w1"}]
    assert size["derivedFrom"] == [
        {"reference": "DocumentReference/p-0001-a0-blob-abababababababab"}
    ]


def test_tissue_panel_uses_loinc_and_snomed_tissue_codes(resources: list[dict[str, Any]]) -> None:
    tissue = next(r for r in of_type(resources, "Observation") if r["id"].endswith("-tissue"))
    assert codes(tissue["code"]) == {(LOINC, "72371-8")}
    found = {}
    for component in tissue["component"]:
        assert (LOINC, "72370-0") in codes(component["code"])
        snomed = [code for system, code in codes(component["code"]) if system == SNOMED]
        found[snomed[0]] = component["valueQuantity"]
    assert found["225541009"]["value"] == 70.0  # granulation
    assert found["449746002"]["value"] == 20.0  # slough
    assert found["421306004"]["value"] == 5.0  # necrotic eschar
    assert found["449743005"]["value"] == 5.0  # epithelialization
    assert {q["code"] for q in found.values()} == {"%"}


def test_document_reference_and_provenance(resources: list[dict[str, Any]]) -> None:
    document = of_type(resources, "DocumentReference")[0]
    attachment = document["content"][0]["attachment"]
    assert attachment["contentType"] == "application/x-ply"
    assert attachment["size"] == 1024
    assert attachment["url"] == "/v1/blobs/" + "ab" * 32
    assert document["identifier"][0]["value"] == "ab" * 32
    provenance = of_type(resources, "Provenance")[0]
    assert provenance["id"] == "p-0001-a0-provenance"
    assert {t["reference"] for t in provenance["target"]} == {
        "Observation/p-0001-a0-size",
        "Observation/p-0001-a0-tissue",
        "DocumentReference/p-0001-a0-blob-abababababababab",
    }
    device, model, clinician = provenance["agent"]
    assert device["who"]["identifier"]["value"] == "device-1"
    assert device["who"]["display"] == "Ward 3 tablet"
    assert device["type"]["coding"][0]["code"] == "author"
    assert model["who"]["identifier"]["value"] == "wound-seg@1.2.0"
    assert clinician["who"]["display"] == "Nurse Nightingale"


def test_history_allergy_medication_care_plan(resources: list[dict[str, Any]]) -> None:
    diabetes, cellulitis = of_type(resources, "Condition")[2:]
    assert codes(diabetes["code"]) == {(SNOMED, "44054006")}
    assert diabetes["code"]["text"] == "Type 2 diabetes mellitus"
    assert cellulitis["abatementDateTime"] == "2024-03-01"
    allergy = of_type(resources, "AllergyIntolerance")[0]
    assert allergy["category"] == ["environment"]
    assert allergy["reaction"][0]["manifestation"][0]["text"] == "rash"
    medication = of_type(resources, "MedicationStatement")[0]
    assert medication["dosage"][0]["text"] == "500 mg twice daily"
    assert medication["effectivePeriod"] == {"start": "2015-01-01", "end": "2030-01-01"}
    plan = of_type(resources, "CarePlan")[0]
    assert plan["addresses"] == [{"reference": "Condition/p-0001-w1"}]
    assert [g["description"]["text"] for g in plan["contained"]] == [
        "wound closed in 12 weeks",
        "no infection",
    ]
    assert plan["goal"] == [{"reference": "#goal-1"}, {"reference": "#goal-2"}]
    dressing = plan["activity"][0]["detail"]
    assert dressing["scheduledTiming"]["repeat"] == {"frequency": 1, "period": 3, "periodUnit": "d"}


def test_appointment_and_audit_event(resources: list[dict[str, Any]]) -> None:
    appointment = of_type(resources, "Appointment")[0]
    assert appointment["status"] == "booked"
    assert appointment["participant"][0]["actor"] == {"reference": "Patient/p-0001"}
    event = of_type(resources, "AuditEvent")[0]
    assert event["id"] == "audit-42"
    assert event["type"]["code"] == "rest"
    assert event["subtype"][0] == {
        "system": "http://hl7.org/fhir/restful-interaction",
        "code": "read",
    }
    assert event["action"] == "R"
    assert event["outcome"] == "0"
    assert event["entity"][0]["what"] == {"reference": "Patient/p-0001"}
    assert event["entity"][0]["role"]["code"] == "1"
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "TREAT"


@pytest.mark.parametrize(
    ("resource_id", "kind", "record_id"),
    [
        ("p-0001", "Patient", "p-0001"),
        ("p-0001.cw2", "Condition", "p-0001:w2"),
        ("a.u.d.c", "Patient", "a_.:"),
        ("p-0001-a0-size", "Observation", "p-0001-a0"),
        ("p-0001-a0-tissue", None, "p-0001-a0"),
        ("x.cy-blob-abababababababab", "DocumentReference", "x:y"),
        ("p-0001-a0-provenance", "Provenance", "p-0001-a0"),
        ("p-0001-coverage-2", "Coverage", "p-0001"),
        ("audit-42", "AuditEvent", "42"),
        ("wound-size", "Condition", "wound-size"),  # a record id, not a derived one
    ],
)
def test_source_record_id(resource_id: str, kind: str | None, record_id: str) -> None:
    assert source_record_id(resource_id, kind) == record_id


def test_ids_escape_reversibly_and_refuse_what_cannot_fit() -> None:
    for record_id in ("abc", "a:b_c.d", "directory:clinic-1", "x" * 64):
        assert source_record_id(fhir_id(record_id), "Patient") == record_id
    with pytest.raises(FhirError):
        fhir_id("a:" * 32)
    with pytest.raises(FhirError):
        source_record_id("bad.zid", "Patient")


def test_validate_refuses_invalid_resources() -> None:
    with pytest.raises(FhirValidationError) as caught:
        validate({"resourceType": "Patient", "id": "x", "birthDate": "1950-13-45"})
    assert any(p.startswith("birthDate") for p in caught.value.problems)
    with pytest.raises(FhirValidationError):
        validate({"resourceType": "Nonsense"})
    with pytest.raises(FhirValidationError):
        validate({"id": "x"})
    with pytest.raises(FhirValidationError):  # Observation.status and code are required
        validate({"resourceType": "Observation", "id": "o"})


def test_bundle_refuses_resources_without_type_or_id() -> None:
    with pytest.raises(FhirError):
        bundle([{"resourceType": "Patient"}])
    with pytest.raises(FhirError):
        bundle([{"id": "x"}])
    with pytest.raises(FhirError):
        bundle([], "batch")  # type: ignore[arg-type]
    assert bundle([]) == {"resourceType": "Bundle", "type": "collection", "entry": []}
