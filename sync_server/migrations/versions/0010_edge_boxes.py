"""edge boxes: kinds of devices and enrolment tokens, and the boxes' TLS certificates

Revision ID: 0010_edge_boxes
Revises: 0009_audit_access
Create Date: 2026-12-05

- ``devices.kind`` and ``enrolment_tokens.kind``: ``device`` (every row so far) or
  ``edge`` (a clinic's edge box, and the token that enrols one).
- ``edge_boxes``: each enrolled box's self-signed certificate (PEM) and its fingerprint
  (lowercase hex SHA-256 of the DER), which the clinic's devices pin.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync_server.db

revision = "0010_edge_boxes"
down_revision = "0009_audit_access"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("devices", "enrolment_tokens"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column("kind", sa.String(length=10), server_default="device", nullable=False)
            )
    op.create_table(
        "edge_boxes",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["clinic_id"], ["clinics.id"]),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_index(op.f("ix_edge_boxes_clinic_id"), "edge_boxes", ["clinic_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_edge_boxes_clinic_id"), table_name="edge_boxes")
    op.drop_table("edge_boxes")
    for table in ("enrolment_tokens", "devices"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("kind")
