"""The read-only FHIR R4 view of the server's records: read, search and
``Patient/$everything``, over the resources `fhir_interop` maps a patient's records to
(`sync_server.fhir.gathering` gathers them).

Scope is the staff API's: a caller sees the patients of their clinic (an
organisation-wide admin, of every clinic of the organisation), or one patient under a
live break-glass grant; anything else is treated as missing (404 on a read, nothing
found by a search). Each answer says which resources it returned and whose they are
(`Found`), for the audit of the read (`sync_server.sync.records.record_read`).

Searches (`parse_search`): ``_id``, ``identifier`` (``system|value``, ``|value``,
``system|`` or ``value``) on every type; ``patient`` (``Patient/<id>`` or ``<id>``) and
``date`` (prefixes eq, ne, gt, lt, ge, le on the resource's main date, `DATE_PATHS`) on
every type but Patient; ``_count`` (1-500, default 50) and ``_offset`` page. Several
values of one parameter separated by commas match any of them; a parameter given twice
must match both. An unknown parameter, a modifier or a malformed value is refused
(400 ``bad_search_parameter``): the server does not silently ignore what it cannot do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import false, or_, select
from sqlalchemy.orm import Session

import fhir_interop
from fhir_interop import PatientRecords
from sync_server.audit.tables import AuditEvent, AuditPatient
from sync_server.bookings.tables import Booking
from sync_server.errors import Forbidden, Invalid, NotFound
from sync_server.fhir.gathering import gather_patients
from sync_server.identity.principals import Principal
from sync_server.identity.tenancy import clinic_ids_in_scope, visible_clinic
from sync_server.sync.records import open_record
from sync_server.sync.tables import AssessmentRow, Document, PatientRow, WoundRow

__all__ = [
    "DATE_PATHS",
    "DEFAULT_COUNT",
    "MAX_COUNT",
    "RESOURCE_TYPES",
    "SEARCH_PARAMS",
    "DateBound",
    "Found",
    "Search",
    "capability_statement",
    "everything",
    "page_link",
    "parse_search",
    "patient_record_id",
    "read_resource",
    "search",
    "searchset",
]

log = logging.getLogger(__name__)

RESOURCE_TYPES: tuple[str, ...] = (
    "Patient",
    "Coverage",
    "Condition",
    "AllergyIntolerance",
    "MedicationStatement",
    "CarePlan",
    "Observation",
    "DocumentReference",
    "Provenance",
    "Appointment",
    "AuditEvent",
)
"""The resource types the endpoint serves."""

DATE_PATHS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "Patient": (("birthDate",),),
    "Coverage": (("period", "start"),),
    "Condition": (("onsetDateTime",), ("recordedDate",)),
    "AllergyIntolerance": (("onsetDateTime",), ("recordedDate",)),
    "MedicationStatement": (("effectivePeriod", "start"), ("effectiveDateTime",),
                            ("dateAsserted",)),
    "CarePlan": (("period", "start"), ("created",)),
    "Observation": (("effectiveDateTime",), ("effectivePeriod", "start"), ("issued",)),
    "DocumentReference": (("date",),),
    "Provenance": (("recorded",),),
    "Appointment": (("start",),),
    "AuditEvent": (("recorded",),),
}  # fmt: skip
"""Where each type's main date is (the first path the resource has), for ``date``."""

_COMMON = ("_id", "identifier")
SEARCH_PARAMS: Mapping[str, tuple[str, ...]] = {
    kind: _COMMON if kind == "Patient" else (*_COMMON, "patient", "date") for kind in RESOURCE_TYPES
}
"""The search parameters of each type (besides ``_count`` and ``_offset``)."""

_PAGING = ("_count", "_offset")
_FORMATS = ("json", "application/json", "application/fhir+json")
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")
DEFAULT_COUNT = 50
MAX_COUNT = 500


def _bad(message: str) -> Invalid:
    return Invalid(message, code="bad_search_parameter")


# ------------------------------------------------------------------ dates
@dataclass(frozen=True, slots=True)
class DateBound:
    """One ``date`` criterion: a prefix and the time range its value spans."""

    prefix: str
    start: datetime
    end: datetime  # exclusive

    def matches(self, start: datetime, end: datetime) -> bool:
        """Whether a resource's date, spanning [start, end), meets the criterion (FHIR's
        rules: ``eq`` the range holds it; ``gt`` it reaches past the range; ``ge``
        either; ``lt``/``le`` likewise before)."""
        inside = self.start <= start and end <= self.end
        after = end > self.end
        before = start < self.start
        return {
            "eq": inside,
            "ne": not inside,
            "gt": after,
            "ge": after or inside,
            "lt": before,
            "le": before or inside,
        }[self.prefix]


