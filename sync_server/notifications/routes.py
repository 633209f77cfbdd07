"""Routes: notification deliveries as staff handle them.

Staff and admins only (403 ``forbidden`` for a clinician, ``staff_only`` for a
device), scoped to the caller's organisation (and clinic, for a clinic-bound
account). Listing is an audited read; a retry is an audited change.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sync_server.audit.services import record_read
from sync_server.db import utcnow
from sync_server.deps import DbDep, StaffCaller
from sync_server.notifications.schemas import DeliveryPublic
from sync_server.notifications.services import (
    Shown,
    list_deliveries,
    patient_of,
    retry_delivery,
)

__all__ = ["router"]

router = APIRouter(prefix="/v1/notifications", tags=["notifications"])


@router.get(
    "/deliveries", response_model=list[DeliveryPublic], summary="List notification deliveries"
)
def get_deliveries(
    caller: StaffCaller,
    db: DbDep,
    state: Shown = "failing",
    clinic_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryPublic]:
    """Deliveries in the caller's scope, newest first; by default (``failing``) the
    dead ones and those waiting for a retry, with their last error."""
    with db.read() as session:
        found = list_deliveries(
            session=session, principal=caller, shown=state, clinic_id=clinic_id, limit=limit
        )
        deliveries = [DeliveryPublic.model_validate(d) for d in found]
        records = [(d.id, patient_of(d)) for d in found]
    with db.write() as session:
        record_read(
            session=session,
            caller=caller,
            collection="notification_deliveries",
            records=records,
            clinic_id=clinic_id,
        )
    return deliveries


@router.post(
    "/deliveries/{delivery_id}/retry",
    response_model=DeliveryPublic,
    summary="Retry a dead delivery",
    responses={409: {"description": "`delivery_not_dead`: only a dead delivery is retried."}},
)
def post_delivery_retry(delivery_id: str, caller: StaffCaller, db: DbDep) -> DeliveryPublic:
    """Send a dead delivery again (due now, attempts counted afresh, same idempotency
    key: a provider that took an earlier attempt keeps one message)."""
    with db.write() as session:
        delivery = retry_delivery(
            session=session, principal=caller, delivery_id=delivery_id, now=utcnow()
        )
        return DeliveryPublic.model_validate(delivery)
