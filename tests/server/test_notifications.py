"""The notification outbox on a live server's database (SQLite and PostgreSQL): events
once per dedupe key, exactly-once delivery through racing and dying workers, backoff,
dead deliveries in the staff route, real SMTP on loopback, and no PHI outside the app."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import func, select

from sync_server.db import utcnow
from sync_server.identity.users import create_user
from sync_server.notifications import (
    DeliveryFailed,
    Message,
    Recipient,
    SandboxPush,
    SandboxSms,
    SmtpEmail,
    deliver_due,
    notify,
)
from sync_server.notifications.channels import InApp
from sync_server.notifications.events import NoticeKind
from sync_server.notifications.tables import InAppNotice, NotificationDelivery, NotificationEvent
from sync_server.notifications.worker import Retry

PHI = {
    "given": "Zebulon",
    "family": "Quixotefeather",
    "mrn": "MRN-7731-QX",
    "site": "left lateral malleolus",
    "area": "13.37 cm2",
}
"""A patient's values no message outside the app may hold."""


def _event(
    server: Any,
    clinic_id: str,
    recipients: list[Recipient],
    *,
    kind: NoticeKind = NoticeKind.ORDER_SHIPPED,
    key: str | None = None,
    detail: dict[str, Any] | None = None,
) -> str | None:
    with server.db.write() as session:
        return notify(
            session=session,
            clinic_id=clinic_id,
            kind=kind,
            dedupe_key=key or f"test:{uuid.uuid4()}",
            recipients=recipients,
            detail=detail or {"patient": PHI},
        )


def _deliveries(server: Any, clinic_id: str) -> list[NotificationDelivery]:
    with server.db.read() as session:
        return list(
            session.scalars(
                select(NotificationDelivery)
                .where(NotificationDelivery.clinic_id == clinic_id)
                .order_by(NotificationDelivery.recipient)
            )
        )


class _Died(BaseException):
    """The worker process was killed (not an error a worker handles)."""


class _DiesAfterSending:
    """A channel whose worker dies right after the provider accepted the message."""

    def __init__(self, inner: SandboxPush) -> None:
        self.name = inner.name
        self.inner = inner

    def send(self, message: Message, *, idempotency_key: str) -> str:
        self.inner.send(message, idempotency_key=idempotency_key)
        raise _Died


class _Failing:
    """A channel that fails `times` times (retryable or not), then sends."""

    def __init__(self, name: str, times: int, *, retryable: bool) -> None:
        self.name = name
        self.times = times
        self.retryable = retryable
        self.sandbox = SandboxSms()

    def send(self, message: Message, *, idempotency_key: str) -> str:
        if self.times > 0:
            self.times -= 1
            raise DeliveryFailed("provider_busy: 503", retryable=self.retryable)
        return self.sandbox.send(message, idempotency_key=idempotency_key)


# ---------------------------------------------------------------- events
def test_a_duplicated_event_is_one_event_with_one_delivery_each(server: Any) -> None:
    clinic = server.new_clinic()
    who = [Recipient("patient:p1", ("in_app", "push")), Recipient("patient:p1", ("push",))]
    first = _event(server, clinic, who, key=f"webhook:{clinic}")
    again = _event(server, clinic, who, key=f"webhook:{clinic}")
    assert first is not None and again is None
    found = _deliveries(server, clinic)
    assert sorted(d.channel for d in found) == ["in_app", "push"]
    # The database holds the rule too: a second delivery row for the same triple is refused.
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"), server.db.write() as session:
        session.add(
            NotificationDelivery(
                id=str(uuid.uuid4()),
                event_id=first,
                clinic_id=clinic,
                channel="push",
                recipient="patient:p1",
                state="pending",
                attempts=0,
                next_attempt_at=utcnow(),
            )
        )


def test_an_event_rolled_back_with_its_change_is_not_recorded(server: Any) -> None:
    clinic = server.new_clinic()
    with pytest.raises(RuntimeError), server.db.write() as session:
        notify(
            session=session,
            clinic_id=clinic,
            kind=NoticeKind.ORDER_SHIPPED,
            dedupe_key=f"rolled:{clinic}",
            recipients=[Recipient("patient:p1", ("push",))],
            detail={},
        )
        raise RuntimeError("the change failed")
    with server.db.read() as session:
        assert (
            session.scalar(select(func.count()).where(NotificationEvent.clinic_id == clinic)) == 0
        )
    assert _deliveries(server, clinic) == []


