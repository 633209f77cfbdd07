"""Schema migrations (Alembic), run the same way on SQLite and PostgreSQL.

`migrate(settings)` is what ``coherency server migrate`` (and ``server run``) does;
`upgrade`, `head_revision` and `current_revision` work on an open `Database`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from sync_server.db import Database, database_label, open_database
from sync_server.errors import Conflict, Unavailable
from sync_server.keyfiles import private_folder
from sync_server.settings import Settings

__all__ = [
    "Migration",
    "current_revision",
    "head_revision",
    "migrate",
    "require_schema",
    "upgrade",
]

_SCRIPTS = Path(__file__).parent / "migrations"


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    return config


def upgrade(
    database: Database, revision: str = "head", *, settings: Settings | None = None
) -> None:
    """Bring the database schema up to `revision` (the newest by default).

    Migrations that rewrite secrets (0003 seals TOTP secrets and signs published models
    with the artifact key) read the server's key files from `settings`; without them
    such a migration refuses a database that holds rows to rewrite.
    """
    config = _config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        config.attributes["settings"] = settings
        command.upgrade(config, revision)


def head_revision() -> str:
    """The newest migration shipped with this version of the server."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(database: Database) -> str | None:
    """The migration the database is at, or None for an empty database."""
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_schema(database: Database) -> str:
    """The schema revision, which must be the newest this server ships.

    Raises:
        Conflict: ``schema_outdated``: the database is empty or at an older schema.
    """
    have, want = current_revision(database), head_revision()
    if have != want:
        raise Conflict(
            f"the database {database_label(database.url)} is at schema "
            f"{have or 'nothing (empty)'}, this server needs {want}: run "
            "`coherency server migrate`",
            code="schema_outdated",
        )
    return want


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


def migrate(settings: Settings) -> Migration:
    """Create or upgrade the settings' database schema to the newest revision.

    Raises:
        Invalid: Not a usable database URL.
        Unavailable: The database cannot be reached or migrated.
    """
    private_folder(settings.data_dir)
    with open_database(settings, must_exist=False) as database:
        previous = current_revision(database)
        upgrade(database, settings=settings)
        revision = current_revision(database)
    if revision is None:  # pragma: no cover - alembic always stamps
        raise Unavailable("migration left no schema revision", code="database_unavailable")
    return Migration(database_label(settings.resolved_database_url), previous, revision)
