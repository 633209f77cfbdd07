"""Routes: calendar feeds. Staff and admins create a secret iCalendar URL for a
provider's or a patient's bookings (shown once), list and revoke them; anyone holding
the URL reads the feed, with no bearer token: the URL's token is the credential, and
a revoked or unknown one answers 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status

from sync_server.audit.services import record_read
from sync_server.bookings.calendar import (
    create_feed,
    feed_path,
    list_feeds,
    render_feed,
    revoke_feed,
)
from sync_server.bookings.schemas import (
    CalendarFeedCreate,
    CalendarFeedCreated,
    CalendarFeedPublic,
)
from sync_server.deps import DbDep, StaffCaller

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["calendar"])

ICALENDAR = "text/calendar"


@router.post(
    "/calendar-feeds",
    status_code=status.HTTP_201_CREATED,
    response_model=CalendarFeedCreated,
    summary="Create a calendar feed",
)
def post_feed(
    body: CalendarFeedCreate, caller: StaffCaller, db: DbDep, request: Request
) -> CalendarFeedCreated:
    """A secret iCalendar URL of a provider's or a patient's bookings. The URL is in
    this answer only (the server keeps a hash of its token): give it to the calendar
    app now."""
    with db.write() as session:
        created = create_feed(
            session=session,
            principal=caller,
            subject_kind=body.subject_kind,
            subject_id=body.subject_id,
        )
        public = CalendarFeedPublic.model_validate(created.feed)
    path = feed_path(created.token)
    return CalendarFeedCreated(
        **public.model_dump(),
        token=created.token,
        path=path,
        url=str(request.base_url).rstrip("/") + path,
    )


@router.get("/calendar-feeds", response_model=list[CalendarFeedPublic], summary="List feeds")
def get_feeds(
    caller: StaffCaller, db: DbDep, include_revoked: bool = False
) -> list[CalendarFeedPublic]:
    """The calendar feeds of the caller's clinics (never their URLs), newest first."""
    with db.read() as session:
        feeds = list_feeds(session=session, principal=caller, include_revoked=include_revoked)
        found = [CalendarFeedPublic.model_validate(f) for f in feeds]
    with db.write() as session:
        record_read(
            session=session,
            caller=caller,
            collection="calendar-feeds",
            records=[(f.id, f.subject_id if f.subject_kind == "patient" else None) for f in found],
        )
    return found


@router.delete(
    "/calendar-feeds/{feed_id}", response_model=CalendarFeedPublic, summary="Revoke a feed"
)
def delete_feed(feed_id: str, caller: StaffCaller, db: DbDep) -> CalendarFeedPublic:
    """Revoke a feed: its URL answers 404 from now on."""
    with db.write() as session:
        return CalendarFeedPublic.model_validate(
            revoke_feed(session=session, principal=caller, feed_id=feed_id)
        )


@router.get(
    "/calendar/{token}.ics",
    response_class=Response,
    summary="Read a calendar feed",
    responses={
        200: {
            "description": "The feed, iCalendar (RFC 5545).",
            "content": {ICALENDAR: {"schema": {"type": "string"}}},
        },
        404: {"description": "No such feed, or it was revoked."},
    },
)
def get_calendar(token: str, db: DbDep) -> Response:
    """The bookings of the feed's provider or patient as iCalendar events (no bearer
    token: the URL is the credential). Each event keeps its UID as the booking moves
    or is cancelled, so calendar apps update it."""
    with db.write() as session:
        body = render_feed(session=session, token=token)
    return Response(
        content=body,
        media_type=f"{ICALENDAR}; charset=utf-8",
        headers={"cache-control": "private, max-age=300"},
    )
