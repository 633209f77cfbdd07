"""What the dashboard's 3D view of a scan shows: an assessment's stored point cloud,
decimated and packed for the browser, with the measured boundary.

An assessment refers to its scan by blob (`crdt.BlobReference`): kind
``scan-pointcloud`` is the fused cloud (a binary PLY, metres, RGB as captured), kind
``measurement-details`` a JSON object whose ``outline_world`` is the measured boundary
([[x, y, z], ...] metres, in the scan's frame). The blobs are read through the blob
layer (`sync_server.blobs.downloads.locate_blob`, checked against their SHA-256 as
they are read), exactly what ``GET /v1/blobs/{sha256}`` would send; nothing is cached.

The cloud is decimated to at most ``max_points`` points (`Settings.dashboard_max_points`):
a uniform random subset drawn with a seed taken from the blob's SHA-256, so the same
scan always gives the same points, kept in their stored order, colours as captured.
It is centred on its centroid (float32 keeps sub-micrometre precision near zero).

The packed scan (``application/octet-stream``, little-endian throughout)::

    offset  size  field
    0       4     magic  b"CHSC"
    4       2     version  uint16 (`FORMAT_VERSION`, 1)
    6       2     flags    uint16: bit 0 set when the points have colours
    8       4     point count N (uint32, after decimation)
    12      4     stored point count (uint32, before decimation)
    16      4     outline point count M (uint32; 0 when no boundary is stored)
    20      4     reserved (0)
    24      24    centre: x, y, z float64, metres, in the scan's frame
    48      12 N  positions: x, y, z float32 per point, metres, minus the centre
    ..      3 N   colours: r, g, b uint8 per point (only when flags bit 0 is set)
    ..      0-3   zero bytes, so what follows starts at a multiple of 4
    ..      12 M  outline: x, y, z float32 per point, metres, minus the centre (a closed
                  polygon: the last point joins the first)

`HEADER_SIZE` is 48. A cloud without colours is drawn in a neutral colour.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lidar_capture import ScanFileError, point_cloud_from_ply_bytes
from sync_server.blobs.backends import (
    BlobBackend,
    BlobBackendError,
    BlobMissingError,
    storage_unavailable,
)
from sync_server.blobs.downloads import StoredBlob, locate_blob, record_download
from sync_server.blobs.missing import (
    CorruptBlobStream,
    blob_missing,
    mark_missing,
    verify_stream,
)
from sync_server.db import Database
from sync_server.errors import Gone, NotFound, Unprocessable
from sync_server.identity.principals import Principal
from sync_server.sync.records import record_read, visible_record
from sync_server.sync.tables import AssessmentRow

__all__ = [
    "DETAILS_KIND",
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "SCAN_KIND",
    "PackedScan",
    "ScanPage",
    "ScanRef",
    "decimate",
    "pack_scan",
    "scan_page",
    "scan_points",
]

MAGIC = b"CHSC"
FORMAT_VERSION = 1
HEADER_SIZE = 48
SCAN_KIND = "scan-pointcloud"
DETAILS_KIND = "measurement-details"
_HEADER = struct.Struct("<4sHHIIII3d")
_HAS_COLOUR = 1
_MAX_OUTLINE = 100_000
_MAX_DETAILS_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ScanRef:
    """A blob an assessment refers to."""

    sha256: str
    size: int
    media_type: str


@dataclass(frozen=True, slots=True)
class ScanPage:
    """What the 3D page shows: the assessment, its scan (if any), and why the scan
    cannot be shown (`unavailable`, a sentence for the page; None when it can)."""

    assessment: AssessmentRow
    measurements: dict[str, Any]
    purpose: str
    scan: ScanRef | None
    has_outline: bool
    unavailable: str | None


@dataclass(frozen=True, slots=True)
class PackedScan:
    """A scan packed for the viewer (the format in the module docstring)."""

    data: bytes
    points: int
    stored_points: int
    outline_points: int
    has_colour: bool
    centre: tuple[float, float, float]


def _field(record: dict[str, Any], name: str) -> Any:
    """A JSON field of the record (parsed when held as text)."""
    value = record.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def _refs(record: dict[str, Any], kind: str) -> ScanRef | None:
    """The first blob of `kind` the assessment's record names."""
    blobs = _field(record, "blobs")
    for blob in blobs if isinstance(blobs, list) else ():
        if isinstance(blob, dict) and blob.get("kind") == kind and "sha256" in blob:
            return ScanRef(
                str(blob["sha256"]), int(blob.get("size", 0)), str(blob.get("media_type", ""))
            )
    return None


