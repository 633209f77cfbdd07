"""What staff do with deliveries: list those that need a look, retry a dead one.

Scoped like the other staff services: the caller's organisation, and its clinic for a
clinic-bound account; a delivery outside answers NotFound like a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.orm import Session

from sync_server.audit.events import Actor, Event, Operation
from sync_server.audit.services import record_event
from sync_server.bookings.directory import require_writer
from sync_server.db import rowcount
from sync_server.errors import Conflict, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.notifications.tables import NotificationDelivery

__all__ = [
    "DeliveryRetried",
    "delivery_in_scope",
    "list_deliveries",
    "patient_of",
    "retry_delivery",
]

Shown = Literal["failing", "dead", "pending", "sending", "sent", "all"]
"""``failing``: dead ones and pending ones that failed at least once (the default)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryRetried(Event):
    """Staff sent a dead notification delivery back to the queue."""

    name: ClassVar[str] = "notification-retry"
    operation: ClassVar[Operation] = "U"
    delivery_id: str

    def target(self) -> str | None:
        return self.delivery_id


def patient_of(delivery: NotificationDelivery) -> str | None:
    """The patient a delivery is addressed to (``patient:<id>``), or None."""
    prefix, _, rest = delivery.recipient.partition(":")
    return rest if prefix == "patient" and rest else None


def _scoped(principal: Principal) -> ColumnElement[bool]:
    clinics = select(Clinic.id).where(Clinic.organisation_id == principal.organisation_id)
    if principal.clinic_id is not None:
        clinics = clinics.where(Clinic.id == principal.clinic_id)
    return NotificationDelivery.clinic_id.in_(clinics)


def list_deliveries(
    *,
    session: Session,
    principal: Principal,
    shown: Shown = "failing",
    clinic_id: str | None = None,
    limit: int = 100,
) -> list[NotificationDelivery]:
    """Deliveries in the caller's scope, newest first: by default the dead ones and
    those waiting for a retry.

    Raises:
        Forbidden: ``forbidden``: the caller is not staff or an admin.
    """
    require_writer(principal)
    query = select(NotificationDelivery).where(_scoped(principal))
    if clinic_id is not None:
        query = query.where(NotificationDelivery.clinic_id == clinic_id)
    if shown == "failing":
        query = query.where(
            (NotificationDelivery.state == "dead")
            | and_(NotificationDelivery.state == "pending", NotificationDelivery.attempts > 0)
        )
    elif shown != "all":
        query = query.where(NotificationDelivery.state == shown)
    query = query.order_by(NotificationDelivery.created_at.desc(), NotificationDelivery.id)
    return list(session.scalars(query.limit(limit)))


def delivery_in_scope(
    *, session: Session, principal: Principal, delivery_id: str
) -> NotificationDelivery:
    """One delivery the caller may see.

    Raises:
        Forbidden: ``forbidden``: the caller is not staff or an admin.
        NotFound: no such delivery in the caller's scope.
    """
    require_writer(principal)
    delivery: NotificationDelivery | None = session.scalar(
        select(NotificationDelivery).where(
            NotificationDelivery.id == delivery_id,
            _scoped(principal),
        )
    )
    if delivery is None:
        raise NotFound("no such delivery", code="not_found")
    return delivery


def retry_delivery(
    *, session: Session, principal: Principal, delivery_id: str, now: datetime
) -> NotificationDelivery:
    """Send a dead delivery again: pending, due `now`, its attempts counted afresh
    (its last error is kept until it is sent); a digest member brings its whole group
    back. Audited.

    Raises:
        Forbidden: ``forbidden``: the caller is not staff or an admin.
        NotFound: no such delivery in the caller's scope.
        Conflict: ``delivery_not_dead``: it is pending, being sent, or sent.
    """
    delivery = delivery_in_scope(session=session, principal=principal, delivery_id=delivery_id)
    # A digest's members are sent, retried and counted together: a retry brings every
    # dead member of the group back with its attempts afresh (the digest counts the
    # most attempts of any member).
    together = (
        NotificationDelivery.id == delivery.id
        if delivery.digest_id is None
        else NotificationDelivery.digest_id == delivery.digest_id
    )
    done = session.execute(
        update(NotificationDelivery)
        .where(together, NotificationDelivery.state == "dead")
        .values(
            state="pending", attempts=0, next_attempt_at=now, lease_owner=None, lease_until=None
        )
        .execution_options(synchronize_session=False)
    )
    if rowcount(done) < 1:
        raise Conflict(
            f"the delivery is {delivery.state}: only a dead one is retried",
            code="delivery_not_dead",
        )
    patient = patient_of(delivery)
    record_event(
        session=session,
        event=DeliveryRetried(
            actor=Actor.of(principal),
            clinic_id=delivery.clinic_id,
            patient_ids=(patient,) if patient else (),
            delivery_id=delivery.id,
        ),
    )
    session.refresh(delivery)
    return delivery
