"""Tenancy: organisations and their clinics, and which clinics a caller may see.

A clinician or staff user works in one clinic; an organisation-wide admin (no clinic)
sees every clinic of its organisation. A clinic outside a caller's scope is answered
exactly like a missing one (its existence is not revealed). Clinic names are unique
within an organisation, never across organisations: no organisation learns another's.
"""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from sync_server.audit.events import Actor, ClinicCreated
from sync_server.audit.services import record_event
from sync_server.db import insert_unless_taken, new_id, utcnow
from sync_server.errors import Conflict, Forbidden, NotFound, Unprocessable
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic, Organisation

__all__ = [
    "MAX_NAME_LENGTH",
    "clinic_ids_in_scope",
    "create_clinic",
    "ensure_clinic",
    "ensure_organisation",
    "list_clinics",
    "require_organisation_wide",
    "visible_clinic",
]

MAX_NAME_LENGTH = 200
"""The longest clinic, user or device name."""


def ensure_organisation(*, session: Session, name: str = "default") -> Organisation:
    """The organisation called `name`, created if missing (by this transaction or, when
    several create it at once, by whichever commits first)."""
    organisation = _organisation_named(session, name)
    if organisation is not None:
        return organisation
    organisation = Organisation(id=new_id(), name=name, created_at=utcnow())
    if insert_unless_taken(session, organisation):
        return organisation
    # Another transaction created it meanwhile, and committed.
    found = _organisation_named(session, name)
    if found is None:
        raise Conflict(f"organisation {name!r} could not be created", code="organisation_race")
    return found


def _organisation_named(session: Session, name: str) -> Organisation | None:
    return session.scalars(select(Organisation).where(Organisation.name == name)).one_or_none()


def require_organisation_wide(principal: Principal, message: str) -> None:
    """Refuse an account bound to one clinic what only organisation-wide admins may do.

    Raises:
        Forbidden: ``organisation_admins_only``, with `message`.
    """
    if not principal.organisation_wide:
        raise Forbidden(message, code="organisation_admins_only")


def create_clinic(
    *, session: Session, name: str, organisation_id: str, actor: Principal | None = None
) -> Clinic:
    """A new clinic of an organisation.

    Args:
        session: The transaction.
        name: Unique in the organisation, 1 to 200 characters.
        organisation_id: The organisation it belongs to.
        actor: The admin creating it (None: an operator), who must be organisation-wide.

    Raises:
        Forbidden: ``organisation_admins_only``: `actor` is bound to a clinic.
        Unprocessable: ``invalid_clinic``: the name is empty, longer than 200 characters
            or holds a NUL character (records naming the clinic could not carry it).
        NotFound: No such organisation.
        Conflict: ``clinic_exists``: the organisation has a clinic of that name.
    """
    if actor is not None:
        require_organisation_wide(actor, "only organisation-wide admins create clinics")
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise Unprocessable(
            f"a clinic name is 1 to {MAX_NAME_LENGTH} characters, without NUL",
            code="invalid_clinic",
        )
    if session.get(Organisation, organisation_id) is None:
        raise NotFound("no such organisation", code="organisation_not_found")
    if _clinic_named(session, name, organisation_id) is not None:
        raise Conflict(f"a clinic named {name!r} already exists", code="clinic_exists")
    clinic = Clinic(
        id=new_id(), organisation_id=organisation_id, name=name, feed_seq=0, created_at=utcnow()
    )
    if not insert_unless_taken(session, clinic):
        raise Conflict(f"a clinic named {name!r} already exists", code="clinic_exists")
    record_event(
        session=session,
        event=ClinicCreated(
            actor=Actor.of(actor) if actor is not None else Actor("system"), clinic_id=clinic.id
        ),
    )
    return clinic


def _clinic_named(session: Session, name: str, organisation_id: str) -> Clinic | None:
    return session.scalars(
        select(Clinic).where(Clinic.organisation_id == organisation_id, Clinic.name == name)
    ).one_or_none()


def ensure_clinic(*, session: Session, name: str, organisation_id: str | None = None) -> Clinic:
    """The organisation's clinic called `name`, created if missing (several
    transactions doing so at once all get the one clinic).

    Without `organisation_id` the clinic belongs to the ``default`` organisation, created
    if missing.

    Raises:
        Unprocessable: ``invalid_clinic``: a name that is empty or too long.
    """
    if organisation_id is None:
        organisation_id = ensure_organisation(session=session).id
    clinic = _clinic_named(session, name.strip(), organisation_id)
    if clinic is not None:
        return clinic
    try:
        return create_clinic(session=session, name=name, organisation_id=organisation_id)
    except Conflict:  # another transaction created it meanwhile, and committed
        clinic = _clinic_named(session, name.strip(), organisation_id)
        if clinic is None:
            raise
        return clinic


def visible_clinic(*, session: Session, principal: Principal, clinic_id: str) -> Clinic:
    """The clinic `clinic_id` if `principal` may see it: its own clinic, or for an
    organisation-wide account, any clinic of its organisation.

    Raises:
        NotFound: ``clinic_not_found``: no such clinic, or one the principal may not see
            (its existence is not revealed).
    """
    clinic = session.get(Clinic, clinic_id)
    if (
        clinic is None
        or clinic.organisation_id != principal.organisation_id
        or not principal.can_see_clinic(clinic.id)
    ):
        raise NotFound("no such clinic", code="clinic_not_found")
    return clinic


def clinic_ids_in_scope(principal: Principal) -> Select[str]:
    """A query of the ids of every clinic `principal` may see."""
    query = select(Clinic.id).where(Clinic.organisation_id == principal.organisation_id)
    if principal.clinic_id is not None:
        query = query.where(Clinic.id == principal.clinic_id)
    return query


def list_clinics(*, session: Session, principal: Principal) -> list[Clinic]:
    """The clinics `principal` may see, by name."""
    query = select(Clinic).where(Clinic.id.in_(clinic_ids_in_scope(principal)))
    return list(session.scalars(query.order_by(Clinic.name)))
