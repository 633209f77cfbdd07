"""Recipient preferences on a live server's database (SQLite and PostgreSQL): a channel
turned off gets no delivery (in-app always does), quiet hours hold a delivery to their
end (over midnight and over daylight-saving changes), digests send the due deliveries
of a (recipient, channel) as one PHI-free message, and a seeded run of events, dying
workers and changing windows delivers every event in exactly one message."""

from __future__ import annotations

import contextlib
import random
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from sync_server.db import utcnow
from sync_server.notifications import (
    DeliveryFailed,
    Message,
    Recipient,
    SandboxPush,
    SandboxSms,
    deliver_due,
    notify,
)
from sync_server.notifications.channels import InApp
from sync_server.notifications.events import NoticeKind
from sync_server.notifications.tables import (
    InAppNotice,
    NotificationDelivery,
    NotificationDigest,
    NotificationPreference,
)
from sync_server.notifications.worker import DeliveryRun, Retry

from .test_notifications import PHI, _Died, _DiesAfterSending, _Failing, _staff


def _event(server: Any, clinic: str, who: list[Recipient], at: datetime | None = None) -> str:
    with server.db.write() as session:
        event = notify(
            session=session,
            clinic_id=clinic,
            kind=NoticeKind.ORDER_SHIPPED,
            dedupe_key=f"prefs:{uuid.uuid4()}",
            recipients=who,
            detail={"patient": PHI},
            not_before=at,
        )
    assert event is not None
    return event


def _prefer(server: Any, clinic: str, recipient: str, **values: Any) -> None:
    row = {
        "email": True,
        "sms": True,
        "push": True,
        "time_zone": "UTC",
        "quiet_start": None,
        "quiet_end": None,
        "digest": "none",
        "digest_minute": None,
        "updated_at": utcnow(),
        **values,
    }
    with server.db.write() as session:
        session.merge(NotificationPreference(clinic_id=clinic, recipient=recipient, **row))


def _deliveries(server: Any, clinic: str) -> list[NotificationDelivery]:
    with server.db.read() as session:
        return list(
            session.scalars(
                select(NotificationDelivery)
                .where(NotificationDelivery.clinic_id == clinic)
                .order_by(NotificationDelivery.created_at, NotificationDelivery.id)
            )
        )


# ---------------------------------------------------------------- channels and the route
def test_a_channel_turned_off_gets_no_delivery_and_in_app_always_does(server: Any) -> None:
    clinic = server.new_clinic()
    other = server.new_clinic()
    patient = f"patient:{uuid.uuid4()}"
    with server.http(_staff(server, clinic)) as staff:
        query = {"clinic_id": clinic, "recipient": patient}
        first = staff.get("/v1/notifications/preferences", params=query)
        assert first.status_code == 200, first.text
        assert (first.json()["stored"], first.json()["push"]) == (False, True)
        body = {"clinic_id": clinic, "recipient": patient, "push": False, "sms": False}
        put = staff.put("/v1/notifications/preferences", json=body)
        assert put.status_code == 200, put.text
        got = staff.get("/v1/notifications/preferences", params=query).json()
        assert (got["stored"], got["push"], got["sms"], got["email"], got["in_app"]) == (
            True, False, False, True, True,
        )  # fmt: skip
        # Hostile or wrong input is a clear 4xx.
        for bad, status, code in (
            ({**body, "time_zone": "../../etc/passwd"}, 400, "unknown_time_zone"),
            ({**body, "time_zone": "Mars/Olympus"}, 400, "unknown_time_zone"),
            ({**body, "quiet_start": "22:00"}, 400, "invalid_quiet_hours"),
            ({**body, "quiet_start": "22:00", "quiet_end": "22:00"}, 400, "invalid_quiet_hours"),
            ({**body, "digest": "daily"}, 400, "invalid_digest"),
            ({**body, "digest": "hourly", "digest_at": "08:00"}, 400, "invalid_digest"),
            ({**body, "in_app": False}, 422, None),
            ({**body, "digest": "weekly"}, 422, None),
            ({**body, "clinic_id": other}, 404, None),
        ):
            answer = staff.put("/v1/notifications/preferences", json=bad)
            assert answer.status_code == status, (bad, answer.text)
            if code:
                assert answer.json()["error"]["code"] == code
    with server.http(_staff(server, clinic, role="clinician")) as clinician:
        assert clinician.get("/v1/notifications/preferences", params=query).status_code == 403
    _event(server, clinic, [Recipient(patient, ("in_app", "push", "sms", "email"))])
    assert sorted(d.channel for d in _deliveries(server, clinic)) == ["email", "in_app"]
    # The database holds the shapes too.
    with pytest.raises(Exception, match=r"(?i)check|constraint"):
        _prefer(server, clinic, "patient:x", quiet_start=600, quiet_end=None)


