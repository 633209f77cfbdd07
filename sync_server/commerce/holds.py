"""The hold sweep: an accepted order that is not paid by its ``hold_expires_at``
(server clock) is cancelled and its stock released. Run by the server's
housekeeping; each order is cancelled in its own short transaction, conditional on
still being unpaid and expired, so a payment recorded meanwhile
(`orders.mark_order_paid`) wins or loses cleanly.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from sync_server.audit.events import Actor
from sync_server.commerce.orders import cancel_order, expired_holds
from sync_server.commerce.reference import publish_catalogue
from sync_server.db import Database
from sync_server.errors import Conflict
from sync_server.sync.authorship import ServerSigner

__all__ = ["expire_holds"]


def expire_holds(*, database: Database, signer: ServerSigner, now: datetime) -> int:
    """Cancel every unpaid order whose hold expired by `now`, release its stock and
    refresh its clinic's catalogue. Returns how many orders were cancelled."""
    with database.read() as session:
        due = expired_holds(session=session, now=now)
    cancelled = 0
    clinics: set[str] = set()
    for order_id in due:

        def work(session: Session, order_id: str = order_id) -> int:
            savepoint = session.begin_nested()
            try:
                order = cancel_order(
                    session=session,
                    order_id=order_id,
                    now=now,
                    actor=Actor("system"),
                    reason="not paid before the hold expired",
                    hold_expired=True,
                )
            except Conflict:  # paid (or being paid) or cancelled meanwhile
                savepoint.rollback()  # nothing of the attempt stays
                return 0
            savepoint.commit()
            clinics.add(order.clinic_id)
            return 1

        cancelled += database.write_retrying(work)
    for clinic_id in sorted(clinics):
        # A transaction of its own: clinic row locks are never taken after the
        # warehouse's (`sync_server.commerce.stock`).

        def publish(session: Session, clinic_id: str = clinic_id) -> int:
            return publish_catalogue(
                session=session, clinic_ids=[clinic_id], signer=signer, now=now
            )

        database.write_retrying(publish)
    return cancelled