def _span(text: str) -> tuple[datetime, datetime]:
    """The range a FHIR date, dateTime or instant spans (a time without an offset, and
    a date, are taken as UTC).

    Raises:
        ValueError: Not a FHIR date or time.
    """
    if len(text) == 4 and text.isdigit():
        start = datetime(int(text), 1, 1, tzinfo=UTC)
        return start, start.replace(year=start.year + 1)
    if len(text) == 7 and text[4] == "-":
        start = datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        following = (start + timedelta(days=32)).replace(day=1)
        return start, following
    if len(text) == 10:
        day = date.fromisoformat(text)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    step = timedelta(microseconds=1) if "." in text else timedelta(seconds=1)
    return moment, moment + step


def _date_bound(value: str) -> DateBound:
    prefix, rest = (value[:2], value[2:]) if value[:2] in _PREFIXES else ("eq", value)
    if value[:2].isalpha() and value[:2] not in _PREFIXES:
        raise _bad(f"date prefix {value[:2]!r} is not supported (eq, ne, gt, lt, ge, le)")
    try:
        start, end = _span(rest)
    except (ValueError, IndexError):
        raise _bad(f"date {rest!r} is not a FHIR date or dateTime") from None
    return DateBound(prefix, start, end)


def _main_date(resource: Mapping[str, Any]) -> str | None:
    for path in DATE_PATHS.get(str(resource.get("resourceType")), ()):
        value: Any = resource
        for step in path:
            value = value.get(step) if isinstance(value, Mapping) else None
        if isinstance(value, str):
            return value
    return None


# ------------------------------------------------------------------ search
@dataclass(frozen=True, slots=True)
class Search:
    """A parsed search of one resource type: each criterion a tuple of alternatives
    (any may match), every criterion must match."""

    resource_type: str
    ids: tuple[tuple[str, ...], ...] = ()
    identifiers: tuple[tuple[str, ...], ...] = ()
    patients: tuple[tuple[str, ...], ...] = ()
    dates: tuple[DateBound, ...] = ()
    count: int = DEFAULT_COUNT
    offset: int = 0
    params: tuple[tuple[str, str], ...] = ()  # as given, for the page links

    def matches(self, resource: Mapping[str, Any], patient_id: str) -> bool:
        """Whether `resource`, one of `patient_id`'s, meets every criterion."""
        if any(resource.get("id") not in alternatives for alternatives in self.ids):
            return False
        if any(patient_id not in alternatives for alternatives in self.patients):
            return False
        for alternatives in self.identifiers:
            if not any(_identifier_matches(resource, token) for token in alternatives):
                return False
        if self.dates:
            when = _main_date(resource)
            if when is None:
                return False
            try:
                start, end = _span(when)
            except (ValueError, IndexError):
                return False
            return all(bound.matches(start, end) for bound in self.dates)
        return True


def _identifier_matches(resource: Mapping[str, Any], token: str) -> bool:
    identifiers = resource.get("identifier") or []
    if isinstance(identifiers, Mapping):
        identifiers = [identifiers]
    system, bar, value = token.rpartition("|") if "|" in token else ("", "", token)
    for identifier in identifiers:
        if not isinstance(identifier, Mapping):
            continue
        if bar and system and identifier.get("system") != system:
            continue
        if bar and not system and identifier.get("system"):
            continue
        if value and identifier.get("value") != value:
            continue
        return True
    return False


def patient_record_id(resource_id: str) -> str:
    """The patient record id a Patient resource id names.

    Raises:
        Invalid: ``bad_search_parameter``: not a Patient id this server makes.
    """
    try:
        return fhir_interop.source_record_id(resource_id, "Patient")
    except fhir_interop.FhirError:
        raise _bad(f"{resource_id[:80]!r} is not a Patient id of this server") from None


def _patient_ref(value: str) -> str:
    kind, slash, ident = value.rpartition("/")
    if slash and kind.rsplit("/", 1)[-1] != "Patient":
        raise _bad(f"patient {value[:80]!r} is not Patient/<id> or <id>")
    if not ident:
        raise _bad("patient: an empty reference")
    return patient_record_id(ident)


