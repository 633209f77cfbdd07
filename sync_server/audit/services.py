"""Writing the audit log: `record_event` adds one typed event to a session."""

from __future__ import annotations

from sqlalchemy.orm import Session

from sync_server.audit.events import Event
from sync_server.audit.tables import AuditEvent
from sync_server.db import utcnow

__all__ = ["record_event"]


def record_event(*, session: Session, event: Event, request_id: str | None = None) -> None:
    """Add `event` to the audit log in `session`'s transaction (written at its commit).

    Args:
        session: The transaction the event belongs to.
        event: What happened.
        request_id: The HTTP request it happened in, if any (for tracing).
    """
    session.add(
        AuditEvent(
            at=utcnow(),
            actor_kind=event.actor.kind,
            actor_id=event.actor.id,
            clinic_id=event.clinic_id,
            action=event.name,
            target=event.target(),
            outcome=event.outcome(),
            request_id=request_id,
        )
    )
