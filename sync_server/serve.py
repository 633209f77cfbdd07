"""What the ``coherency server ...`` commands do, as plain functions.

The command line (`cli/_server.py`) parses options and prints results; everything
else is here: building `Settings` from options with ``COHERENCY_SERVER_*`` fallback,
migrating, creating the first admin, issuing enrolment tokens and serving with uvicorn.
Every failure a user can cause or fix (a bad setting, an unreachable or unmigrated
database, a taken username, a busy port) is raised as a `ServerError` (the server's one
error tree), which the command line turns into one line and an exit code. No traceback
reaches a user.

Several workers (``workers > 1``) need an import string: uvicorn starts each worker
with `app_from_env`, which rebuilds the settings from the ``COHERENCY_SERVER_*``
variables `serve` exports.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from sync_server._app import create_app
from sync_server._blobs import BlobBackendError
from sync_server._db import Database
from sync_server._errors import Conflict, Invalid, NotFound, Unavailable, Unprocessable
from sync_server._identity import (
    create_enrolment_token,
    create_user,
    ensure_clinic,
    ensure_organisation,
    totp_uri,
)
from sync_server._migrate import current_revision, head_revision, upgrade
from sync_server._observability import configure_logging
from sync_server._settings import Settings

__all__ = [
    "ENV_PREFIX",
    "CreatedAdmin",
    "IssuedEnrolmentToken",
    "Migration",
    "Serving",
    "app_from_env",
    "create_admin",
    "database_label",
    "export_settings_env",
    "issue_enrolment_token",
    "migrate_database",
    "parse_duration",
    "serve",
    "settings_from",
]

log = logging.getLogger("sync_server.admin")

ENV_PREFIX = "COHERENCY_SERVER_"


# ------------------------------------------------------------------------- settings
def settings_from(options: Mapping[str, Any]) -> Settings:
    """Settings from command-line options; options left as None come from the
    ``COHERENCY_SERVER_*`` environment, else the defaults.

    Raises:
        Invalid: A value (given or from the environment) is not valid.
    """
    given = {name: value for name, value in options.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error.get("loc", ()))
            source = "option" if field in given else f"{ENV_PREFIX}{field.upper()}"
            problems.append(f"{field} ({source}): {error.get('msg', 'invalid')}")
        raise Invalid("invalid server setting " + "; ".join(problems)) from None


def export_settings_env(settings: Settings) -> dict[str, str]:
    """`settings` as ``COHERENCY_SERVER_*`` variables that rebuild them in a worker.

    Paths are made absolute, so a worker started elsewhere finds the same files.
    Fields that are None are left out (their default applies).
    """
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = value.resolve()
        env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
    return env


def database_label(url: str) -> str:
    """The database URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


# ------------------------------------------------------------------------- database
def _driver_message(exc: BaseException) -> str:
    """The first line of a database driver's error, without SQLAlchemy's boilerplate."""
    original = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(original).splitlines() if line.strip()]
    return lines[0] if lines else type(original).__name__


@contextmanager
def _database(settings: Settings, *, must_exist: bool) -> Iterator[Database]:
    """The settings' database, with driver errors translated to `Unavailable`.

    Raises:
        Invalid: Not a usable database URL.
        NotFound: `must_exist` and the SQLite file is missing.
        Unavailable: The database failed.
    """
    url = settings.resolved_database_url
    label = database_label(url)
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise Invalid(f"not a database URL: {label}") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database or "")
        if must_exist and not path.exists():
            raise NotFound(
                f"no server database at {path}: run `coherency server migrate` first "
                "(or give --data-dir / --database-url)"
            )
        if not must_exist:
            path.parent.mkdir(parents=True, exist_ok=True)
    try:
        database = Database(url)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise Invalid(f"cannot use the database URL {label}: {exc}") from None
    try:
        yield database
    except SQLAlchemyError as exc:
        raise Unavailable(f"database {label} failed: {_driver_message(exc)}") from None
    finally:
        database.dispose()


def _require_head(database: Database) -> str:
    """The schema revision, which must be the newest this server ships."""
    have, want = current_revision(database), head_revision()
    if have != want:
        raise Conflict(
            f"the database {database_label(database.url)} is at schema "
            f"{have or 'nothing (empty)'}, this server needs {want}: run "
            "`coherency server migrate`"
        )
    return want


