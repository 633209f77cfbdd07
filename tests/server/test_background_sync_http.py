"""The background sync loop against a real server on loopback: a long poll in flight
is abandoned within a second of `stop`, and nothing is lost across the stop."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider, SyncStatus
from sync_server.identity.enrolment import create_enrolment_token


def enrolled(tmp_path: Path, server: Any, clinic: str, name: str) -> EdgeClient:
    client = EdgeClient.init(
        tmp_path / name,
        PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
        clinic_id=clinic,
    )
    with server.db.write() as session:
        token, _ = create_enrolment_token(
            session=session, clinic_id=clinic, ttl=timedelta(minutes=10)
        )
    client.enroll(server.url, token, name=name)
    return client


def add_patient(client: EdgeClient, family: str) -> str:
    return client.patients.add(given_name="Ada", family_name=family, birth_date=date(1980, 5, 6)).id


def wait_for(client: EdgeClient, test: Any, timeout: float = 30) -> SyncStatus:
    seen = threading.Event()
    with client.on_sync_status(lambda status: seen.set() if test(status) else None):
        if not test(client.sync_status()):
            assert seen.wait(timeout), client.sync_status()
    return client.sync_status()


def test_stop_abandons_the_long_poll_and_a_restart_loses_nothing(
    tmp_path: Path, server: Any
) -> None:
    clinic = server.new_clinic()
    a, b = enrolled(tmp_path, server, clinic, "a"), enrolled(tmp_path, server, clinic, "b")
    try:
        loop = a.start_sync(wait=120)
        # The first round synced; the next is in its 120 s long poll.
        first = wait_for(a, lambda s: s.last_synced_at is not None and s.syncing)
        assert first.connected and first.peer == server.url
        threading.Event().wait(0.5)
        written_before_stop = add_patient(a, "Before")  # wakes the poll to push...
        stopper = threading.Thread(target=loop.stop, kwargs={"timeout": 5})
        stopper.start()  # ...and the stop comes at once, mid-push or mid-poll
        stopper.join(timeout=5)
        assert not stopper.is_alive() and not loop.running
        # Another device pushes while nobody listens.
        pushed_meanwhile = add_patient(b, "Meanwhile")
        b.sync()

        with a.start_sync(wait=120, push_delay=0):
            wait_for(a, lambda s: s.pending_records == 0 and s.last_synced_at is not None)
            for _ in range(300):
                if a.replica.store.held([pushed_meanwhile]):
                    break
                threading.Event().wait(0.05)
        b.sync()
        assert b.patients.get(written_before_stop).family_name == "Before"
        assert a.patients.get(pushed_meanwhile).family_name == "Meanwhile"
        assert a.sync_status().last_error is None
    finally:
        a.close()
        b.close()


def test_stop_during_a_quiet_long_poll_returns_within_a_second(tmp_path: Path, server: Any) -> None:
    clinic = server.new_clinic()
    device = enrolled(tmp_path, server, clinic, "a")
    try:
        loop = device.start_sync(wait=120)
        wait_for(device, lambda s: s.last_synced_at is not None and s.syncing)
        threading.Event().wait(0.5)  # inside the long poll
        stopper = threading.Thread(target=loop.stop, kwargs={"timeout": 5})
        stopper.start()
        stopper.join(timeout=5)
        assert not stopper.is_alive() and not loop.running
        status = device.sync_status()
        assert not status.running and not status.syncing and status.last_error is None
        device.sync()  # the kept connection works again after the interruption
    finally:
        device.close()