# ---------------------------------------------------------------- quiet hours
def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("zone", "start", "end", "at", "due"),
    [
        # Berlin, 22:00-07:00; the night clocks go forward (29 March 2026, 02:00 -> 03:00):
        # 23:30 CET is 22:30 UTC; 07:00 CEST is 05:00 UTC (not 06:00, a naive 7.5 h later).
        ("Europe/Berlin", "22:00", "07:00", _utc(2026, 3, 28, 22, 30), _utc(2026, 3, 29, 5)),
        # ... and back (25 October 2026, 03:00 -> 02:00): 07:00 CET is 06:00 UTC.
        ("Europe/Berlin", "22:00", "07:00", _utc(2026, 10, 24, 22, 30), _utc(2026, 10, 25, 6)),
        # After midnight, inside the window that began yesterday.
        ("Europe/Berlin", "22:00", "07:00", _utc(2026, 6, 1, 2), _utc(2026, 6, 1, 5)),
        # Outside it: as is.
        ("Europe/Berlin", "22:00", "07:00", _utc(2026, 6, 1, 12), _utc(2026, 6, 1, 12)),
        # A window within one day, New York (EDT, UTC-4).
        ("America/New_York", "13:00", "14:30", _utc(2026, 7, 1, 17, 10), _utc(2026, 7, 1, 18, 30)),
        # Berlin, 22:00-02:30, in the hour the clocks repeat (25 October 2026, 03:00
        # CEST -> 02:00 CET at 01:00 UTC): at 01:10 UTC it is 02:10 CET, the second
        # time round, and the window ends at the second 02:30, 01:30 UTC (the first
        # 02:30 CEST, 00:30 UTC, is past).
        ("Europe/Berlin", "22:00", "02:30", _utc(2026, 10, 25, 1, 10), _utc(2026, 10, 25, 1, 30)),
        # ... and at 00:10 UTC (02:10 CEST, the first time round) at the first 02:30.
        ("Europe/Berlin", "22:00", "02:30", _utc(2026, 10, 25, 0, 10), _utc(2026, 10, 25, 0, 30)),
        # A window whose end is skipped by the change (02:30 on 8 March 2026 in New
        # York does not exist): read with the offset before it, 03:30 EDT = 07:30 UTC.
        ("America/New_York", "23:00", "02:30", _utc(2026, 3, 8, 5), _utc(2026, 3, 8, 7, 30)),
    ],
)
def test_quiet_hours_hold_push_sms_and_email_until_they_end(
    server: Any, zone: str, start: str, end: str, at: datetime, due: datetime
) -> None:
    clinic = server.new_clinic()
    patient = f"patient:{uuid.uuid4()}"

    def minute(hhmm: str) -> int:
        hours, minutes = hhmm.split(":")
        return int(hours) * 60 + int(minutes)

    _prefer(
        server, clinic, patient, time_zone=zone, quiet_start=minute(start), quiet_end=minute(end)
    )
    _event(server, clinic, [Recipient(patient, ("in_app", "push", "sms", "email"))], at=at)
    found = {d.channel: d.next_attempt_at for d in _deliveries(server, clinic)}
    assert found == {"in_app": at, "push": due, "sms": due, "email": due}


