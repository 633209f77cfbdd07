"""Routes: operations (liveness, readiness, Prometheus metrics). No authentication.

- ``GET /healthz``: the process is up and answering.
- ``GET /readyz``: the server can do its work (`sync_server.ops.readiness`); 503 names
  the failing checks.
- ``GET /metrics``: the app's Prometheus metrics in the text exposition format.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from sync_server.deps import DbDep, MetricsDep
from sync_server.ops.readiness import readiness
from sync_server.ops.schemas import HealthResponse, ReadyResponse

__all__ = ["router"]

router = APIRouter(tags=["operations"])


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
async def readyz(request: Request, db: DbDep) -> JSONResponse:
    """200 when every check passes, else 503 naming the failing checks.

    Checks: ``database`` (``SELECT 1``), ``schema`` (which revision the database is
    at, and whether this server can serve it: its own revision, or a newer one
    declared compatible), ``blobs`` (the blob backend's own check, if it has one) and ``feed`` (the
    change-feed notifier is connected, if it reports its health).
    """
    state = request.app.state
    checks = await readiness(
        db=db, blobs=getattr(state, "blobs", None), feed=getattr(state, "feed", None)
    )
    failing = [name for name, result in checks.items() if result.status == "failed"]
    body = ReadyResponse(
        status="unavailable" if failing else "ready", checks=checks, failing=failing
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=503 if failing else 200)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this server (every worker's totals)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Text format."}},
)
async def metrics(app_metrics: MetricsDep) -> Response:
    """HTTP request counts, latencies and requests in flight; sync document counts,
    waiting long polls and long-poll durations. With several workers (``--workers``),
    any worker answers with the totals of all of them."""
    return Response(app_metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
