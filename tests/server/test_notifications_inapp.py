"""In-app notices as a synced, server-owned record (SQLite and PostgreSQL): an event's
in-app delivery becomes a server-signed `Notice` in the clinic's feed, a real device
syncs it over HTTP and reads it offline from its encrypted store, the seen flag stays
on the device, and a resent delivery (a worker killed after sending) is one notice."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from crdt import Notice, notice_id
from edge_sdk import (
    Argon2Params,
    EdgeClient,
    InvalidArgumentError,
    PassphraseKeyProvider,
    ReadOnlyCollectionError,
    RecordNotFoundError,
    RetryPolicy,
)
from sync_server import notify_event
from sync_server.db import utcnow
from sync_server.errors import Invalid
from sync_server.identity.enrolment import create_enrolment_token
from sync_server.identity.tables import Clinic
from sync_server.notifications import (
    Message,
    Recipient,
    SandboxPush,
    deliver_due,
    notify,
)
from sync_server.notifications.channels import InApp, notice_detail
from sync_server.notifications.events import NoticeKind, patient_recipients, staff_recipients
from sync_server.notifications.tables import InAppNotice, NotificationDelivery
from sync_server.notifications.worker import Retry
from sync_server.sync.tables import Document

from .bookings_world import build_world, local

FAST = RetryPolicy(attempts=6, base_seconds=0.01, cap_seconds=0.05, timeout_seconds=30)
PASSPHRASE = "pass phrase"


def _provider() -> PassphraseKeyProvider:
    return PassphraseKeyProvider(PASSPHRASE, params=Argon2Params.fast())


def _enrolled(server: Any, clinic: str, path: Path) -> EdgeClient:
    with server.db.write() as session:
        token, _ = create_enrolment_token(
            session=session, clinic_id=clinic, ttl=timedelta(minutes=10)
        )
    client = EdgeClient.init(path, _provider(), clinic_id=clinic)
    try:
        client.enroll(server.url, token, name="ward tablet")
    except BaseException:
        client.close()
        raise
    return client


@pytest.fixture
def device(tmp_path: Path, server: Any) -> Iterator[tuple[EdgeClient, str, Path]]:
    """An enrolled device of a new clinic, its clinic and its store's folder."""
    clinic = server.new_clinic()
    path = tmp_path / "device"
    client = _enrolled(server, clinic, path)
    try:
        yield client, clinic, path
    finally:
        client.close()


def _notify(server: Any, clinic: str, recipients: list[Recipient], **detail: Any) -> str:
    with server.db.write() as session:
        event = notify(
            session=session,
            clinic_id=clinic,
            kind=NoticeKind.BOOKING_DECIDED,
            dedupe_key=f"test:{uuid.uuid4()}",
            recipients=recipients,
            detail=detail,
        )
    assert event is not None
    return event


def test_a_notice_reaches_the_device_and_shows_offline(
    server: Any, device: tuple[EdgeClient, str, Path]
) -> None:
    client, clinic, path = device
    patient = client.patients.add(
        given_name="Ada", family_name="Okafor", birth_date=date(1980, 5, 6)
    ).id
    client.sync(retry=FAST)
    first = _notify(
        server,
        clinic,
        patient_recipients(patient),
        booking_id="b-1",
        starts_at="2026-12-07T09:00:00+00:00",
        slot={"provider": "dr-osei"},
    )
    second = _notify(server, clinic, patient_recipients(patient) + staff_recipients(clinic))
    channels = {"in_app": InApp(server.db, server.server_signer()), "push": SandboxPush()}
    run = deliver_due(server.db, channels, owner="w", clinic_ids=[clinic])
    assert (run.claimed, run.sent, run.dead) == (5, 5, 0)
    pulled = client.sync(retry=FAST).pulled
    assert len([doc_id for doc_id in pulled if doc_id.startswith("notice:")]) == 3
    client.close()

    # Offline: a fresh client on the same store, no server involved.
    offline = EdgeClient.open(path, _provider())
    try:
        inbox = offline.notices.inbox(f"patient:{patient}")
        assert [e.notice.event_id for e in inbox] == [second, first]  # newest first
        assert all(not e.seen for e in inbox)
        notice = inbox[1].notice
        assert isinstance(notice, Notice)
        assert (notice.recipient, notice.patient_id, notice.kind) == (
            f"patient:{patient}",
            patient,
            "booking.decided",
        )
        assert notice.title and notice.clinic_id == clinic
        assert notice.detail == {
            "booking_id": "b-1",
            "slot": '{"provider": "dr-osei"}',
            "starts_at": "2026-12-07T09:00:00+00:00",
        }
        [staff] = offline.notices.inbox(f"staff:{clinic}")
        assert (staff.notice.event_id, staff.notice.patient_id) == (second, None)
        # Seen is the device's own flag: the record is unchanged, nothing to push.
        heads = offline.replica.document_heads()[notice.id]
        marked = offline.notices.mark_seen(notice.id)
        assert marked.seen and marked.seen_at is not None
        assert offline.notices.mark_seen(notice.id).seen_at == marked.seen_at
        assert offline.replica.document_heads()[notice.id] == heads
        assert [e.notice.event_id for e in offline.notices.inbox(f"patient:{patient}")] == [
            second,
            first,
        ]
        unseen = offline.notices.inbox(f"patient:{patient}", unseen_only=True)
        assert [e.notice.event_id for e in unseen] == [second]
        assert len(offline.notices.inbox(f"patient:{patient}", limit=1)) == 1
        with pytest.raises(ReadOnlyCollectionError):
            offline.notices.update(notice.id, title="changed here")
        with pytest.raises(RecordNotFoundError):
            offline.notices.mark_seen("notice:nope")
        for bad in ("nobody", "patient:", "admin:x"):
            with pytest.raises(InvalidArgumentError):
                offline.notices.inbox(bad)
    finally:
        offline.close()
    reopened = EdgeClient.open(path, _provider())
    try:
        assert [e.seen for e in reopened.notices.inbox(f"patient:{patient}")] == [False, True]
    finally:
        reopened.close()


