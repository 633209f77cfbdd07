"""The background sync loop (`EdgeClient.start_sync`) over a `MemoryHub`: it pushes soon
after a local write, pulls what others push, stops at once mid-long-poll and loses
nothing, and ends on what retrying cannot fix. Over a real server:
tests/server/test_background_sync_http.py."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from edge_sdk import (
    BackgroundSync,
    DeviceRevokedError,
    EdgeClient,
    MemoryHub,
    MemoryTransport,
    ServerUnreachableError,
    SyncResult,
    SyncStatus,
    SyncTransport,
    watch_sync,
)
from tests.conftest import add_patient, connect

LONG = 60.0  # a long poll no test waits out


def when(client: EdgeClient, test: Callable[[SyncStatus], bool], timeout: float = 10) -> SyncStatus:
    """Wait (bounded) until the client's status passes `test`; the status then."""
    seen = threading.Event()

    def check(status: SyncStatus) -> None:
        if test(status):
            seen.set()

    with client.on_sync_status(check):
        if not test(client.sync_status()):
            assert seen.wait(timeout), f"status never came: {client.sync_status()}"
    return client.sync_status()


def polling(loop: BackgroundSync, hub: MemoryHub) -> None:
    """Wait (bounded) until the loop's pull is waiting in the hub."""
    for _ in range(200):
        with hub._changed:  # the hub's waiters: a pull in its long poll is one
            if hub._changed._waiters:  # type: ignore[attr-defined]
                return
        threading.Event().wait(0.05)
    raise AssertionError("the loop never long-polled")


def test_a_local_write_wakes_the_long_poll_and_goes_up(tmp_store: Any) -> None:
    hub = MemoryHub()
    device = tmp_store("a")
    with device.start_sync(transport=connect(hub, device), wait=LONG, push_delay=0) as loop:
        polling(loop, hub)
        patient_id = add_patient(device, "Okafor")
        when(device, lambda s: s.pending_records == 0 and s.last_synced_at is not None)
        assert patient_id in hub.document_heads(device.clinic_id)


def test_a_record_pushed_elsewhere_arrives_during_the_long_poll(tmp_store: Any) -> None:
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    arrived: list[SyncResult] = []
    with a.start_sync(transport=connect(hub, a), wait=LONG, on_result=arrived.append) as loop:
        polling(loop, hub)
        patient_id = add_patient(b, "Mensah")
        b.sync(transport=connect(hub, b))
        for _ in range(200):
            if arrived:
                break
            threading.Event().wait(0.05)
    assert [r.pulled for r in arrived] == [[patient_id]]
    assert a.patients.get(patient_id).family_name == "Mensah"


def test_stop_mid_long_poll_returns_at_once_and_loses_nothing(tmp_store: Any) -> None:
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    transport = connect(hub, a)
    loop = a.start_sync(transport=transport, wait=LONG)
    polling(loop, hub)
    # A write after the last push, and another device's record pushed while the poll
    # is being cancelled: neither is lost.
    written = add_patient(a, "Okafor")
    stopper = threading.Thread(target=loop.stop)
    stopper.start()
    stopper.join(timeout=5)
    assert not stopper.is_alive() and not loop.running
    pushed = add_patient(b, "Mensah")
    b.sync(transport=connect(hub, b))

    with a.start_sync(transport=transport, wait=LONG, push_delay=0) as again:
        polling(again, hub)
        when(a, lambda s: s.pending_records == 0)
        for _ in range(200):
            if a.replica.store.held([pushed]):
                break
            threading.Event().wait(0.05)
    assert written in hub.document_heads(a.clinic_id)
    assert a.patients.get(pushed).family_name == "Mensah"
    # The transport works again for a plain sync once the loop has ended.
    a.sync(transport=transport)


class Flaky:
    """A transport that cannot be interrupted, down for its first `down` calls."""

    def __init__(self, inner: MemoryTransport, down: int) -> None:
        self.inner, self.down = inner, down

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def push(self, message: bytes) -> Any:
        if self.down > 0:
            self.down -= 1
            raise ServerUnreachableError("down for the test")
        return self.inner.push(message)


def test_an_outage_is_waited_out_and_said_in_the_status(tmp_store: Any) -> None:
    hub = MemoryHub()
    device = tmp_store("a")
    add_patient(device, "Okafor")
    outages: list[ServerUnreachableError] = []
    flaky: SyncTransport = Flaky(connect(hub, device), down=2)  # type: ignore[assignment]
    errors: list[str | None] = []
    device.on_sync_status(lambda s: errors.append(s.last_error_type))
    with device.start_sync(transport=flaky, wait=LONG, pause=0.01, on_unreachable=outages.append):
        status = when(device, lambda s: s.pending_records == 0 and s.connected)
    assert len(outages) == 2
    assert "ServerUnreachableError" in errors and status.last_error is None


def test_what_retrying_cannot_fix_ends_the_loop_and_is_raised_by_stop(tmp_store: Any) -> None:
    hub = MemoryHub()
    device = tmp_store("a")
    transport = connect(hub, device)

    def revoked(*args: Any, **kwargs: Any) -> Any:
        raise DeviceRevokedError("the server has revoked this device")

    transport.push = revoked  # type: ignore[method-assign]
    add_patient(device, "Okafor")
    loop = device.start_sync(transport=transport, wait=LONG)
    assert loop.join(timeout=10)
    status = device.sync_status()
    assert not status.running and status.last_error_type == "DeviceRevokedError"
    assert isinstance(loop.error, DeviceRevokedError)
    with pytest.raises(DeviceRevokedError):
        loop.stop()
    loop.stop()  # raised once


def test_watch_sync_yields_from_the_same_loop_and_stops_when_left(tmp_store: Any) -> None:
    hub = MemoryHub()
    a, b = tmp_store("a"), tmp_store("b")
    patient_id = add_patient(b, "Mensah")
    b.sync(transport=connect(hub, b))
    watching = watch_sync(a, transport=connect(hub, a), wait=LONG)
    result = next(watching)
    assert result.pulled == [patient_id] and a.sync_status().running
    watching.close()
    assert not a.sync_status().running


def test_closing_the_client_stops_its_loop(tmp_store: Any) -> None:
    hub = MemoryHub()
    device = tmp_store("a")
    loop = device.start_sync(transport=connect(hub, device), wait=LONG)
    polling(loop, hub)
    device.close()
    assert not loop.running