# ---------------------------------------------------------------- exactly once
def test_two_racing_workers_send_each_delivery_once(server: Any) -> None:
    clinic = server.new_clinic()
    who = [Recipient(f"patient:{n}", ("push",)) for n in range(24)]
    _event(server, clinic, who)
    push = SandboxPush()
    start = threading.Barrier(2)
    runs: list[Any] = []

    def worker(owner: str) -> None:
        start.wait()
        runs.append(deliver_due(server.db, {"push": push}, owner=owner, clinic_ids=[clinic]))

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(run.claimed for run in runs) == 24
    assert sum(run.sent for run in runs) == 24
    assert push.requests == 24  # no delivery was even attempted twice
    assert len(push.sent()) == 24
    assert {d.state for d in _deliveries(server, clinic)} == {"sent"}


def test_a_worker_killed_mid_send_is_retried_with_the_same_key_and_sent_once(
    server: Any,
) -> None:
    clinic = server.new_clinic()
    _event(server, clinic, [Recipient("patient:p1", ("push",))])
    push = SandboxPush()
    retry = Retry(lease_seconds=30)
    with pytest.raises(_Died):
        deliver_due(
            server.db, {"push": _DiesAfterSending(push)}, owner="doomed", retry=retry,
            clinic_ids=[clinic],
        )  # fmt: skip
    [left] = _deliveries(server, clinic)
    assert left.state == "sending" and left.lease_owner.startswith("doomed/")
    # While the lease lives, nobody else takes it.
    assert deliver_due(server.db, {"push": push}, owner="w2", clinic_ids=[clinic]).claimed == 0
    later = utcnow() + timedelta(seconds=31)
    run = deliver_due(server.db, {"push": push}, owner="w2", now=later, clinic_ids=[clinic])
    assert (run.claimed, run.sent) == (1, 1)
    assert push.requests == 2
    [message] = push.sent()
    assert message.idempotency_key == left.id
    [done] = _deliveries(server, clinic)
    assert (done.state, done.attempts, done.provider_message_id) == (
        "sent",
        2,
        message.provider_id,
    )


def test_a_run_whose_lease_was_taken_over_writes_nothing_even_under_the_same_worker_name(
    server: Any,
) -> None:
    """Two runs of one worker (a queue worker's job thread and its sweep thread): the
    first overruns its lease, the second takes the delivery over and is mid-send when
    the first's send fails. The first's failure must not touch the delivery, or the
    second's success would be lost and the message sent again."""
    clinic = server.new_clinic()
    _event(server, clinic, [Recipient("patient:p1", ("sms",))])
    retry = Retry(lease_seconds=30)
    first_in_send, second_in_send = threading.Event(), threading.Event()
    first_done = threading.Event()
    sms = SandboxSms()

    class Slow:
        name = "sms"

        def send(self, message: Message, *, idempotency_key: str) -> str:
            first_in_send.set()
            assert second_in_send.wait(30)
            raise DeliveryFailed("provider_busy: 503", retryable=True)

    class TakesOver:
        name = "sms"

        def send(self, message: Message, *, idempotency_key: str) -> str:
            second_in_send.set()
            assert first_done.wait(30)
            return sms.send(message, idempotency_key=idempotency_key)

    at = utcnow()
    runs: dict[str, Any] = {}

    def first() -> None:
        runs["first"] = deliver_due(
            server.db, {"sms": Slow()}, owner="w", now=at, retry=retry, clinic_ids=[clinic]
        )
        first_done.set()

    def second() -> None:
        assert first_in_send.wait(30)
        later = at + timedelta(seconds=31)  # the first run's lease has run out
        runs["second"] = deliver_due(
            server.db, {"sms": TakesOver()}, owner="w", now=later, retry=retry,
            clinic_ids=[clinic],
        )  # fmt: skip

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert (runs["second"].claimed, runs["second"].sent) == (1, 1)
    [done] = _deliveries(server, clinic)
    assert (done.state, done.attempts, done.last_error) == ("sent", 2, None)
    assert [m.idempotency_key for m in sms.sent()] == [done.id]
    tomorrow = at + timedelta(days=1)
    assert (
        deliver_due(server.db, {"sms": sms}, owner="w", now=tomorrow, clinic_ids=[clinic]).claimed
        == 0
    )