def test_a_resent_in_app_delivery_is_one_notice(
    server: Any, device: tuple[EdgeClient, str, Path]
) -> None:
    client, clinic, _ = device
    in_app = InApp(server.db, server.server_signer())

    class DiesAfterSending:
        name = "in_app"

        def send(self, message: Message, *, idempotency_key: str) -> str:
            in_app.send(message, idempotency_key=idempotency_key)
            raise KeyboardInterrupt  # the worker is killed before it marks the delivery

    event = _notify(server, clinic, [Recipient("patient:p-7", ("in_app",))], n=1)
    with pytest.raises(KeyboardInterrupt):
        deliver_due(server.db, {"in_app": DiesAfterSending()}, owner="doomed", clinic_ids=[clinic])
    with server.db.read() as session:
        feed_before = session.scalar(select(Clinic.feed_seq).where(Clinic.id == clinic))
    later = utcnow() + timedelta(seconds=Retry().lease_seconds + 1)
    run = deliver_due(server.db, {"in_app": in_app}, owner="w2", now=later, clinic_ids=[clinic])
    assert (run.claimed, run.sent) == (1, 1)
    with server.db.read() as session:
        [delivery] = session.scalars(
            select(NotificationDelivery).where(NotificationDelivery.clinic_id == clinic)
        ).all()
        assert (delivery.state, delivery.attempts) == ("sent", 2)
        assert delivery.provider_message_id == notice_id(delivery.id)
        # The resend changed nothing: no new feed entry, one document, one row.
        assert session.scalar(select(Clinic.feed_seq).where(Clinic.id == clinic)) == feed_before
        notices = select(func.count()).select_from(Document)
        assert (
            session.scalar(
                notices.where(Document.id.like("notice:%"), Document.clinic_id == clinic)
            )
            == 1
        )
        assert (
            session.scalar(
                select(func.count()).select_from(InAppNotice).where(InAppNotice.clinic_id == clinic)
            )
            == 1
        )
    client.sync(retry=FAST)
    [entry] = client.notices.inbox("patient:p-7")
    assert entry.notice.id == notice_id(delivery.id)
    assert (entry.notice.event_id, entry.notice.detail) == (event, {"n": 1})


def test_an_in_app_delivery_to_an_address_is_dead(server: Any) -> None:
    clinic = server.new_clinic()
    _notify(server, clinic, [Recipient("someone@clinic.test", ("in_app",))])
    channels = {"in_app": InApp(server.db, server.server_signer())}
    run = deliver_due(server.db, channels, owner="w", clinic_ids=[clinic])
    assert (run.claimed, run.dead) == (1, 1)
    with server.db.read() as session:
        [delivery] = session.scalars(
            select(NotificationDelivery).where(NotificationDelivery.clinic_id == clinic)
        ).all()
        assert (delivery.last_error or "").startswith("no_in_app_recipient")
        notices = select(func.count()).select_from(Document)
        assert (
            session.scalar(
                notices.where(Document.id.like("notice:%"), Document.clinic_id == clinic)
            )
            == 0
        )