def test_nothing_is_sent_in_quiet_hours_whatever_made_it_due(server: Any) -> None:
    """The worker looks at quiet hours again before each send: a retry's backoff that
    lands in them, and quiet hours set after the event, both wait for their end, the
    attempt not counted; in-app is never held."""
    clinic = server.new_clinic()
    retried, late = f"patient:{uuid.uuid4()}", f"patient:{uuid.uuid4()}"
    _prefer(server, clinic, retried, quiet_start=22 * 60, quiet_end=7 * 60)  # UTC
    _event(server, clinic, [Recipient(retried, ("sms",))], at=_utc(2026, 6, 1, 21))
    _event(server, clinic, [Recipient(late, ("push", "in_app"))], at=_utc(2026, 6, 1, 21))
    busy = _Failing("sms", 1, retryable=True)
    push = SandboxPush()
    channels = {"sms": busy, "push": push, "in_app": InApp(server.db, server.server_signer())}
    # Quiet hours set after the event, before the worker came round (a backlog).
    _prefer(server, clinic, late, quiet_start=21 * 60 + 30, quiet_end=23 * 60)
    retry = Retry(backoff_seconds=1800, backoff_max_seconds=1800)  # 15 to 45 minutes

    def worker_at(*when: int) -> DeliveryRun:
        return deliver_due(
            server.db, channels, owner="w", now=_utc(*when), retry=retry, clinic_ids=[clinic]
        )

    first = worker_at(2026, 6, 1, 21, 45)
    assert (first.sent, first.retrying, first.held) == (1, 1, 1)  # in-app; sms; push
    by = {d.channel: d for d in _deliveries(server, clinic)}
    assert (by["push"].state, by["push"].attempts) == ("pending", 0)
    assert by["push"].next_attempt_at == _utc(2026, 6, 1, 23)
    assert by["in_app"].state == "sent"
    assert _utc(2026, 6, 1, 22) <= by["sms"].next_attempt_at <= _utc(2026, 6, 1, 22, 30)

    # The sms retry's backoff fell inside 22:00-07:00: held to 07:00, not sent at night.
    night = worker_at(2026, 6, 1, 22, 40)
    assert (night.sent, night.held) == (0, 1)
    by = {d.channel: d for d in _deliveries(server, clinic)}
    assert (by["sms"].state, by["sms"].attempts) == ("pending", 1)
    assert by["sms"].next_attempt_at == _utc(2026, 6, 2, 7)
    assert busy.sandbox.sent() == [] and push.sent() == []

    at_eleven = worker_at(2026, 6, 1, 23)
    assert (at_eleven.sent, at_eleven.held) == (1, 0)  # the push; the sms is not due yet
    morning = worker_at(2026, 6, 2, 7)
    assert morning.sent == 1
    by = {d.channel: d for d in _deliveries(server, clinic)}
    assert {d.state for d in by.values()} == {"sent"}
    assert (by["sms"].attempts, by["push"].attempts) == (2, 1)
    assert [m.idempotency_key for m in busy.sandbox.sent()] == [by["sms"].id]
    assert [m.idempotency_key for m in push.sent()] == [by["push"].id]


def test_a_digest_found_in_quiet_hours_waits_whole_for_their_end(server: Any) -> None:
    clinic = server.new_clinic()
    patient = f"patient:{uuid.uuid4()}"
    _prefer(server, clinic, patient, digest="hourly")
    for minute in (5, 20, 40):
        _event(server, clinic, [Recipient(patient, ("push",))], at=_utc(2026, 6, 1, 10, minute))
    assert {d.next_attempt_at for d in _deliveries(server, clinic)} == {_utc(2026, 6, 1, 11)}
    _prefer(server, clinic, patient, digest="hourly", quiet_start=10 * 60 + 50, quiet_end=12 * 60)
    push = SandboxPush()
    held = deliver_due(
        server.db, {"push": push}, owner="w", now=_utc(2026, 6, 1, 11, 5), clinic_ids=[clinic]
    )
    assert (held.sent, held.held, held.digests) == (0, 3, 0)
    found = _deliveries(server, clinic)
    [group] = {d.digest_id for d in found}
    assert group is not None
    assert {(d.state, d.attempts, d.next_attempt_at) for d in found} == {
        ("pending", 0, _utc(2026, 6, 1, 12))
    }
    sent = deliver_due(
        server.db, {"push": push}, owner="w", now=_utc(2026, 6, 1, 12), clinic_ids=[clinic]
    )
    assert (sent.sent, sent.digests) == (3, 1)
    [message] = push.sent()
    assert message.idempotency_key == group and _count(message.body) == 3
    assert {(d.state, d.attempts) for d in _deliveries(server, clinic)} == {("sent", 1)}


