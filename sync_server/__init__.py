"""The central sync server (FastAPI, SQLAlchemy 2, Alembic).

Holds the authoritative copy of every clinic's replicated records, merges what devices
push with the same `crdt` validation devices use, serves a per-clinic change feed that
devices pull (and long-poll), stores scan blobs, and enrols and authenticates devices
and staff.

    from sync_server import Settings, create_app, migrate
    settings = Settings(data_dir="server-data")   # embedded SQLite + local blobs
    migrate(settings)
    app = create_app(settings)                     # serve with uvicorn

`create_admin`, `issue_enrolment_token`, `manage_account`, `seed_demo`, `migrate`
(`migration_script` with ``--sql``, `check_schema` for ``migrate current``) and
`serve` are what `coherency server create-admin`, `enroll-token`, `user`, `seed-demo`,
`migrate` and `run` do; `export_records` and `export_fhir` what `coherency server
export` and `fhir-export` do; `verify_audit_log` and `audit_checkpoint` what `coherency audit
verify` and `checkpoint` do; `record_event` audits an access in a transaction of the
server's database, from a typed event (`Actor`, `RecordsRead`; the rest in
`sync_server.audit.events`), for extensions and capacity tests;
`signing_keys` and `rotate_signing_key` what `coherency server keys list` and
`rotate` do; `check_blob_storage` what `coherency server blobs check` does;
`document_heads` says what the server holds for a clinic (to compare with a device's);
`ThreadedServer` serves an app on loopback in a thread (demos, examples, an app's own
tests); `notify_event` records a notification event that is no domain change's (an
announcement, a benchmark) for the workers to send. Every refusal is a `ServerError`
(the tree is drawn in `sync_server.errors`).

The package is laid out by domain: a small core (`app`, `settings`, `db`, `deps`,
`errors`, ...) and one folder per domain (`identity`, `sync`, `intents`, `bookings`,
`blobs`, `models`, `ops`, `audit`), each with its routes, services and tables. Only the
names in `__all__` are public.
"""

# Names are imported on first use (PEP 562): `from sync_server import ThreadedServer`
# does not load the whole server (SQLAlchemy, Alembic, boto3, ...), which an edge box
# serving a clinic's devices from a small machine does not need.
import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

if _TYPE_CHECKING:
    from sync_server.app import create_app, run_notification_worker
    from sync_server.audit.events import Actor, RecordsRead
    from sync_server.audit.services import record_event
    from sync_server.blobs.checking import BlobCheckReport, BlobProblem, check_blob_storage
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
    from sync_server.migrating import (
        Migration,
        SchemaStatus,
        check_schema,
        migrate,
        migration_script,
    )
    from sync_server.notifications.events import notify_event
    from sync_server.operator import (
        AccountAction,
        AuditProblem,
        AuditReport,
        CreatedAdmin,
        ExportedFhir,
        ExportedRecords,
        IssuedEnrolmentToken,
        IssuedRefund,
        ManagedAccount,
        RotatedKey,
        SeededDirectory,
        TokenKeyInfo,
        audit_checkpoint,
        audit_public_key,
        create_admin,
        document_heads,
        export_fhir,
        export_records,
        issue_enrolment_token,
        manage_account,
        refund_payment,
        rotate_signing_key,
        seed_demo,
        signing_keys,
        verify_audit_log,
    )
    from sync_server.reports.monthly import MonthlyReport, monthly_report
    from sync_server.serving import Serving, serve
    from sync_server.settings import Settings, settings_from
    from sync_server.sync.listing import AssessmentFilters

