"""Sending digests: the due deliveries of one (clinic, recipient, channel) as one
message.

A delivery made under a digest mode (`NotificationDelivery.digest`) is never claimed
alone. `deliver_digests` first groups: per (clinic, recipient, channel) with due,
ungrouped deliveries, it writes a `NotificationDigest` and, in the same transaction,
sets ``digest_id`` on every such delivery where it is still unset (a conditional
UPDATE: two workers grouping at once each get a disjoint set, the loser an empty one
it drops), leasing them all. A delivery's ``digest_id`` is never changed after, so an
event is in exactly one digest per (channel, recipient).

Then every claimed group is sent as one message (a count and fixed words,
`render_digest`) with the digest's id as the idempotency key, and marked sent in one
UPDATE that must match every member still leased by this worker, or nothing is
marked. A worker killed mid-send leaves the group leased; once the lease expires the
group is claimed again whole (all members, or none) and sent with the same key, so
the provider keeps one message. A failure moves all members together (retry with
backoff, or dead); a staff retry of one dead member brings its whole group back. A
group claimed inside its recipient's quiet hours is put back whole, due when they end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, func, not_, or_, select, update
from sqlalchemy.orm import Session

from sync_server.db import Database, new_id, rowcount
from sync_server.notifications.channels import Channel, DeliveryFailed, Message
from sync_server.notifications.outcomes import as_failed, as_held, as_sent, settle
from sync_server.notifications.schedule import RunClock, quiet_at_send
from sync_server.notifications.tables import NotificationDelivery, NotificationDigest
from sync_server.notifications.templates import render_digest

__all__ = ["DigestRun", "deliver_digests"]

log = logging.getLogger("sync_server.notifications")

D = NotificationDelivery


@dataclass(frozen=True, slots=True)
class DigestRun:
    """What one `deliver_digests` call did, in deliveries (``messages``: digest
    messages sent)."""

    claimed: int
    sent: int
    retrying: int
    dead: int
    lost: int
    messages: int
    held: int = 0  # put back until the recipient's quiet hours end


class _Rollback(Exception):
    """Leave a transaction without its changes."""


def _due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(D.state == "pending", D.next_attempt_at <= now),
        and_(D.state == "sending", D.lease_until < now),
    )


def _scope(channels: Collection[str], clinic_ids: Collection[str] | None) -> ColumnElement[bool]:
    where = and_(D.digest.is_not(None), D.channel.in_(list(channels)))
    if clinic_ids is not None:
        where = and_(where, D.clinic_id.in_(list(clinic_ids)))
    return where


def _group(
    db: Database,
    channels: Collection[str],
    clinic_ids: Collection[str] | None,
    *,
    owner: str,
    now: datetime,
    lease: timedelta,
    batch: int,
) -> list[str]:
    """Group the due, ungrouped deliveries into new digests; their ids."""
    fresh = and_(D.digest_id.is_(None), D.state == "pending", D.next_attempt_at <= now)
    with db.read() as session:
        groups = session.execute(
            select(D.clinic_id, D.recipient, D.channel)
            .where(_scope(channels, clinic_ids), fresh)
            .group_by(D.clinic_id, D.recipient, D.channel)
            .order_by(D.clinic_id, D.recipient, D.channel)
            .limit(batch)
        ).all()
    made = []
    for clinic_id, recipient, channel in groups:
        digest_id = new_id()
        with db.write() as session:
            session.add(
                NotificationDigest(
                    id=digest_id,
                    clinic_id=clinic_id,
                    channel=channel,
                    recipient=recipient,
                    size=1,  # set below, in this transaction
                    created_at=now,
                )
            )
            session.flush()
            # Evaluated again on each row: deliveries another worker grouped first
            # have a digest id by then and are left out.
            taken = rowcount(
                session.execute(
                    update(D)
                    .where(
                        D.clinic_id == clinic_id,
                        D.recipient == recipient,
                        D.channel == channel,
                        D.digest.is_not(None),
                        fresh,
                    )
                    .values(
                        digest_id=digest_id,
                        state="sending",
                        lease_owner=owner,
                        lease_until=now + lease,
                        attempts=D.attempts + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
            )
            if taken == 0:
                session.delete(session.get_one(NotificationDigest, digest_id))
                continue
            session.execute(
                update(NotificationDigest)
                .where(NotificationDigest.id == digest_id)
                .values(size=taken)
            )
        made.append(digest_id)
    return made


def _reclaim(
    db: Database,
    channels: Collection[str],
    clinic_ids: Collection[str] | None,
    *,
    owner: str,
    now: datetime,
    lease: timedelta,
    batch: int,
) -> list[str]:
    """Claim again, whole, the digests with a due member (a failed send's retry, an
    expired lease, a staff retry of a dead member); their ids."""
    with db.read() as session:
        found = [
            digest_id
            for digest_id in session.scalars(
                select(D.digest_id)
                .where(_scope(channels, clinic_ids), D.digest_id.is_not(None), _due(now))
                .group_by(D.digest_id)
                .order_by(func.min(D.next_attempt_at), D.digest_id)
                .limit(batch)
            )
            if digest_id is not None
        ]
    claimed = []
    for digest_id in found:
        try:
            with db.write() as session:
                size = _lock(session, digest_id)
                # Every member not sent and not leased by a live worker: all of them
                # or the claim is undone.
                live = and_(D.state == "sending", D.lease_until >= now)
                taken = rowcount(
                    session.execute(
                        update(D)
                        .where(D.digest_id == digest_id, D.state != "sent", not_(live))
                        .values(
                            state="sending",
                            lease_owner=owner,
                            lease_until=now + lease,
                            attempts=D.attempts + 1,
                        )
                        .execution_options(synchronize_session=False)
                    )
                )
                if taken != size:
                    raise _Rollback
        except _Rollback:
            continue
        claimed.append(digest_id)
    return claimed


def _lock(session: Session, digest_id: str) -> int:
    """Lock a digest's row (claims and marks of one group take turns: no two UPDATEs
    of its members wait on each other's rows); its size."""
    size = session.scalar(
        select(NotificationDigest.size).where(NotificationDigest.id == digest_id).with_for_update()
    )
    assert size is not None
    return size