# ---------------------------------------------------------------- digests
def _count(body: str) -> int:
    found = re.search(r"You have (\d+) updates? from your clinic", body)
    assert found, body
    return int(found.group(1))


def test_a_digest_of_n_events_is_one_message_with_n_and_no_phi(server: Any) -> None:
    clinic = server.new_clinic()
    patient = f"patient:{uuid.uuid4()}"
    _prefer(server, clinic, patient, digest="hourly", time_zone="Asia/Kolkata")  # UTC+5:30
    start = utcnow()
    events = [
        _event(server, clinic, [Recipient(patient, ("in_app", "push", "sms"))]) for _ in range(5)
    ]
    push, sms = SandboxPush(), SandboxSms()
    channels = {"push": push, "sms": sms, "in_app": InApp(server.db, server.server_signer())}
    now = deliver_due(server.db, channels, owner="w", now=utcnow(), clinic_ids=[clinic])
    assert (now.sent, now.digests) == (5, 0)  # in-app at once, alone
    due = {d.next_attempt_at for d in _deliveries(server, clinic) if d.channel != "in_app"}
    [window_end] = due
    local = window_end.astimezone(__import__("zoneinfo").ZoneInfo("Asia/Kolkata"))
    assert (local.minute, local.second) == (0, 0) and window_end > start
    later = deliver_due(server.db, channels, owner="w", now=window_end, clinic_ids=[clinic])
    assert (later.sent, later.digests) == (10, 2)
    for sandbox in (push, sms):
        [message] = sandbox.sent()
        assert _count(message.body) == 5
        for value in PHI.values():
            assert value not in message.body
    found = [d for d in _deliveries(server, clinic) if d.channel == "push"]
    assert {d.event_id for d in found} == set(events)
    assert {(d.state, d.digest_id, d.provider_message_id) for d in found} == {
        ("sent", push.sent()[0].idempotency_key, push.sent()[0].provider_id)
    }
    with server.db.read() as session:
        notices = session.scalars(select(InAppNotice).where(InAppNotice.clinic_id == clinic))
        assert len(list(notices)) == 5
    # A daily digest at 08:00 in Berlin: due at the next 08:00 local.
    _prefer(server, clinic, patient, digest="daily", digest_minute=480, time_zone="Europe/Berlin")
    _event(server, clinic, [Recipient(patient, ("push",))], at=_utc(2026, 3, 28, 9))
    last = _deliveries(server, clinic)[-1]
    assert (last.digest, last.next_attempt_at) == ("daily", _utc(2026, 3, 29, 6))  # 08:00 CEST


class _Dying:
    """A channel that dies (before or after the provider took the message) or fails
    with probability `p` each, drawn from `rng`."""

    def __init__(self, inner: Any, rng: random.Random, p: float) -> None:
        self.name = inner.name
        self.inner = inner
        self.rng = rng
        self.p = p

    def send(self, message: Message, *, idempotency_key: str) -> str:
        roll = self.rng.random()
        if roll < self.p:
            raise _Died
        if roll < 2 * self.p:
            raise DeliveryFailed("provider_busy: 503", retryable=True)
        sent = self.inner.send(message, idempotency_key=idempotency_key)
        if roll < 3 * self.p:
            raise _Died
        return str(sent)


