"""Schema migrations (Alembic), run the same way on SQLite and PostgreSQL.

`migrate(settings)` is what ``coherency server migrate`` (and ``server run``) does;
`upgrade`, `head_revision`, `current_revision` and `schema_status` work on an open
`Database`; `migration_script` is ``server migrate --sql``.

Every migration runs under a database lock (PostgreSQL: a transaction-level advisory
lock; SQLite: ``BEGIN EXCLUSIVE``), taken before Alembic reads the revision, so any
number of migrators started at once leave one migrated schema.

Rolling upgrades: a server serves the schema at its own head revision, or at a newer
revision whose migration declared (`declare_compatibility`, recorded in the
``schema_compatibility`` table, since the old server cannot read the new scripts) that
servers from some older revision on can still serve it. Alembic's own revision lives
in ``coherency_schema_version``; ``alembic_version`` is kept for the releases before
this mechanism (up to 0010), which serve only when it equals their head: it holds the
newest of those releases that can serve the schema (see `_write_legacy_marker`).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command, op
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Column, Connection, MetaData, String, Table, delete, insert, inspect, text
from sqlalchemy import select as sa_select
from sqlalchemy.engine import make_url

from sync_server.db import Base, Database, database_label, open_database
from sync_server.errors import Conflict, Invalid, Unavailable
from sync_server.keyfiles import private_folder
from sync_server.settings import Settings

__all__ = [
    "VERSION_TABLE",
    "Migration",
    "SchemaStatus",
    "check_schema",
    "current_revision",
    "declare_compatibility",
    "head_revision",
    "migrate",
    "migration_script",
    "require_schema",
    "schema_status",
    "upgrade",
]

_SCRIPTS = Path(__file__).parent / "migrations"

VERSION_TABLE = "coherency_schema_version"
"""The table Alembic keeps the database's revision in."""

_LEGACY_HEAD = "0010_edge_boxes"
"""The newest revision released before the compatibility mechanism: releases up to it
read ``alembic_version`` and serve only a database whose revision equals their head."""

_LOCK_KEY = 0x436F6865  # "Cohe": the advisory lock every migrator of a database takes

schema_compatibility = Table(
    "schema_compatibility",
    Base.metadata,
    Column("revision", String(64), primary_key=True),
    Column("oldest_servable", String(64), nullable=False),
    comment="Per migration: the oldest server revision that can serve the schema it leaves.",
)
_legacy_version = Table(
    "alembic_version",
    Base.metadata,
    Column("version_num", String(32), primary_key=True),
    comment="For releases up to 0010: the newest of them that can serve this schema.",
)


def _config(output: io.StringIO | None = None) -> Config:
    config = Config(output_buffer=output) if output is not None else Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


@functools.cache
def _scripts() -> ScriptDirectory:
    """The migration scripts (read once: readiness probes ask on every call)."""
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The newest migration shipped with this version of the server."""
    head = _scripts().get_current_head()
    assert head is not None
    return head


def _known(scripts: ScriptDirectory, revision: str) -> bool:
    try:
        return scripts.get_revision(revision) is not None
    except CommandError:
        return False


def _at_or_after(scripts: ScriptDirectory, revision: str, ancestor: str) -> bool:
    """True if `ancestor` is `revision` or one of the revisions it builds on."""
    return any(r.revision == ancestor for r in scripts.iterate_revisions(revision, "base"))


def declare_compatibility(revision: str, *, oldest: str) -> None:
    """Record, from inside migration `revision`'s ``upgrade()``, that servers from
    revision `oldest` on can still serve the schema it leaves.

    An "expand" migration (adds a table, a nullable column, an index) keeps the value
    of the migration before it; a "contract" migration (drops or renames what older
    servers use) raises it to the revision whose code no longer uses it. Every
    migration from 0011 on calls this once, as its last step.
    """
    op.execute(delete(schema_compatibility).where(schema_compatibility.c.revision == revision))
    op.execute(insert(schema_compatibility).values(revision=revision, oldest_servable=oldest))


@contextmanager
def _locked(database: Database) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock until it ends."""
    with database.engine.connect() as connection:
        if database.sqlite:
            # The write lock before the first read: a second migrator waits here (busy
            # timeout) instead of reading the old revision and failing at its first write.
            connection.execution_options(sqlite_begin="EXCLUSIVE")
        with connection.begin():
            if not database.sqlite:
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
            yield connection


def _read_revision(connection: Connection, tables: set[str] | None = None) -> str | None:
    """The database's revision: ours, else the one a release up to 0010 left.

    `tables`: the database's table names, when the caller read them already.
    """
    tables = set(inspect(connection).get_table_names()) if tables is None else tables
    if VERSION_TABLE in tables:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()
    if "alembic_version" in tables:
        return MigrationContext.configure(connection).get_current_revision()
    return None


