"""`client.notices` on a device (in-memory hub): in-app notices the server wrote are
read offline newest first per recipient, the seen flag is the device's own (never
synced, kept per device), and a version-7 store gains the notices projection."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from crdt import Notice, RecordDocument, notice_id
from edge_sdk import EdgeClient, MemoryHub, MemoryTransport
from edge_sdk._store import SCHEMA_VERSION

CLINIC = "clinic-1"
T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _sync(client: EdgeClient, hub: MemoryHub) -> None:
    client.sync(
        transport=MemoryTransport(
            hub,
            device_id=client.device_id,
            clinic_id=client.clinic_id,
            public_key=client.identity.public_key,
        )
    )


def _server_notice(hub: MemoryHub, key: str, recipient: str, minutes: int) -> str:
    kind, _, who = recipient.partition(":")
    document = RecordDocument.create(
        Notice,
        {
            "recipient": recipient,
            "patient_id": who if kind == "patient" else None,
            "kind": "order.shipped",
            "title": f"notice {key}",
            "detail": {"order_id": key},
            "event_id": f"event-{key}",
        },
        device_id=hub.server_device_id,
        clinic_id=CLINIC,
        record_id=notice_id(key),
        now=T0 + timedelta(minutes=minutes),
    )
    hub.write_documents(CLINIC, [document])
    return document.id


def test_notices_are_newest_first_per_recipient_and_seen_per_device(tmp_store: Any) -> None:
    hub = MemoryHub(name="hub")
    a, b = tmp_store("a"), tmp_store("b")
    old = _server_notice(hub, "1", "patient:p-1", minutes=0)
    new = _server_notice(hub, "2", "patient:p-1", minutes=5)
    other = _server_notice(hub, "3", "patient:p-2", minutes=9)
    for client in (a, b):
        _sync(client, hub)
    assert [e.notice.id for e in a.notices.inbox("patient:p-1")] == [new, old]
    assert [e.notice.id for e in a.notices.inbox("patient:p-2")] == [other]
    assert a.notices.inbox("staff:clinic-1") == []
    a.notices.mark_seen(new)
    _sync(a, hub)
    _sync(b, hub)
    assert [e.seen for e in a.notices.inbox("patient:p-1")] == [True, False]
    assert [e.seen for e in b.notices.inbox("patient:p-1")] == [False, False]  # a's own flag
    assert [e.notice.id for e in a.notices.inbox("patient:p-1", unseen_only=True)] == [old]


def test_a_version_7_store_opens_as_the_current_version_with_its_notices(tmp_store: Any) -> None:
    hub = MemoryHub(name="hub")
    client = tmp_store("old")
    held = _server_notice(hub, "1", "patient:p-1", minutes=0)
    _sync(client, hub)
    store = client.replica.store
    store.execute("DROP TABLE notices")
    store.execute("DROP TABLE notices_seen")
    store.set_meta("schema_version", "7")
    client.close()
    reopened = tmp_store.open("old")
    assert reopened.replica.store.get_meta("schema_version") == str(SCHEMA_VERSION)
    [entry] = reopened.notices.inbox("patient:p-1")
    assert (entry.notice.id, entry.seen) == (held, False)
    assert reopened.notices.mark_seen(held).seen
