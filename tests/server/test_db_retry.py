"""Writes that the database aborts to break a deadlock are run again, so two pushes
that lock the same rows in opposite orders both land (PostgreSQL detects the deadlock
and aborts one; SQLite's single writer never deadlocks). Both databases."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from sync_server import Unavailable
from sync_server.identity.tables import Clinic


def test_a_transaction_aborted_by_a_deadlock_runs_again(server: Any) -> None:
    first, second = server.new_clinic(), server.new_clinic()
    barrier = threading.Barrier(2, timeout=5)
    attempts = {"a": 0, "b": 0}
    errors: list[BaseException] = []

    def locker(name: str, order: tuple[str, str]) -> None:
        def work(session: Session) -> None:
            attempts[name] += 1
            session.execute(select(Clinic).where(Clinic.id == order[0]).with_for_update())
            if attempts[name] == 1 and server.backend == "postgresql":
                barrier.wait()  # both hold their first row: the second locks cross
            session.execute(select(Clinic).where(Clinic.id == order[1]).with_for_update())
            clinic = session.get(Clinic, order[1])
            assert clinic is not None
            clinic.feed_seq += 1

        try:
            server.db.write_retrying(work)
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    threads = [
        threading.Thread(target=locker, args=("a", (first, second))),
        threading.Thread(target=locker, args=("b", (second, first))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with server.db.read() as session:
        assert session.get(Clinic, first).feed_seq == 1  # type: ignore[union-attr]
        assert session.get(Clinic, second).feed_seq == 1  # type: ignore[union-attr]
    if server.backend == "postgresql":
        assert sorted(attempts.values()) == [1, 2]  # one was aborted and ran again


def test_other_database_errors_are_not_retried(server: Any) -> None:
    calls = 0

    def work(session: Session) -> None:
        nonlocal calls
        calls += 1
        session.add(Clinic(id="x" * 65, organisation_id="no-such-org", name="bad"))
        session.flush()

    with pytest.raises(Exception) as raised:
        server.db.write_retrying(work)
    assert not isinstance(raised.value, Unavailable)
    assert calls == 1
