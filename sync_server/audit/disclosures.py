"""Reading the audit log: a patient's accounting of disclosures, and staff search.

`disclosures` lists, for one patient, every event of the server's log that concerned
them (`audit_patients`), and every event of the devices' chains the server holds that
names them (`device_audit_patients`: what devices did offline, as they pushed it):
when, who (kind, id, role), from where (device id, network address), what (event kind,
operation, records), why (purpose of use) and how it ended; `disclosures_csv` writes
the same as CSV. `search_events` pages through the events of the caller's clinics by
patient, user, device and time, newest first.

Both are for back-office readers (`require_audit_reader`: staff and admins; an admin
bound to no clinic reads every clinic of the organisation, anyone else their own
clinic). The routes audit every read of the audit itself (`AuditSearched`).
"""

from __future__ import annotations

import csv
import heapq
import io
import json
from collections.abc import Sequence
from dataclasses import astuple, dataclass, fields
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import Select, and_, select
from sqlalchemy.orm import Session

from sync_server.audit.events import OPERATIONS, Actor, AuditSearched
from sync_server.audit.services import record_event
from sync_server.audit.tables import (
    AuditEvent,
    AuditPatient,
    DeviceAuditEvent,
    DeviceAuditPatient,
)
from sync_server.errors import Forbidden, Invalid, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tenancy import clinic_ids_in_scope
from sync_server.sync.records import find_visible, requested_id
from sync_server.sync.tables import PatientRow

__all__ = [
    "AUDIT_READER_ROLES",
    "CSV_COLUMNS",
    "AuditEntry",
    "EventPage",
    "disclosures",
    "disclosures_csv",
    "record_audit_read",
    "require_audit_reader",
    "search_events",
]