def _adopt_legacy_revision(connection: Connection) -> None:
    """A database a release up to 0010 migrated keeps its revision in ``alembic_version``:
    copy it to `VERSION_TABLE`, where Alembic reads it from now on."""
    tables = set(inspect(connection).get_table_names())
    if VERSION_TABLE in tables or "alembic_version" not in tables:
        return
    revision = MigrationContext.configure(connection).get_current_revision()
    version = Table(VERSION_TABLE, MetaData(), Column("version_num", String(32), primary_key=True))
    version.create(connection)
    if revision is not None:
        connection.execute(insert(version).values(version_num=revision))


def _oldest_servable(connection: Connection, revision: str, tables: set[str]) -> str | None:
    if "schema_compatibility" not in tables:
        return None
    return connection.execute(
        sa_select(schema_compatibility.c.oldest_servable).where(
            schema_compatibility.c.revision == revision
        )
    ).scalar_one_or_none()


def _write_legacy_marker(connection: Connection, scripts: ScriptDirectory) -> None:
    """Set ``alembic_version`` to what the releases up to 0010 should see.

    They serve only when it equals their head. At a revision of theirs it is that
    revision; at a newer one that declares servers up to 0010 compatible, it is 0010
    (the newest of them, which can serve it); otherwise it is the real revision, which
    none of them knows, so they refuse it (and their migrate cannot run).
    """
    tables = set(inspect(connection).get_table_names())
    revision = _read_revision(connection, tables)
    _legacy_version.create(connection, checkfirst=True)
    connection.execute(delete(_legacy_version))
    if revision is None:
        return
    marker = revision
    if not _at_or_after(scripts, _LEGACY_HEAD, revision):  # newer than the legacy head
        oldest = _oldest_servable(connection, revision, tables)
        if oldest is not None and _at_or_after(scripts, _LEGACY_HEAD, oldest):
            marker = _LEGACY_HEAD
    connection.execute(insert(_legacy_version).values(version_num=marker))


def _resolve(scripts: ScriptDirectory, target: str) -> str:
    """The full revision id `target` names (``head``, an id or a unique prefix).

    Raises:
        Invalid: ``unknown_revision``: no migration of this server has that name.
    """
    if target == "base":  # every table dropped: not something to type by mistake
        raise Invalid(
            "the schema can go down to 0001 at the lowest, not to base", code="unknown_revision"
        )
    try:
        found = scripts.get_revision(target)
    except CommandError as exc:
        raise Invalid(
            f"unknown schema revision {target!r} ({exc}); this server ships "
            f"revisions up to {head_revision()}",
            code="unknown_revision",
        ) from None
    if found is None:
        raise Invalid(f"unknown schema revision {target!r}", code="unknown_revision")
    return found.revision


def upgrade(
    database: Database, revision: str = "head", *, settings: Settings | None = None
) -> tuple[str | None, str | None]:  # (before, after)
    """Move the database schema to `revision` (the newest by default), up or down,
    under the migration lock; returns the revisions before and after.

    A database at a newer revision than this server knows is left as it is.
    Migrations that rewrite secrets (0003 seals TOTP secrets and signs published models
    with the artifact key) read the server's key files from `settings`; without them
    such a migration refuses a database that holds rows to rewrite.

    Raises:
        Invalid: ``unknown_revision``: `revision` is not one of this server's.
    """
    scripts = _scripts()
    target = _resolve(scripts, revision)
    config = _config()
    config.attributes["settings"] = settings
    with _locked(database) as connection:
        _adopt_legacy_revision(connection)
        previous = _read_revision(connection)
        if previous is not None and not _known(scripts, previous):
            return previous, previous  # newer than this server: another release migrated it
        config.attributes["connection"] = connection
        if previous not in (None, target) and _at_or_after(scripts, str(previous), target):
            command.downgrade(config, target)
        else:
            command.upgrade(config, target)
        _write_legacy_marker(connection, scripts)
        return previous, _read_revision(connection)


def current_revision(database: Database) -> str | None:
    """The migration the database is at, or None for an empty database."""
    with database.engine.connect() as connection:
        return _read_revision(connection)


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Whether this server can serve a database's schema, and why."""

    database: str
    revision: str | None
    head: str
    oldest_servable: str | None
    servable: bool
    reason: str


