"""The server's files and secrets at rest, and its keys: private files and folders,
sealed TOTP secrets, a key per purpose, and migration 0003 bringing an existing
database (0002, with data) to all of it. On SQLite and PostgreSQL."""

from __future__ import annotations

import stat
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy.exc import IntegrityError

from edge_sdk import artifact_key_statement, model_signing_payload, verify_signature
from sync_server import Settings, Unavailable, create_app, migrate
from sync_server.db import Base, Database, UTCDateTime, utcnow
from sync_server.identity.sealing import SecretBox
from sync_server.identity.tables import Clinic, User
from sync_server.identity.users import authenticate_user, create_user
from sync_server.keyfiles import load_or_create_ed25519
from sync_server.migrating import (
    VERSION_TABLE,
    current_revision,
    head_revision,
    upgrade,
)
from sync_server.models.signing import ArtifactKey

PASSWORD = "correct horse battery staple"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- files
def test_the_embedded_database_and_keys_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    migrate(settings)
    app = create_app(settings)
    try:
        app.state.signing_key.establish()  # at startup: the key file exists now
        with app.state.db.write() as session:  # the WAL and shared memory exist now
            create_user(
                session=session,
                username="someone",
                password=PASSWORD,
                role="admin",
                organisation_id=_organisation(session),
                secret_box=app.state.secret_box,
            )
        assert mode(data) == 0o700
        files = ["server.db", "server.db-wal", "server.db-shm"]
        files += ["signing-key.pem", "artifact-key.pem", "secret-key"]
        for name in files:
            assert (data / name).exists(), name
            assert mode(data / name) == 0o600, name
    finally:
        app.state.db.dispose()


def test_an_existing_world_readable_database_is_narrowed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    migrate(settings)
    app = create_app(settings)
    app.state.signing_key.establish()
    app.state.db.dispose()
    data.chmod(0o755)
    for name in ("server.db", "signing-key.pem", "server.db-wal"):
        (data / name).touch()
        (data / name).chmod(0o644)
    # Checked while the app holds the database open: SQLite removes the WAL file when
    # the last connection closes (the app reads the deployment's keys at start).
    app = create_app(settings)
    try:
        app.state.signing_key.establish()
        assert mode(data) == 0o700
        for name in ("server.db", "signing-key.pem", "server.db-wal"):
            assert mode(data / name) == 0o600, name
    finally:
        app.state.db.dispose()


def _organisation(session: Any) -> str:
    from sync_server.identity.tenancy import ensure_organisation

    return ensure_organisation(session=session).id


# ---------------------------------------------------------------- secrets and keys
def test_totp_secrets_are_sealed_and_bound_to_their_account(server: Any) -> None:
    box: SecretBox = server.app.state.secret_box
    with server.db.write() as session:
        user, secret = create_user(
            session=session,
            username=f"sealed-{uuid.uuid4().hex[:8]}",
            password=PASSWORD,
            role="admin",
            organisation_id=server.organisation_id,
            secret_box=box,
        )
    assert secret is not None
    with server.db.read() as session:
        stored = session.get(User, user.id).totp_secret  # type: ignore[union-attr]
    assert stored is not None and secret not in stored and stored.startswith("v1.")
    assert box.open(stored, bound_to=user.id) == secret
    with pytest.raises(Unavailable, match="secret key"):
        box.open(stored, bound_to=str(uuid.uuid4()))  # copied onto another account
    with pytest.raises(Unavailable, match="secret key"):
        SecretBox(b"\x01" * 32).open(stored, bound_to=user.id)  # another key file
    assert box.seal(secret, bound_to=user.id) != stored  # a new nonce every time


def test_tokens_and_models_are_signed_by_different_keys(server: Any) -> None:
    token_key = server.app.state.signing_key
    artifact_key: ArtifactKey = server.app.state.artifact_key
    assert token_key.public_key_bytes != artifact_key.public_key_bytes
    manifest = b'{"model_id":"m"}'
    signature = artifact_key.sign_model(organisation_id="org-a", manifest_bytes=manifest)
    public = artifact_key.public_key_bytes
    assert verify_signature(public, model_signing_payload("org-a", manifest), signature)
    assert not verify_signature(public, model_signing_payload("org-b", manifest), signature)
    assert not verify_signature(public, manifest, signature)
    assert not verify_signature(
        token_key.public_key_bytes, model_signing_payload("org-a", manifest), signature
    )
    endorsement = artifact_key.endorsement(token_key)
    assert verify_signature(token_key.public_key_bytes, artifact_key_statement(public), endorsement)


# ---------------------------------------------------------------- migration 0003
def _insert(conn: sa.Connection, table: str, **values: Any) -> None:
    """A row of the old schema (no models: the tables are 0002's)."""
    columns = [
        sa.column(name, UTCDateTime if isinstance(value, datetime) else sa.LargeBinary)
        if isinstance(value, bytes | datetime)
        else sa.column(name)
        for name, value in values.items()
    ]
    conn.execute(sa.table(table, *columns).insert().values(**values))


