"""The central sync server (FastAPI, SQLAlchemy 2, Alembic).

Not built yet: this package lands with the sync-server issue. It will use the same
`crdt` sync sessions and merge validation as devices do.
"""

__all__: list[str] = []