def _unavailable(error: NotFound) -> str:
    if isinstance(error, Gone):
        return (
            "The server's storage has lost this scan. The device that holds it uploads it "
            "again at its next sync; try again later."
        )
    return (
        "The scan has not reached the server yet: the device that took it uploads it at "
        "its next sync. Try again later."
    )


def scan_page(
    *,
    database: Database,
    backend: BlobBackend,
    principal: Principal,
    assessment_id: str,
    request_id: str | None = None,
) -> ScanPage:
    """The 3D page of assessment `assessment_id`, its read audited (``assessments``).

    Raises:
        NotFound: ``not_found``: no such assessment the caller may see (audited).
        Forbidden: ``break_glass_expired``.
    """
    row, purpose = visible_record(
        database=database,
        principal=principal,
        table=AssessmentRow,
        record_id=assessment_id,
        collection="assessments",
        request_id=request_id,
    )
    record = json.loads(row.record)
    scan = _refs(record, SCAN_KIND)
    unavailable: str | None = None
    if scan is None:
        unavailable = "This assessment has no stored scan."
    elif principal.clinic_id is not None and principal.clinic_id != row.clinic_id:
        unavailable = "Scans are opened only by the staff of the clinic that holds them."
    else:
        try:
            locate_blob(
                database=database,
                backend=backend,
                principal=principal,
                sha256=scan.sha256,
                clinic_id=row.clinic_id,
            )
        except NotFound as error:
            unavailable = _unavailable(error)
    with database.write() as session:
        record_read(
            session=session,
            principal=principal,
            clinic_id=row.clinic_id,
            collection="assessments",
            record_ids=(row.id,),
            patient_ids=(row.patient_id,),
            purpose=purpose,
            request_id=request_id,
        )
    return ScanPage(
        assessment=row,
        measurements=measurements
        if isinstance(measurements := _field(record, "measurements"), dict)
        else {},
        purpose=purpose,
        scan=scan,
        has_outline=_refs(record, DETAILS_KIND) is not None,
        unavailable=unavailable,
    )


def _read_blob(database: Database, backend: BlobBackend, blob: StoredBlob) -> bytes:
    """The whole blob, checked against its SHA-256 (a mismatch marks it missing)."""
    chunks: Iterator[bytes] = verify_stream(
        backend.open(blob.clinic_id, blob.sha256),
        database=database,
        clinic_id=blob.clinic_id,
        sha256=blob.sha256,
    )
    try:
        return b"".join(chunks)
    except CorruptBlobStream:
        raise blob_missing(blob.sha256) from None
    except BlobMissingError:  # gone since `locate_blob` looked
        with database.write() as session:
            mark_missing(
                session=session, clinic_id=blob.clinic_id, sha256=blob.sha256, reason="absent"
            )
        raise blob_missing(blob.sha256) from None
    except BlobBackendError as exc:
        raise storage_unavailable(exc) from exc


def decimate(count: int, max_points: int, *, seed: bytes) -> npt.NDArray[np.intp] | None:
    """The indices (ascending) of a uniform random subset of `max_points` of `count`
    points drawn with `seed`, or None when all `count` are kept."""
    if count <= max_points:
        return None
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(seed).digest()[:8], "little"))
    chosen = rng.choice(count, size=max_points, replace=False, shuffle=False)
    chosen.sort()
    return chosen


