"""The central sync server (FastAPI, SQLAlchemy 2, Alembic).

Holds the authoritative copy of every clinic's replicated records, merges what devices
push with the same `crdt` validation devices use, serves a per-clinic change feed that
devices pull (and long-poll), stores scan blobs, and enrols and authenticates devices
and staff.

    from sync_server import Settings, create_app, migrate
    settings = Settings(data_dir="server-data")   # embedded SQLite + local blobs
    migrate(settings)
    app = create_app(settings)                     # serve with uvicorn
"""

from sync_server._app import create_app
from sync_server._db import Database
from sync_server._migrate import current_revision, head_revision
from sync_server._migrate import upgrade as _upgrade
from sync_server._settings import Settings

__all__ = ["Settings", "create_app", "migrate"]


def migrate(settings: Settings) -> str:
    """Create or upgrade the database schema to the newest revision; returns it."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    database = Database(settings.resolved_database_url)
    try:
        _upgrade(database)
        revision = current_revision(database)
    finally:
        database.dispose()
    assert revision == head_revision()
    return revision