def test_a_retryable_failure_backs_off_then_sends(server: Any) -> None:
    clinic = server.new_clinic()
    _event(server, clinic, [Recipient("patient:p1", ("sms",))])
    sms = _Failing("sms", 1, retryable=True)
    retry = Retry(backoff_seconds=60)
    now = utcnow()
    first = deliver_due(
        server.db, {"sms": sms}, owner="w", now=now, retry=retry, clinic_ids=[clinic]
    )
    assert (first.claimed, first.retrying) == (1, 1)
    [waiting] = _deliveries(server, clinic)
    assert waiting.state == "pending" and waiting.attempts == 1
    assert waiting.last_error == "provider_busy: 503"
    # Jittered around 60 s: between 30 and 90 s later.
    delay = (waiting.next_attempt_at - now).total_seconds()
    assert 30 <= delay <= 90
    assert (
        deliver_due(server.db, {"sms": sms}, owner="w", now=now, clinic_ids=[clinic]).claimed == 0
    )
    second = deliver_due(
        server.db, {"sms": sms}, owner="w", now=waiting.next_attempt_at, retry=retry,
        clinic_ids=[clinic],
    )  # fmt: skip
    assert second.sent == 1
    assert len(sms.sandbox.sent()) == 1
    [sent] = _deliveries(server, clinic)
    assert (sent.state, sent.attempts, sent.last_error) == ("sent", 2, None)


def test_retries_run_out_into_dead(server: Any) -> None:
    clinic = server.new_clinic()
    _event(server, clinic, [Recipient("patient:p1", ("sms",))])
    sms = _Failing("sms", 10, retryable=True)
    retry = Retry(max_attempts=3, backoff_seconds=1)
    at = utcnow()
    for _ in range(3):
        deliver_due(server.db, {"sms": sms}, owner="w", now=at, retry=retry, clinic_ids=[clinic])
        at += timedelta(hours=1)
    [dead] = _deliveries(server, clinic)
    assert (dead.state, dead.attempts) == ("dead", 3)
    assert deliver_due(server.db, {"sms": sms}, owner="w", now=at, clinic_ids=[clinic]).claimed == 0


def _staff(server: Any, clinic_id: str, role: str = "staff") -> str:
    with server.db.write() as session:
        user, _ = create_user(
            session=session,
            username=f"notify-{uuid.uuid4().hex[:12]}",
            password="a long enough password",
            role=role,
            organisation_id=server.organisation_id,
            clinic_id=clinic_id,
            with_totp=False,
        )
    token, _ = server.app.state.signing_key.issue_access_token(
        subject=user.id,
        kind="user",
        clinic_id=clinic_id,
        organisation_id=server.organisation_id,
        role=role,
        ttl=timedelta(minutes=5),
    )
    return str(token)


def test_a_permanent_failure_is_dead_in_the_staff_route_and_staff_retry_it(server: Any) -> None:
    clinic = server.new_clinic()
    other = server.new_clinic()
    _event(server, clinic, [Recipient("patient:p1", ("sms",))])
    _event(server, other, [Recipient("patient:p2", ("sms",))])
    refusing = _Failing("sms", 2, retryable=False)
    run = deliver_due(server.db, {"sms": refusing}, owner="w", clinic_ids=[clinic, other])
    assert run.dead == 2
    [dead] = _deliveries(server, clinic)
    with server.http(_staff(server, clinic)) as staff:
        listed = staff.get("/v1/notifications/deliveries")
        assert listed.status_code == 200, listed.text
        # Only the caller's clinic; the default view is what needs a look.
        assert [(d["id"], d["state"], d["last_error"]) for d in listed.json()] == [
            (dead.id, "dead", "provider_busy: 503")
        ]
        assert "detail" not in listed.json()[0]
        [foreign] = _deliveries(server, other)
        assert staff.post(f"/v1/notifications/deliveries/{foreign.id}/retry").status_code == 404
        retried = staff.post(f"/v1/notifications/deliveries/{dead.id}/retry")
        assert retried.status_code == 200, retried.text
        assert (retried.json()["state"], retried.json()["attempts"]) == ("pending", 0)
        again = staff.post(f"/v1/notifications/deliveries/{dead.id}/retry")
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "delivery_not_dead"
        assert (
            staff.get("/v1/notifications/deliveries", params={"state": "bogus"}).status_code == 422
        )
    with server.http(_staff(server, clinic, role="clinician")) as clinician:
        assert clinician.get("/v1/notifications/deliveries").status_code == 403
    deliver_due(server.db, {"sms": refusing}, owner="w", clinic_ids=[clinic])
    [sent] = _deliveries(server, clinic)
    assert sent.state == "sent"
    assert [m.idempotency_key for m in refusing.sandbox.sent()] == [dead.id]


