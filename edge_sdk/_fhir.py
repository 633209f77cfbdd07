"""The device store as FHIR R4: export a patient (or every patient) as a Bundle, and
import a Bundle of Patient, Condition, AllergyIntolerance and MedicationStatement
resources into records.

The mapping itself is `fhir_interop` (an optional extra, ``coherency[fhir]``), imported
only when one of these runs. An export is one audited ``export`` access naming every
record it read; an import is one audited ``import`` access naming every record it
created or changed, and writes everything in one store transaction, after the whole
bundle was read, validated and mapped (a bundle that fails changes nothing).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from crdt import (
    COLLECTIONS,
    CrdtError,
    Patient,
    Record,
    RecordDocument,
)
from edge_sdk._errors import NotEnrolledError, RecordNotFoundError, RecordValidationError
from edge_sdk._replica import Replica, ReplicaHolder, replica_of

if TYPE_CHECKING:
    from fhir_interop import ImportedPatient

__all__ = ["FhirImportReport", "fhir_export", "fhir_import"]

_PATIENT_COLLECTIONS = ("wounds", "assessments", "conditions", "allergies", "medications")


@dataclass(slots=True)
class FhirImportReport:
    """What a FHIR import did.

    Attributes:
        created: Records created.
        updated: Records changed.
        unchanged: Records the bundle matched that already held its values.
        record_ids: The records created or changed.
        unmapped: What the bundle held that maps to no record, one line each
            ("Encounter/e1: resource type not mapped", "Patient/x.maritalStatus: field
            not mapped").
    """

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    record_ids: list[str] = field(default_factory=list)
    unmapped: list[str] = field(default_factory=list)


def _fhir() -> Any:
    try:
        import fhir_interop
    except ImportError as exc:  # fhir.resources is the optional extra
        raise ImportError(
            f"FHIR export and import need the fhir extra: pip install 'coherency[fhir]' ({exc})"
        ) from None
    return fhir_interop


def fhir_export(
    holder: Replica | ReplicaHolder,
    patient_id: str | None = None,
    *,
    kind: Literal["collection", "transaction"] = "collection",
    base_url: str | None = None,
) -> dict[str, Any]:
    """One patient's records (or every patient's) as a FHIR R4 Bundle.

    Deleted records are left out. One audited ``export`` access.

    Raises:
        RecordNotFoundError: No patient `patient_id` here (or it is deleted).
        ImportError: The fhir extra is not installed.
    """
    fhir = _fhir()
    replica = replica_of(holder)
    store = replica.store
    with replica.access("export", "*") as access:
        where, params = ["deleted = 0"], []
        if patient_id is not None:
            where.append("id = ?")
            params.append(patient_id)
        patients = [
            Patient.model_validate_json(row[0])
            for row in store.query_rows("patients", ("record",), where, params)
        ]
        if patient_id is not None and not patients:
            raise RecordNotFoundError(f"no patients record {patient_id}")
        owned: dict[str, dict[str, list[Record]]] = {p.id: {} for p in patients}
        where = ["deleted = 0"] + (["patient_id = ?"] if patient_id is not None else [])
        for collection in (*_PATIENT_COLLECTIONS, "care_plans"):
            schema = COLLECTIONS[collection]
            for row in store.query_rows(collection, ("record",), where, params):
                record = schema.model_validate_json(row[0])
                mine = owned.get(getattr(record, "patient_id", ""))
                if mine is not None:
                    mine.setdefault(collection, []).append(record)
        records = []
        for patient in patients:
            mine = owned[patient.id]
            records.append(
                fhir.PatientRecords(
                    patient=patient,
                    wounds=tuple(mine.get("wounds", ())),
                    assessments=tuple(mine.get("assessments", ())),
                    conditions=tuple(mine.get("conditions", ())),
                    allergies=tuple(mine.get("allergies", ())),
                    medications=tuple(mine.get("medications", ())),
                    care_plans=tuple(mine.get("care_plans", ())),
                )
            )
            access.record_ids.append(patient.id)
            access.record_ids.extend(r.id for found in mine.values() for r in found)
        return dict(fhir.export_bundle(records, kind, base_url=base_url))


def fhir_import(
    holder: Replica | ReplicaHolder, data: bytes | str | Mapping[str, Any]
) -> FhirImportReport:
    """Create or update records from a FHIR Bundle (see `fhir_interop.read_bundle`).

    A patient is matched by Coherency's patient identifier, else by an MRN
    (identifier type MR) of a patient of this clinic, else created. Resources from
    another system get record ids derived from their identity in the bundle, so a
    second import of the same bundle finds them and writes nothing. Fields the bundle
    does not give are left as they are.

    Raises:
        fhir_interop.FhirError: The bundle is malformed or does not validate; nothing
            was written.
        RecordValidationError: A mapped value does not satisfy its record's schema;
            nothing was written.
        NotEnrolledError: The store has no clinic yet.
        ImportError: The fhir extra is not installed.
    """
    fhir = _fhir()
    mapped = fhir.read_bundle(data)
    replica = replica_of(holder)
    if not replica.clinic_id:
        raise NotEnrolledError("this store has no clinic yet: enrol it before importing records")
    store = replica.store
    report = FhirImportReport(unmapped=list(mapped.unmapped))
    with store.transaction(), replica.access("import", "*") as access:
        documents: list[RecordDocument] = []
        for imported in mapped.patients:
            patient_id = _match_patient(replica, imported)
            pending = [("patients", patient_id, dict(imported.values))]
            for record in imported.records:
                values = dict(record.values)
                if record.collection != "wounds" or not _exists(replica, record.record_id):
                    values["patient_id"] = patient_id
                pending.append((record.collection, record.record_id, values))
            for collection, record_id, values in pending:
                document = _write(replica, collection, record_id, values, report)
                if document is not None:
                    documents.append(document)
                    report.record_ids.append(record_id)
            # Later records refer to the patient: store as we go (one transaction).
            store.put_documents(documents)
            documents = []
        access.record_ids.extend(report.record_ids)
    return report


def _exists(replica: Replica, record_id: str) -> bool:
    return replica.store.get_document(record_id) is not None


def _match_patient(replica: Replica, imported: ImportedPatient) -> str:
    store = replica.store
    if imported.record_id and store.get_record("patients", imported.record_id) is not None:
        return imported.record_id
    for mrn in imported.mrns:
        rows = store.query_rows("patients", ("id",), ["mrn = ?"], [mrn], limit=1)
        if rows:
            return str(rows[0][0])
    return str(imported.new_id)


def _write(
    replica: Replica,
    collection: str,
    record_id: str,
    values: dict[str, Any],
    report: FhirImportReport,
) -> RecordDocument | None:
    schema = COLLECTIONS[collection]
    document = replica.store.get_document(record_id, device_id=replica.device_id)
    try:
        if document is None:
            report.created += 1
            return RecordDocument.create(
                schema,
                {key: value for key, value in values.items() if value is not None},
                device_id=replica.device_id,
                clinic_id=replica.clinic_id or "",
                record_id=record_id,
                signer=replica.identity,
            )
        if document.collection != collection:
            raise RecordValidationError(
                collection, [f"{record_id} is a {document.collection} record"]
            )
        current = document.read().model_dump(mode="json")
        wanted = schema.model_validate({**current, **values}).model_dump(mode="json")
        changes = {name: values[name] for name in values if wanted.get(name) != current.get(name)}
        if not changes:
            report.unchanged += 1
            return None
        document.update(changes, device_id=replica.device_id, signer=replica.identity)
        report.updated += 1
        return document
    except CrdtError as exc:
        raise RecordValidationError(collection, [f"{record_id}: {exc}"]) from None
    except ValueError as exc:  # pydantic's ValidationError
        raise RecordValidationError(collection, [f"{record_id}: {json.dumps(str(exc))}"]) from None
