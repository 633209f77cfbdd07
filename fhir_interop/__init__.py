"""Coherency's records as HL7 FHIR R4: export (Bundles of Patient, Condition,
Observation, DocumentReference, ... resources), import, and validation.

The mapping is plain data in and out (records and JSON-ready dicts); the device store,
the server and the command line each gather a patient's records (`PatientRecords`) and
hand them here. Resources validate against the R4B models of fhir.resources 8.3.0
(FHIR 4.3.0) and use only R4 elements; docs/fhir.md has the mapping.

    FhirError                 malformed input (not JSON, not a Bundle), an id FHIR
    |                         cannot carry, a resource the mapping cannot read
    +-- FhirValidationError   does not validate against FHIR R4B (`.problems`)
"""

from fhir_interop._bundle import bundle, export_bundle
from fhir_interop._errors import FhirError, FhirValidationError
from fhir_interop._export import patient_resources
from fhir_interop._ids import source_record_id
from fhir_interop._import import FhirImport, ImportedPatient, ImportedRecord, read_bundle
from fhir_interop._records import AppointmentInfo, AuditInfo, PatientRecords
from fhir_interop._validate import FHIR_VERSION, validate

__all__ = [
    "FHIR_VERSION",
    "AppointmentInfo",
    "AuditInfo",
    "FhirError",
    "FhirImport",
    "FhirValidationError",
    "ImportedPatient",
    "ImportedRecord",
    "PatientRecords",
    "bundle",
    "export_bundle",
    "patient_resources",
    "read_bundle",
    "source_record_id",
    "validate",
]
