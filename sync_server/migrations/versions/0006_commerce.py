"""commerce decided by the server: catalogue, stock by lot, orders, prescriptions

Revision ID: 0006_commerce
Revises: 0005_payments
Create Date: 2026-12-04

- ``products`` (SKU unique per organisation, ``price >= 0``) and ``kit_components``
  (a kit's stock is its components').
- ``stock_locations`` and ``stock_lots`` with CHECKs ``on_hand >= 0``,
  ``reserved >= 0`` and ``reserved <= on_hand``: stock below zero, or more reserved
  than on hand, is impossible in the database.
- ``orders`` (with ``hold_expires_at``, ``paid_at`` and the payments domain's
  ``invoice_id``), ``order_lines`` and ``stock_reservations`` (per lot).
- ``prescriptions`` with ``0 <= quantity_remaining <= quantity_total``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import sync_server.db

revision = "0006_commerce"
down_revision = "0005_payments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("sku", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("product_class", sa.String(length=200), nullable=False),
        sa.Column("unit", sa.String(length=100), nullable=False),
        sa.Column("price", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("prescription_required", sa.Boolean(), nullable=False),
        sa.Column("hcpcs", sa.String(length=5), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("price >= 0", name="ck_products_price"),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("organisation_id", "sku", name="uq_products_org_sku"),
    )
    op.create_index(
        op.f("ix_products_organisation_id"), "products", ["organisation_id"], unique=False
    )
    op.create_table(
        "kit_components",
        sa.Column("kit_id", sa.String(length=64), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity >= 1", name="ck_kit_components_quantity"),
        sa.ForeignKeyConstraint(
            ["kit_id"],
            ["products.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("kit_id", "product_id"),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("intent_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("deliver_to", sa.String(length=20), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("hold_expires_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("invoice_id", sa.String(length=64), nullable=True),
        sa.Column("cancel_reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("total >= 0", name="ck_orders_total"),
        sa.ForeignKeyConstraint(
            ["clinic_id"],
            ["clinics.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("intent_id"),
    )
    op.create_index(op.f("ix_orders_clinic_id"), "orders", ["clinic_id"], unique=False)
    op.create_index("ix_orders_hold", "orders", ["state", "hold_expires_at"], unique=False)
    op.create_index(op.f("ix_orders_organisation_id"), "orders", ["organisation_id"], unique=False)
    op.create_index(op.f("ix_orders_patient_id"), "orders", ["patient_id"], unique=False)
    op.create_table(
        "stock_locations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("clinic_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["clinic_id"],
            ["clinics.id"],
        ),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("organisation_id", "name", name="uq_locations_org_name"),
    )
    op.create_index(
        op.f("ix_stock_locations_clinic_id"), "stock_locations", ["clinic_id"], unique=False
    )
    op.create_index(
        op.f("ix_stock_locations_organisation_id"),
        "stock_locations",
        ["organisation_id"],
        unique=False,
    )
    op.create_table(
        "prescriptions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("organisation_id", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=True),
        sa.Column("product_class", sa.String(length=200), nullable=True),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("refills", sa.Integer(), nullable=False),
        sa.Column("quantity_total", sa.Integer(), nullable=False),
        sa.Column("quantity_remaining", sa.Integer(), nullable=False),
        sa.Column("prescriber_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=False),
        sa.Column("valid_until", sa.Date(), nullable=False),
        sa.Column("revoked_at", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "product_id IS NOT NULL OR product_class IS NOT NULL", name="ck_prescriptions_item"
        ),
        sa.CheckConstraint("quantity >= 1", name="ck_prescriptions_quantity"),
        sa.CheckConstraint(
            "quantity_remaining <= quantity_total", name="ck_prescriptions_remaining_total"
        ),
        sa.CheckConstraint("quantity_remaining >= 0", name="ck_prescriptions_remaining"),
        sa.CheckConstraint("refills >= 0", name="ck_prescriptions_refills"),
        sa.ForeignKeyConstraint(
            ["organisation_id"],
            ["organisations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["prescriber_id"],
            ["providers.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_prescriptions_patient", "prescriptions", ["organisation_id", "patient_id"], unique=False
    )
    op.create_table(
        "stock_lots",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("location_id", sa.String(length=64), nullable=False),
        sa.Column("lot_code", sa.String(length=100), nullable=False),
        sa.Column("expires_on", sa.Date(), nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.Column("received_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("on_hand >= 0", name="ck_lots_on_hand"),
        sa.CheckConstraint("reserved <= on_hand", name="ck_lots_reserved_on_hand"),
        sa.CheckConstraint("reserved >= 0", name="ck_lots_reserved"),
        sa.ForeignKeyConstraint(
            ["location_id"],
            ["stock_locations.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("product_id", "location_id", "lot_code", name="uq_lots_code"),
    )
    op.create_index(
        "ix_lots_product_location",
        "stock_lots",
        ["product_id", "location_id", "expires_on"],
        unique=False,
    )
    op.create_index(op.f("ix_stock_lots_location_id"), "stock_lots", ["location_id"], unique=False)
    op.create_table(
        "order_lines",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("line_no", sa.Integer(), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("unit_price", sa.Integer(), nullable=False),
        sa.Column("prescription_id", sa.String(length=64), nullable=True),
        sa.CheckConstraint("quantity >= 1", name="ck_order_lines_quantity"),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
        ),
        sa.ForeignKeyConstraint(
            ["prescription_id"],
            ["prescriptions.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_order_lines_order_id"), "order_lines", ["order_id"], unique=False)
    op.create_table(
        "stock_reservations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("line_id", sa.String(length=64), nullable=False),
        sa.Column("lot_id", sa.String(length=64), nullable=False),
        sa.Column("product_id", sa.String(length=64), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.CheckConstraint("quantity >= 1", name="ck_reservations_quantity"),
        sa.ForeignKeyConstraint(
            ["line_id"],
            ["order_lines.id"],
        ),
        sa.ForeignKeyConstraint(
            ["lot_id"],
            ["stock_lots.id"],
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_stock_reservations_lot_id"), "stock_reservations", ["lot_id"], unique=False
    )
    op.create_index(
        op.f("ix_stock_reservations_order_id"), "stock_reservations", ["order_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_stock_reservations_lot_id"), table_name="stock_reservations")
    op.drop_index(op.f("ix_stock_reservations_order_id"), table_name="stock_reservations")
    op.drop_table("stock_reservations")
    op.drop_index(op.f("ix_order_lines_order_id"), table_name="order_lines")
    op.drop_table("order_lines")
    op.drop_index("ix_lots_product_location", table_name="stock_lots")
    op.drop_index(op.f("ix_stock_lots_location_id"), table_name="stock_lots")
    op.drop_table("stock_lots")
    op.drop_index("ix_prescriptions_patient", table_name="prescriptions")
    op.drop_table("prescriptions")
    op.drop_index(op.f("ix_stock_locations_clinic_id"), table_name="stock_locations")
    op.drop_index(op.f("ix_stock_locations_organisation_id"), table_name="stock_locations")
    op.drop_table("stock_locations")
    op.drop_index(op.f("ix_orders_clinic_id"), table_name="orders")
    op.drop_index("ix_orders_hold", table_name="orders")
    op.drop_index(op.f("ix_orders_organisation_id"), table_name="orders")
    op.drop_index(op.f("ix_orders_patient_id"), table_name="orders")
    op.drop_table("orders")
    op.drop_table("kit_components")
    op.drop_index(op.f("ix_products_organisation_id"), table_name="products")
    op.drop_table("products")
