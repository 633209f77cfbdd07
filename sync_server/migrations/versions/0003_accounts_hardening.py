"""names per organisation, throttling, sealed TOTP secrets, artifact-signed models

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- Clinic names and usernames are unique per organisation, not across the server (one
  organisation no longer learns another's names from a 409).
- Account lockout is gone (``users.failed_logins``, ``users.locked_until``): failed
  logins are throttled through ``throttles`` instead, shared by every worker.
- TOTP secrets are sealed with AES-256-GCM under the server's secret key file; the
  plaintext secrets of existing accounts are sealed here.
- Published models are signed by the artifact key over an organisation-bound payload;
  existing rows are signed again here.

The data steps need the server's key files: run it through ``coherency server migrate``
(`sync_server.migrate`, which passes the settings). A database with rows to rewrite
and no settings is refused, and nothing changes.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import context, op

import sync_server.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _settings() -> Any:
    """The server settings `sync_server.migrate` handed over, or None."""
    return context.config.attributes.get("settings")


def _require_settings(what: str) -> Any:
    settings = _settings()
    if settings is None:
        raise RuntimeError(
            f"migration 0003 must rewrite {what} with the server's key files: run "
            "`coherency server migrate` (or sync_server.migrate(settings))"
        )
    return settings


def _drop_unique(batch: Any, table: str, column: str) -> None:
    """Drop the unnamed single-column unique constraint 0001 made."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        batch.drop_constraint(f"uq_{table}_{column}", type_="unique")  # named by _NAMING
        return
    if context.is_offline_mode():  # `server migrate --sql`: PostgreSQL's default name
        batch.drop_constraint(f"{table}_{column}_key", type_="unique")
        return
    for constraint in sa.inspect(bind).get_unique_constraints(table):
        if constraint["column_names"] == [column]:
            batch.drop_constraint(constraint["name"], type_="unique")


def upgrade() -> None:
    op.create_table(
        "throttles",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.Column("expires_at", sync_server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("blocked_until", sync_server.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("throttles", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_throttles_expires_at"), ["expires_at"], unique=False)

    with op.batch_alter_table("clinics", schema=None, naming_convention=_NAMING) as batch_op:
        _drop_unique(batch_op, "clinics", "name")
        batch_op.create_unique_constraint("uq_clinics_org_name", ["organisation_id", "name"])

    with op.batch_alter_table("users", schema=None, naming_convention=_NAMING) as batch_op:
        _drop_unique(batch_op, "users", "username")
        batch_op.create_unique_constraint("uq_users_org_username", ["organisation_id", "username"])
        batch_op.drop_column("failed_logins")
        batch_op.drop_column("locked_until")
        batch_op.alter_column(
            "totp_secret", existing_type=sa.String(length=64), type_=sa.String(length=200)
        )
    _seal_totp_secrets()
    _sign_models_with_the_artifact_key()


def _seal_totp_secrets() -> None:
    if context.is_offline_mode():  # a script for an empty database: no rows to seal
        return
    bind = op.get_bind()
    users = sa.table("users", sa.column("id", sa.String), sa.column("totp_secret", sa.String))
    rows = bind.execute(
        sa.select(users.c.id, users.c.totp_secret).where(users.c.totp_secret.is_not(None))
    ).all()
    if not rows:
        return
    from sync_server.identity.sealing import SecretBox, is_sealed

    settings = _require_settings("TOTP secrets")
    box = SecretBox.load_or_create(settings.resolved_secret_key_file)
    for user_id, secret in rows:
        if not is_sealed(secret):
            bind.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(totp_secret=box.seal(secret, bound_to=user_id))
            )


def _models_table() -> Any:
    return sa.table(
        "published_models",
        sa.column("id", sa.String),
        sa.column("organisation_id", sa.String),
        sa.column("manifest", sa.LargeBinary),
        sa.column("signature", sa.LargeBinary),
    )


def _sign_models_with_the_artifact_key() -> None:
    if context.is_offline_mode():
        return
    bind = op.get_bind()
    models = _models_table()
    rows = bind.execute(sa.select(models.c.id, models.c.organisation_id, models.c.manifest)).all()
    if not rows:
        return
    from sync_server.models.signing import ArtifactKey

    settings = _require_settings("published model signatures")
    key = ArtifactKey.load_or_create(settings.resolved_artifact_key_file)
    for row_id, organisation_id, manifest in rows:
        signature = key.sign_model(organisation_id=organisation_id, manifest_bytes=bytes(manifest))
        bind.execute(models.update().where(models.c.id == row_id).values(signature=signature))


def downgrade() -> None:
    bind = op.get_bind()
    users = sa.table("users", sa.column("id", sa.String), sa.column("totp_secret", sa.String))
    sealed = bind.execute(
        sa.select(users.c.id, users.c.totp_secret).where(users.c.totp_secret.is_not(None))
    ).all()
    models = _models_table()
    published = bind.execute(sa.select(models.c.id, models.c.manifest)).all()
    if sealed or published:
        from sync_server.identity.sealing import SecretBox
        from sync_server.keyfiles import load_or_create_ed25519

        settings = _require_settings("TOTP secrets and model signatures")
        box = SecretBox.load_or_create(settings.resolved_secret_key_file)
        for user_id, secret in sealed:
            bind.execute(
                users.update()
                .where(users.c.id == user_id)
                .values(totp_secret=box.open(secret, bound_to=user_id))
            )
        # Before 0003 the token key signed the manifest bytes themselves.
        token_key = load_or_create_ed25519(settings.resolved_signing_key_file)
        for row_id, manifest in published:
            bind.execute(
                models.update()
                .where(models.c.id == row_id)
                .values(signature=token_key.sign(bytes(manifest)))
            )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint("uq_users_org_username", type_="unique")
        batch_op.create_unique_constraint("uq_users_username", ["username"])
        batch_op.add_column(
            sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("locked_until", sync_server.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.alter_column(
            "totp_secret", existing_type=sa.String(length=200), type_=sa.String(length=64)
        )
    with op.batch_alter_table("clinics", schema=None) as batch_op:
        batch_op.drop_constraint("uq_clinics_org_name", type_="unique")
        batch_op.create_unique_constraint("uq_clinics_name", ["name"])
    with op.batch_alter_table("throttles", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_throttles_expires_at"))
    op.drop_table("throttles")
