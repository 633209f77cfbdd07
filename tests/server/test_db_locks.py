"""A row read ``FOR UPDATE`` is the database's current row, even when the session read
it before another transaction changed it (PostgreSQL's read committed lets that commit
land between the two reads; the session must not keep its older copy). Both databases.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select, update

from crdt import Decision, RecordDocument
from sync_server.identity.tables import Clinic
from sync_server.sync.documents import write_documents


def _bump_feed_elsewhere(server: Any, clinic_id: str) -> int:
    with server.db.write() as other:
        other.execute(
            update(Clinic).where(Clinic.id == clinic_id).values(feed_seq=Clinic.feed_seq + 5)
        )
    with server.db.read() as fresh:
        return int(fresh.get(Clinic, clinic_id).feed_seq)  # type: ignore[union-attr]


def _current_feed(session: Any, clinic_id: str) -> int:
    """The clinic's feed as this transaction reads it now (a column read never comes
    from the session's objects)."""
    return int(session.scalar(select(Clinic.feed_seq).where(Clinic.id == clinic_id)))


@pytest.mark.parametrize("how", ["select", "get"])
def test_a_locking_read_replaces_the_sessions_older_copy(server: Any, how: str) -> None:
    clinic_id = server.new_clinic()
    with server.db.read() as session:
        before = session.get(Clinic, clinic_id)
        assert before is not None
        held = before.feed_seq
        now = _bump_feed_elsewhere(server, clinic_id)
        assert now == held + 5
        if how == "select":
            plain = session.execute(select(Clinic).where(Clinic.id == clinic_id)).scalar_one()
            assert plain.feed_seq == held  # an ordinary read keeps the session's copy
            locked = session.execute(
                select(Clinic).where(Clinic.id == clinic_id).with_for_update()
            ).scalar_one()
        else:
            locked = session.get(Clinic, clinic_id, with_for_update=True)
        assert locked is before
        assert locked.feed_seq == _current_feed(session, clinic_id)
        if server.backend == "postgresql":
            # Read committed: the lock reads the row as committed since. (SQLite keeps
            # one snapshot per transaction, and its writers begin IMMEDIATE, so no
            # commit lands inside a write transaction there.)
            assert locked.feed_seq == now


def test_server_documents_number_after_a_commit_the_session_did_not_see(server: Any) -> None:
    """The regression: a caller that read the clinic, then stored server documents after
    another transaction had advanced the clinic's feed, reused a taken number."""
    if server.backend == "sqlite":
        pytest.skip("SQLite writers begin IMMEDIATE: nothing commits inside a write")
    clinic_id = server.new_clinic()
    signer = server.server_signer()

    def decision(n: int) -> RecordDocument:
        return RecordDocument.create(
            Decision,
            {"intent_id": f"intent-{n}", "status": "accepted"},
            device_id=signer.device_id,
            clinic_id=clinic_id,
        )

    with server.db.write() as first:
        write_documents(session=first, clinic_id=clinic_id, documents=[decision(1)], signer=signer)
    with server.db.read() as session:
        held = session.get(Clinic, clinic_id)  # the session now holds the clinic
        assert held is not None
        now = _bump_feed_elsewhere(server, clinic_id)
        seq = write_documents(
            session=session, clinic_id=clinic_id, documents=[decision(2)], signer=signer
        )
        session.commit()
    assert seq == now + 1 == held.feed_seq
