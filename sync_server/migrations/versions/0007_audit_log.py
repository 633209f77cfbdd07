"""the audit log as a Merkle tree: leaves, subtree hashes, signed checkpoints

Revision ID: 0007_audit_log
Revises: 0006_commerce
Create Date: 2026-12-04

- ``audit_events`` gains its place in the log (``seq``, unique) and leaf hash, and the
  FHIR AuditEvent fields it lacked: the actor's ``role``, the ``operation`` (C R U D E),
  the ``purpose`` of use, the ``patients`` concerned and the caller's ``address``.
- ``audit_patients`` (which patients each event concerned), ``audit_log_head`` (one
  row: size and frontier), ``audit_nodes`` (perfect subtrees of 256 leaves and more) and
  ``audit_checkpoints`` (what the server signed).
- Events written before this revision are sealed into the log in the order they were
  written.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

import sync_server.db
from sync_server.audit.log import seal_connection

revision = "0007_audit_log"
down_revision = "0006_commerce"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", _BigId, nullable=False),
        sa.Column("origin", sa.String(length=120), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_audit_checkpoints_size"), "audit_checkpoints", ["size"], unique=False)
    op.create_table(
        "audit_log_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("frontier", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.SmallInteger(), nullable=False),
        sa.Column("index", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "index"),
    )
    op.create_table(
        "audit_patients",
        sa.Column("event_id", _BigId, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["audit_events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("event_id", "patient_id"),
    )
    op.create_index(
        op.f("ix_audit_patients_patient_id"), "audit_patients", ["patient_id"], unique=False
    )
    op.add_column("audit_events", sa.Column("seq", sa.BigInteger(), nullable=True))
    op.add_column("audit_events", sa.Column("leaf_hash", sa.LargeBinary(length=32)))
    op.add_column("audit_events", sa.Column("role", sa.String(length=20), nullable=True))
    op.add_column(
        "audit_events",
        sa.Column("operation", sa.String(length=1), server_default="E", nullable=False),
    )
    op.add_column("audit_events", sa.Column("purpose", sa.String(length=20), nullable=True))
    op.add_column("audit_events", sa.Column("patients", sa.Text(), nullable=True))
    op.add_column("audit_events", sa.Column("address", sa.String(length=64), nullable=True))
    op.create_index(op.f("ix_audit_events_actor_id"), "audit_events", ["actor_id"], unique=False)
    op.create_index(op.f("ix_audit_events_seq"), "audit_events", ["seq"], unique=True)
    op.execute(sa.text("INSERT INTO audit_log_head (id, size, frontier) VALUES (1, 0, :empty)")
               .bindparams(sa.bindparam("empty", b"", type_=sa.LargeBinary())))  # fmt: skip
    if not context.is_offline_mode():  # `--sql`: no rows to seal in an empty database
        seal_connection(op.get_bind())


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_events_seq"), table_name="audit_events")
    op.drop_index(op.f("ix_audit_events_actor_id"), table_name="audit_events")
    for column in ("address", "patients", "purpose", "operation", "role", "leaf_hash", "seq"):
        op.drop_column("audit_events", column)
    op.drop_index(op.f("ix_audit_patients_patient_id"), table_name="audit_patients")
    op.drop_table("audit_patients")
    op.drop_table("audit_nodes")
    op.drop_table("audit_log_head")
    op.drop_index(op.f("ix_audit_checkpoints_size"), table_name="audit_checkpoints")
    op.drop_table("audit_checkpoints")
