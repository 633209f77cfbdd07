"""Break-glass: a clinician's emergency access to a patient of another clinic.

A clinician (or staff user) bound to one clinic normally sees only that clinic's
patients. In an emergency they may open a patient of another clinic of their
organisation by giving a reason (`grant_break_glass`): the grant lasts
`Settings.break_glass_minutes`, the staff read routes allow that patient's records to
them meanwhile (`active_grant`) and audit each read with purpose ``break-glass``, and
admins review every grant afterwards (`grants`, `review_grant`). The reason and the
review note are free text: they are kept in the grant, never in the audit log, which
holds ids only.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.audit.events import (
    BREAK_GLASS,
    OPERATIONS,
    Actor,
    BreakGlassGranted,
    BreakGlassReviewed,
)
from sync_server.audit.services import record_event
from sync_server.audit.tables import BreakGlassGrant
from sync_server.db import new_id, utcnow
from sync_server.errors import Conflict, Forbidden, NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.notifications.events import NoticeKind, notify, staff_recipients
from sync_server.sync.tables import PatientRow

__all__ = ["active_grant", "grant_break_glass", "grants", "last_grant", "review_grant"]


def grant_break_glass(
    *,
    session: Session,
    principal: Principal,
    patient_id: str,
    reason: str,
    minutes: float,
    now: datetime | None = None,
) -> BreakGlassGrant:
    """Grant `principal` access to the patient `patient_id` of another clinic for
    `minutes`, for `reason` (audited as a `BreakGlassGranted` event, without it).

    Raises:
        Forbidden: ``break_glass_not_allowed``: the caller is not a clinic-bound staff
            user (devices and organisation-wide admins never need it).
        NotFound: No such patient in the caller's organisation.
        Conflict: ``break_glass_not_needed``: the patient is of the caller's own clinic.
    """
    if principal.kind != "user" or principal.clinic_id is None:
        raise Forbidden(
            "break-glass access is for staff bound to one clinic", code="break_glass_not_allowed"
        )
    patient = session.get(PatientRow, patient_id)
    clinic = None if patient is None else session.get(Clinic, patient.clinic_id)
    if patient is None or clinic is None or clinic.organisation_id != principal.organisation_id:
        raise NotFound("no such patient", code="not_found")
    if principal.can_see_clinic(patient.clinic_id):
        raise Conflict(
            "this patient is of your own clinic: no break-glass access is needed",
            code="break_glass_not_needed",
        )
    at = now or utcnow()
    grant = BreakGlassGrant(
        id=new_id(),
        organisation_id=principal.organisation_id,
        user_id=principal.id,
        patient_id=patient.id,
        clinic_id=patient.clinic_id,
        reason=reason,
        granted_at=at,
        expires_at=at + timedelta(minutes=minutes),
    )
    session.add(grant)
    session.flush()
    notify(
        session=session,
        clinic_id=patient.clinic_id,
        kind=NoticeKind.BREAK_GLASS,
        dedupe_key=f"break-glass:{grant.id}",
        recipients=staff_recipients(patient.clinic_id),
        detail={
            "grant_id": grant.id,
            "user_id": principal.id,
            "patient_id": patient.id,
            "expires_at": grant.expires_at.isoformat(),
        },
    )
    record_event(
        session=session,
        event=BreakGlassGranted(
            actor=Actor.of(principal),
            clinic_id=patient.clinic_id,
            patient_ids=(patient.id,),
            purpose=BREAK_GLASS,
            grant_id=grant.id,
        ),
    )
    return grant


def last_grant(
    *, session: Session, principal: Principal, patient_id: str
) -> BreakGlassGrant | None:
    """The newest break-glass grant `principal` was given for `patient_id`, live or not."""
    return session.scalars(
        select(BreakGlassGrant)
        .where(
            BreakGlassGrant.user_id == principal.id,
            BreakGlassGrant.patient_id == patient_id,
            BreakGlassGrant.organisation_id == principal.organisation_id,
        )
        .order_by(BreakGlassGrant.expires_at.desc())
        .limit(1)
    ).first()


def active_grant(
    *,
    session: Session,
    principal: Principal,
    patient_id: str,
    clinic_id: str,
    now: datetime | None = None,
) -> BreakGlassGrant | None:
    """The grant that lets `principal` read the patient `patient_id` (of `clinic_id`)
    now, if there is one."""
    grant = last_grant(session=session, principal=principal, patient_id=patient_id)
    if grant is None or grant.clinic_id != clinic_id or grant.expires_at <= (now or utcnow()):
        return None
    return grant


def grants(
    *, session: Session, principal: Principal, unreviewed: bool, limit: int
) -> Sequence[BreakGlassGrant]:
    """The break-glass grants of the caller's organisation (of its clinic's patients,
    for a clinic-bound admin), newest first; only those not yet reviewed if
    `unreviewed`."""
    query = select(BreakGlassGrant).where(
        BreakGlassGrant.organisation_id == principal.organisation_id
    )
    if principal.clinic_id is not None:
        query = query.where(BreakGlassGrant.clinic_id == principal.clinic_id)
    if unreviewed:
        query = query.where(BreakGlassGrant.reviewed_at.is_(None))
    query = query.order_by(BreakGlassGrant.granted_at.desc(), BreakGlassGrant.id).limit(limit)
    return session.scalars(query).all()


def review_grant(
    *,
    session: Session,
    principal: Principal,
    grant_id: str,
    note: str,
    now: datetime | None = None,
) -> BreakGlassGrant:
    """Record an admin's review of a grant (the note stays with the grant).

    Raises:
        NotFound: No such grant in the caller's scope.
        Conflict: ``already_reviewed``.
        Forbidden: ``own_grant``: nobody reviews their own emergency access.
    """
    grant = session.get(BreakGlassGrant, grant_id)
    if (
        grant is None
        or grant.organisation_id != principal.organisation_id
        or not principal.can_see_clinic(grant.clinic_id)
    ):
        raise NotFound("no such break-glass grant", code="not_found")
    if grant.user_id == principal.id:
        raise Forbidden("nobody reviews their own break-glass access", code="own_grant")
    if grant.reviewed_at is not None:
        raise Conflict("this grant was already reviewed", code="already_reviewed")
    grant.reviewed_by = principal.id
    grant.reviewed_at = now or utcnow()
    grant.review_note = note
    session.flush()
    record_event(
        session=session,
        event=BreakGlassReviewed(
            actor=Actor.of(principal),
            clinic_id=grant.clinic_id,
            purpose=OPERATIONS,
            grant_id=grant.id,
        ),
    )
    return grant
