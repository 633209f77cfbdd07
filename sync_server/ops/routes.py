"""Routes: operations (liveness, readiness, Prometheus metrics). No authentication.

- ``GET /healthz``: the process is up and answering.
- ``GET /readyz``: the server can do its work: the database answers, its schema is at
  the migration this server ships, the blob storage is usable and (on PostgreSQL) the
  change-feed listener is connected. 503 names the failing checks. Details stay
  generic (a probe is unauthenticated); the full error goes to the log.
- ``GET /metrics``: the app's Prometheus metrics in the text exposition format.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from sqlalchemy import text

from sync_server.db import Database
from sync_server.migrate import current_revision, head_revision
from sync_server.ops.metrics import Metrics

__all__ = ["CheckResult", "HealthResponse", "ReadyResponse", "router"]

router = APIRouter(tags=["operations"])
log = logging.getLogger("sync_server.ops")

CHECK_TIMEOUT_SECONDS = 5.0
"""A check that takes longer than this fails (an unreachable host must not hang probes)."""


class HealthResponse(BaseModel):
    """The process is alive."""

    status: Literal["ok"] = "ok"


class CheckResult(BaseModel):
    """The outcome of one readiness check."""

    status: Literal["ok", "failed", "skipped"]
    detail: str | None = Field(default=None, description="Why it failed or was skipped.")


class ReadyResponse(BaseModel):
    """Every readiness check, and which of them fail."""

    status: Literal["ready", "unavailable"]
    checks: dict[str, CheckResult] = Field(description="By name: database, schema, blobs, feed.")
    failing: list[str] = Field(description="The names of the checks that failed.")


class _CheckFailed(Exception):
    """A check's own, client-safe explanation of a failure."""


async def _run(name: str, check: Callable[[], str | None]) -> CheckResult:
    """Run a blocking check in a worker thread, with a time limit.

    A check that overruns is abandoned (its thread finishes on its own), so a hung
    connection attempt cannot hold the probe.
    """
    try:
        with anyio.fail_after(CHECK_TIMEOUT_SECONDS):
            detail = await anyio.to_thread.run_sync(check, abandon_on_cancel=True)
    except TimeoutError:
        log.warning("readiness check %s timed out after %ss", name, CHECK_TIMEOUT_SECONDS)
        return CheckResult(status="failed", detail=f"no answer within {CHECK_TIMEOUT_SECONDS}s")
    except _CheckFailed as exc:
        log.warning("readiness check %s failed: %s", name, exc)
        return CheckResult(status="failed", detail=str(exc))
    except Exception as exc:
        log.warning("readiness check %s failed", name, exc_info=exc)
        return CheckResult(status="failed", detail=f"{name} unavailable ({type(exc).__name__})")
    return CheckResult(status="ok", detail=detail)


def _database_check(db: Database) -> Callable[[], str | None]:
    def check() -> str | None:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1")).scalar_one()
        return None

    return check


def _schema_check(db: Database) -> Callable[[], str | None]:
    def check() -> str | None:
        have, want = current_revision(db), head_revision()
        if have != want:
            raise _CheckFailed(
                f"schema at {have or 'nothing (empty database)'}, this server needs {want}"
            )
        return want

    return check


def _blobs_check(blobs: Any) -> Callable[[], str | None]:
    def check() -> str | None:
        blobs.check()
        return None

    return check


@router.get(
    "/healthz",
    summary="Liveness: the process is up",
    response_model=HealthResponse,
)
async def healthz() -> HealthResponse:
    """Answers 200 whenever the process can answer at all; checks nothing else."""
    return HealthResponse()


@router.get(
    "/readyz",
    summary="Readiness: the database, schema, blob storage and change feed work",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse, "description": "A check failed."}},
)
async def readyz(request: Request) -> JSONResponse:
    """200 when every check passes, else 503 naming the failing checks.

    Checks: ``database`` (``SELECT 1``), ``schema`` (at the newest migration),
    ``blobs`` (the blob backend's own check, if it has one) and ``feed`` (the
    change-feed notifier is connected, if it reports its health).
    """
    state = request.app.state
    db: Database = state.db
    checks: dict[str, CheckResult] = {"database": await _run("database", _database_check(db))}
    if checks["database"].status == "ok":
        checks["schema"] = await _run("schema", _schema_check(db))
    else:
        checks["schema"] = CheckResult(status="skipped", detail="the database is unavailable")
    blobs = getattr(state, "blobs", None)
    if callable(getattr(blobs, "check", None)):
        checks["blobs"] = await _run("blobs", _blobs_check(blobs))
    else:
        checks["blobs"] = CheckResult(status="skipped", detail="no blob backend check")
    feed = getattr(state, "feed", None)
    healthy = getattr(feed, "healthy", None)
    if healthy is None:
        checks["feed"] = CheckResult(status="skipped", detail="the feed reports no health")
    elif healthy:
        checks["feed"] = CheckResult(status="ok")
    else:
        checks["feed"] = CheckResult(status="failed", detail="change-feed listener disconnected")
    failing = [name for name, result in checks.items() if result.status == "failed"]
    body = ReadyResponse(
        status="unavailable" if failing else "ready", checks=checks, failing=failing
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if failing else 200)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this server process",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text format."}},
)
async def metrics(request: Request) -> Response:
    """HTTP request counts, latencies and requests in flight; sync document counts and
    waiting long polls. Each worker process exposes its own counters."""
    app_metrics: Metrics = request.app.state.metrics
    return Response(generate_latest(app_metrics.registry), media_type=CONTENT_TYPE_LATEST)
