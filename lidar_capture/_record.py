"""Storing a measured scan as a wound assessment in the device's encrypted store.

One assessment refers to two content-addressed, encrypted blobs:

- ``scan-pointcloud`` (``application/x-ply``): the fused, cleaned point cloud around the
  wound the figures were measured on, as a binary PLY: float32 metres in the scan's
  world frame, which its header comments state (`point_cloud_from_ply_bytes` reads it
  back).
- ``measurement-details`` (``application/json``): what the record's figures do not
  hold: the outline on the skin, the wound frame, quality flags, boundary source,
  length axis, skin-fit degree, noise, frame count, stage timings and the pipeline
  version (see `DETAILS_FORMAT`).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from importlib import metadata
from typing import TYPE_CHECKING, Any

from crdt import BlobReference, Measurements, ModelOutput, WoundAssessment
from edge_sdk import RecordNotFoundError

if TYPE_CHECKING:
    from edge_sdk import EdgeClient
    from lidar_capture._measurement import WoundMeasurement

__all__ = [
    "DETAILS_BLOB_KIND",
    "DETAILS_FORMAT",
    "DETAILS_MEDIA_TYPE",
    "SCAN_BLOB_KIND",
    "SCAN_MEDIA_TYPE",
    "measurement_details",
    "record_assessment",
]

SCAN_BLOB_KIND = "scan-pointcloud"
SCAN_MEDIA_TYPE = "application/x-ply"
DETAILS_BLOB_KIND = "measurement-details"
DETAILS_MEDIA_TYPE = "application/json"
#: Version of the details blob's layout; bump it when a key changes meaning.
DETAILS_FORMAT = 1

#: What the stored scan's coordinates are relative to, in its PLY header.
_SCAN_PLY_COMMENTS = (
    "frame: the scan's world frame, as measured: the frames' poses' world (ARKit's, for "
    "an iPhone or iPad scan) or a point-cloud scan's own coordinates; not the wound's",
    "frame: the measurement-details blob's wound_frame maps the wound frame into it",
)

_FIGURES = tuple(name for name in Measurements.model_fields if name != "area_method")


def _pipeline_version() -> str:
    try:
        return metadata.version("coherency")
    except metadata.PackageNotFoundError:
        return "unknown"


def measurement_details(measurement: WoundMeasurement) -> dict[str, Any]:
    """What the ``measurement-details`` blob holds, as a JSON-able object.

    Keys: ``format``, ``pipeline`` (package and version), the figures as
    `WoundMeasurement.to_json` gives them, ``outline_world`` ([[x, y, z], ...] metres on
    the fitted skin) and ``wound_frame`` (4x4 local-to-world, z the skin normal).
    """
    return {
        "format": DETAILS_FORMAT,
        "pipeline": {"package": "coherency", "version": _pipeline_version()},
        **measurement.to_json(),
        "outline_world": [[float(v) for v in p] for p in measurement.outline_world],
        "wound_frame": [[float(v) for v in row] for row in measurement.wound_frame],
    }


def record_assessment(
    client: EdgeClient,
    wound_id: str,
    measurement: WoundMeasurement,
    *,
    clinician: str | None = None,
    captured_at: datetime | None = None,
) -> WoundAssessment:
    """Store a measurement as an assessment of a wound, with its scan and details as blobs.

    Args:
        client: the open store.
        wound_id: the wound scanned; the assessment belongs to its patient.
        measurement: what `measure` returned.
        clinician: who took the scan, if given.
        captured_at: when the scan was taken (default now); a naive time is taken as UTC.

    Returns:
        The new assessment: figures as `Measurements`, the quality flags, and two blob
        references (``scan-pointcloud``, ``measurement-details``).

    Raises:
        RecordNotFoundError: no such wound on this device, or it is deleted.
        RecordValidationError: a figure or flag the record refuses.
    """
    from lidar_capture._point_files import point_cloud_to_ply_bytes

    wound = client.wounds.get(wound_id)
    if wound.deleted:
        raise RecordNotFoundError(f"wound {wound_id} is deleted")
    when = captured_at if captured_at is not None else datetime.now(UTC)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    figures = measurement.to_json()
    for name in _FIGURES:
        if not math.isfinite(figures[name]):
            raise ValueError(f"measurement {name} is not a finite number: {figures[name]}")
    ply = point_cloud_to_ply_bytes(
        measurement.cloud,
        comments=[
            *_SCAN_PLY_COMMENTS,
            f"written by coherency {_pipeline_version()} (lidar_capture measure)",
        ],
    )
    details = json.dumps(
        measurement_details(measurement), sort_keys=True, separators=(",", ":")
    ).encode("utf-8")
    # Blobs go first so the record never points at a blob this store lacks. If the add
    # below fails, the blobs stay behind unreferenced: harmless, as blobs are
    # content-addressed (a retry stores nothing new) and hold nothing a record does not.
    scan_ref = client.blobs.put_bytes(ply)
    details_ref = client.blobs.put_bytes(details)
    return client.assessments.add(
        wound_id=wound.id,
        patient_id=wound.patient_id,
        captured_at=when,
        device_id=client.device_id,
        clinician=clinician,
        measurements=Measurements(
            **{name: figures[name] for name in _FIGURES}, area_method="measured"
        ),
        model_output=None
        if measurement.model_output is None
        else ModelOutput(
            model_id=measurement.model_output.model_id,
            model_version=measurement.model_output.model_version,
            tissue_composition=measurement.model_output.tissue_composition,
            confidence=min(max(measurement.model_output.confidence, 0.0), 1.0),
        ),
        quality_flags=tuple(measurement.quality),
        blobs=(
            BlobReference(
                sha256=scan_ref.sha256,
                size=scan_ref.size,
                kind=SCAN_BLOB_KIND,
                media_type=SCAN_MEDIA_TYPE,
            ),
            BlobReference(
                sha256=details_ref.sha256,
                size=details_ref.size,
                kind=DETAILS_BLOB_KIND,
                media_type=DETAILS_MEDIA_TYPE,
            ),
        ),
    )
