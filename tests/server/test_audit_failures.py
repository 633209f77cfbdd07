"""No unaudited access on the server: when the audit row cannot be written, the read or
write it belongs to does not happen (503 ``audit_unavailable``, nothing returned,
nothing stored), and once the audit log is back everything works and the log verifies.

The audit store is made to fail with a database trigger that refuses every insert into
``audit_events``, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from sync_server import ThreadedServer, create_app, migrate
from sync_server.audit.tables import AuditEvent
from sync_server.audit.verify import verify_log
from sync_server.db import Database
from sync_server.identity.tables import Clinic, Organisation
from sync_server.identity.users import create_user
from sync_server.sync.tables import PatientRow

from .conftest import make_settings

FAIL_SQLITE = """
CREATE TRIGGER audit_down BEFORE INSERT ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit store down'); END
"""
FAIL_POSTGRES = [
    """CREATE FUNCTION audit_down() RETURNS trigger LANGUAGE plpgsql AS
       $$ BEGIN RAISE EXCEPTION 'audit store down'; END $$""",
    """CREATE TRIGGER audit_down BEFORE INSERT ON audit_events
       FOR EACH ROW EXECUTE FUNCTION audit_down()""",
]


@dataclass
class Private:
    db: Database
    app: Any
    url: str
    clinic_id: str
    organisation_id: str

    def staff(self) -> httpx.Client:
        with self.db.write() as session:
            user, _ = create_user(
                session=session,
                username=f"admin-{uuid.uuid4().hex[:8]}",
                password="a long admin password",
                role="admin",
                organisation_id=self.organisation_id,
                with_totp=False,
            )
        token, _ = self.app.state.signing_key.issue_access_token(
            subject=user.id,
            kind="user",
            clinic_id=None,
            organisation_id=self.organisation_id,
            role="admin",
            ttl=timedelta(minutes=5),
        )
        return httpx.Client(
            base_url=self.url, headers={"authorization": f"Bearer {token}"}, timeout=30
        )

    def break_audit(self) -> None:
        with self.db.engine.begin() as connection:
            if self.db.sqlite:
                connection.exec_driver_sql(FAIL_SQLITE)
            else:
                for statement in FAIL_POSTGRES:
                    connection.exec_driver_sql(statement)

    def mend_audit(self) -> None:
        with self.db.engine.begin() as connection:
            connection.exec_driver_sql(
                "DROP TRIGGER audit_down" + ("" if self.db.sqlite else " ON audit_events")
            )
            if not self.db.sqlite:
                connection.exec_driver_sql("DROP FUNCTION audit_down()")


@pytest.fixture
def private(empty_database: str, tmp_path: Path) -> Iterator[Private]:
    settings = make_settings(tmp_path, empty_database)
    migrate(settings)
    app = create_app(settings)
    live = ThreadedServer(app)
    live.start()
    db: Database = app.state.db
    organisation_id, clinic_id = str(uuid.uuid4()), str(uuid.uuid4())
    with db.write() as session:
        session.add(Organisation(id=organisation_id, name="audited"))
        session.flush()
        session.add(Clinic(id=clinic_id, organisation_id=organisation_id, name="c", feed_seq=0))
    try:
        yield Private(db, app, live.url, clinic_id, organisation_id)
    finally:
        live.stop()


def add_patient(private: Private, family: str) -> str:
    patient_id = str(uuid.uuid4())
    record = {"id": patient_id, "given_name": "Ines", "family_name": family}
    with private.db.write() as session:
        session.add(
            PatientRow(
                id=patient_id,
                clinic_id=private.clinic_id,
                deleted=False,
                conflicted=False,
                updated_at="2026-11-01T10:00:00Z",
                record=json.dumps(record),
                given_name="Ines",
                family_name=family,
                birth_date="1950-01-02",
                sex="female",
                mrn=None,
            )
        )
    return patient_id


def audit_rows(private: Private) -> int:
    with private.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEvent)) or 0)


def test_a_read_whose_audit_row_cannot_be_written_returns_nothing(private: Private) -> None:
    patient_id = add_patient(private, "Quillfeather")
    with private.staff() as staff:
        assert staff.get(f"/v1/patients/{patient_id}").status_code == 200
        before = audit_rows(private)
        private.break_audit()
        refused = staff.get(f"/v1/patients/{patient_id}")
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "audit_unavailable"
        assert "Quillfeather" not in refused.text
        listed = staff.get("/v1/patients", params={"q": "Quillfeather"})
        assert listed.status_code == 503 and "Quillfeather" not in listed.text
        assert audit_rows(private) == before

        # A write whose audit row fails is not made either.
        created = staff.post("/v1/admin/clinics", json={"name": "never made"})
        assert created.status_code == 503, created.text
        with private.db.read() as session:
            names = session.scalars(select(Clinic.name)).all()
        assert "never made" not in names

        private.mend_audit()
        assert staff.get(f"/v1/patients/{patient_id}").status_code == 200
        assert staff.post("/v1/admin/clinics", json={"name": "made"}).status_code == 201
    with private.db.read() as session:
        report = verify_log(
            session=session, public_key=private.app.state.artifact_key.public_key_bytes
        )
        gapless = session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)).all()
    assert report.ok, report.problems
    assert gapless == list(range(len(gapless))) and len(gapless) == before + 2


def test_the_leaf_order_survives_a_failed_transaction(private: Private) -> None:
    """A transaction that failed after taking leaves gives them back (its rollback
    undoes the head too): the next events take the same places, with no gap."""
    patient_id = add_patient(private, "Ashdown")
    with private.staff() as staff:
        private.break_audit()
        for _ in range(3):
            assert staff.get(f"/v1/patients/{patient_id}").status_code == 503
        private.mend_audit()
        assert staff.get(f"/v1/patients/{patient_id}").status_code == 200
    with private.db.read() as session:
        head = session.execute(text("SELECT size FROM audit_log_head")).scalar_one()
        assert head == session.scalar(select(func.count()).select_from(AuditEvent))
