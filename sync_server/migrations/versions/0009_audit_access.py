"""access control around the audit log: break-glass grants, idle sessions, patients of
documents and of device audit events

Revision ID: 0009_audit_access
Revises: 0008_device_audit
Create Date: 2026-12-04

- ``break_glass_grants``: a clinician's time-limited emergency access to a patient of
  another clinic, the reason they gave, and its review.
- ``refresh_tokens.last_used_at``: a staff session's last activity (idle expiry).
- ``documents.patient_id``: the patient a replicated record belongs to, so pulls and
  pushes are audited with their patients; filled for the documents already stored
  (from the projections, and from the documents themselves for the collections that
  have none).
- ``device_audit_patients``: the patients each device audit event names, filled for the
  events already stored (the accounting of disclosures lists them).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

import sync_server.db
from crdt import DocumentError, RecordDocument
from sync_server.audit.device_chains import patients_named
from sync_server.sync.projections import patient_of

revision = "0009_audit_access"
down_revision = "0008_device_audit"
branch_labels = None
depends_on = None

_BATCH = 500


def upgrade() -> None:
    op.create_table(
        "break_glass_grants",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("granted_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reviewed_by", sa.String(length=64), nullable=True),
        sa.Column("reviewed_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("organisation_id", "user_id", "patient_id", "reviewed_at"):
        op.create_index(
            op.f(f"ix_break_glass_grants_{column}"), "break_glass_grants", [column], unique=False
        )
    op.add_column(
        "refresh_tokens",
        sa.Column("last_used_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
    )
    op.add_column("documents", sa.Column("patient_id", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_documents_patient_id"), "documents", ["patient_id"], unique=False)
    if not context.is_offline_mode():  # `--sql`: no rows to fill in an empty database
        _fill_document_patients(op.get_bind())
    op.create_table(
        "device_audit_patients",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "seq", "patient_id"),
    )
    op.create_index(
        op.f("ix_device_audit_patients_patient_id"),
        "device_audit_patients",
        ["patient_id"],
        unique=False,
    )
    if not context.is_offline_mode():
        _fill_device_event_patients(op.get_bind())


def _fill_device_event_patients(connection: sa.Connection) -> None:
    last: tuple[str, int] = ("", 0)
    while True:
        rows = connection.execute(
            sa.text(
                "SELECT device_id, seq, canonical FROM device_audit_events "
                "WHERE device_id > :device OR (device_id = :device AND seq > :seq) "
                "ORDER BY device_id, seq LIMIT :batch"
            ),
            {"device": last[0], "seq": last[1], "batch": _BATCH},
        ).all()
        if not rows:
            return
        named = [
            {"device_id": device_id, "seq": seq, "patient_id": patient_id}
            for device_id, seq, canonical in rows
            for patient_id in patients_named(bytes(canonical))
        ]
        if named:
            connection.execute(
                sa.text(
                    "INSERT INTO device_audit_patients (device_id, seq, patient_id) "
                    "VALUES (:device_id, :seq, :patient_id)"
                ),
                named,
            )
        last = (rows[-1][0], int(rows[-1][1]))


def _fill_document_patients(connection: sa.Connection) -> None:
    connection.execute(
        sa.text("UPDATE documents SET patient_id = id WHERE collection = 'patients'")
    )
    for table in ("wounds", "assessments"):
        connection.execute(
            sa.text(
                f"UPDATE documents SET patient_id = (SELECT p.patient_id FROM {table} p "
                f"WHERE p.id = documents.id) WHERE collection = '{table}'"
            )
        )
    # Collections without a projection: read the patient from the document itself.
    last = ""
    while True:
        rows = connection.execute(
            sa.text(
                "SELECT id, collection, data FROM documents WHERE id > :last AND collection "
                "IN ('notes', 'intents', 'invoices') ORDER BY id LIMIT :batch"
            ),
            {"last": last, "batch": _BATCH},
        ).all()
        if not rows:
            return
        for doc_id, collection, data in rows:
            try:
                values = RecordDocument.load(bytes(data), device_id=None).values()
            except DocumentError:  # an unreadable document has no known patient
                continue
            patient_id = patient_of(collection, {**values, "id": doc_id})
            if patient_id is not None:
                connection.execute(
                    sa.text("UPDATE documents SET patient_id = :patient WHERE id = :id"),
                    {"patient": patient_id, "id": doc_id},
                )
        last = rows[-1][0]


def downgrade() -> None:
    op.drop_index(op.f("ix_device_audit_patients_patient_id"), table_name="device_audit_patients")
    op.drop_table("device_audit_patients")
    op.drop_index(op.f("ix_documents_patient_id"), table_name="documents")
    op.drop_column("documents", "patient_id")
    op.drop_column("refresh_tokens", "last_used_at")
    for column in ("reviewed_at", "patient_id", "user_id", "organisation_id"):
        op.drop_index(op.f(f"ix_break_glass_grants_{column}"), table_name="break_glass_grants")
    op.drop_table("break_glass_grants")
