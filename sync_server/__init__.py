"""The central sync server (FastAPI, SQLAlchemy 2, Alembic).

Holds the authoritative copy of every clinic's replicated records, merges what devices
push with the same `crdt` validation devices use, serves a per-clinic change feed that
devices pull (and long-poll), stores scan blobs, and enrols and authenticates devices
and staff.

    from sync_server import Settings, create_app, migrate
    settings = Settings(data_dir="server-data")   # embedded SQLite + local blobs
    migrate(settings)
    app = create_app(settings)                     # serve with uvicorn

`create_admin`, `issue_enrolment_token`, `manage_account`, `seed_demo`, `migrate` and
`serve` are what `coherency server create-admin`, `enroll-token`, `user`, `seed-demo`,
`migrate` and `run` do;
`document_heads` says what the server holds for a clinic (to compare with a device's);
`ThreadedServer` serves an app on loopback in a thread (demos, examples, an app's own
tests). Every refusal is a `ServerError` (the tree is drawn in `sync_server.errors`).

The package is laid out by domain: a small core (`app`, `settings`, `db`, `deps`,
`errors`, ...) and one folder per domain (`identity`, `sync`, `intents`, `bookings`,
`blobs`, `models`, `ops`, `audit`), each with its routes, services and tables. Only the
names in `__all__` are public.
"""

from sync_server.app import create_app
from sync_server.embedded import ThreadedServer
from sync_server.errors import (
    ChainBroken,
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    ServerError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
)
from sync_server.migrate import Migration, migrate
from sync_server.operator import (
    AccountAction,
    CreatedAdmin,
    IssuedEnrolmentToken,
    IssuedRefund,
    ManagedAccount,
    SeededDirectory,
    create_admin,
    document_heads,
    issue_enrolment_token,
    manage_account,
    refund_payment,
    seed_demo,
)
from sync_server.serve import Serving, serve
from sync_server.settings import Settings, settings_from

__all__ = [
    "AccountAction",
    "ChainBroken",
    "Conflict",
    "CreatedAdmin",
    "Forbidden",
    "Gone",
    "Invalid",
    "IssuedEnrolmentToken",
    "IssuedRefund",
    "ManagedAccount",
    "Migration",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "SeededDirectory",
    "ServerError",
    "Serving",
    "Settings",
    "ThreadedServer",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "create_admin",
    "create_app",
    "document_heads",
    "issue_enrolment_token",
    "manage_account",
    "migrate",
    "refund_payment",
    "seed_demo",
    "serve",
    "settings_from",
]
