"""Resource ids: a record id as a FHIR id, and back.

FHIR ids are ``[A-Za-z0-9\\-.]{1,64}``; record ids may also hold ``:`` and ``_``. The
escaping uses ``.`` as its escape character: ``.`` is written ``.d``, ``:`` is ``.c``
and ``_`` is ``.u``; letters, digits and ``-`` stand for themselves, so a UUID is its own
FHIR id.
"""

from __future__ import annotations

import re

from fhir_interop._errors import FhirError

__all__ = ["fhir_id", "record_id_of", "source_record_id"]

_ESCAPES = {".": ".d", ":": ".c", "_": ".u"}
_UNESCAPES = {value[1]: key for key, value in _ESCAPES.items()}
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# Suffixes of derived resource ids (after the escaped record id), longest first.
_DERIVED = re.compile(r"-(?:size|tissue|provenance|coverage-[0-9]+|blob-[0-9a-f]{16})$")
# The record types whose resource id is the record id itself.
RECORD_TYPES = frozenset(
    {"Patient", "Condition", "AllergyIntolerance", "MedicationStatement", "CarePlan"}
)


def fhir_id(record_id: str, suffix: str = "") -> str:
    """The FHIR id of `record_id` (plus a derived `suffix` such as ``"-size"``).

    Raises:
        FhirError: The escaped id is longer than FHIR's 64 characters.
    """
    escaped = "".join(_ESCAPES.get(char, char) for char in record_id) + suffix
    if not _FHIR_ID.match(escaped):
        raise FhirError(f"record id {record_id!r} does not fit a FHIR id ({escaped!r})")
    return escaped


def record_id_of(resource_id: str) -> str:
    """Undo `fhir_id`'s escaping (no derived suffix is removed).

    Raises:
        FhirError: `resource_id` is not an escaped record id.
    """
    out: list[str] = []
    chars = iter(resource_id)
    for char in chars:
        if char != ".":
            out.append(char)
            continue
        code = next(chars, "")
        if code not in _UNESCAPES:
            raise FhirError(f"{resource_id!r} is not a Coherency resource id")
        out.append(_UNESCAPES[code])
    return "".join(out)


def source_record_id(resource_id: str, resource_type: str | None = None) -> str:
    """The record id a resource id was made from.

    A record's own resource (Patient, Condition, AllergyIntolerance,
    MedicationStatement, CarePlan) has the record id, escaped; a derived resource
    (Observation ``<assessment>-size``/``-tissue``, DocumentReference
    ``<assessment>-blob-<sha256[:16]>``, Provenance ``<assessment>-provenance``,
    Coverage ``<patient>-coverage-<n>``, AuditEvent ``audit-<event id>``) names the
    record (or audit event) it came from. Give `resource_type` when known: a record
    type keeps a record id that merely ends like a derived suffix.

    Raises:
        FhirError: `resource_id` is not one this package makes.
    """
    if resource_type in RECORD_TYPES:
        return record_id_of(resource_id)
    if resource_type in (None, "AuditEvent") and resource_id.startswith("audit-"):
        return record_id_of(resource_id[len("audit-") :])
    if resource_type == "Appointment":
        return record_id_of(resource_id)
    return record_id_of(_DERIVED.sub("", resource_id))
