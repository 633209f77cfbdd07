"""What a worker writes on the deliveries it holds once a send is decided, for single
deliveries (`sync_server.notifications.worker`) and digest groups
(`sync_server.notifications.digests`) alike: the lease is given up, and the delivery is
sent, back to pending (a retry, or held by the recipient's quiet hours) or dead.

Every write is conditional on the worker still holding the lease (the caller's
``held`` condition), so a worker whose lease ran out changes nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from sync_server.db import rowcount, utcnow
from sync_server.notifications.channels import DeliveryFailed
from sync_server.notifications.tables import NotificationDelivery

__all__ = ["as_failed", "as_held", "as_sent", "settle"]


def settle(*, session: Session, held: ColumnElement[bool], values: dict[str, Any]) -> int:
    """Write `values` on the deliveries `held` selects (those this worker still holds),
    giving up their lease. Returns how many rows it changed."""
    done = session.execute(
        update(NotificationDelivery)
        .where(held)
        .values(lease_owner=None, lease_until=None, **values)
        .execution_options(synchronize_session=False)
    )
    return rowcount(done)


def as_sent(provider_id: str) -> dict[str, Any]:
    """Sent now, with the provider's message id."""
    return {
        "state": "sent",
        "sent_at": utcnow(),
        "provider_message_id": provider_id[:200],
        "last_error": None,
    }


def as_failed(failure: DeliveryFailed, *, final: bool, retry_at: datetime) -> dict[str, Any]:
    """Failed: dead when `final`, else pending again from `retry_at`; the error kept."""
    return {
        "state": "dead" if final else "pending",
        "next_attempt_at": retry_at,
        "last_error": str(failure)[:500],
    }


def as_held(until: datetime) -> dict[str, Any]:
    """Pending again from `until` (the end of quiet hours), the attempt not counted."""
    return {
        "state": "pending",
        "next_attempt_at": until,
        "attempts": NotificationDelivery.attempts - 1,
    }