# ---------------------------------------------------------------- SMTP and PHI
class _Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, _Inbox]]:
    """A real SMTP server (aiosmtpd) on loopback."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def test_no_phi_leaves_the_app_by_email_sms_or_push(server: Any, smtp: tuple[int, _Inbox]) -> None:
    port, inbox = smtp
    clinic = server.new_clinic()
    settings = server.settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_from": "notices@coherency.test",
            "notification_staff_email": "staff@clinic.test",
        }
    )
    sms, push = SandboxSms(), SandboxPush()
    in_app = InApp(server.db, server.server_signer())
    channels = {"email": SmtpEmail(settings), "sms": sms, "push": push, "in_app": in_app}
    detail = {"patient": PHI, "note": f"{PHI['given']} {PHI['family']} {PHI['site']}"}
    events = {}
    for kind in NoticeKind:
        events[kind] = _event(
            server,
            clinic,
            [Recipient(f"staff:{clinic}", ("email", "sms", "push", "in_app"))],
            kind=kind,
            detail=detail,
        )
    run = deliver_due(server.db, channels, owner="w", clinic_ids=[clinic])
    assert run.sent == 4 * len(NoticeKind), run
    outside = [m.body for m in sms.sent()] + [m.body for m in push.sent()]
    assert len(outside) == 2 * len(NoticeKind)
    assert len(inbox.messages) == len(NoticeKind)  # one email per event, no more
    for mail_from, rcpt_tos, raw in inbox.messages:
        assert (mail_from, rcpt_tos) == ("notices@coherency.test", ["staff@clinic.test"])
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        delivery = parsed["X-Coherency-Delivery"]
        assert parsed["Message-ID"] == f"<{delivery}@coherency.test>"
        assert parsed["Subject"].startswith("Coherency: ")
        outside.append(raw.decode())
    for text in outside:
        for value in PHI.values():
            assert value.lower() not in text.lower()
    for body in [m.body for m in sms.sent()]:
        assert "needs review" in body or "new message from your clinic" in body
    # The detail is in the app, and only there.
    with server.db.read() as session:
        notices = list(session.scalars(select(InAppNotice).where(InAppNotice.clinic_id == clinic)))
    assert len(notices) == len(NoticeKind)
    assert all(n.detail["patient"]["mrn"] == PHI["mrn"] for n in notices)
    # A second worker run sends nothing again.
    assert deliver_due(server.db, channels, owner="w", clinic_ids=[clinic]).claimed == 0
    assert len(inbox.messages) == len(NoticeKind)


def test_email_failures_are_told_apart(server: Any, smtp: tuple[int, _Inbox]) -> None:
    port, _ = smtp
    message = Message("patient:p1", "c", "e", "order.shipped", "s", "b")
    unconfigured = SmtpEmail(server.settings.model_copy(update={"smtp_host": None}))
    with pytest.raises(DeliveryFailed) as no_host:
        unconfigured.send(message, idempotency_key="k")
    assert not no_host.value.retryable
    configured = SmtpEmail(
        server.settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port})
    )
    with pytest.raises(DeliveryFailed) as no_address:
        configured.send(message, idempotency_key="k")
    assert not no_address.value.retryable and "no_email_address" in str(no_address.value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    down = SmtpEmail(
        server.settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": closed})
    )
    with pytest.raises(DeliveryFailed) as unreachable:
        down.send(
            Message("someone@clinic.test", "c", "e", "order.shipped", "s", "b"),
            idempotency_key="k",
        )
    assert unreachable.value.retryable


# ---------------------------------------------------------------- the swept kinds (part D)

SWEPT_KINDS = (
    NoticeKind.REMINDER_24H,
    NoticeKind.REMINDER_2H,
    NoticeKind.PRESCRIPTION_EXPIRING,
    NoticeKind.WOUND_NOT_ON_TRACK,
    NoticeKind.LOW_STOCK,
)


def test_the_swept_kinds_render_without_phi_on_every_channel() -> None:
    """The scan above covers every kind; this pins who each swept kind speaks to."""
    from sync_server.notifications.templates import render

    staff = {NoticeKind.WOUND_NOT_ON_TRACK, NoticeKind.LOW_STOCK}
    for kind in SWEPT_KINDS:
        for channel in ("push", "sms", "email", "in_app"):
            text = render(kind, channel, reference="ref-1")
            for value in PHI.values():
                assert value.lower() not in (text.subject + text.body).lower()
        outside = render(kind, "sms", reference="ref-1").body
        assert ("needs review" in outside) is (kind in staff), kind