def test_a_killed_digest_worker_is_retried_as_the_same_group_with_the_same_key(
    server: Any,
) -> None:
    clinic = server.new_clinic()
    patient = f"patient:{uuid.uuid4()}"
    _prefer(server, clinic, patient, digest="hourly")
    at = _utc(2026, 5, 1, 10, 15)
    for _ in range(3):
        _event(server, clinic, [Recipient(patient, ("push",))], at=at)
    push = SandboxPush()
    dying = _DiesAfterSending(push)
    retry = Retry(lease_seconds=7200)
    hour = _utc(2026, 5, 1, 11)
    with pytest.raises(_Died):
        deliver_due(
            server.db, {"push": dying}, owner="doomed", now=hour, retry=retry, clinic_ids=[clinic]
        )
    held = _deliveries(server, clinic)
    [digest_id] = {d.digest_id for d in held}
    assert {d.state for d in held} == {"sending"}
    assert all(d.lease_owner.startswith("doomed/") for d in held)
    # An event arriving meanwhile is not added to the held group: it waits for the
    # next window (12:00) and goes alone while the dead worker's lease still lives.
    _event(server, clinic, [Recipient(patient, ("push",))], at=hour)
    busy = deliver_due(
        server.db,
        {"push": push},
        owner="w2",
        now=hour + timedelta(hours=1),
        retry=retry,
        clinic_ids=[clinic],
    )
    assert (busy.sent, busy.digests) == (1, 1)
    after = hour + timedelta(seconds=7201)
    run = deliver_due(
        server.db, {"push": push}, owner="w2", now=after, retry=retry, clinic_ids=[clinic]
    )
    assert (run.sent, run.digests) == (3, 1)
    counts = {m.idempotency_key: _count(m.body) for m in push.sent()}
    assert counts[digest_id] == 3 and sorted(counts.values()) == [1, 3]
    with server.db.read() as session:
        sizes = session.scalars(
            select(NotificationDigest.size).where(NotificationDigest.clinic_id == clinic)
        )
        assert sorted(sizes) == [1, 3]


def test_a_staff_retry_of_one_dead_digest_member_brings_the_group_back_afresh(
    server: Any,
) -> None:
    clinic = server.new_clinic()
    patient = f"patient:{uuid.uuid4()}"
    _prefer(server, clinic, patient, digest="hourly")
    for _ in range(3):
        _event(server, clinic, [Recipient(patient, ("sms",))])
    [due] = {d.next_attempt_at for d in _deliveries(server, clinic)}
    retry = Retry(max_attempts=2, backoff_seconds=1, backoff_max_seconds=1)
    failing = _Failing("sms", 3, retryable=True)
    at = due
    for _ in range(2):
        deliver_due(
            server.db, {"sms": failing}, owner="w", now=at, retry=retry, clinic_ids=[clinic]
        )
        at += timedelta(minutes=5)
    members = _deliveries(server, clinic)
    assert {(d.state, d.attempts) for d in members} == {("dead", 2)}
    with server.http(_staff(server, clinic)) as staff:
        answer = staff.post(f"/v1/notifications/deliveries/{members[0].id}/retry")
        assert answer.status_code == 200, answer.text
    assert {(d.state, d.attempts) for d in _deliveries(server, clinic)} == {("pending", 0)}
    # One more failure (the third) is a retry, not the group's death: the attempts
    # were counted afresh for every member.
    again = deliver_due(
        server.db, {"sms": failing}, owner="w", now=at, retry=retry, clinic_ids=[clinic]
    )
    assert (again.retrying, again.dead) == (3, 0)
    sent = deliver_due(
        server.db, {"sms": failing}, owner="w", now=at + timedelta(hours=1), retry=retry,
        clinic_ids=[clinic],
    )  # fmt: skip
    assert (sent.sent, sent.digests) == (3, 1)
    [message] = failing.sandbox.sent()
    assert _count(message.body) == 3


def test_racing_workers_group_each_event_into_one_digest(server: Any) -> None:
    clinic = server.new_clinic()
    patients = [f"patient:{uuid.uuid4()}" for _ in range(5)]
    for patient in patients:
        _prefer(server, clinic, patient, digest="hourly", time_zone="America/New_York")
    at = _utc(2026, 11, 1, 5, 20)  # 01:20 EDT, the hour New York's clocks fall back
    for _ in range(6):
        _event(server, clinic, [Recipient(p, ("push", "sms")) for p in patients], at=at)
    # The window closes one elapsed hour after 01:00 EDT: 06:00 UTC (01:00 EST).
    assert {d.next_attempt_at for d in _deliveries(server, clinic)} == {_utc(2026, 11, 1, 6)}
    push, sms = SandboxPush(), SandboxSms()
    start = threading.Barrier(4)
    runs: list[Any] = []

    def worker(owner: str) -> None:
        start.wait()
        runs.append(
            deliver_due(
                server.db,
                {"push": push, "sms": sms},
                owner=owner,
                now=at + timedelta(hours=1),
                batch=3,
                clinic_ids=[clinic],
            )
        )

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Batches of 3 groups per worker: what the racers left, one more run sends.
    deliver_due(
        server.db, {"push": push, "sms": sms}, owner="w", now=at + timedelta(hours=1),
        clinic_ids=[clinic],
    )  # fmt: skip
    assert len(runs) == 4
    for box in (push, sms):
        assert sorted(m.recipient for m in box.sent()) == sorted(patients)
        assert [_count(m.body) for m in box.sent()] == [6] * 5
        assert box.requests == 5  # no group was even attempted twice
    assert {d.state for d in _deliveries(server, clinic)} == {"sent"}


