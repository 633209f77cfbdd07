"""Writing the audit log: `record_event` adds one typed event to a session.

The event is part of the caller's transaction: it is written, and takes its place in
the Merkle log (`sync_server.audit.log.seal`), when that transaction commits, and it is
gone if it rolls back. A route that reads patient data commits its event before it
answers, so an access whose audit row cannot be written fails instead of answering.
"""

from __future__ import annotations

from collections.abc import Iterable
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, insert
from sqlalchemy import event as orm_events
from sqlalchemy.orm import Mapper, Session

from sync_server.audit.events import Actor, Caller, Event, RecordsRead, purpose_of
from sync_server.audit.log import track
from sync_server.audit.tables import AuditEvent, AuditPatient
from sync_server.db import utcnow
from sync_server.ops.logs import current_client_address, current_request_id

__all__ = ["record_event", "record_read"]

# The patients of each event, for its `audit_patients` rows (gone with the event object).
_PATIENTS: WeakKeyDictionary[AuditEvent, tuple[str, ...]] = WeakKeyDictionary()


def record_event(*, session: Session, event: Event, request_id: str | None = None) -> None:
    """Add `event` to the audit log in `session`'s transaction (written at its commit).

    Args:
        session: The transaction the event belongs to.
        event: What happened.
        request_id: The HTTP request it happened in (default: the request being
            handled, if any; the caller's address is taken from it too).
    """
    patients = tuple(dict.fromkeys(event.patient_ids))
    row = AuditEvent(
        at=utcnow(),
        actor_kind=event.actor.kind,
        actor_id=event.actor.id,
        role=event.actor.role,
        clinic_id=event.clinic_id,
        action=event.name,
        operation=event.operation,
        target=event.target(),
        outcome=event.outcome(),
        purpose=event.purpose,
        patients=",".join(patients) or None,
        address=current_client_address(),
        request_id=request_id or current_request_id(),
    )
    if patients:
        _PATIENTS[row] = patients
    session.add(row)
    track(session=session, event=row)


@orm_events.listens_for(AuditEvent, "after_insert")
def _insert_patients(_mapper: Mapper[AuditEvent], connection: Connection, row: AuditEvent) -> None:
    """The event's `audit_patients` rows, in one statement after its own insert.

    Not an ORM relationship: a pull's event names thousands of patients, and the unit
    of work spent ~0.1 ms of Python on each of their rows (half a second for one pull
    page) where the driver's executemany spends a few microseconds."""
    # Read, not popped: an insert rolled back with a savepoint and made again writes
    # them again.
    patients = _PATIENTS.get(row, ())
    if patients:
        connection.execute(
            insert(AuditPatient), [{"event_id": row.id, "patient_id": p} for p in patients]
        )


def record_read(
    *,
    session: Session,
    caller: Caller,
    collection: str,
    records: Iterable[tuple[str, str | None]],
    clinic_id: str | None = None,
) -> None:
    """Record that `caller` read these records of `collection`, each given as (record
    id, its patient's id or None), with the caller's purpose of use.

    Call it in the transaction that commits before the answer is sent (a route that
    reads in a read-only session records in a write session of its own, first).
    """
    found = list(records)
    record_event(
        session=session,
        event=RecordsRead(
            actor=Actor.of(caller),
            clinic_id=clinic_id or caller.clinic_id,
            patient_ids=tuple(patient for _, patient in found if patient),
            purpose=purpose_of(caller),
            collection=collection,
            record_ids=tuple(record for record, _ in found),
        ),
    )
