"""What each channel says, per (kind, channel).

Only the in-app notice carries the event's detail. Push and SMS say that something
needs attention and nothing else; an email names the kind of update in general terms
and never a clinical value, a patient's name or record number, or a wound. A body is
built from the kind and fixed text only: `render` never reads the event's detail for
those channels, so no value of a record can reach them.
"""

from __future__ import annotations

from sync_server.notifications.events import CHANNELS, NoticeKind

__all__ = ["Rendered", "render", "render_digest"]

_PATIENT_ATTENTION = "You have a new message from your clinic. Open the Coherency app to read it."
_STAFF_ATTENTION = "Something at your clinic needs review. Open Coherency to read it."

_TITLES: dict[NoticeKind, str] = {
    NoticeKind.BOOKING_DECIDED: "Your appointment request was answered",
    NoticeKind.BOOKING_CANCELLED: "An appointment was cancelled",
    NoticeKind.ORDER_ACCEPTED: "Your order was accepted",
    NoticeKind.ORDER_REFUSED: "Your order could not be accepted",
    NoticeKind.ORDER_SHIPPED: "Your order was shipped",
    NoticeKind.PAYMENT_FAILED: "A payment did not go through",
    NoticeKind.PAYMENT_REFUNDED: "A payment was refunded",
    NoticeKind.BREAK_GLASS: "Break-glass access to review",
}
"""In-app titles and email subjects: general words, never a record's values."""

_STAFF_KINDS = frozenset({NoticeKind.BREAK_GLASS})

# The periodic sources (`sync_server.notifications.sources`): general words only.
_TITLES.update(
    {
        NoticeKind.REMINDER_24H: "You have an appointment tomorrow",
        NoticeKind.REMINDER_2H: "You have an appointment soon",
        NoticeKind.PRESCRIPTION_EXPIRING: "A prescription is about to expire",
        NoticeKind.WOUND_NOT_ON_TRACK: "A wound to review: healing is not on track",
        NoticeKind.LOW_STOCK: "A supply is running low",
    }
)
_STAFF_KINDS = _STAFF_KINDS | {NoticeKind.WOUND_NOT_ON_TRACK, NoticeKind.LOW_STOCK}


class Rendered:
    """A channel's text: a subject (email, in-app title) and a body."""

    __slots__ = ("body", "subject")

    def __init__(self, subject: str, body: str) -> None:
        self.subject = subject
        self.body = body


def render(kind: NoticeKind, channel: str, *, reference: str) -> Rendered:
    """The text `channel` sends for an event of `kind`; `reference` (the event's id, an
    opaque UUID) lets the reader find it in the app.

    Raises:
        ValueError: an unknown channel.
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    staff = kind in _STAFF_KINDS
    title = _TITLES[kind]
    if channel in ("push", "sms"):
        return Rendered("Coherency", _STAFF_ATTENTION if staff else _PATIENT_ATTENTION)
    if channel == "email":
        where = "the staff pages of Coherency" if staff else "the Coherency app"
        body = (
            f"{title}.\n\n"
            f"For your privacy this email holds no details. Open {where} to read it.\n\n"
            f"Reference: {reference}\n"
        )
        return Rendered(f"Coherency: {title.lower()}", body)
    return Rendered(title, title)


def render_digest(count: int, channel: str, *, staff: bool, reference: str) -> Rendered:
    """The text of a digest of `count` updates through `channel` (email, SMS or push):
    the count and fixed words only, never a kind's title or a record's value;
    `reference` (the digest's id) names it in an email.

    Raises:
        ValueError: an unknown channel, in-app (never digested), or a count below 1.
    """
    if channel not in CHANNELS or channel == "in_app":
        raise ValueError(f"no digest through {channel!r}")
    if count < 1:
        raise ValueError("a digest holds at least one update")
    updates = "1 update" if count == 1 else f"{count} updates"
    where = "the staff pages of Coherency" if staff else "the Coherency app"
    line = f"You have {updates} from your clinic. Open {where} to read them."
    if channel == "email":
        body = (
            f"{line}\n\nFor your privacy this email holds no details.\n\nReference: {reference}\n"
        )
        return Rendered(f"Coherency: {updates}", body)
    return Rendered("Coherency", line)
