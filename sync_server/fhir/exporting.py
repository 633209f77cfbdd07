"""A patient's or a whole clinic's records as one FHIR R4 Bundle (collection or
transaction), from the server's database: ``coherency server fhir-export``.

The clinic is gathered in a fixed number of queries (`gather_patients`), mapped by
`fhir_interop.export_bundle` and validated (`fhir_interop.validate`) before anything is
handed back. The export is audited (`RecordsExported`, kind ``fhir-<bundle kind>``,
format ``fhir+json``) with the patients it holds, in the transaction that read them:
no bundle leaves without its audit row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy.orm import Session

import fhir_interop
from sync_server.audit.events import Actor, RecordsExported
from sync_server.audit.services import record_event
from sync_server.errors import NotFound, Unprocessable
from sync_server.fhir.gathering import gather_patients
from sync_server.sync.tables import PatientRow

__all__ = ["BundleKind", "FhirExport", "export_bundle"]

BundleKind = Literal["collection", "transaction"]


@dataclass(frozen=True, slots=True)
class FhirExport:
    """An exported Bundle, with the clinic, how many patients and resources it holds."""

    bundle: dict[str, Any]
    clinic_id: str
    patients: int
    resources: int


def export_bundle(
    *,
    session: Session,
    clinic_id: str | None,
    patient_id: str | None,
    kind: BundleKind,
    actor: Actor,
    purpose: str | None,
    base_url: str | None = None,
) -> FhirExport:
    """The Bundle of one live patient (`patient_id`) or of every live patient of
    `clinic_id` (exactly one of them), validated and audited.

    Raises:
        NotFound: ``patient_not_found``: no such live patient (of `clinic_id`, if given).
        Unprocessable: ``fhir_invalid``: the mapped bundle does not validate (a record
            the mapping cannot express).
    """
    if patient_id is not None:
        row = session.get(PatientRow, patient_id)
        if row is None or row.deleted or (clinic_id is not None and row.clinic_id != clinic_id):
            raise NotFound(f"no patient {patient_id!r}", code="patient_not_found")
        clinic_id = row.clinic_id
    if clinic_id is None:
        raise NotFound("give a patient or a clinic", code="clinic_not_found")
    patients = gather_patients(
        session=session,
        clinic_id=clinic_id,
        patient_ids=None if patient_id is None else [patient_id],
    )
    bundle = fhir_interop.export_bundle(patients, kind, base_url=base_url)
    try:
        fhir_interop.validate(bundle)
    except fhir_interop.FhirValidationError as exc:
        raise Unprocessable(
            f"the FHIR bundle does not validate: {exc}", code="fhir_invalid"
        ) from None
    entries = len(bundle.get("entry") or ())
    record_event(
        session=session,
        event=RecordsExported(
            actor=actor,
            clinic_id=clinic_id,
            patient_ids=tuple(p.patient.id for p in patients),
            purpose=purpose,
            kind=f"fhir-{kind}",
            format="fhir+json",
            filters=() if patient_id is None else (("patient_id", patient_id),),
            rows=entries,
        ),
    )
    return FhirExport(bundle, clinic_id, len(patients), entries)
