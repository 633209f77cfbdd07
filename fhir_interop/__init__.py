"""Coherency's records as HL7 FHIR R4: export (Bundles of Patient, Condition,
Observation, DocumentReference, ... resources), import, and validation.

The mapping is plain data in and out (records and JSON-ready dicts); the device store,
the server and the command line each gather a patient's records (`PatientRecords`) and
hand them here.
"""

from fhir_interop._records import AppointmentInfo, AuditInfo, PatientRecords

__all__ = ["AppointmentInfo", "AuditInfo", "PatientRecords"]
