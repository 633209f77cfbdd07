"""The medical history (conditions, allergies, medications), wound care plans, and a
patient's emergency contacts and insurance (patients v2) behave like every record:
field-level merge, visible conflicts, tombstones, validation after merge, immutable
links, reference checks, projections, store and record upgrades."""

from __future__ import annotations

from typing import Any

import pytest
from automerge import core as am

import crdt
from edge_sdk import EdgeClient, MemoryHub
from edge_sdk._store import SCHEMA_VERSION
from tests.conftest import add_patient, connect


def sync_all(hub: MemoryHub, *clients: EdgeClient, rounds: int = 2) -> None:
    for _ in range(rounds):
        for client in clients:
            client.sync(transport=connect(hub, client))


def two_devices(tmp_store: Any) -> tuple[MemoryHub, EdgeClient, EdgeClient, str]:
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    patient = add_patient(a, "Okafor")
    return hub, a, b, patient


# ------------------------------------------------------------------ merge and conflicts
def test_concurrent_edits_of_different_fields_both_survive(tmp_store: Any) -> None:
    hub, a, b, patient = two_devices(tmp_store)
    medication = a.medications.add(
        patient_id=patient, medication="metformin 500 mg", dosage="500 mg once daily"
    )
    sync_all(hub, a, b)
    a.medications.update(medication.id, dosage="500 mg twice daily")
    b.medications.update(medication.id, status="on-hold")
    sync_all(hub, a, b)
    for client in (a, b):
        merged = client.medications.get(medication.id)
        assert (merged.dosage, merged.status) == ("500 mg twice daily", "on-hold")
    assert a.conflicts() == b.conflicts() == []


def test_concurrent_edits_of_one_field_are_a_visible_conflict(tmp_store: Any) -> None:
    hub, a, b, patient = two_devices(tmp_store)
    condition = a.conditions.add(patient_id=patient, description="Type 2 diabetes")
    sync_all(hub, a, b)
    a.conditions.update(condition.id, clinical_status="remission")
    b.conditions.update(condition.id, clinical_status="relapse")
    sync_all(hub, a, b)
    [conflict] = a.conflicts()
    assert (conflict.record_id, conflict.collection, conflict.field) == (
        condition.id,
        "conditions",
        "clinical_status",
    )
    assert {v.value for v in conflict.values} == {"remission", "relapse"}
    assert b.conflicts() == a.conflicts()
    resolved = a.conditions.resolve(condition.id, "clinical_status", "remission")
    assert resolved.clinical_status == "remission"
    sync_all(hub, a, b)
    assert a.conflicts() == b.conflicts() == []
    assert b.conditions.get(condition.id).clinical_status == "remission"


def test_a_delete_is_a_tombstone_that_syncs(tmp_store: Any) -> None:
    hub, a, b, patient = two_devices(tmp_store)
    allergy = a.allergies.add(
        patient_id=patient, substance="zinc oxide tape", category="environment"
    )
    sync_all(hub, a, b)
    assert [x.id for x in b.allergies.for_patient(patient)] == [allergy.id]
    b.allergies.delete(allergy.id)
    sync_all(hub, a, b)
    for client in (a, b):
        assert client.allergies.get(allergy.id).deleted is True
        assert client.allergies.for_patient(patient) == []
        assert [x.id for x in client.allergies.for_patient(patient, include_deleted=True)] == [
            allergy.id
        ]
    a.allergies.restore(allergy.id)
    sync_all(hub, a, b)
    assert [x.id for x in b.allergies.for_patient(patient)] == [allergy.id]


# ------------------------------------------------------------------ validation after merge
@pytest.mark.parametrize(
    ("collection", "values", "first", "second"),
    [
        (
            "conditions",
            {"description": "Venous insufficiency"},
            {"onset": "2024-05-01"},
            {"abatement": "2024-01-01"},
        ),
        (
            "medications",
            {"medication": "warfarin"},
            {"started": "2024-05-01"},
            {"ended": "2024-01-01"},
        ),
    ],
)
def test_a_merge_that_puts_a_course_out_of_order_is_refused(
    tmp_store: Any,
    collection: str,
    values: dict[str, str],
    first: dict[str, str],
    second: dict[str, str],
) -> None:
    """Each edit is valid alone; merged, the end would come before the start."""
    hub, a, b, patient = two_devices(tmp_store)
    record = a.collection(collection).add(patient_id=patient, **values)
    sync_all(hub, a, b)
    a.collection(collection).update(record.id, **first)
    b.collection(collection).update(record.id, **second)
    a.sync(transport=connect(hub, a))
    pushed = b.sync(transport=connect(hub, b))
    assert [r.doc_id for r in pushed.refused_by_server] == [record.id]
    assert "before" in pushed.refused_by_server[0].reason
    # Each replica keeps a valid record; the server holds a's edit, not the merge.
    for name, value in second.items():
        assert str(getattr(b.collection(collection).get(record.id), name)) == value
    for name, value in first.items():
        assert str(getattr(a.collection(collection).get(record.id), name)) == value
    third = tmp_store("c")  # what the server holds
    third.sync(transport=connect(hub, third))
    held = third.collection(collection).get(record.id)
    assert all(str(getattr(held, n)) == v for n, v in first.items())
    assert all(getattr(held, n) is None for n in second)