def test_a_booking_decision_reaches_the_patients_device_as_a_notice(
    server: Any, tmp_path: Path
) -> None:
    world = build_world(server)
    client = _enrolled(server, world.clinic_id, tmp_path / "device")
    try:
        patient = client.patients.add(
            given_name="Ada", family_name="Okafor", birth_date=date(1980, 5, 6)
        ).id
        asked = client.bookings.request_appointment(
            patient, world.review, local(world.monday, 9), provider_id=world.doctors[0]
        )
        client.sync(retry=FAST)  # the server decides in the push
        status = client.intent_status(asked.intent.id)
        assert status.decision is not None and status.decision.outcome is not None
        booking_id = status.decision.outcome["booking_id"]
        channels = {"in_app": InApp(server.db, server.server_signer()), "push": SandboxPush()}
        run = deliver_due(server.db, channels, owner="w", clinic_ids=[world.clinic_id])
        assert (run.sent, run.dead) == (2, 0)
        client.sync(retry=FAST)
        [entry] = client.notices.inbox(f"patient:{patient}")
        assert entry.notice.kind == "booking.decided" and not entry.seen
        assert entry.notice.detail["status"] == "accepted"
        assert entry.notice.detail["intent_id"] == asked.intent.id
        outcome = entry.notice.detail["outcome"]  # nested: kept as its JSON text
        assert isinstance(outcome, str) and json.loads(outcome)["booking_id"] == booking_id
    finally:
        client.close()
        world.close()


def test_a_long_polling_device_is_woken_by_the_notice(
    server: Any, device: tuple[EdgeClient, str, Path]
) -> None:
    client, clinic, _ = device
    client.sync(retry=FAST)
    result: list[tuple[float, list[str]]] = []

    def long_poll() -> None:
        start = time.monotonic()
        pulled = client.sync(wait=8, retry=FAST).pulled
        result.append((time.monotonic() - start, pulled))

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(0.5)  # the pull is waiting
    _notify(server, clinic, [Recipient("patient:p-9", ("in_app",))], n=9)
    # The app's own channels: its in-app channel wakes the app's feed.
    channels = {"in_app": server.app.state.notification_channels["in_app"]}
    assert deliver_due(server.db, channels, owner="w", clinic_ids=[clinic]).sent == 1
    poller.join(timeout=15)
    [(seconds, pulled)] = result
    assert [doc_id for doc_id in pulled if doc_id.startswith("notice:")]
    assert seconds < 5, f"the long poll was not woken ({seconds:.1f} s)"


def test_any_event_detail_fits_a_notice() -> None:
    hostile: dict[str, Any] = {f"key-{i:03d}-" + "k" * 80: "v" * 5000 for i in range(100)}
    hostile |= {"nested": {"a": [1, {"b": None}]}, "when": date(2026, 12, 7), "n": 3.5}
    flat = notice_detail(hostile)
    assert len(flat) == 40 and all(len(k) <= 60 for k in flat)
    assert all(v is None or isinstance(v, int | float | bool) or len(v) <= 500
               for v in flat.values())  # fmt: skip
    small = notice_detail(
        {"nested": {"a": [1]}, "when": date(2026, 12, 7), "n": 3.5, "ok": True, "x": float("nan")}
    )
    assert small == {
        "nested": '{"a": [1]}', "when": "2026-12-07", "n": 3.5, "ok": True, "x": "nan"
    }  # fmt: skip
    Notice.validate_values(
        {
            "id": "notice:d-1",
            "clinic_id": "c-1",
            "created_at": "2026-12-07T09:00:00+00:00",
            "created_by": "server",
            "updated_at": "2026-12-07T09:00:00+00:00",
            "updated_by": "server",
            "recipient": "staff:c-1",
            "kind": "booking.decided",
            "title": "An update",
            "detail": flat,
            "event_id": "e-1",
        }
    )


def test_notify_event_records_an_event_of_its_own(server: Any) -> None:
    clinic = server.new_clinic()
    key = f"announce:{uuid.uuid4()}"
    recipients = {f"staff:{clinic}": ("in_app", "email"), "patient:p-1": ("in_app",)}
    event = notify_event(
        server.settings,
        clinic_id=clinic,
        kind="order.shipped",
        dedupe_key=key,
        recipients=recipients,
        detail={"order_id": "o-1"},
    )
    assert event is not None
    again = notify_event(
        server.settings, clinic_id=clinic, kind="order.shipped", dedupe_key=key,
        recipients=recipients, detail={},
    )  # fmt: skip
    assert again is None
    with server.db.read() as session:
        assert sorted(session.execute(
            select(NotificationDelivery.channel, NotificationDelivery.recipient).where(
                NotificationDelivery.event_id == event
            )
        ).all()) == [
            ("email", f"staff:{clinic}"), ("in_app", "patient:p-1"), ("in_app", f"staff:{clinic}")
        ]  # fmt: skip
    bad: list[tuple[str, dict[str, tuple[str, ...]]]] = [
        ("no.such.kind", {"patient:p": ("in_app",)}),
        ("order.shipped", {"": ("in_app",)}),
        ("order.shipped", {"patient:p": ("fax",)}),
    ]
    for kind, to in bad:
        with pytest.raises(Invalid):
            notify_event(
                server.settings, clinic_id=clinic, kind=kind, dedupe_key=f"x:{uuid.uuid4()}",
                recipients=to, detail={},
            )  # fmt: skip