def pack_scan(
    ply: bytes,
    *,
    max_points: int,
    outline: npt.ArrayLike | None = None,
    seed: bytes = b"",
    name: str = "the scan",
) -> PackedScan:
    """Parse a PLY point cloud, decimate it to at most `max_points` (the subset drawn
    with `seed`), centre it and pack it with `outline` (the format in the module
    docstring).

    Raises:
        Unprocessable: ``scan_unreadable``: not a PLY point cloud this reads.
    """
    try:
        cloud = point_cloud_from_ply_bytes(ply, name=name)
    except ScanFileError as exc:
        raise Unprocessable(
            f"the stored scan cannot be read: {exc}", code="scan_unreadable"
        ) from None
    stored = len(cloud)
    kept = decimate(stored, max_points, seed=seed)
    points = cloud.points if kept is None else cloud.points[kept]
    centre = points.mean(axis=0)
    positions = (points - centre).astype("<f4")
    colours = None
    if cloud.colors is not None:
        chosen = cloud.colors if kept is None else cloud.colors[kept]
        colours = np.rint(chosen * 255.0).astype(np.uint8)
    boundary = _outline(outline, centre)
    header = _HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        _HAS_COLOUR if colours is not None else 0,
        len(positions),
        stored,
        len(boundary),
        0,
        *(float(v) for v in centre),
    )
    parts = [header, positions.tobytes()]
    if colours is not None:
        parts.append(colours.tobytes())
        parts.append(b"\0" * (-colours.size % 4))
    parts.append(boundary.tobytes())
    return PackedScan(
        data=b"".join(parts),
        points=len(positions),
        stored_points=stored,
        outline_points=len(boundary),
        has_colour=colours is not None,
        centre=(float(centre[0]), float(centre[1]), float(centre[2])),
    )


def _outline(outline: npt.ArrayLike | None, centre: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
    """The outline as float32 points minus `centre`; empty when absent or malformed."""
    empty = np.empty((0, 3), dtype="<f4")
    if outline is None:
        return empty
    try:
        points = np.asarray(outline, dtype=np.float64)
    except (TypeError, ValueError):
        return empty
    if points.ndim != 2 or points.shape[1] != 3 or len(points) > _MAX_OUTLINE:
        return empty
    if not np.isfinite(points).all():
        return empty
    return (points - centre).astype("<f4")


def _outline_of(details: bytes) -> list[Any] | None:
    try:
        parsed = json.loads(details)
    except (ValueError, UnicodeDecodeError):
        return None
    found = parsed.get("outline_world") if isinstance(parsed, dict) else None
    return found if isinstance(found, list) else None


def scan_points(
    *,
    database: Database,
    backend: BlobBackend,
    principal: Principal,
    assessment_id: str,
    max_points: int,
    request_id: str | None = None,
) -> PackedScan:
    """Assessment `assessment_id`'s scan packed for the viewer, with its outline; each
    blob read is audited like a download through the blob API.

    Raises:
        NotFound: ``not_found`` (no such assessment the caller may see, audited),
            ``blob_not_found`` (the scan has not been uploaded, or is another clinic's
            under break-glass, which the blob API refuses too), ``no_scan``.
        Gone: ``blob_missing``: the storage lost the scan.
        Unprocessable: ``scan_unreadable``: the stored scan is not a PLY point cloud.
        Unavailable: ``storage_unavailable``.
    """
    row, _ = visible_record(
        database=database,
        principal=principal,
        table=AssessmentRow,
        record_id=assessment_id,
        collection="assessments",
        request_id=request_id,
    )
    record = json.loads(row.record)
    scan = _refs(record, SCAN_KIND)
    if scan is None:
        raise NotFound("this assessment has no stored scan", code="no_scan")
    blob = locate_blob(
        database=database,
        backend=backend,
        principal=principal,
        sha256=scan.sha256,
        clinic_id=row.clinic_id,
    )
    details_ref = _refs(record, DETAILS_KIND)
    details: StoredBlob | None = None
    if details_ref is not None and details_ref.size <= _MAX_DETAILS_BYTES:
        try:
            details = locate_blob(
                database=database,
                backend=backend,
                principal=principal,
                sha256=details_ref.sha256,
                clinic_id=row.clinic_id,
            )
        except NotFound:
            details = None  # not uploaded yet: the cloud is drawn without its outline
    with database.write() as session:
        for read in (blob, details):
            if read is not None:
                record_download(
                    session=session, principal=principal, blob=read, request_id=request_id
                )
    outline = None
    if details is not None:
        try:
            outline = _outline_of(_read_blob(database, backend, details))
        except NotFound:
            outline = None
    ply = _read_blob(database, backend, blob)
    return pack_scan(
        ply,
        max_points=max_points,
        outline=outline,
        seed=scan.sha256.encode(),
        name=f"scan {scan.sha256[:12]}",
    )