def test_a_merge_that_changes_an_immutable_link_is_refused(tmp_store: Any) -> None:
    client = tmp_store("a")
    patient = add_patient(client, "Okafor")
    wound = client.wounds.add(patient_id=patient, body_site="left heel", etiology="diabetic")
    plan = client.care_plans.add(patient_id=patient, wound_id=wound.id, dressing="foam")
    document = client.replica.store.get_document(plan.id, device_id=client.device_id)
    assert document is not None
    moved = crdt.RecordDocument.load(document.save(), device_id=client.device_id)
    raw = moved.automerge
    with raw.transaction() as tx:
        tx.put(am.ROOT, "wound_id", am.ScalarType.Str, "another-wound")
    edited = crdt.RecordDocument.load(raw.save())
    with pytest.raises(crdt.MergeRejectedError) as caught:
        document.merge(edited)
    assert "wound_id" in caught.value.reason


# ------------------------------------------------------------------ links and references
def test_patient_and_wound_links_are_immutable(tmp_store: Any) -> None:
    client = tmp_store("a")
    patient, other = add_patient(client, "Okafor"), add_patient(client, "Mensah")
    wound = client.wounds.add(patient_id=patient, body_site="sacrum", etiology="pressure")
    records = [
        client.conditions.add(patient_id=patient, description="COPD"),
        client.allergies.add(patient_id=patient, substance="latex"),
        client.medications.add(patient_id=patient, medication="salbutamol"),
    ]
    for record in records:
        with pytest.raises(crdt.RecordValidationError, match="patient_id"):
            client.collection(record.collection).update(record.id, patient_id=other)
    plan = client.care_plans.add(patient_id=patient, wound_id=wound.id)
    other_wound = client.wounds.add(patient_id=patient, body_site="heel", etiology="pressure")
    with pytest.raises(crdt.RecordValidationError, match="wound_id"):
        client.care_plans.update(plan.id, wound_id=other_wound.id)


def test_references_are_checked_on_creation(tmp_store: Any) -> None:
    client = tmp_store("a")
    patient, other = add_patient(client, "Okafor"), add_patient(client, "Mensah")
    wound = client.wounds.add(patient_id=other, body_site="heel", etiology="arterial")
    unknown = "0" * 32
    for collection, values in (
        ("conditions", {"description": "CKD stage 3"}),
        ("allergies", {"substance": "penicillin"}),
        ("medications", {"medication": "ramipril"}),
    ):
        with pytest.raises(crdt.RecordValidationError, match="no patients record"):
            client.collection(collection).add(patient_id=unknown, **values)
    with pytest.raises(crdt.RecordValidationError, match="no wounds record"):
        client.care_plans.add(patient_id=patient, wound_id=unknown)
    with pytest.raises(crdt.RecordValidationError, match="belongs to another patient"):
        client.care_plans.add(patient_id=patient, wound_id=wound.id)
    client.patients.delete(other)
    with pytest.raises(crdt.RecordValidationError, match="no patients record"):
        client.conditions.add(patient_id=other, description="CKD stage 3")
    assert client.care_plans.list() == [] and client.conditions.list() == []


def test_the_records_validate_their_own_values(tmp_store: Any) -> None:
    client = tmp_store("a")
    patient = add_patient(client, "Okafor")
    wound = client.wounds.add(patient_id=patient, body_site="heel", etiology="pressure")
    for write in (
        lambda: client.conditions.add(
            patient_id=patient, description="x", onset="2024-02-01", abatement="2024-01-01"
        ),
        lambda: client.medications.add(patient_id=patient, medication="x", status="sometimes"),
        lambda: client.allergies.add(patient_id=patient, substance="x", criticality="mild"),
        lambda: client.care_plans.add(patient_id=patient, wound_id=wound.id, dressing_every_days=0),
        lambda: client.conditions.add(
            patient_id=patient, description="x", code={"system": "", "code": "1"}
        ),
        lambda: client.patients.update(patient, insurance=[{"member_id": "no payer"}]),
        lambda: client.patients.update(
            patient,
            insurance=[{"payer": "X", "valid_from": "2025-01-01", "valid_until": "2024-01-01"}],
        ),
    ):
        with pytest.raises(crdt.RecordValidationError):
            write()
    assert client.conditions.list() == client.medications.list() == []


