"""Routes: notification deliveries as staff handle them.

Staff and admins only (403 ``forbidden`` for a clinician, ``staff_only`` for a
device), scoped to the caller's organisation (and clinic, for a clinic-bound
account). Listing is an audited read; a retry is an audited change. A recipient's
preferences (channels, quiet hours, digest) are read (audited) and set (audited) here
too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sync_server.audit.services import record_read
from sync_server.db import utcnow
from sync_server.deps import DbDep, StaffCaller
from sync_server.notifications.preferences import Wanted, get_preferences, set_preferences
from sync_server.notifications.schemas import DeliveryPublic, PreferencesIn, PreferencesPublic
from sync_server.notifications.services import (
    Shown,
    list_deliveries,
    patient_of,
    retry_delivery,
)
from sync_server.notifications.tables import NotificationPreference

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


def _public(pref: NotificationPreference, *, stored: bool) -> PreferencesPublic:
    def hhmm(minute: int | None) -> str | None:
        return None if minute is None else f"{minute // 60:02d}:{minute % 60:02d}"

    return PreferencesPublic(
        clinic_id=pref.clinic_id,
        recipient=pref.recipient,
        email=pref.email,
        sms=pref.sms,
        push=pref.push,
        time_zone=pref.time_zone,
        quiet_start=hhmm(pref.quiet_start),
        quiet_end=hhmm(pref.quiet_end),
        digest=pref.digest,
        digest_at=hhmm(pref.digest_minute),
        stored=stored,
    )


@router.get(
    "/preferences",
    response_model=PreferencesPublic,
    summary="Read a recipient's notification preferences",
)
def get_notification_preferences(
    caller: StaffCaller,
    db: DbDep,
    clinic_id: Annotated[str, Query(min_length=1, max_length=64)],
    recipient: Annotated[str, Query(min_length=1, max_length=200)],
) -> PreferencesPublic:
    """How `recipient` (``patient:<id>``, ``staff:<clinic id>`` or an email address)
    is told at `clinic_id`: the stored preferences, or the defaults (``stored``
    false). An audited read."""
    with db.read() as session:
        pref = get_preferences(
            session=session, principal=caller, clinic_id=clinic_id, recipient=recipient
        )
        public = _public(pref, stored=pref in session)
    patient = recipient.partition(":")[2] if recipient.startswith("patient:") else None
    with db.write() as session:
        record_read(
            session=session,
            caller=caller,
            collection="notification_preferences",
            records=[(f"{clinic_id}/{recipient}", patient or None)],
            clinic_id=clinic_id,
        )
    return public


@router.put(
    "/preferences",
    response_model=PreferencesPublic,
    summary="Set a recipient's notification preferences",
)
def put_notification_preferences(
    body: PreferencesIn, caller: StaffCaller, db: DbDep
) -> PreferencesPublic:
    """Set which of email, SMS and push tell `recipient` (in-app always does), its
    quiet hours and digest; for deliveries made from now on. Audited."""
    with db.write() as session:
        pref = set_preferences(
            session=session,
            principal=caller,
            clinic_id=body.clinic_id,
            recipient=body.recipient,
            wanted=Wanted(
                email=body.email,
                sms=body.sms,
                push=body.push,
                time_zone=body.time_zone,
                quiet_start=body.quiet_start,
                quiet_end=body.quiet_end,
                digest=body.digest,
                digest_at=body.digest_at,
            ),
        )
        return _public(pref, stored=True)