def _held(digest_id: str, owner: str) -> ColumnElement[bool]:
    return and_(D.digest_id == digest_id, D.state == "sending", D.lease_owner == owner)


def deliver_digests(
    db: Database,
    channels: Mapping[str, Channel],
    *,
    owner: str,
    now: datetime,
    batch: int,
    lease: timedelta,
    max_attempts: int,
    delay: Callable[[int], timedelta],
    clinic_ids: Collection[str] | None = None,
) -> DigestRun:
    """Group and send the due digest deliveries of `channels` (by name) as worker
    `owner` at `now`: up to `batch` new groups and `batch` groups claimed again, each
    one message. A failure waits `delay(attempts)`; after `max_attempts` (or a
    failure that is not retryable) the group is dead.

    Returns what was done, counted in deliveries. A channel's `DeliveryFailed` is
    recorded on every member; any other exception propagates and leaves the lease to
    expire (the group is then sent again whole, with the same key).
    """
    names = [name for name in channels if name != "in_app"]
    if not names:
        return DigestRun(0, 0, 0, 0, 0, 0)
    digests = _reclaim(
        db, names, clinic_ids, owner=owner, now=now, lease=lease, batch=batch
    ) + _group(db, names, clinic_ids, owner=owner, now=now, lease=lease, batch=batch)
    claimed = sent = retrying = dead = lost = messages = held = 0
    clock = RunClock(now)
    for digest_id in digests:
        with db.read() as session:
            digest = session.get_one(NotificationDigest, digest_id)
            quiet = quiet_at_send(
                session=session,
                clinic_id=digest.clinic_id,
                recipient=digest.recipient,
                channel=digest.channel,
                at=clock.now(),
            )
            attempts = (
                session.scalar(select(func.max(D.attempts)).where(D.digest_id == digest_id)) or 1
            )
            text = render_digest(
                digest.size,
                digest.channel,
                staff=digest.recipient.startswith("staff:"),
                reference=digest.id,
            )
            message = Message(
                recipient=digest.recipient,
                clinic_id=digest.clinic_id,
                event_id=digest.id,
                kind="digest",
                subject=text.subject,
                body=text.body,
            )
        claimed += digest.size
        if quiet is not None:  # the whole group waits, its attempt not counted
            with db.write() as session:
                _lock(session, digest_id)
                settle(session=session, held=_held(digest_id, owner), values=as_held(quiet))
            held += digest.size
            continue
        try:
            provider_id = channels[digest.channel].send(message, idempotency_key=digest.id)
        except DeliveryFailed as failed:
            final = not failed.retryable or attempts >= max_attempts
            retry_at = now + delay(attempts)
            with db.write() as session:
                _lock(session, digest_id)
                settle(
                    session=session,
                    held=_held(digest_id, owner),
                    values=as_failed(failed, final=final, retry_at=retry_at),
                )
            if final:
                dead += digest.size
                log.warning("notification digest %s is dead: %s", digest_id, failed)
            else:
                retrying += digest.size
            continue
        try:
            with db.write() as session:
                _lock(session, digest_id)
                # Every member, or none: another worker holds the group by now and
                # sends it again under the same key.
                if (
                    settle(
                        session=session, held=_held(digest_id, owner), values=as_sent(provider_id)
                    )
                    != digest.size
                ):
                    raise _Rollback
        except _Rollback:
            lost += digest.size
            continue
        sent += digest.size
        messages += 1
    return DigestRun(claimed, sent, retrying, dead, lost, messages, held)