@dataclass(frozen=True, slots=True)
class Migration:
    """The outcome of `migrate_database`."""

    database: str
    previous_revision: str | None
    revision: str

    @property
    def changed(self) -> bool:
        """True if the schema moved."""
        return self.previous_revision != self.revision


def migrate_database(settings: Settings) -> Migration:
    """Create or upgrade the schema to the newest revision.

    Raises:
        Invalid: Not a usable database URL.
        Unavailable: The database cannot be reached or migrated.
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with _database(settings, must_exist=False) as database:
        previous = current_revision(database)
        upgrade(database)
        revision = current_revision(database)
    if revision is None:  # pragma: no cover - alembic always stamps
        raise Unavailable("migration left no schema revision")
    return Migration(database_label(settings.resolved_database_url), previous, revision)


# --------------------------------------------------------------------- identity
@dataclass(frozen=True, slots=True)
class CreatedAdmin:
    """A new organisation-wide admin account and its TOTP enrolment (shown once)."""

    user_id: str
    username: str
    role: str
    organisation_id: str
    totp_secret: str | None
    totp_uri: str | None


def migrate(settings: Settings) -> str:
    """Create or upgrade the database schema to the newest revision; returns it.

    Raises:
        Invalid: Not a usable database URL.
        Unavailable: The database cannot be reached or migrated.
    """
    return migrate_database(settings).revision


def create_admin(
    settings: Settings, *, username: str, password: str, with_totp: bool = True
) -> CreatedAdmin:
    """Create an admin of the ``default`` organisation (created if missing).

    Raises:
        Conflict: The username is taken, or the database is not migrated.
        Unprocessable: The password is too weak (at least 12 characters).
        NotFound: No database.
        Unavailable: The database cannot be used.
    """
    with _database(settings, must_exist=True) as database:
        _require_head(database)
        with database.write() as session:
            organisation = ensure_organisation(session)
            user, secret = create_user(
                session,
                username=username,
                password=password,
                role="admin",
                organisation_id=organisation.id,
                with_totp=with_totp,
            )
            created = CreatedAdmin(
                user_id=user.id,
                username=user.username,
                role=user.role,
                organisation_id=organisation.id,
                totp_secret=secret,
                totp_uri=totp_uri(secret, user.username) if secret else None,
            )
    return created


@dataclass(frozen=True, slots=True)
class IssuedEnrolmentToken:
    """A one-time enrolment token (the secret is shown once, only its hash is kept)."""

    token: str
    token_id: str
    clinic_id: str
    clinic_name: str
    organisation_id: str
    expires_at: datetime


def issue_enrolment_token(
    settings: Settings, *, clinic: str, ttl: timedelta | None = None
) -> IssuedEnrolmentToken:
    """A token that enrols one device into the clinic named `clinic` (created, in the
    ``default`` organisation, if missing).

    Args:
        settings: The server settings.
        clinic: The clinic's name.
        ttl: How long the token stays usable; default ``enrolment_token_seconds``.

    Raises:
        Invalid: The lifetime is not more than 0 and at most 30 days.
        Unprocessable: A bad clinic name.
        Conflict: The database is not migrated.
        NotFound: No database.
        Unavailable: The database cannot be used.
    """
    if ttl is None:
        ttl = timedelta(seconds=settings.enrolment_token_seconds)
    with _database(settings, must_exist=True) as database:
        _require_head(database)
        with database.write() as session:
            found = ensure_clinic(session, clinic)
            token, row = create_enrolment_token(session, clinic_id=found.id, ttl=ttl)
            issued = IssuedEnrolmentToken(
                token=token,
                token_id=row.id,
                clinic_id=found.id,
                clinic_name=found.name,
                organisation_id=found.organisation_id,
                expires_at=row.expires_at,
            )
    return issued


_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """A duration such as ``90s``, ``30m``, ``24h``, ``7d``, ``1h30m`` or plain seconds.

    Raises:
        ValueError: Not a duration, or zero.
    """
    value = text.strip().lower()
    if value.isdigit():
        seconds = int(value)
    else:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + unit for n, unit in parts) != value:
            raise ValueError(f"{text!r} is not a duration like 90s, 30m, 24h, 7d or 1h30m")
        seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return timedelta(seconds=seconds)


# -------------------------------------------------------------------------- serving
@dataclass(frozen=True, slots=True)
class Serving:
    """What `serve` is about to serve, for the start-up line."""

    url: str
    database: str
    revision: str
    workers: int
    blob_backend: str
    migrated: bool


def _check_port(host: str, port: int) -> None:
    """Fail early, with one line, if uvicorn could not listen on `host`:`port`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise Invalid(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise Unavailable(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _build_app(settings: Settings) -> FastAPI:
    """`create_app`, with its start-up failures as `Unavailable` or `Unprocessable`."""
    try:
        return create_app(settings)
    except BlobBackendError as exc:
        raise Unavailable(f"blob storage unusable: {exc}") from None
    except (OSError, ValueError) as exc:
        raise Unprocessable(f"cannot start the server: {exc}") from None


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8700,
    workers: int = 1,
    migrate: bool = True,
    on_start: Callable[[Serving], None] | None = None,
) -> None:
    """Run the server with uvicorn until it is stopped (SIGINT or SIGTERM).

    Migrates the database first unless `migrate` is False (then the schema must
    already be at the newest revision). Logs are JSON lines on stderr. With several
    workers, the settings are exported as ``COHERENCY_SERVER_*`` variables and each
    worker builds its app with `app_from_env`.

    Args:
        settings: The server settings.
        host: The address to listen on.
        port: The TCP port.
        workers: Worker processes (more than 1 needs PostgreSQL and shared blobs for
            anything but reading; SQLite serialises writers).
        migrate: Migrate the schema before serving.
        on_start: Called once everything is checked, just before serving.

    Raises:
        Invalid: Bad settings or a host that cannot be resolved.
        NotFound: ``migrate=False`` and no database.
        Conflict: ``migrate=False`` and the schema is not the newest.
        Unavailable: The database, blob storage or port cannot be used.
    """
    if workers < 1:
        raise Invalid("--workers must be at least 1")
    try:
        configure_logging(settings.log_level)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        migration = migrate_database(settings)
        revision = migration.revision
    else:
        with _database(settings, must_exist=True) as database:
            revision = _require_head(database)
    _check_port(host, port)
    # Built here even for several workers: configuration errors surface as one line
    # before any worker starts, and the signing key and bucket exist before they race.
    app = _build_app(settings)
    if workers > 1 and app.state.db.sqlite:
        log.warning(
            "%d workers on SQLite: writes queue on one file lock and a long poll wakes "
            "only for pushes to its own worker (others answer at its timeout); use "
            "PostgreSQL for several workers",
            workers,
        )
    if on_start is not None:
        on_start(
            Serving(
                url=f"http://{host}:{port}",
                database=database_label(settings.resolved_database_url),
                revision=revision,
                workers=workers,
                blob_backend=settings.blob_backend,
                migrated=migrate,
            )
        )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_config": None,  # configure_logging's JSON handlers stay in charge
        "access_log": False,  # the app writes its own access lines
        "server_header": False,
        "lifespan": "on",
    }
    with _sigterm_exits_cleanly():
        try:
            if workers == 1:
                uvicorn.run(app, **options)
            else:
                app.state.db.dispose()
                os.environ.update(export_settings_env(settings))
                uvicorn.run(
                    "sync_server._admin_cli:app_from_env", factory=True, workers=workers, **options
                )
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise Unavailable("the server failed to start (see the log above)") from None


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


@contextmanager
def _sigterm_exits_cleanly() -> Iterator[None]:
    """Make SIGTERM a clean stop (status 0), as for Ctrl-C.

    uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the
    handler it found; the default one would kill the process with status 143. Under
    this handler, a SIGTERM before uvicorn listens stops the command at once, and
    the one uvicorn raises again after its graceful shutdown ends it with status 0.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def app_from_env() -> FastAPI:
    """The app of one worker, from ``COHERENCY_SERVER_*`` variables (uvicorn factory)."""
    settings = Settings()
    configure_logging(settings.log_level)
    return create_app(settings)