AUDIT_READER_ROLES = frozenset({"staff", "admin"})
"""Who may read the audit log: the back office (clinicians read records, not the log)."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One event of the log as readers see it (ids only)."""

    seq: int
    at: datetime
    actor_kind: str  # device, user, system, feed
    actor_id: str | None
    role: str | None
    device_id: str | None  # the device it came from, for a device's event
    address: str | None  # the caller's network address
    clinic_id: str | None
    kind: str  # the event kind (`Event.name`)
    operation: str  # C R U D E
    records: str | None  # what it touched: record ids, a blob address
    purpose: str | None  # treatment, operations, break-glass
    outcome: str
    patients: str | None  # the patients it concerned, comma-separated
    source: str = "server"  # server: the server's log; device: a device's own chain


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of a search, newest first; `next_cursor` fetches the next (None: the
    last page)."""

    items: list[AuditEntry]
    next_cursor: int | None


def require_audit_reader(principal: Principal) -> None:
    """Refuse anyone but staff and admins.

    Raises:
        Forbidden: ``audit_readers_only``.
    """
    if principal.kind != "user" or principal.role not in AUDIT_READER_ROLES:
        raise Forbidden("the audit log is read by staff and admins", code="audit_readers_only")


def record_audit_read(
    *,
    session: Session,
    principal: Principal,
    scope: Literal["disclosures", "events", "break-glass"],
    clinic_id: str | None,
    filters: dict[str, str | None],
    rows: int,
) -> None:
    """Audit a read of the audit log (`AuditSearched`): what was asked for (the ids
    filtered by) and how many rows it answered."""
    record_event(
        session=session,
        event=AuditSearched(
            actor=Actor.of(principal),
            clinic_id=clinic_id,
            purpose=OPERATIONS,
            scope=scope,
            filters=tuple(
                (name, value)
                for name, value in filters.items()
                if value and requested_id(value)  # ids only: never free text
            ),
            rows=rows,
        ),
    )


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise Invalid(f"{name} must say its UTC offset", code="bad_time")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise Invalid(f"{name} is out of range", code="bad_time") from None


def _entry(row: AuditEvent) -> AuditEntry:
    return AuditEntry(
        seq=row.seq if row.seq is not None else -1,
        at=row.at,
        actor_kind=row.actor_kind,
        actor_id=row.actor_id,
        role=row.role,
        device_id=row.actor_id if row.actor_kind == "device" else None,
        address=row.address,
        clinic_id=row.clinic_id,
        kind=row.action,
        operation=row.operation,
        records=row.target,
        purpose=row.purpose,
        outcome=row.outcome,
        patients=row.patients,
    )


def _device_entry(row: DeviceAuditEvent) -> AuditEntry:
    """A device's event from its canonical bytes (`edge_sdk`'s chain fields)."""
    try:
        fields = json.loads(row.canonical)
    except ValueError:
        fields = {}
    if not isinstance(fields, dict):
        fields = {}

    def text(name: str) -> str | None:
        value = fields.get(name)
        return value if isinstance(value, str) else None

    try:
        at = datetime.fromisoformat(text("at") or "").astimezone(UTC)
    except ValueError:
        at = row.received_at
    user = text("user")
    records = fields.get("records")
    patients = fields.get("patients")
    return AuditEntry(
        seq=row.seq,
        at=at,
        actor_kind="user" if user else "device",
        actor_id=user or row.device_id,
        role=None,
        device_id=row.device_id,
        address=None,
        clinic_id=row.clinic_id,
        kind=text("action") or "unknown",
        operation=text("operation") or "E",
        records=json.dumps({text("collection") or "": records})
        if isinstance(records, list)
        else None,
        purpose=text("purpose"),
        outcome=text("outcome") or "",
        patients=",".join(p for p in patients if isinstance(p, str))
        if isinstance(patients, list)
        else None,
        source="device",
    )


def _device_disclosures(
    session: Session,
    patient_id: str,
    since: datetime | None,
    until: datetime | None,
    limit: int,
) -> list[AuditEntry]:
    rows = session.scalars(
        select(DeviceAuditEvent)
        .join(
            DeviceAuditPatient,
            and_(
                DeviceAuditPatient.device_id == DeviceAuditEvent.device_id,
                DeviceAuditPatient.seq == DeviceAuditEvent.seq,
            ),
        )
        .where(DeviceAuditPatient.patient_id == patient_id)
        .order_by(DeviceAuditEvent.received_at, DeviceAuditEvent.device_id, DeviceAuditEvent.seq)
    )
    entries = [_device_entry(row) for row in rows]
    start, end = _utc(since, "since"), _utc(until, "until")
    kept = [e for e in entries if (start is None or e.at >= start) and (end is None or e.at < end)]
    return sorted(kept, key=lambda e: e.at)[:limit]


def _between(
    query: Select[AuditEvent], since: datetime | None, until: datetime | None
) -> Select[AuditEvent]:
    start, end = _utc(since, "since"), _utc(until, "until")
    if start is not None:
        query = query.where(AuditEvent.at >= start)
    if end is not None:
        query = query.where(AuditEvent.at < end)
    return query


def disclosures(
    *,
    session: Session,
    principal: Principal,
    patient_id: str,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 10_000,
) -> tuple[PatientRow, list[AuditEntry]]:
    """The patient (for its clinic) and every event that concerned them, of the
    server's log and of the devices' chains (`AuditEntry.source`), oldest first, from
    `since` (inclusive) to `until` (exclusive), at most `limit`.

    Raises:
        Forbidden: ``audit_readers_only``.
        NotFound: No such patient in the caller's clinics.
        Invalid: ``bad_time``: a time without a UTC offset, or out of range.
    """
    require_audit_reader(principal)
    patient = find_visible(
        session=session, principal=principal, table=PatientRow, record_id=patient_id
    )
    if patient is None:
        raise NotFound("no such patient", code="not_found")
    query = (
        select(AuditEvent)
        .join(AuditPatient, AuditPatient.event_id == AuditEvent.id)
        .where(AuditPatient.patient_id == patient.id, AuditEvent.seq.is_not(None))
    )
    query = _between(query, since, until).order_by(AuditEvent.seq).limit(limit)
    server = [_entry(row) for row in session.scalars(query)]
    devices = _device_disclosures(session, patient.id, since, until, limit)
    merged = heapq.merge(server, devices, key=lambda e: e.at)
    return patient, list(merged)[:limit]


def search_events(
    *,
    session: Session,
    principal: Principal,
    patient_id: str | None = None,
    user_id: str | None = None,
    device_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    cursor: int | None = None,
) -> EventPage:
    """The events of the caller's clinics (every clinic of the organisation for an
    admin bound to none) matching every filter given, newest first, `limit` at a time;
    `cursor` is the previous page's `EventPage.next_cursor`. Events of no clinic
    (organisation-wide account changes) are not searched.

    Raises:
        Forbidden: ``audit_readers_only``.
        Invalid: ``bad_time``: a time without a UTC offset, or out of range.
    """
    require_audit_reader(principal)
    query = select(AuditEvent).where(
        AuditEvent.clinic_id.in_(clinic_ids_in_scope(principal)), AuditEvent.seq.is_not(None)
    )
    if patient_id is not None:
        query = query.where(
            AuditEvent.id.in_(
                select(AuditPatient.event_id).where(AuditPatient.patient_id == patient_id)
            )
        )
    if user_id is not None:
        query = query.where(AuditEvent.actor_kind == "user", AuditEvent.actor_id == user_id)
    if device_id is not None:
        query = query.where(AuditEvent.actor_kind == "device", AuditEvent.actor_id == device_id)
    if cursor is not None:
        query = query.where(AuditEvent.seq < cursor)
    query = _between(query, since, until).order_by(AuditEvent.seq.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    items = [_entry(row) for row in rows[:limit]]
    more = len(rows) > limit
    return EventPage(items, items[-1].seq if more and items else None)


CSV_COLUMNS = tuple(f.name for f in fields(AuditEntry))
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    text = str(value)
    # A spreadsheet would run a cell that starts like a formula: quote it.
    return "'" + text if text.startswith(_FORMULA_START) else text


def disclosures_csv(entries: Sequence[AuditEntry]) -> str:
    """`entries` as CSV (RFC 4180, a header row first; times in UTC, ISO 8601)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow([_cell(value) for value in astuple(entry)])
    return out.getvalue()
