"""The FastAPI application factory, and the one handler that answers the server's
error tree (`sync_server.errors`) with a status code (`STATUS_CODES`).

`create_app` builds the app's services once (database, token and artifact signing
keys, the box that seals secrets, change-feed notifier, blob backend, metrics; kept on
``app.state`` for `sync_server.deps`), includes every domain's routers and runs the
hourly housekeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from sync_server.audit import device_routes as audit_device_routes
from sync_server.audit import routes as audit_routes
from sync_server.audit.log import current_checkpoint
from sync_server.blobs import routes as blob_routes
from sync_server.blobs.backends import make_blob_backend
from sync_server.blobs.uploads import purge_stale_uploads
from sync_server.bookings import calendar_routes, directory_routes
from sync_server.bookings import routes as booking_routes
from sync_server.bookings.deciders import register as register_bookings
from sync_server.bookings.reference import publish_everywhere
from sync_server.commerce import routes as commerce_routes
from sync_server.commerce.billing import orders_paid
from sync_server.commerce.deciders import register as register_commerce
from sync_server.commerce.holds import expire_holds
from sync_server.commerce.reference import publish_everywhere as publish_catalogues
from sync_server.dashboard import routes as dashboard_routes
from sync_server.dashboard.web import DASHBOARD_PREFIX, error_page, install_dashboard
from sync_server.db import Database, utcnow
from sync_server.edge import routes as edge_routes
from sync_server.errors import (
    ServerError,
)
from sync_server.fhir import routes as fhir_routes
from sync_server.fhir.outcomes import FHIR_MEDIA_TYPE, FHIR_PREFIX, operation_outcome
from sync_server.identity import admin_routes, auth_routes
from sync_server.identity.keyring import TokenKeyring
from sync_server.identity.sealing import SecretBox
from sync_server.identity.throttling import prune as prune_throttles
from sync_server.intents.desk import IntentDesk
from sync_server.keyfiles import private_folder
from sync_server.models import routes as model_routes
from sync_server.models.services import MAX_MANIFEST_SIZE, MAX_MODEL_SIZE
from sync_server.models.signing import ArtifactKey
from sync_server.notifications import routes as notification_routes
from sync_server.notifications.channels import (
    Channel,
    InApp,
    SmtpEmail,
    push_channel,
    sms_channel,
)
from sync_server.notifications.queue import Publisher, install_publisher, run_worker
from sync_server.notifications.sources import SweepRules, sweep_notices
from sync_server.notifications.worker import Retry, deliver_due
from sync_server.openapi import install_openapi
from sync_server.ops import routes as ops_routes
from sync_server.ops.docs_routes import install_docs
from sync_server.ops.limits import BodyLimitMiddleware, RouteCap
from sync_server.ops.middleware import install_observability
from sync_server.payments import routes as payment_routes
from sync_server.payments.charging import sweep_processing
from sync_server.payments.deciders import register as register_payments
from sync_server.payments.desk import make_payments
from sync_server.payments.idempotency import prune_keys
from sync_server.payments.invoices import publish_stale
from sync_server.reports import routes as report_routes
from sync_server.settings import Settings
from sync_server.statuses import STATUS_CODES, status_code_of
from sync_server.sync import routes as sync_routes
from sync_server.sync import staff_routes
from sync_server.sync.authorship import ServerSigner
from sync_server.sync.feed import Feed, make_feed

__all__ = ["STATUS_CODES", "create_app", "status_code_of"]

log = logging.getLogger("sync_server")

_HOUSEKEEPING_SECONDS = 3600.0
_STALE_UPLOAD = timedelta(days=7)


def _error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """A refusal in the server's error shape, or, under `FHIR_PREFIX`, as a FHIR
    OperationOutcome (`sync_server.fhir.outcomes`), or, under `DASHBOARD_PREFIX`, as a
    dashboard page, with the same status."""
    if request.url.path.startswith(DASHBOARD_PREFIX):
        return error_page(request, status, code, message)
    if request.url.path.startswith(FHIR_PREFIX):
        return JSONResponse(
            operation_outcome(status, code, message),
            status_code=status,
            headers=headers,
            media_type=FHIR_MEDIA_TYPE,
        )
    return JSONResponse(
        {"error": {"code": code, "message": message, **(extra or {})}},
        status_code=status,
        headers=headers,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the server app. The database must already be migrated (`migrate`)."""
    settings = settings or Settings()
    private_folder(settings.data_dir)
    db = Database(settings.resolved_database_url)
    secret_box = SecretBox.load_or_create(settings.resolved_secret_key_file)
    # The deployment's token keys; refuses (Conflict) a key the deployment does not use.
    # The deployment's token keys, checked at startup (`TokenKeyring.establish`).
    signing_key = TokenKeyring(db, settings=settings)
    artifact_key = ArtifactKey.load_or_create(settings.resolved_artifact_key_file)
    feed = make_feed(db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # An instance holding another key than the deployment's refuses to start.
        await asyncio.to_thread(signing_key.establish)
        await feed.start()
        housekeeping = asyncio.create_task(_housekeeping(app))
        payments = asyncio.create_task(_payments_housekeeping(app))
        checkpoints = asyncio.create_task(_audit_checkpoints(app))
        notifications = asyncio.create_task(_notifications(app))
        notice_sweep = asyncio.create_task(_notice_sweep(app))
        try:
            yield
        finally:
            for task in (housekeeping, payments, checkpoints, notifications, notice_sweep):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await feed.stop()
            db.dispose()
            if app.state.notification_publisher is not None:
                app.state.notification_publisher.close()

    app = FastAPI(
        title="Coherency sync server",
        version="0.1.0",
        description="Central sync server: replicated clinical records (Automerge sync "
        "over a per-clinic change feed), blobs, device and staff identity, bookings "
        "(directory, schedules, staff actions, calendar feeds), supplies (catalogue, stock by "
        "lot, orders, prescriptions).",
        lifespan=lifespan,
        docs_url=None,  # `install_docs` serves them from the package, not a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.signing_key = signing_key
    app.state.artifact_key = artifact_key
    app.state.secret_box = secret_box
    app.state.feed = feed
    app.state.intents = IntentDesk()
    # The sandboxes stand in for SMS and push providers until real adapters exist.
    app.state.notification_channels = notification_channels(
        settings, db, signer=ServerSigner(artifact_key), feed=feed
    )
    # Several instances: new deliveries go to queue workers as their transaction commits.
    app.state.notification_publisher = None
    if settings.notification_queue_url:
        app.state.notification_publisher = Publisher(settings)
        install_publisher(db, app.state.notification_publisher)
    register_bookings(app.state.intents)
    register_commerce(app.state.intents, hold=timedelta(hours=settings.order_hold_hours))
    app.state.payments = make_payments(settings)
    register_payments(app.state.intents, app.state.payments)
    app.state.payments.on_paid(orders_paid)
    app.state.blobs = make_blob_backend(settings)

    @app.exception_handler(ServerError)
    async def _server_error(request: Request, exc: ServerError) -> Response:
        if request.url.path.startswith((FHIR_PREFIX, DASHBOARD_PREFIX)):
            return _error_response(
                request, status_code_of(exc), exc.code, exc.message, headers=exc.headers or None
            )
        return JSONResponse(
            {"error": {"code": exc.code, "message": exc.message}, **exc.details()},
            status_code=status_code_of(exc),
            headers=exc.headers or None,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Unknown paths (404), wrong methods (405) and bodies refused by the body limits
        # (408, 413) get the same error shape.
        code = getattr(exc, "code", None) or {
            404: "not_found",
            405: "method_not_allowed",
            408: "body_timeout",
            413: "payload_too_large",
        }.get(exc.status_code, "http_error")
        return _error_response(
            request, exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(DataError)
    async def _bad_data(request: Request, exc: DataError) -> Response:
        # The database refused a value the client sent (a NUL character, a number out
        # of range): the client's input, not a server fault.
        log.info("database refused request data: %s", type(exc.orig).__name__)
        return _error_response(request, 400, "invalid_value", "a value in the request is not valid")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        details = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        return _error_response(
            request, 422, "invalid_request", "invalid request", extra={"details": details}
        )

    app.add_middleware(
        BodyLimitMiddleware,
        default_cap=lambda: app.state.settings.max_json_body,
        route_caps=lambda: _route_caps(app.state.settings),
        chunk_timeout=lambda: app.state.settings.body_chunk_timeout_seconds,
    )
    install_observability(app)
    for routes in (
        ops_routes,
        audit_routes,
        auth_routes,
        admin_routes,
        sync_routes,
        blob_routes,
        model_routes,
        staff_routes,
        directory_routes,
        booking_routes,
        calendar_routes,
        commerce_routes,
        payment_routes,
        report_routes,
        audit_device_routes,
        edge_routes,
        fhir_routes,
        dashboard_routes,
        notification_routes,
    ):
        app.include_router(routes.router)
    install_dashboard(app)
    install_docs(app)
    install_openapi(app)
    return app


def _route_caps(settings: Settings) -> list[RouteCap]:
    """Routes that stream big bodies, each with its own cap in the route (which answers
    with its own error code); the middleware's cap is a backstop just above it."""
    margin = 1024 * 1024
    return [
        ("POST", "/v1/sync/push", settings.max_message_size + margin),
        ("POST", "/v1/audit/device-events", settings.max_message_size + margin),
        ("PATCH", "/v1/blobs/uploads/", settings.max_blob_chunk + margin),
        ("POST", "/v1/admin/models", MAX_MODEL_SIZE + MAX_MANIFEST_SIZE + margin),
    ]


def _prune_throttles(db: Database) -> int:
    with db.write() as session:
        return prune_throttles(session=session)


async def _housekeeping(app: FastAPI) -> None:
    """Hourly: drop uploads abandoned for a week and expired throttling counters, and
    bring each clinic's booking reference data up to date, cancel unpaid orders whose
    hold expired and refresh the catalogues (any worker may do it; it is idempotent)."""
    while True:
        await asyncio.sleep(_HOUSEKEEPING_SECONDS)
        try:
            await asyncio.to_thread(_prune_throttles, app.state.db)
        except Exception:  # housekeeping must never take the server down
            log.exception("pruning throttling counters failed")
        try:
            await asyncio.to_thread(
                publish_everywhere,
                database=app.state.db,
                signer=ServerSigner(app.state.artifact_key),
                now=utcnow(),
            )
        except Exception:  # housekeeping must never take the server down
            log.exception("publishing booking reference data failed")
        try:
            signer = ServerSigner(app.state.artifact_key)
            expired = await asyncio.to_thread(
                expire_holds, database=app.state.db, signer=signer, now=utcnow()
            )
            if expired:
                log.info("cancelled %d unpaid orders whose hold expired", expired)
            await asyncio.to_thread(
                publish_catalogues, database=app.state.db, signer=signer, now=utcnow()
            )
        except Exception:  # housekeeping must never take the server down
            log.exception("expiring order holds or publishing catalogues failed")
        try:
            purged = await asyncio.to_thread(
                purge_stale_uploads,
                database=app.state.db,
                backend=app.state.blobs,
                older_than=_STALE_UPLOAD,
            )
            if purged:
                log.info("purged %d abandoned uploads", purged)
        except Exception:  # housekeeping must never take the server down
            log.exception("housekeeping failed")


def _payments_sweep(app: FastAPI) -> None:
    now = utcnow()
    sweep_processing(database=app.state.db, payments=app.state.payments, now=now)
    with app.state.db.write() as session:
        publish_stale(session=session, signer=ServerSigner(app.state.artifact_key), now=now)
    prune_keys(database=app.state.db, now=now)


def _sign_checkpoint(app: FastAPI) -> None:
    with app.state.db.write() as session:
        current_checkpoint(session=session, signer=app.state.artifact_key)


async def _audit_checkpoints(app: FastAPI) -> None:
    """Every `Settings.audit_checkpoint_seconds`: sign a checkpoint of the audit log if
    it grew since the last (any worker may; a duplicate is harmless)."""
    while True:
        await asyncio.sleep(app.state.settings.audit_checkpoint_seconds)
        try:
            await asyncio.to_thread(_sign_checkpoint, app)
        except Exception:  # housekeeping must never take the server down
            log.exception("signing an audit checkpoint failed")


def notification_channels(
    settings: Settings, db: Database, *, signer: ServerSigner, feed: Feed | None = None
) -> dict[str, Channel]:
    """The channels this instance sends notifications through, by name (in-app notices
    are signed by `signer` and wake `feed`'s long polls)."""
    channels: list[Channel] = [
        InApp(db, signer, feed),
        SmtpEmail(settings),
        sms_channel(settings),
        push_channel(settings),
    ]
    return {channel.name: channel for channel in channels}


def run_notification_worker(settings: Settings, *, burst: bool = False) -> None:
    """Consume the notification queue (``settings.notification_queue_url``) in this
    process until SIGTERM or SIGINT (with `burst`: until it is empty), sending through
    this instance's channels (`notification_channels`) and sweeping due deliveries
    every ``notification_interval_seconds``: ``coherency server notification-worker``.

    Raises:
        Invalid: no queue URL, or not a Redis URL.
        Unavailable: Redis cannot be reached.
    """
    signer = ServerSigner(ArtifactKey.load_or_create(settings.resolved_artifact_key_file))
    run_worker(
        settings,
        # In-app notices are signed like the instances' own, and announced to every
        # instance's long polls (PostgreSQL's NOTIFY at commit; nothing on SQLite).
        channels=lambda db: notification_channels(settings, db, signer=signer, feed=make_feed(db)),
        burst=burst,
    )


async def _notifications(app: FastAPI) -> None:
    """Every `Settings.notification_interval_seconds` (never when 0): send the due
    notification deliveries (`sync_server.notifications.deliver_due`)."""
    settings: Settings = app.state.settings
    if settings.notification_interval_seconds <= 0:
        return
    owner = f"app-{id(app):x}-{uuid.uuid4().hex[:8]}"
    while True:
        await asyncio.sleep(settings.notification_interval_seconds)
        try:
            await asyncio.to_thread(
                deliver_due,
                app.state.db,
                app.state.notification_channels,
                owner=owner,
                batch=settings.notification_batch,
                retry=Retry.of(settings),
            )
        except Exception:  # housekeeping must never take the server down
            log.exception("sending notifications failed")


async def _payments_housekeeping(app: FastAPI) -> None:
    """Every `Settings.payment_sweep_seconds`: settle payments left processing by a
    gateway timeout from the gateway's record (a status query, never a new charge),
    rewrite invoice records that fell behind, forget idempotency keys past their
    retention."""
    while True:
        await asyncio.sleep(app.state.settings.payment_sweep_seconds)
        try:
            await asyncio.to_thread(_payments_sweep, app)
        except Exception:  # housekeeping must never take the server down
            log.exception("payments housekeeping failed")


async def _notice_sweep(app: FastAPI) -> None:
    """Every `Settings.notification_sweep_seconds` (never when 0): record the periodic
    notices due (reminders, expiring prescriptions, wounds not on track, low stock;
    `sync_server.notifications.sources.sweep_notices`; any instance may, it is
    idempotent)."""
    settings: Settings = app.state.settings
    if settings.notification_sweep_seconds <= 0:
        return
    while True:
        await asyncio.sleep(settings.notification_sweep_seconds)
        try:
            await asyncio.to_thread(
                sweep_notices, app.state.db, now=utcnow(), rules=SweepRules.of(settings)
            )
        except Exception:  # housekeeping must never take the server down
            log.exception("sweeping for periodic notices failed")
