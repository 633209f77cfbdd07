"""Sending due deliveries: claim, send, mark.

`deliver_due` claims up to `batch` due deliveries with a conditional UPDATE per row
(pending and due, or sending with a lease that expired), so two workers never hold
one; sends each with the delivery id as the idempotency key; then marks it sent only
where this worker still holds the lease. A failure counts an attempt and moves
``next_attempt_at`` by an exponential, jittered backoff; after
``notification_max_attempts`` (or a failure that is not retryable) the delivery is
``dead`` with its error, for staff to see and retry.

Nothing but in-app goes out inside the recipient's quiet hours, whatever made the
delivery due (a retry's backoff, a staff retry, a backlog, quiet hours set after the
event): just before a send the worker looks again (`schedule.quiet_at_send`) and puts
a held delivery back, due when the quiet hours end, its attempt not counted.

A worker killed mid-send leaves its lease: once it expires another worker claims the
delivery and sends it with the same idempotency key, so the provider keeps one message.

Deliveries made under a recipient's digest mode are not claimed here one by one:
`deliver_due` hands them to `sync_server.notifications.digests` after the others.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select, update

from sync_server.db import Database, rowcount, utcnow
from sync_server.notifications.channels import Channel, DeliveryFailed, Message
from sync_server.notifications.digests import deliver_digests
from sync_server.notifications.events import NoticeKind
from sync_server.notifications.outcomes import as_failed, as_held, as_sent, settle
from sync_server.notifications.schedule import RunClock, quiet_at_send
from sync_server.notifications.tables import NotificationDelivery, NotificationEvent
from sync_server.notifications.templates import render
from sync_server.settings import Settings

__all__ = ["DeliveryRun", "Retry", "backoff", "deliver_due", "deliver_ids", "lease_holder"]

log = logging.getLogger("sync_server.notifications")


@dataclass(frozen=True, slots=True)
class Retry:
    """How failed deliveries are retried (from `Settings`). `rng` draws the backoff's
    jitter (a seeded one makes a seeded run repeat exactly)."""

    max_attempts: int = 8
    backoff_seconds: float = 30.0
    backoff_max_seconds: float = 3600.0
    lease_seconds: float = 120.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def of(cls, settings: Settings) -> Retry:
        """The retry rules `settings` give."""
        return cls(
            settings.notification_max_attempts,
            settings.notification_backoff_seconds,
            settings.notification_backoff_max_seconds,
            settings.notification_lease_seconds,
        )


@dataclass(frozen=True, slots=True)
class DeliveryRun:
    """What one `deliver_due` call did."""

    claimed: int
    sent: int
    retrying: int
    dead: int
    lost: int  # sent, but another worker held the lease by then (it sends the same key)
    digests: int = 0  # digest messages sent (their deliveries count above)
    held: int = 0  # claimed, then put back until the recipient's quiet hours end


def backoff(attempts: int, retry: Retry) -> timedelta:
    """The delay before the next attempt after `attempts` tries: the base doubled per
    attempt, capped, times a jitter in [0.5, 1.5) so failed batches spread out."""
    base = min(retry.backoff_seconds * 2 ** max(attempts - 1, 0), retry.backoff_max_seconds)
    return timedelta(seconds=base * retry.rng.uniform(0.5, 1.5))


def lease_holder(owner: str) -> str:
    """The name one run of worker `owner` claims under (``<owner>/<random>``): two runs
    of one worker (the queue's job thread and its sweep thread) never hold the same
    lease, so a run whose lease ran out, and was taken over, writes nothing."""
    return f"{owner[:80]}/{uuid.uuid4().hex[:12]}"


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(NotificationDelivery.state == "pending", NotificationDelivery.next_attempt_at <= now),
        and_(NotificationDelivery.state == "sending", NotificationDelivery.lease_until < now),
    )


def _claim(
    db: Database,
    channels: Collection[str],
    *,
    owner: str,
    now: datetime,
    batch: int,
    lease: timedelta,
    clinic_ids: Collection[str] | None,
    ids: Collection[str] | None = None,
) -> list[str]:
    with db.write() as session:
        query = (
            select(NotificationDelivery.id)
            .where(_due(now), NotificationDelivery.channel.in_(list(channels)))
            .where(NotificationDelivery.digest.is_(None))  # digests: `digests.py`
            .order_by(NotificationDelivery.next_attempt_at, NotificationDelivery.id)
            .limit(batch)
        )
        if clinic_ids is not None:
            query = query.where(NotificationDelivery.clinic_id.in_(list(clinic_ids)))
        if ids is not None:
            query = query.where(NotificationDelivery.id.in_(list(ids)))
        claimed = []
        for delivery_id in session.scalars(query).all():
            # The condition is evaluated again on the row itself: another worker that
            # claimed it first leaves nothing to match.
            done = session.execute(
                update(NotificationDelivery)
                .where(NotificationDelivery.id == delivery_id, _due(now))
                .values(
                    state="sending",
                    lease_owner=owner,
                    lease_until=now + lease,
                    attempts=NotificationDelivery.attempts + 1,
                )
            )
            if rowcount(done) == 1:
                claimed.append(delivery_id)
        return claimed


def _message(
    db: Database, delivery_id: str, at: datetime
) -> tuple[NotificationDelivery, Message, datetime | None]:
    """The delivery, its message, and the end of its recipient's quiet hours if `at`
    falls inside them."""
    with db.read() as session:
        delivery = session.get_one(NotificationDelivery, delivery_id)
        quiet = quiet_at_send(
            session=session,
            clinic_id=delivery.clinic_id,
            recipient=delivery.recipient,
            channel=delivery.channel,
            at=at,
        )
        event = session.get_one(NotificationEvent, delivery.event_id)
        text = render(NoticeKind(event.kind), delivery.channel, reference=event.id)
        message = Message(
            recipient=delivery.recipient,
            clinic_id=delivery.clinic_id,
            event_id=event.id,
            kind=event.kind,
            subject=text.subject,
            body=text.body,
            detail=dict(event.detail) if delivery.channel == "in_app" else {},
        )
        return delivery, message, quiet


def _held(delivery_id: str, owner: str) -> ColumnElement[bool]:
    return and_(
        NotificationDelivery.id == delivery_id,
        NotificationDelivery.state == "sending",
        NotificationDelivery.lease_owner == owner,
    )


def deliver_due(
    db: Database,
    channels: Mapping[str, Channel],
    *,
    owner: str,
    now: datetime | None = None,
    batch: int = 100,
    retry: Retry | None = None,
    clinic_ids: Collection[str] | None = None,
) -> DeliveryRun:
    """Claim and send up to `batch` deliveries due at `now` through `channels` (by
    channel name; deliveries of other channels wait for a worker that has them), as
    worker `owner`; only of `clinic_ids` when given.

    Returns what was done. A channel's `DeliveryFailed` is recorded on the delivery;
    any other exception propagates and leaves the lease to expire.
    """
    at = now or utcnow()
    rules = retry or Retry()
    holder = lease_holder(owner)
    claimed = _claim(
        db,
        channels.keys(),
        owner=holder,
        now=at,
        batch=batch,
        lease=timedelta(seconds=rules.lease_seconds),
        clinic_ids=clinic_ids,
    )
    single = _send_claimed(db, channels, claimed, owner=holder, at=at, rules=rules)
    grouped = deliver_digests(
        db,
        channels,
        owner=holder,
        now=at,
        batch=batch,
        lease=timedelta(seconds=rules.lease_seconds),
        max_attempts=rules.max_attempts,
        delay=lambda attempts: backoff(attempts, rules),
        clinic_ids=clinic_ids,
    )
    return DeliveryRun(
        single.claimed + grouped.claimed,
        single.sent + grouped.sent,
        single.retrying + grouped.retrying,
        single.dead + grouped.dead,
        single.lost + grouped.lost,
        grouped.messages,
        single.held + grouped.held,
    )


def deliver_ids(
    db: Database,
    channels: Mapping[str, Channel],
    ids: Collection[str],
    *,
    owner: str,
    now: datetime | None = None,
    retry: Retry | None = None,
) -> DeliveryRun:
    """Claim and send those of the deliveries `ids` that are due at `now`, through
    `channels`, as worker `owner`: the same claim rule as `deliver_due` (pending and
    due, or a lease that expired), restricted to these ids. Ids already sent, held by
    another worker, not due yet, unknown or of a channel not in `channels` are skipped,
    so the same id delivered twice (a duplicate publish) sends once.

    Returns what was done. A channel's `DeliveryFailed` is recorded on the delivery;
    any other exception propagates and leaves the lease to expire.
    """
    wanted = sorted(set(ids))
    if not wanted:
        return DeliveryRun(0, 0, 0, 0, 0)
    at = now or utcnow()
    rules = retry or Retry()
    holder = lease_holder(owner)
    claimed = _claim(
        db,
        channels.keys(),
        owner=holder,
        now=at,
        batch=len(wanted),
        lease=timedelta(seconds=rules.lease_seconds),
        clinic_ids=None,
        ids=wanted,
    )
    return _send_claimed(db, channels, claimed, owner=holder, at=at, rules=rules)


def _send_claimed(
    db: Database,
    channels: Mapping[str, Channel],
    claimed: list[str],
    *,
    owner: str,
    at: datetime,
    rules: Retry,
) -> DeliveryRun:
    sent = retrying = dead = lost = held = 0
    clock = RunClock(at)
    for delivery_id in claimed:
        delivery, message, quiet = _message(db, delivery_id, clock.now())
        if quiet is not None:
            with db.write() as session:
                settle(session=session, held=_held(delivery_id, owner), values=as_held(quiet))
            held += 1
            continue
        try:
            provider_id = channels[delivery.channel].send(message, idempotency_key=delivery.id)
        except DeliveryFailed as failed:
            final = not failed.retryable or delivery.attempts >= rules.max_attempts
            retry_at = at + backoff(delivery.attempts, rules)
            with db.write() as session:
                settle(
                    session=session,
                    held=_held(delivery_id, owner),
                    values=as_failed(failed, final=final, retry_at=retry_at),
                )
            if final:
                dead += 1
                log.warning("notification %s is dead: %s", delivery_id, failed)
            else:
                retrying += 1
            continue
        with db.write() as session:
            done = settle(
                session=session, held=_held(delivery_id, owner), values=as_sent(provider_id)
            )
        if done == 1:
            sent += 1
        else:
            lost += 1
    return DeliveryRun(len(claimed), sent, retrying, dead, lost, held=held)