def _number(name: str, value: str, low: int, high: int) -> int:
    if not value.isdigit() or not low <= int(value) <= high:
        raise _bad(f"{name} must be a whole number from {low} to {high}")
    return int(value)


def parse_search(resource_type: str, params: Sequence[tuple[str, str]]) -> Search:
    """A search of `resource_type` from its query parameters.

    Raises:
        NotFound: ``unknown_resource_type``: a type the endpoint does not serve.
        Invalid: ``bad_search_parameter``: an unknown parameter (or one with a
            modifier), or a malformed value.
    """
    if resource_type not in RESOURCE_TYPES:
        raise NotFound(
            f"this server does not serve {resource_type[:60]!r} resources",
            code="unknown_resource_type",
        )
    allowed = SEARCH_PARAMS[resource_type]
    ids: list[tuple[str, ...]] = []
    identifiers: list[tuple[str, ...]] = []
    patients: list[tuple[str, ...]] = []
    dates: list[DateBound] = []
    count, offset = DEFAULT_COUNT, 0
    kept: list[tuple[str, str]] = []
    for name, value in params:
        if name == "_format":
            if value not in _FORMATS:
                raise _bad("_format: this server answers in JSON only")
            continue
        if name not in allowed and name not in _PAGING:
            raise _bad(
                f"{resource_type} cannot be searched by {name[:60]!r}: use "
                + ", ".join(allowed + _PAGING)
            )
        if name == "_count":
            count = _number(name, value, 1, MAX_COUNT)
            continue
        if name == "_offset":
            offset = _number(name, value, 0, 2**31)
            continue
        kept.append((name, value))
        if name == "date":
            dates.append(_date_bound(value))
            continue
        alternatives = tuple(v for v in value.split(","))
        if not all(alternatives):
            raise _bad(f"{name}: an empty value")
        if name == "_id":
            ids.append(alternatives)
        elif name == "identifier":
            identifiers.append(alternatives)
        else:
            patients.append(tuple(_patient_ref(v) for v in alternatives))
    if resource_type == "Patient":
        patients.extend(tuple(patient_record_id(v) for v in alternatives) for alternatives in ids)
    return Search(
        resource_type,
        ids=tuple(ids),
        identifiers=tuple(identifiers),
        patients=tuple(patients),
        dates=tuple(dates),
        count=count,
        offset=offset,
        params=tuple(kept),
    )


@dataclass(frozen=True, slots=True)
class Found:
    """What a read, search or ``$everything`` returned: the resources (a page of a
    search), how many matched in all, and the patients they belong to."""

    resources: list[dict[str, Any]]
    total: int
    patient_ids: tuple[str, ...]
    clinic_id: str | None = None
    purpose: str | None = None
    offset: int = 0
    more: bool = False
    resource_ids: tuple[str, ...] = field(default=())


def _resources(records: PatientRecords, base_url: str | None) -> list[dict[str, Any]]:
    """The patient's resources; none (logged) for a patient whose records the mapping
    refuses (a record id FHIR cannot carry): one such record must not fail a search."""
    try:
        return fhir_interop.patient_resources(records, base_url=base_url)
    except fhir_interop.FhirError as exc:
        log.warning("patient %s left out of the FHIR view: %s", records.patient.id, exc)
        return []


def _visible_patient(
    session: Session, principal: Principal, patient_id: str
) -> tuple[PatientRow, str] | None:
    """The live patient and the purpose it is read for, if the caller may read it."""
    opened = open_record(
        session=session, principal=principal, table=PatientRow, record_id=patient_id
    )
    if opened.row is None or opened.row.deleted:
        if opened.grant_expired:
            raise Forbidden(
                "your break-glass access to this patient has expired",
                code="break_glass_expired",
            )
        return None
    return opened.row, opened.purpose


def _clinics(session: Session, principal: Principal) -> list[str]:
    if principal.clinic_id is not None:
        return [visible_clinic(session=session, principal=principal,
                               clinic_id=principal.clinic_id).id]  # fmt: skip
    return list(session.scalars(clinic_ids_in_scope(principal)))