# ------------------------------------------------------------------ projections
def test_projections_list_by_patient_wound_and_status(tmp_store: Any) -> None:
    client = tmp_store("a")
    patient, other = add_patient(client, "Okafor"), add_patient(client, "Mensah")
    heel = client.wounds.add(patient_id=patient, body_site="heel", etiology="diabetic")
    shin = client.wounds.add(patient_id=patient, body_site="shin", etiology="venous")
    active = client.medications.add(patient_id=patient, medication="metformin")
    stopped = client.medications.add(
        patient_id=patient, medication="flucloxacillin", status="stopped", ended="2024-03-01"
    )
    theirs = client.medications.add(patient_id=other, medication="apixaban")
    assert [m.id for m in client.medications.for_patient(patient)] == [active.id, stopped.id]
    assert [m.id for m in client.medications.for_patient(other)] == [theirs.id]
    assert [m.id for m in client.medications.query(status="stopped").all()] == [stopped.id]
    assert [m.id for m in client.medications.list(status="active")] == [active.id, theirs.id]
    resolved = client.conditions.add(
        patient_id=patient, description="cellulitis", clinical_status="resolved"
    )
    client.conditions.add(patient_id=patient, description="type 2 diabetes")
    assert [c.id for c in client.conditions.list(clinical_status="resolved")] == [resolved.id]
    first = client.care_plans.add(
        patient_id=patient,
        wound_id=heel.id,
        goals=["closed by week 12", "no infection"],
        dressing="hydrofibre",
        dressing_every_days=3,
        offloading="total contact cast",
        review_on="2024-06-01",
    )
    second = client.care_plans.add(patient_id=patient, wound_id=shin.id, status="draft")
    assert [p.id for p in client.care_plans.for_wound(heel.id)] == [first.id]
    assert [p.id for p in client.care_plans.for_patient(patient)] == [first.id, second.id]
    assert [p.id for p in client.care_plans.query(status="draft").all()] == [second.id]
    assert client.care_plans.get(first.id).goals == ("closed by week 12", "no infection")
    client.care_plans.update(first.id, status="completed")
    assert client.care_plans.query(status="active").all() == []


# ------------------------------------------------------------------ upgrades
def test_a_version_6_store_opens_as_version_7_with_the_new_projections(tmp_store: Any) -> None:
    client = tmp_store("old")
    patient = add_patient(client, "Okafor")
    wound = client.wounds.add(patient_id=patient, body_site="heel", etiology="pressure")
    condition = client.conditions.add(patient_id=patient, description="PAD")
    allergy = client.allergies.add(patient_id=patient, substance="iodine")
    medication = client.medications.add(patient_id=patient, medication="aspirin")
    plan = client.care_plans.add(patient_id=patient, wound_id=wound.id)
    store = client.replica.store
    for table in ("conditions", "allergies", "medications", "care_plans"):
        store.execute(f"DROP TABLE {table}")
    store.set_meta("schema_version", "6")
    client.close()
    with tmp_store.open("old") as reopened:
        assert reopened.replica.store.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert [c.id for c in reopened.conditions.for_patient(patient)] == [condition.id]
        assert [a.id for a in reopened.allergies.for_patient(patient)] == [allergy.id]
        assert [m.id for m in reopened.medications.list(status="active")] == [medication.id]
        assert [p.id for p in reopened.care_plans.for_wound(wound.id)] == [plan.id]


def v1_patient(client: EdgeClient) -> crdt.RecordDocument:
    """A patient as the app wrote it before patients v2 (no emergency contacts, no
    insurance, schema version 1), signed by `client`'s device."""
    written = crdt.RecordDocument.create(
        crdt.Patient,
        {"given_name": "Ada", "family_name": "Okafor", "birth_date": "1950-03-01"},
        device_id=client.device_id,
        clinic_id=client.clinic_id,
    )
    doc = written.automerge
    with doc.transaction() as tx:
        tx.put(am.ROOT, "schema_version", am.ScalarType.Int, 1)
        tx.delete(am.ROOT, "emergency_contacts")
        tx.delete(am.ROOT, "insurance")
    old = crdt.RecordDocument.load(doc.save(), device_id=client.device_id)
    old.seal(client.identity)
    return crdt.RecordDocument.load(old.save())


def test_a_version_1_patient_is_upgraded_with_no_emergency_contacts_nor_insurance(
    tmp_store: Any,
) -> None:
    client = tmp_store("a")
    old = v1_patient(client)
    assert old.schema_version == 1 and old.needs_upgrade
    assert "insurance" not in old.values()
    with client.batch():
        client.replica.store.put_documents([old])
    client._upgrades.run()
    upgraded = client.replica.store.get_document(old.id)
    assert upgraded is not None and upgraded.schema_version == crdt.Patient.schema_version == 2
    patient = client.patients.get(old.id)
    assert (patient.emergency_contacts, patient.insurance) == ((), ())
    assert patient.family_name == "Okafor"
    assert client.patients.history(old.id)[-1].device_id == client.device_id
    updated = client.patients.update(
        old.id,
        emergency_contacts=[{"name": "Grace Okafor", "relationship": "daughter"}],
        insurance=[{"payer": "Acme Health", "member_id": "AC-1"}],
    )
    assert updated.emergency_contacts[0].relationship == "daughter"
    assert updated.insurance[0].payer == "Acme Health"