def _old_schema_rows(url: str, token_key_file: Path) -> dict[str, Any]:
    """A database at 0002 holding what an old server held: two organisations, a clinic,
    an account with a plaintext TOTP secret, a model signed by the token key."""
    database = Database(url)
    upgrade(database, "0002")
    orgs = [str(uuid.uuid4()), str(uuid.uuid4())]
    rows: dict[str, Any] = {
        "orgs": orgs,
        "user": str(uuid.uuid4()),
        "secret": pyotp.random_base32(),
        "manifest": b'{"format":1,"model_id":"wound-seg"}',
    }
    now = utcnow()
    with database.engine.begin() as conn:
        for i, org in enumerate(orgs):
            _insert(conn, "organisations", id=org, name=f"org {i}", created_at=now)
        _insert(
            conn,
            "clinics",
            id=str(uuid.uuid4()),
            organisation_id=orgs[0],
            name="Riverside",
            feed_seq=0,
            created_at=now,
        )
        _insert(
            conn,
            "users",
            id=rows["user"],
            organisation_id=orgs[0],
            clinic_id=None,
            username="admin",
            password_hash=PasswordHasher().hash(PASSWORD),
            role="admin",
            totp_secret=rows["secret"],
            totp_last_step=None,
            active=True,
            failed_logins=3,
            locked_until=None,
            created_at=now,
        )
        _insert(
            conn,
            "published_models",
            id=str(uuid.uuid4()),
            organisation_id=orgs[0],
            model_id="wound-seg",
            version="1.0.0",
            sha256="a" * 64,
            size=10,
            manifest=rows["manifest"],
            signature=load_or_create_ed25519(token_key_file).sign(rows["manifest"]),
            published_at=now,
            published_by=rows["user"],
            active=True,
        )
    database.dispose()
    return rows


def test_upgrading_from_0002_keeps_the_data_and_seals_it(
    empty_database: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=empty_database)
    rows = _old_schema_rows(empty_database, settings.resolved_signing_key_file)

    # Without the key files the data steps refuse, and nothing changes.
    database = Database(empty_database)
    try:
        with pytest.raises(RuntimeError, match="coherency server migrate"):
            upgrade(database)
        assert current_revision(database) == "0002"
    finally:
        database.dispose()

    migration = migrate(settings)
    assert (migration.previous_revision, migration.revision) == ("0002", head_revision())
    database = Database(empty_database)
    box = SecretBox.load_or_create(settings.resolved_secret_key_file)
    try:
        with database.engine.connect() as conn:  # the schema is exactly the models'
            context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            diff = compare_metadata(context, Base.metadata)
            assert diff == [], diff
        with database.read() as session:
            user = session.get(User, rows["user"])
            assert user is not None and user.totp_secret is not None
            assert rows["secret"] not in user.totp_secret
            assert box.open(user.totp_secret, bound_to=user.id) == rows["secret"]
            signature = session.execute(
                sa.text("SELECT signature FROM published_models")
            ).scalar_one()
        artifact_key = ArtifactKey.load_or_create(settings.resolved_artifact_key_file)
        payload = model_signing_payload(rows["orgs"][0], rows["manifest"])
        assert verify_signature(artifact_key.public_key_bytes, payload, bytes(signature))
        # The admin of the old database logs in with the secret it always had.
        with database.write() as session:
            logged_in = authenticate_user(
                session=session,
                username="admin",
                password=PASSWORD,
                totp_code=pyotp.TOTP(rows["secret"]).now(),
                secret_box=box,
                settings=settings,
                client="192.0.2.1",
            )
            assert logged_in.id == rows["user"]
        # Names are now unique per organisation, not across them.
        with database.write() as session:
            session.add(
                Clinic(id=str(uuid.uuid4()), organisation_id=rows["orgs"][1], name="Riverside")
            )
            create_user(
                session=session,
                username="admin",
                password=PASSWORD,
                role="admin",
                organisation_id=rows["orgs"][1],
                with_totp=False,
            )
        with pytest.raises(IntegrityError), database.write() as session:
            session.add(
                Clinic(id=str(uuid.uuid4()), organisation_id=rows["orgs"][0], name="Riverside")
            )
    finally:
        database.dispose()


def test_0003_downgrades_to_what_0002_held(empty_database: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=empty_database)
    rows = _old_schema_rows(empty_database, settings.resolved_signing_key_file)
    migrate(settings)
    database = Database(empty_database)
    try:
        assert upgrade(database, "0002", settings=settings) == (head_revision(), "0002")
        with database.engine.connect() as conn:
            secret = conn.execute(sa.text("SELECT totp_secret FROM users")).scalar_one()
            assert secret == rows["secret"]
        upgrade(database, settings=settings)
        assert current_revision(database) == head_revision()
    finally:
        database.dispose()
