"""Routes: the read-only FHIR R4 endpoint, ``/fhir/R4``.

``metadata`` (the CapabilityStatement, public as FHIR servers make it), ``{type}/{id}``
(read), ``{type}?...`` (search, a searchset Bundle a page at a time) and
``Patient/{id}/$everything``. Answers are ``application/fhir+json``; refusals are
OperationOutcome resources (the app's error handler renders the server's error tree so
under ``/fhir/``). Authentication, clinic scope and break-glass are the staff API's
(`sync_server.sync.staff_routes`), and so is the audit: every read, search and
``$everything`` is recorded with the resource ids it returned and their patients
(never names, never the search values), a refused read with the id asked for.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sync_server.deps import DbDep, RequestIdDep, StaffCaller
from sync_server.errors import NotFound
from sync_server.fhir.outcomes import FHIR_MEDIA_TYPE
from sync_server.fhir.services import (
    Found,
    capability_statement,
    everything,
    page_link,
    parse_search,
    read_resource,
    search,
    searchset,
)
from sync_server.identity.principals import Principal
from sync_server.sync.records import record_read, record_refused_read

__all__ = ["router"]

router = APIRouter(prefix="/fhir/R4", tags=["fhir"])

_OK: dict[str, Any] = {"description": "A FHIR resource (JSON).", "content": {FHIR_MEDIA_TYPE: {}}}
_BAD_SEARCH: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "A search parameter this server does not take, a modifier, or a "
        "malformed value (`bad_search_parameter`), as an OperationOutcome."
    }
}
_MISSING: dict[int | str, dict[str, Any]] = {
    404: {
        "description": "No such resource, a patient outside the caller's clinics "
        "(`not_found`), or a resource type this server does not serve "
        "(`unknown_resource_type`), as an OperationOutcome."
    }
}


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir/R4"


def _fhir(content: dict[str, Any]) -> JSONResponse:
    return JSONResponse(content, media_type=FHIR_MEDIA_TYPE)


def _audit(
    db: DbDep,
    caller: Principal,
    collection: str,
    found: Found,
    request_id: str | None,
) -> None:
    with db.write() as session:
        record_read(
            session=session,
            principal=caller,
            clinic_id=found.clinic_id,
            collection=collection,
            record_ids=found.resource_ids,
            patient_ids=found.patient_ids,
            purpose=found.purpose,
            request_id=request_id,
        )


def _audit_refused(
    db: DbDep, caller: Principal, collection: str, wanted: str, request_id: str | None
) -> None:
    with db.write() as session:
        record_refused_read(
            session=session,
            principal=caller,
            collection=collection,
            wanted=wanted,
            request_id=request_id,
        )


@router.get(
    "/metadata",
    summary="FHIR CapabilityStatement",
    response_class=JSONResponse,
    responses={200: _OK},
)
def get_metadata(request: Request) -> JSONResponse:
    """What this FHIR server serves: its resource types, their read and search
    interactions and search parameters, and ``Patient/$everything``. Public, as FHIR
    servers make it."""
    version: str = request.app.version
    return _fhir(capability_statement(base_url=_base(request), software_version=version))


@router.get(
    "/Patient/{patient_id}/$everything",
    summary="Every resource of a patient",
    response_class=JSONResponse,
    responses={200: _OK, **_MISSING},
)
def get_everything(
    patient_id: str, request: Request, caller: StaffCaller, db: DbDep, request_id: RequestIdDep
) -> JSONResponse:
    """A searchset Bundle of every resource of the patient (Patient, Coverage,
    Condition, AllergyIntolerance, MedicationStatement, CarePlan, Observation,
    DocumentReference, Provenance, Appointment, AuditEvent); 404 for a patient outside
    the caller's clinics."""
    base = _base(request)
    try:
        with db.read() as session:
            found = everything(session=session, principal=caller, patient_id=patient_id,
                               base_url=base)  # fmt: skip
    except NotFound:
        _audit_refused(db, caller, "fhir/Patient", patient_id, request_id)
        raise
    _audit(db, caller, "fhir/$everything", found, request_id)
    return _fhir(searchset(found, base_url=base, self_link=str(request.url), next_link=None))


@router.get(
    "/{resource_type}/{resource_id}",
    summary="Read a FHIR resource",
    response_class=JSONResponse,
    responses={200: _OK, **_MISSING},
)
def get_resource(
    resource_type: str,
    resource_id: str,
    request: Request,
    caller: StaffCaller,
    db: DbDep,
    request_id: RequestIdDep,
) -> JSONResponse:
    """One resource by type and id; 404 if missing or of a patient outside the
    caller's clinics."""
    parse_search(resource_type, ())  # an unknown type: 404 before anything is read
    collection = f"fhir/{resource_type}"
    try:
        with db.read() as session:
            found = read_resource(
                session=session,
                principal=caller,
                resource_type=resource_type,
                resource_id=resource_id,
                base_url=_base(request),
            )
    except NotFound:
        _audit_refused(db, caller, collection, resource_id, request_id)
        raise
    _audit(db, caller, collection, found, request_id)
    return _fhir(found.resources[0])


@router.get(
    "/{resource_type}",
    summary="Search FHIR resources",
    response_class=JSONResponse,
    responses={200: _OK, **_BAD_SEARCH, **_MISSING},
)
def search_resources(
    resource_type: str,
    request: Request,
    caller: StaffCaller,
    db: DbDep,
    request_id: RequestIdDep,
) -> JSONResponse:
    """A searchset Bundle of the resources of `resource_type` the caller may see that
    meet the query (parameters: docs/fhir.md; each type's in ``metadata``),
    ``_count`` at a time with a ``next`` link."""
    query = parse_search(resource_type, list(request.query_params.multi_items()))
    base = _base(request)
    with db.read() as session:
        found = search(session=session, principal=caller, query=query, base_url=base)
    _audit(db, caller, f"fhir/{resource_type}", found, request_id)
    next_link = (
        page_link(base, resource_type, query, query.offset + query.count) if found.more else None
    )
    return _fhir(
        searchset(
            found,
            base_url=base,
            self_link=page_link(base, resource_type, query, query.offset),
            next_link=next_link,
        )
    )