def schema_status(database: Database) -> SchemaStatus:
    """The database's revision and whether this server can serve it.

    It can at its own head revision, and at a newer revision whose migrations declared
    servers from this server's revision (or an older one) on compatible.
    """
    scripts = _scripts()
    head = head_revision()
    with database.engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())  # read once per readiness check
        have = _read_revision(connection, tables)
        oldest = _oldest_servable(connection, have, tables) if have is not None else None
    if have is None:
        servable, reason = False, "an empty database (no schema)"
    elif have == head:
        servable, reason = True, f"at {head}, this server's own revision"
    elif _known(scripts, have):
        servable, reason = False, f"at {have}, older than {head}"
    elif oldest is None:
        servable, reason = False, f"at {have}, newer than {head} and declares no compatibility"
    elif _known(scripts, oldest) and _at_or_after(scripts, head, oldest):
        servable = True
        reason = f"at {have}, newer than {head}, which it declares compatible (from {oldest} on)"
    else:
        servable, reason = False, f"at {have}, newer than {head}: it needs servers from {oldest} on"
    return SchemaStatus(database_label(database.url), have, head, oldest, servable, reason)


def check_schema(settings: Settings) -> SchemaStatus:
    """`schema_status` of the settings' database (``coherency server migrate current``).

    Raises:
        Invalid: Not a usable database URL.
        NotFound: No SQLite file.
        Unavailable: The database cannot be reached.
    """
    with open_database(settings, must_exist=True) as database:
        return schema_status(database)


def require_schema(database: Database) -> str:
    """The schema revision, which this server must be able to serve (`schema_status`).

    Raises:
        Conflict: ``schema_outdated``: the database is empty, at an older schema, or at
            a newer one that is not compatible with this server.
    """
    status = schema_status(database)
    if not status.servable:
        advice = (
            "upgrade this server"
            if status.revision is not None and not _known(_scripts(), status.revision)
            else "run `coherency server migrate`"
        )
        raise Conflict(
            f"the database {database_label(database.url)} is {status.reason}: this server "
            f"cannot serve it ({status.head}); {advice}",
            code="schema_outdated",
        )
    assert status.revision is not None
    return status.revision


@dataclass(frozen=True, slots=True)
class Migration:
    """The outcome of `migrate`."""

    database: str
    previous_revision: str | None
    revision: str

    @property
    def changed(self) -> bool:
        """True if the schema moved."""
        return self.previous_revision != self.revision


def migrate(settings: Settings, *, to: str = "head") -> Migration:
    """Create or upgrade the settings' database schema to the newest revision, or move
    it up or down to revision `to`, under the migration lock.

    A database already at a newer revision that this server can serve is left as it
    is (a rolling upgrade: another release migrated it).

    Raises:
        Invalid: Not a usable database URL, or an unknown revision.
        Conflict: ``schema_outdated``: the database is at a newer revision this server
            cannot serve.
        Unavailable: The database cannot be reached or migrated.
    """
    _resolve(_scripts(), to)  # an unknown revision is refused before any file is made
    private_folder(settings.data_dir)
    with open_database(settings, must_exist=False) as database:
        previous, revision = upgrade(database, to, settings=settings)
        if previous is not None and previous == revision and not _known(_scripts(), previous):
            require_schema(database)
    if revision is None:  # pragma: no cover - alembic always stamps
        raise Unavailable("migration left no schema revision", code="database_unavailable")
    return Migration(database_label(settings.resolved_database_url), previous, revision)


def migration_script(settings: Settings, *, to: str = "head", start: str | None = None) -> str:
    """The SQL that migrates an empty database (or one at `start`) to `to`, in the
    dialect of the settings' database, without connecting to it (Alembic offline mode).

    Raises:
        Invalid: Not a usable database URL, an unknown revision, or a migration that
            cannot be written out without a database.
    """
    scripts = _scripts()
    target = _resolve(scripts, to)
    origin = _resolve(scripts, start) if start is not None else None
    url = settings.resolved_database_url
    try:
        dialect = make_url(url).get_dialect().name
    except Exception:
        raise Invalid(
            f"not a database URL: {database_label(url)}", code="invalid_database_url"
        ) from None
    output = io.StringIO()
    config = _config(output)
    config.attributes["dialect"] = dialect
    config.attributes["settings"] = settings
    if origin is not None and _at_or_after(scripts, _LEGACY_HEAD, origin):
        # A database a release up to 0010 migrated keeps its revision in alembic_version
        # only (`_adopt_legacy_revision` online); alembic_version stays as it is.
        output.write(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL, "
            f"PRIMARY KEY (version_num));\n\n"
            f"INSERT INTO {VERSION_TABLE} (version_num) SELECT '{origin}' "
            f"WHERE NOT EXISTS (SELECT 1 FROM {VERSION_TABLE});\n\n"
        )
    try:
        command.upgrade(config, f"{origin}:{target}" if origin else target, sql=True)
    except (CommandError, NotImplementedError) as exc:
        why = str(exc).split(";")[0]
        if "batch mode" in str(exc):
            why = "SQLite's batch steps need the live database; give --from a later revision"
        raise Invalid(
            f"cannot write the migration to {to} as SQL: {why}", code="offline_unsupported"
        ) from None
    return output.getvalue()
