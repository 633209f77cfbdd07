"""payments: invoices numbered without gaps, payments, refunds, ledger, idempotency keys

Revision ID: 0005_payments
Revises: 0004
Create Date: 2026-12-04

- ``invoice_counters`` (one row per organisation: the last invoice number), ``invoices``
  and ``invoice_lines``; CHECKs: never paid past the total, refunded within paid.
- ``payments`` and ``refunds`` (unique idempotency keys; CHECK refunded <= captured).
- ``ledger_transactions`` (unique kind and reference: each thing posted once) and
  ``ledger_postings``, with triggers refusing UPDATE and DELETE of postings.
- ``idempotency_keys`` (REST Idempotency-Key: unique per caller, route and key) and
  ``payment_webhook_events`` (gateway events applied, by id).

Self-contained: no foreign key to any commerce table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync_server.db

revision = "0005_payments"
down_revision = "0004"
branch_labels = None
depends_on = None

_IMMUTABLE = "ledger postings are never changed; post a reversal"


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("scope", "route", "key", name="uq_idempotency_scope_route_key"),
    )
    op.create_index(
        op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"], unique=False
    )
    op.create_table(
        "payment_webhook_events",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=60), nullable=False),
        sa.Column("outcome", sa.String(length=40), nullable=False),
        sa.Column("received_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "invoice_counters",
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.CheckConstraint("last_number >= 0", name="ck_invoice_counters_positive"),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.PrimaryKeyConstraint("organisation_id"),
    )
    op.create_table(
        "ledger_transactions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("reference_id", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("reverses_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["reverses_id"],
            ["ledger_transactions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "reference_id", name="uq_ledger_kind_reference"),
    )
    op.create_index(
        op.f("ix_ledger_transactions_invoice_id"),
        "ledger_transactions",
        ["invoice_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_ledger_transactions_organisation_id"),
        "ledger_transactions",
        ["organisation_id"],
        unique=False,
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("payer", sa.String(length=200), nullable=True),
        sa.Column("number", sa.String(length=40), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("paid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("pending", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("refunded", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("issued_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("due_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("void_reason", sa.String(length=500), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("published_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("paid + pending <= total", name="ck_invoices_not_overpaid"),
        sa.CheckConstraint("paid >= 0 AND pending >= 0", name="ck_invoices_paid_pending"),
        sa.CheckConstraint("refunded >= 0 AND refunded <= paid", name="ck_invoices_refunded"),
        sa.CheckConstraint("total >= 0", name="ck_invoices_total"),
        sa.ForeignKeyConstraint(
            ["clinic_id"],
            ["clinics.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("organisation_id", "number", name="uq_invoices_org_number"),
    )
    op.create_index(op.f("ix_invoices_clinic_id"), "invoices", ["clinic_id"], unique=False)
    op.create_index(
        op.f("ix_invoices_organisation_id"), "invoices", ["organisation_id"], unique=False
    )
    op.create_index(op.f("ix_invoices_patient_id"), "invoices", ["patient_id"], unique=False)
    op.create_table(
        "ledger_postings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("transaction_id", sa.String(length=64), nullable=False),
        sa.Column("account", sa.String(length=200), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("amount <> 0", name="ck_ledger_postings_nonzero"),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_ledger_postings_account"), "ledger_postings", ["account"], unique=False
    )
    op.create_index(
        op.f("ix_ledger_postings_transaction_id"),
        "ledger_postings",
        ["transaction_id"],
        unique=False,
    )
    op.create_table(
        "invoice_lines",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("reference_id", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column(
            "unit_price", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.CheckConstraint("amount = quantity * unit_price", name="ck_invoice_lines_amount"),
        sa.CheckConstraint("quantity >= 1", name="ck_invoice_lines_quantity"),
        sa.CheckConstraint("unit_price >= 0", name="ck_invoice_lines_price"),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_invoice_lines_invoice_id"), "invoice_lines", ["invoice_id"], unique=False
    )
    op.create_table(
        "payments",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payment_method", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("captured", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("refunded", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("gateway_charge_id", sa.String(length=100), nullable=True),
        sa.Column("failure_reason", sa.String(length=500), nullable=True),
        sa.Column("intent_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.CheckConstraint("amount > 0", name="ck_payments_amount"),
        sa.CheckConstraint("captured >= 0 AND captured <= amount", name="ck_payments_captured"),
        sa.CheckConstraint("refunded >= 0 AND refunded <= captured", name="ck_payments_refunded"),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index(op.f("ix_payments_invoice_id"), "payments", ["invoice_id"], unique=False)
    op.create_index(
        op.f("ix_payments_organisation_id"), "payments", ["organisation_id"], unique=False
    )
    op.create_index("ix_payments_status", "payments", ["status"], unique=False)
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=False),
        sa.Column("invoice_id", sa.String(length=64), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=False),
        sa.Column("amount", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("gateway_refund_id", sa.String(length=100), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_refunds_amount"),
        sa.ForeignKeyConstraint(
            ["invoice_id"],
            ["invoices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["payment_id"],
            ["payments.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index(op.f("ix_refunds_invoice_id"), "refunds", ["invoice_id"], unique=False)
    op.create_index(
        op.f("ix_refunds_organisation_id"), "refunds", ["organisation_id"], unique=False
    )
    op.create_index(op.f("ix_refunds_payment_id"), "refunds", ["payment_id"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION ledger_postings_immutable() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION '{_IMMUTABLE}'; END; $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER ledger_postings_immutable BEFORE UPDATE OR DELETE ON "
            "ledger_postings FOR EACH ROW EXECUTE FUNCTION ledger_postings_immutable()"
        )
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER ledger_postings_no_{action.lower()} BEFORE {action} ON "
                f"ledger_postings BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS ledger_postings_immutable ON ledger_postings")
        op.execute("DROP FUNCTION IF EXISTS ledger_postings_immutable()")
    else:
        op.execute("DROP TRIGGER IF EXISTS ledger_postings_no_update")
        op.execute("DROP TRIGGER IF EXISTS ledger_postings_no_delete")
    op.drop_index(op.f("ix_refunds_payment_id"), table_name="refunds")
    op.drop_index(op.f("ix_refunds_organisation_id"), table_name="refunds")
    op.drop_index(op.f("ix_refunds_invoice_id"), table_name="refunds")
    op.drop_table("refunds")
    op.drop_index("ix_payments_status", table_name="payments")
    op.drop_index(op.f("ix_payments_organisation_id"), table_name="payments")
    op.drop_index(op.f("ix_payments_invoice_id"), table_name="payments")
    op.drop_table("payments")
    op.drop_index(op.f("ix_invoice_lines_invoice_id"), table_name="invoice_lines")
    op.drop_table("invoice_lines")
    op.drop_index(op.f("ix_ledger_postings_transaction_id"), table_name="ledger_postings")
    op.drop_index(op.f("ix_ledger_postings_account"), table_name="ledger_postings")
    op.drop_table("ledger_postings")
    op.drop_index(op.f("ix_invoices_patient_id"), table_name="invoices")
    op.drop_index(op.f("ix_invoices_organisation_id"), table_name="invoices")
    op.drop_index(op.f("ix_invoices_clinic_id"), table_name="invoices")
    op.drop_table("invoices")
    op.drop_index(op.f("ix_ledger_transactions_organisation_id"), table_name="ledger_transactions")
    op.drop_index(op.f("ix_ledger_transactions_invoice_id"), table_name="ledger_transactions")
    op.drop_table("ledger_transactions")
    op.drop_table("invoice_counters")
    op.drop_table("payment_webhook_events")
    op.drop_index(op.f("ix_idempotency_keys_created_at"), table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
