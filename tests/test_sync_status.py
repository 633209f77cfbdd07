"""`EdgeClient.sync_status` and `on_sync_status`: what waits to go up, connected or
not, the last error, told once per change (and once per committed transaction)."""

from __future__ import annotations

from typing import Any

import pytest

from edge_sdk import (
    EdgeClient,
    MemoryHub,
    MemoryTransport,
    ServerUnreachableError,
    SyncStatus,
)
from tests.conftest import add_patient, connect


def test_a_new_store_has_nothing_pending_and_is_not_connected(tmp_store: Any) -> None:
    status = tmp_store("a").sync_status()
    assert status == SyncStatus()
    assert "not connected to no server" in status.line()


def test_pending_records_go_up_on_write_and_down_after_sync(tmp_store: Any) -> None:
    hub = MemoryHub(name="clinic")
    device: EdgeClient = tmp_store("a")
    seen: list[SyncStatus] = []
    with device.on_sync_status(seen.append):
        add_patient(device, "Okafor")
        assert [s.pending_records for s in seen] == [1]
        with device.batch():  # three writes, one transaction: one notification
            for family in ("Mensah", "Diallo", "Kim"):
                add_patient(device, family)
        assert [s.pending_records for s in seen] == [1, 4]
        device.sync(transport=connect(hub, device))
    start, end = seen[2], seen[-1]
    assert start.syncing and start.peer == "memory hub clinic"
    assert not end.syncing and end.connected and end.pending_records == 0
    assert end.last_synced_at is not None and end.last_error is None
    assert device.sync_status() == end
    # A write after a sync is pending again; an unchanged status is not told again.
    add_patient(device, "Sato")
    assert device.sync_status().pending_records == 1


class Down:
    """A transport whose server does not answer."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def push(self, message: bytes) -> Any:
        raise ServerUnreachableError("POST /v1/sync/push failed 8 times; last: ConnectError")


def test_an_outage_is_the_last_error_until_a_sync_succeeds(tmp_store: Any) -> None:
    hub = MemoryHub()
    device: EdgeClient = tmp_store("a")
    transport = connect(hub, device)
    device.sync(transport=transport)
    assert device.sync_status().connected
    add_patient(device, "Okafor")
    with pytest.raises(ServerUnreachableError):
        device.sync(transport=Down(transport))  # type: ignore[arg-type]
    status = device.sync_status()
    assert not status.connected and not status.syncing and status.pending_records == 1
    assert status.last_error_type == "ServerUnreachableError"
    assert status.last_error is not None and "failed 8 times" in status.last_error
    device.sync(transport=transport)
    status = device.sync_status()
    assert status.connected and status.last_error is None and status.pending_records == 0


def test_a_status_callback_that_fails_does_not_fail_the_write(
    tmp_store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    device: EdgeClient = tmp_store("a")

    def broken(status: SyncStatus) -> None:
        raise RuntimeError("the app's bug")

    with device.on_sync_status(broken):
        patient_id = add_patient(device, "Okafor")
    assert device.patients.get(patient_id).family_name == "Okafor"
    assert "sync status callback failed" in caplog.text


def test_a_cancelled_subscription_is_told_nothing(tmp_store: Any) -> None:
    device: EdgeClient = tmp_store("a")
    seen: list[SyncStatus] = []
    subscription = device.on_sync_status(seen.append)
    subscription.cancel()
    add_patient(device, "Okafor")
    assert seen == [] and device.sync_status().pending_records == 1


def test_deliver_runs_the_callback_where_the_app_says(tmp_store: Any) -> None:
    device: EdgeClient = tmp_store("a")
    queued: list[Any] = []
    seen: list[SyncStatus] = []
    device.on_sync_status(seen.append, deliver=queued.append)
    add_patient(device, "Okafor")
    assert seen == [] and len(queued) == 1
    queued[0]()
    assert [s.pending_records for s in seen] == [1]
