"""Calendar feeds: an iCalendar (RFC 5545) view of one provider's or one patient's
bookings behind a secret, revocable URL that calendar apps subscribe to.

The URL's token is the only credential: it is shown once, at creation, and only its
SHA-256 is stored. A revoked or unknown token is answered exactly like a missing feed.
Each booking is one VEVENT whose UID never changes (``<booking id>@coherency``) and
whose SEQUENCE and LAST-MODIFIED follow the booking's ``updated_at``, so a calendar
app moves or cancels the event it already shows. Events name the service and the
provider, never a patient.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from icalendar import Calendar, Event
from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server.audit.events import (
    Actor,
    CalendarFeedCreated,
    CalendarFeedRead,
    CalendarFeedRevoked,
    purpose_of,
)
from sync_server.audit.services import record_event
from sync_server.bookings.directory import actor_of, provider_in_scope, require_writer
from sync_server.bookings.tables import Booking, CalendarFeed, Provider, Service
from sync_server.db import new_id, utcnow
from sync_server.errors import NotFound
from sync_server.identity.principals import Principal
from sync_server.identity.tables import Clinic
from sync_server.sync.records import find_visible
from sync_server.sync.tables import PatientRow

__all__ = [
    "FEED_HISTORY",
    "CreatedFeed",
    "FeedSubject",
    "create_feed",
    "feed_path",
    "list_feeds",
    "render_feed",
    "revoke_feed",
]

FeedSubject = Literal["provider", "patient"]

FEED_HISTORY = timedelta(days=30)
"""How far back a feed shows bookings (everything ahead is shown)."""

_STATUS = {
    "booked": "TENTATIVE",
    "confirmed": "CONFIRMED",
    "en_route": "CONFIRMED",
    "started": "CONFIRMED",
    "completed": "CONFIRMED",
    "cancelled": "CANCELLED",
    "no_show": "CANCELLED",
    "missed": "CANCELLED",
}


@dataclass(frozen=True, slots=True)
class CreatedFeed:
    """A new feed and its secret token (in this value only; the server keeps its hash)."""

    feed: CalendarFeed
    token: str


def feed_path(token: str) -> str:
    """The path a feed is served at (relative to the server's base URL)."""
    return f"/v1/calendar/{token}.ics"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_feed(
    *, session: Session, principal: Principal, subject_kind: FeedSubject, subject_id: str
) -> CreatedFeed:
    """A secret feed of a provider's or a patient's bookings.

    Raises:
        Forbidden: The caller may not manage bookings (clinicians read them).
        NotFound: The provider or patient is not in the caller's scope.
    """
    require_writer(principal)
    clinic_id: str | None
    if subject_kind == "provider":
        provider = provider_in_scope(session=session, principal=principal, provider_id=subject_id)
        clinic_id = provider.clinic_id
    else:
        patient = find_visible(
            session=session, principal=principal, table=PatientRow, record_id=subject_id
        )
        if patient is None:
            raise NotFound("no such patient", code="not_found")
        clinic_id = patient.clinic_id
    token = secrets.token_urlsafe(32)
    feed = CalendarFeed(
        id=new_id(),
        organisation_id=principal.organisation_id,
        clinic_id=clinic_id,
        subject_kind=subject_kind,
        subject_id=subject_id,
        token_hash=_hash(token),
        created_at=utcnow(),
    )
    session.add(feed)
    session.flush()
    record_event(
        session=session,
        event=CalendarFeedCreated(
            actor=actor_of(principal),
            clinic_id=clinic_id,
            patient_ids=_patients_of(feed),
            purpose=purpose_of(principal),
            feed_id=feed.id,
        ),
    )
    return CreatedFeed(feed, token)


def _patients_of(feed: CalendarFeed) -> tuple[str, ...]:
    """The patient whose bookings a feed shows (none for a provider's feed, which
    names no patient)."""
    return (feed.subject_id,) if feed.subject_kind == "patient" else ()


def _visible(principal: Principal, feed: CalendarFeed | None) -> bool:
    return (
        feed is not None
        and feed.organisation_id == principal.organisation_id
        and (feed.clinic_id is None or principal.can_see_clinic(feed.clinic_id))
    )


def list_feeds(
    *, session: Session, principal: Principal, include_revoked: bool = False
) -> list[CalendarFeed]:
    """The feeds the caller may see (without tokens), newest first."""
    query = select(CalendarFeed).where(CalendarFeed.organisation_id == principal.organisation_id)
    if not include_revoked:
        query = query.where(CalendarFeed.revoked_at.is_(None))
    rows = session.scalars(query.order_by(CalendarFeed.created_at.desc(), CalendarFeed.id))
    return [feed for feed in rows if _visible(principal, feed)]


def revoke_feed(*, session: Session, principal: Principal, feed_id: str) -> CalendarFeed:
    """Revoke a feed: its URL answers 404 from now on (revoking twice changes nothing).

    Raises:
        Forbidden: The caller may not manage bookings.
        NotFound: No such feed in the caller's scope.
    """
    require_writer(principal)
    feed = session.get(CalendarFeed, feed_id)
    if feed is None or not _visible(principal, feed):
        raise NotFound("no such calendar feed", code="not_found")
    if feed.revoked_at is None:
        feed.revoked_at = utcnow()
        session.flush()
        record_event(
            session=session,
            event=CalendarFeedRevoked(
                actor=actor_of(principal),
                clinic_id=feed.clinic_id,
                patient_ids=_patients_of(feed),
                purpose=purpose_of(principal),
                feed_id=feed.id,
            ),
        )
    return feed


def render_feed(*, session: Session, token: str, now: datetime | None = None) -> bytes:
    """The iCalendar text of the feed `token` opens (audited as read by its holder).

    Raises:
        NotFound: No feed has this token, or it was revoked.
    """
    at = now or utcnow()
    feed = session.scalar(select(CalendarFeed).where(CalendarFeed.token_hash == _hash(token)))
    if feed is None or feed.revoked_at is not None:
        raise NotFound("no such calendar feed", code="not_found")
    query = select(Booking).where(
        Booking.organisation_id == feed.organisation_id, Booking.ends_at >= at - FEED_HISTORY
    )
    if feed.subject_kind == "provider":
        query = query.where(Booking.provider_id == feed.subject_id)
    else:
        query = query.where(Booking.patient_id == feed.subject_id)
        if feed.clinic_id is not None:
            query = query.where(Booking.clinic_id == feed.clinic_id)
    bookings = session.scalars(query.order_by(Booking.starts_at, Booking.id)).all()
    calendar = _calendar(session, feed, bookings, at)
    record_event(
        session=session,
        event=CalendarFeedRead(
            actor=Actor.feed(feed.id),
            clinic_id=feed.clinic_id,
            patient_ids=_patients_of(feed),
            feed_id=feed.id,
            events=len(bookings),
        ),
    )
    text: bytes = calendar.to_ical()
    return text


def _calendar(
    session: Session, feed: CalendarFeed, bookings: Sequence[Booking], now: datetime
) -> Calendar:
    providers = {
        p.id: p
        for p in session.scalars(
            select(Provider).where(Provider.id.in_({b.provider_id for b in bookings}))
        )
    }
    services = {
        s.code: s
        for s in session.scalars(
            select(Service).where(Service.organisation_id == feed.organisation_id)
        )
    }
    clinics = {
        c.id: c
        for c in session.scalars(
            select(Clinic).where(Clinic.id.in_({b.clinic_id for b in bookings}))
        )
    }
    calendar = Calendar()
    calendar.add("prodid", "-//Coherency//Bookings//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", f"Coherency {feed.subject_kind} bookings")
    for booking in bookings:
        provider = providers.get(booking.provider_id)
        service = services.get(booking.service)
        what = service.name if service is not None else booking.service
        who = provider.name if provider is not None else "a provider"
        event = Event()
        event.add("uid", f"{booking.id}@coherency")
        event.add("dtstamp", now)
        event.add("dtstart", booking.starts_at)
        event.add("dtend", booking.ends_at)
        event.add("summary", f"{what} with {who}")
        event.add("status", _STATUS.get(booking.state, "TENTATIVE"))
        event.add(
            "sequence", max(0, int((booking.updated_at - booking.created_at).total_seconds()))
        )
        event.add("created", booking.created_at)
        event.add("last-modified", booking.updated_at)
        clinic = clinics.get(booking.clinic_id)
        if booking.kind == "visit":
            event.add("location", f"home visit ({booking.area})" if booking.area else "home visit")
        elif clinic is not None:
            event.add("location", clinic.name)
        calendar.add_component(event)
    return calendar