_EXPORTS = {
    "AccountAction": "sync_server.operator",
    "AssessmentFilters": "sync_server.sync.listing",
    "Actor": "sync_server.audit.events",
    "AuditProblem": "sync_server.operator",
    "AuditReport": "sync_server.operator",
    "BlobCheckReport": "sync_server.blobs.checking",
    "BlobProblem": "sync_server.blobs.checking",
    "ChainBroken": "sync_server.errors",
    "Conflict": "sync_server.errors",
    "CreatedAdmin": "sync_server.operator",
    "ExportedFhir": "sync_server.operator",
    "ExportedRecords": "sync_server.operator",
    "Forbidden": "sync_server.errors",
    "Gone": "sync_server.errors",
    "Invalid": "sync_server.errors",
    "IssuedEnrolmentToken": "sync_server.operator",
    "IssuedRefund": "sync_server.operator",
    "ManagedAccount": "sync_server.operator",
    "Migration": "sync_server.migrating",
    "MonthlyReport": "sync_server.reports.monthly",
    "SchemaStatus": "sync_server.migrating",
    "NotFound": "sync_server.errors",
    "PayloadTooLarge": "sync_server.errors",
    "RangeNotSatisfiable": "sync_server.errors",
    "RecordsRead": "sync_server.audit.events",
    "RotatedKey": "sync_server.operator",
    "SeededDirectory": "sync_server.operator",
    "ServerError": "sync_server.errors",
    "Serving": "sync_server.serving",
    "Settings": "sync_server.settings",
    "ThreadedServer": "sync_server.embedded",
    "TokenKeyInfo": "sync_server.operator",
    "TooManyRequests": "sync_server.errors",
    "Unauthorized": "sync_server.errors",
    "Unavailable": "sync_server.errors",
    "Unprocessable": "sync_server.errors",
    "UnsupportedMediaType": "sync_server.errors",
    "audit_checkpoint": "sync_server.operator",
    "audit_public_key": "sync_server.operator",
    "check_blob_storage": "sync_server.blobs.checking",
    "create_admin": "sync_server.operator",
    "create_app": "sync_server.app",
    "document_heads": "sync_server.operator",
    "export_fhir": "sync_server.operator",
    "export_records": "sync_server.operator",
    "issue_enrolment_token": "sync_server.operator",
    "manage_account": "sync_server.operator",
    "migrate": "sync_server.migrating",
    "migration_script": "sync_server.migrating",
    "monthly_report": "sync_server.reports.monthly",
    "notify_event": "sync_server.notifications.events",
    "check_schema": "sync_server.migrating",
    "record_event": "sync_server.audit.services",
    "refund_payment": "sync_server.operator",
    "rotate_signing_key": "sync_server.operator",
    "run_notification_worker": "sync_server.app",
    "seed_demo": "sync_server.operator",
    "serve": "sync_server.serving",
    "settings_from": "sync_server.settings",
    "signing_keys": "sync_server.operator",
    "verify_audit_log": "sync_server.operator",
}


def __getattr__(name: str) -> _Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sync_server' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "AccountAction",
    "Actor",
    "AssessmentFilters",
    "AuditProblem",
    "AuditReport",
    "BlobCheckReport",
    "BlobProblem",
    "ChainBroken",
    "Conflict",
    "CreatedAdmin",
    "ExportedFhir",
    "ExportedRecords",
    "Forbidden",
    "Gone",
    "Invalid",
    "IssuedEnrolmentToken",
    "IssuedRefund",
    "ManagedAccount",
    "Migration",
    "MonthlyReport",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "RecordsRead",
    "RotatedKey",
    "SchemaStatus",
    "SeededDirectory",
    "ServerError",
    "Serving",
    "Settings",
    "ThreadedServer",
    "TokenKeyInfo",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "audit_checkpoint",
    "audit_public_key",
    "check_blob_storage",
    "check_schema",
    "create_admin",
    "create_app",
    "document_heads",
    "export_fhir",
    "export_records",
    "issue_enrolment_token",
    "manage_account",
    "migrate",
    "migration_script",
    "monthly_report",
    "notify_event",
    "record_event",
    "refund_payment",
    "rotate_signing_key",
    "run_notification_worker",
    "seed_demo",
    "serve",
    "settings_from",
    "signing_keys",
    "verify_audit_log",
]
