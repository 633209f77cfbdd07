"""Routes: the dashboard's 3D view of a stored scan.

``GET /dashboard/assessments/{id}/scan`` is the page: the assessment's figures, the
viewer's canvas (web/src/viewer.js, bundled with three.js into static/vendor/viewer.js)
and, when the scan cannot be shown (not uploaded yet, lost by the storage, none
stored), why. Its view is audited as a read of the assessment.

``GET /dashboard/assessments/{id}/scan.bin`` is what the viewer draws: the stored point
cloud decimated to at most `Settings.dashboard_max_points`, centred, with the measured
boundary (`sync_server.dashboard.scans` documents the format). Each blob it reads is
audited like a download through ``GET /v1/blobs/{sha256}``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from sync_server.dashboard.scans import scan_page, scan_points
from sync_server.dashboard.web import PageDep, render
from sync_server.deps import BlobsDep, DbDep, RequestIdDep, SettingsDep

__all__ = ["router"]

router = APIRouter()

_FIGURES = (
    ("area_cm2", "Area", "cm²"),
    ("volume_cm3", "Volume", "cm³"),
    ("max_depth_mm", "Deepest point", "mm"),
    ("mean_depth_mm", "Mean depth", "mm"),
    ("length_cm", "Length", "cm"),
    ("width_cm", "Width", "cm"),
    ("perimeter_cm", "Perimeter", "cm"),
)


@router.get("/assessments/{assessment_id}/scan", response_class=HTMLResponse)
def scan_view(
    request: Request,
    assessment_id: str,
    page_: PageDep,
    db: DbDep,
    backend: BlobsDep,
    request_id: RequestIdDep,
) -> HTMLResponse:
    """The 3D view of an assessment's scan, with its figures."""
    view = scan_page(
        database=db,
        backend=backend,
        principal=page_.caller,
        assessment_id=assessment_id[:64],
        request_id=request_id,
    )
    figures = [
        (label, view.measurements[key], unit)
        for key, label, unit in _FIGURES
        if isinstance(view.measurements.get(key), int | float)
    ]
    return render(
        request,
        "scan.html",
        {"nav": "patients", "view": view, "figures": figures},
        page=page_,
    )


@router.get("/assessments/{assessment_id}/scan.bin", response_class=Response)
async def scan_data(
    assessment_id: str,
    page_: PageDep,
    db: DbDep,
    backend: BlobsDep,
    settings: SettingsDep,
    request_id: RequestIdDep,
) -> Response:
    """The scan's points, decimated and packed for the viewer (binary)."""
    packed = await run_in_threadpool(
        lambda: scan_points(
            database=db,
            backend=backend,
            principal=page_.caller,
            assessment_id=assessment_id[:64],
            max_points=settings.dashboard_max_points,
            request_id=request_id,
        )
    )
    return Response(
        packed.data,
        media_type="application/octet-stream",
        headers={"Cache-Control": "private, no-store"},
    )