def _candidates(session: Session, principal: Principal, query: Search) -> list[PatientRow]:
    """The live patients in the caller's clinics a search may concern (narrowed by its
    patient and Patient identifier criteria, as far as the database can)."""
    rows = select(PatientRow).where(
        PatientRow.clinic_id.in_(_clinics(session, principal)), PatientRow.deleted == false()
    )
    for alternatives in query.patients:
        rows = rows.where(PatientRow.id.in_(alternatives))
    if query.resource_type != "Patient":
        for alternatives in query.ids:  # only the patients the ids were made from
            rows = rows.where(PatientRow.id.in_(_id_owners(session, query.resource_type,
                                                           alternatives)))  # fmt: skip
    if query.resource_type == "Patient":
        for alternatives in query.identifiers:
            values = [token.rpartition("|")[2] for token in alternatives]
            if all(values):
                rows = rows.where(or_(PatientRow.mrn.in_(values), PatientRow.id.in_(values)))
    return list(session.scalars(rows.order_by(PatientRow.clinic_id, PatientRow.id)))


def search(
    *, session: Session, principal: Principal, query: Search, base_url: str | None = None
) -> Found:
    """The resources of `query`'s type the caller may see that meet it, one page.

    A patient outside the caller's scope is not searched (no resource of theirs is
    found), unless named by ``patient`` or ``_id`` under a live break-glass grant.
    """
    by_clinic: dict[str, list[str]] = {}
    purpose: str | None = None
    for row in _candidates(session, principal, query):
        by_clinic.setdefault(row.clinic_id, []).append(row.id)
    if principal.kind == "user":  # break-glass: a named patient of another clinic
        for alternatives in query.patients:
            for patient_id in alternatives:
                visible = _visible_patient(session, principal, patient_id)
                if visible is not None and patient_id not in by_clinic.get(
                    visible[0].clinic_id, []
                ):
                    by_clinic.setdefault(visible[0].clinic_id, []).append(patient_id)
                    purpose = visible[1]
    matched: list[tuple[dict[str, Any], str]] = []
    whole_clinic = (
        not query.patients
        and not query.ids
        and not (query.resource_type == "Patient" and query.identifiers)
    )
    for clinic_id, patient_ids in by_clinic.items():
        gathered = gather_patients(
            session=session,
            clinic_id=clinic_id,
            patient_ids=None if whole_clinic else patient_ids,
        )
        for records in gathered:
            patient_id = records.patient.id
            for resource in _resources(records, base_url):
                if resource.get("resourceType") == query.resource_type and query.matches(
                    resource, patient_id
                ):
                    matched.append((resource, patient_id))
    page = matched[query.offset : query.offset + query.count]
    return Found(
        resources=[r for r, _ in page],
        total=len(matched),
        patient_ids=tuple(dict.fromkeys(p for _, p in page)),
        clinic_id=next(iter(by_clinic)) if len(by_clinic) == 1 else principal.clinic_id,
        purpose=purpose,
        offset=query.offset,
        more=query.offset + query.count < len(matched),
        resource_ids=tuple(str(r.get("id")) for r, _ in page),
    )


def _owners(session: Session, record_id: str) -> list[str]:
    """The patients a record id belongs to (a patient is its own)."""
    if session.get(PatientRow, record_id) is not None:
        return [record_id]
    wound = session.get(WoundRow, record_id)
    if wound is not None:
        return [wound.patient_id]
    assessment = session.get(AssessmentRow, record_id)
    if assessment is not None:
        return [assessment.patient_id]
    document = session.get(Document, record_id)
    if document is not None:
        return [document.patient_id] if document.patient_id else []
    booking = session.get(Booking, record_id)
    if booking is not None:
        return [booking.patient_id]
    if record_id.isdigit() and len(record_id) < 19:
        return list(
            session.scalars(
                select(AuditPatient.patient_id)
                .join(AuditEvent, AuditEvent.id == AuditPatient.event_id)
                .where(AuditEvent.seq == int(record_id))
                .order_by(AuditPatient.patient_id)
            )
        )
    return []


def _id_owners(session: Session, resource_type: str, resource_ids: Sequence[str]) -> list[str]:
    """The patients the resources `resource_ids` of `resource_type` would belong to."""
    owners: list[str] = []
    for resource_id in resource_ids:
        try:
            owners += _owners(session, fhir_interop.source_record_id(resource_id, resource_type))
        except fhir_interop.FhirError:
            continue  # not an id this server makes: it matches nothing
    return owners