# ---------------------------------------------------------------- seeded run
@pytest.mark.parametrize("seed", [7, 1234])
def test_seeded_events_crashes_and_windows_deliver_every_event_once(server: Any, seed: int) -> None:
    rng = random.Random(seed)
    clinic = server.new_clinic()
    patients = [f"patient:{uuid.uuid4()}" for _ in range(3)]
    zones = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"]
    sandboxes = {"push": SandboxPush(), "sms": SandboxSms()}
    channels = {name: _Dying(box, rng, p=0.08) for name, box in sandboxes.items()}
    retry = Retry(
        max_attempts=1000,
        backoff_seconds=30,
        backoff_max_seconds=600,
        lease_seconds=90,
        rng=random.Random(seed),  # the backoff's jitter too: a failing seed repeats
    )
    clock = _utc(2026, 3, 28, 18)  # over the night of a DST change in Europe
    events: dict[str, set[str]] = {}  # event id -> addresses told (push and sms)
    for _ in range(120):
        if rng.random() < 0.15:
            digest = rng.choice(["none", "hourly", "daily"])
            start = rng.randrange(1440) if rng.random() < 0.5 else None
            _prefer(
                server,
                clinic,
                rng.choice(patients),
                time_zone=rng.choice(zones),
                digest=digest,
                digest_minute=rng.randrange(1440) if digest == "daily" else None,
                quiet_start=start,
                quiet_end=None if start is None else (start + rng.randrange(30, 600)) % 1440,
            )
        told = rng.sample(patients, rng.randint(1, 2))
        event = _event(server, clinic, [Recipient(p, ("push", "sms")) for p in told], at=clock)
        events[event] = set(told)
        clock += timedelta(minutes=rng.randint(1, 40))
        if rng.random() < 0.4:
            with contextlib.suppress(_Died):
                deliver_due(
                    server.db,
                    channels,
                    owner=f"w{rng.randrange(3)}",
                    now=clock,
                    retry=retry,
                    clinic_ids=[clinic],
                )
    # Then time runs on, workers keep dying now and then, until nothing is left.
    for _ in range(400):
        left = [d for d in _deliveries(server, clinic) if d.state != "sent"]
        if not left:
            break
        assert {d.state for d in left} <= {"pending", "sending"}
        clock += timedelta(minutes=rng.randint(5, 120))
        with contextlib.suppress(_Died):
            deliver_due(
                server.db,
                channels,
                owner=f"w{rng.randrange(3)}",
                now=clock,
                retry=retry,
                clinic_ids=[clinic],
            )
    found = _deliveries(server, clinic)
    assert found and {d.state for d in found} == {"sent"}
    # Every (event, channel, recipient) is one delivery, and in exactly one message.
    assert sorted((d.event_id, d.channel, d.recipient) for d in found) == sorted(
        (e, c, p) for e, who in events.items() for c in ("push", "sms") for p in who
    )
    for name, box in sandboxes.items():
        messages = {m.idempotency_key: m for m in box.sent()}
        mine = [d for d in found if d.channel == name]
        by_key: dict[str, list[NotificationDelivery]] = {}
        for d in mine:
            by_key.setdefault(d.digest_id or d.id, []).append(d)
        assert set(by_key) == set(messages)  # no message lost, none extra
        for key, members in by_key.items():
            message = messages[key]
            assert {d.recipient for d in members} == {message.recipient}
            assert {d.provider_message_id for d in members} == {message.provider_id}
            if members[0].digest_id:
                assert _count(message.body) == len(members)
        # Each message was sent once by the provider, whatever the retries.
        assert len(box.sent()) == len(messages)