def read_resource(
    *,
    session: Session,
    principal: Principal,
    resource_type: str,
    resource_id: str,
    base_url: str | None = None,
) -> Found:
    """The resource `resource_type`/`resource_id`, if the caller may see it.

    Raises:
        NotFound: ``unknown_resource_type``; ``not_found``: no such resource, or one of
            a patient outside the caller's scope (its existence is not revealed).
        Forbidden: ``break_glass_expired``: the caller's break-glass grant for its
            patient has expired.
    """
    parse_search(resource_type, ())
    try:
        record_id = fhir_interop.source_record_id(resource_id, resource_type)
    except fhir_interop.FhirError:
        raise NotFound(f"no {resource_type} {resource_id[:80]!r}", code="not_found") from None
    for patient_id in _owners(session, record_id):
        visible = _visible_patient(session, principal, patient_id)
        if visible is None:
            continue
        row, purpose = visible
        for records in gather_patients(
            session=session, clinic_id=row.clinic_id, patient_ids=[patient_id]
        ):
            for resource in _resources(records, base_url):
                if (resource.get("resourceType"), resource.get("id")) == (
                    resource_type,
                    resource_id,
                ):
                    return Found(
                        [resource], 1, (patient_id,), row.clinic_id, purpose,
                        resource_ids=(resource_id,),
                    )  # fmt: skip
    raise NotFound(f"no {resource_type} {resource_id[:80]!r}", code="not_found")


def everything(
    *, session: Session, principal: Principal, patient_id: str, base_url: str | None = None
) -> Found:
    """Every resource of the patient ``Patient/$everything`` answers.

    Raises:
        NotFound: ``not_found``: no such live patient, or one outside the caller's scope.
        Forbidden: ``break_glass_expired``.
    """
    try:
        record_id = fhir_interop.source_record_id(patient_id, "Patient")
    except fhir_interop.FhirError:
        record_id = None
    visible = None if record_id is None else _visible_patient(session, principal, record_id)
    if visible is None:
        raise NotFound(f"no Patient {patient_id[:80]!r}", code="not_found")
    row, purpose = visible
    patient_id = row.id
    resources = [
        resource
        for records in gather_patients(
            session=session, clinic_id=row.clinic_id, patient_ids=[patient_id]
        )
        for resource in _resources(records, base_url)
    ]
    return Found(
        resources,
        len(resources),
        (patient_id,),
        row.clinic_id,
        purpose,
        resource_ids=tuple(str(r.get("id")) for r in resources),
    )


def searchset(
    found: Found, *, base_url: str, self_link: str, next_link: str | None
) -> dict[str, Any]:
    """`found` as a searchset Bundle, with its ``self`` and ``next`` links."""
    bundle = fhir_interop.bundle(found.resources, "searchset", base_url=base_url, total=found.total)
    links = [{"relation": "self", "url": self_link}]
    if next_link is not None:
        links.append({"relation": "next", "url": next_link})
    return {**bundle, "link": links}


def page_link(base: str, resource_type: str, query: Search, offset: int) -> str:
    """The URL of the page of `query` starting at `offset`."""
    params = [*query.params, ("_count", str(query.count)), ("_offset", str(offset))]
    return f"{base}/{resource_type}?{urlencode(params)}"


def capability_statement(*, base_url: str, software_version: str) -> dict[str, Any]:
    """The endpoint's CapabilityStatement (``GET /fhir/R4/metadata``)."""
    documentation = {
        "_id": "The resource's id.",
        "identifier": "An identifier: system|value, |value, system| or value.",
        "patient": "The patient: Patient/<id> or <id>.",
        "date": "The resource's main date, with prefix eq, ne, gt, lt, ge or le.",
    }
    types = {
        "_id": "token",
        "identifier": "token",
        "patient": "reference",
        "date": "date",
    }
    resources: list[dict[str, Any]] = []
    for kind in RESOURCE_TYPES:
        entry: dict[str, Any] = {
            "type": kind,
            "interaction": [{"code": "read"}, {"code": "search-type"}],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": False,
            "searchParam": [
                {"name": name, "type": types[name], "documentation": documentation[name]}
                for name in SEARCH_PARAMS[kind]
            ],
        }
        if kind == "Patient":
            entry["operation"] = [
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                }
            ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).date().isoformat(),
        "kind": "instance",
        "software": {"name": "Coherency sync server", "version": software_version},
        "implementation": {
            "description": "Coherency's read-only FHIR R4 endpoint",
            "url": base_url,
        },
        "fhirVersion": fhir_interop.FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "documentation": "Read-only. Staff bearer tokens (POST /v1/auth/login); a "
                "clinic's staff see their clinic's patients.",
                "security": {
                    "cors": False,
                    "description": "Bearer access token of a staff session.",
                },
                "resource": resources,
            }
        ],
    }
