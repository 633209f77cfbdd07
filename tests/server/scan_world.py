"""Scans for the dashboard's 3D view tests: an enrolled tablet (a real `EdgeClient`)
stores an assessment that refers to a PLY point cloud and its measurement details, and
syncs: the records are pushed and the blobs uploaded through the blob API, as a device
in a clinic does."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider
from lidar_capture import PointCloud, point_cloud_to_ply_bytes
from sync_server.identity.enrolment import create_enrolment_token

HEADER = struct.Struct("<4sHHIIII3d")
"""The packed scan's header (sync_server/dashboard/scans.py)."""


@dataclass
class SeededScan:
    """An assessment on the server whose scan a tablet stored (and, unless told not
    to, uploaded)."""

    clinic_id: str
    patient_id: str
    wound_id: str
    assessment_id: str
    scan_sha256: str
    details_sha256: str
    outline: npt.NDArray[np.float64]


def wound_cloud(count: int, *, coloured: bool = True, seed: int = 7) -> PointCloud:
    """A synthetic scan: a gently curved patch of skin 8 cm across, `count` points,
    with a reddish wound bed in the middle; point i's x grows with i (1 µm a step),
    so a test can tell which stored point a drawn one is."""
    rng = np.random.default_rng(seed)
    x = np.arange(count, dtype=np.float64) * 1e-6 % 0.08 - 0.04 + 0.3
    y = rng.uniform(-0.04, 0.04, count) - 0.1
    z = 0.5 + 2.0 * ((x - 0.3) ** 2 + (y + 0.1) ** 2)
    points = np.stack([x, y, z], axis=1)
    if not coloured:
        return PointCloud(points=points)
    wound = (x - 0.3) ** 2 + (y + 0.1) ** 2 < 0.015**2
    colours = np.where(wound[:, None], [0.7, 0.15, 0.12], [0.86, 0.68, 0.58])
    colours = colours + rng.uniform(-0.05, 0.05, (count, 3))
    return PointCloud(points=points, colors=np.clip(colours, 0, 1))


def ring(count: int = 64, radius: float = 0.015) -> npt.NDArray[np.float64]:
    """The measured boundary around the synthetic wound (metres, the scan's frame)."""
    angle = np.linspace(0, 2 * np.pi, count, endpoint=False)
    x = 0.3 + radius * np.cos(angle)
    y = -0.1 + radius * np.sin(angle)
    return np.stack([x, y, 0.5 + 2.0 * radius**2 * np.ones(count)], axis=1)


def enrolled_tablet(server: Any, clinic_id: str, folder: Path) -> EdgeClient:
    """A tablet enrolled in `clinic_id` of `server`."""
    client = EdgeClient.init(
        folder / "tablet",
        PassphraseKeyProvider("pass phrase", params=Argon2Params.fast()),
        clinic_id=clinic_id,
    )
    with server.db.write() as session:
        token, _ = create_enrolment_token(
            session=session, clinic_id=clinic_id, ttl=timedelta(minutes=10)
        )
    client.enroll(server.url, token, name="scanner")
    return client


def store_scan(client: EdgeClient, ply: bytes, details: dict[str, Any]) -> list[dict[str, Any]]:
    """Store a scan (`ply`) and its measurement details in `client`'s blob store, as
    `lidar_capture.record_assessment` does; returns the assessment's blob references
    (scan first)."""
    scan_ref = client.blobs.put_bytes(ply)
    details_ref = client.blobs.put_bytes(json.dumps(details, separators=(",", ":")).encode())
    return [
        {
            "sha256": scan_ref.sha256,
            "size": scan_ref.size,
            "kind": "scan-pointcloud",
            "media_type": "application/x-ply",
        },
        {
            "sha256": details_ref.sha256,
            "size": details_ref.size,
            "kind": "measurement-details",
            "media_type": "application/json",
        },
    ]


def seed_scan(
    server: Any,
    folder: Path,
    ply: bytes,
    *,
    outline: npt.NDArray[np.float64] | None = None,
    upload_blobs: bool = True,
) -> SeededScan:
    """A fresh clinic whose tablet records an assessment with `ply` as its scan and
    `outline` in its measurement details, then syncs (blobs too, unless told not to)."""
    outline = ring() if outline is None else outline
    clinic_id = server.new_clinic()
    tablet = enrolled_tablet(server, clinic_id, folder)
    try:
        patient = tablet.patients.add(
            given_name="Ada", family_name="Scan", birth_date=date(1950, 1, 2)
        )
        wound = tablet.wounds.add(patient_id=patient.id, body_site="left heel", etiology="pressure")
        blobs = store_scan(
            tablet, ply, {"format": 1, "area_cm2": 7.07, "outline_world": outline.tolist()}
        )
        assessment = tablet.assessments.add(
            wound_id=wound.id,
            patient_id=patient.id,
            captured_at="2026-11-21T10:15:00+00:00",
            device_id=tablet.device_id,
            measurements={"area_cm2": 7.07, "volume_cm3": 1.25, "max_depth_mm": 4.5},
            blobs=blobs,
        )
        result = tablet.sync(blobs=upload_blobs)
        assert result.pushed, result
        if upload_blobs:
            assert sorted(result.blobs_uploaded) == sorted(b["sha256"] for b in blobs)
    finally:
        tablet.close()
    return SeededScan(
        clinic_id,
        patient.id,
        wound.id,
        assessment.id,
        blobs[0]["sha256"],
        blobs[1]["sha256"],
        outline,
    )


def ply_of(cloud: PointCloud) -> bytes:
    """The cloud as a stored scan blob (lidar_capture's writer)."""
    return point_cloud_to_ply_bytes(cloud, comments=["frame: test"])


def unpack(data: bytes) -> dict[str, Any]:
    """A packed scan's header and arrays (the format in sync_server/dashboard/scans.py)."""
    magic, version, flags, count, stored, outline, _, cx, cy, cz = HEADER.unpack_from(data)
    offset = HEADER.size
    positions = np.frombuffer(data, "<f4", count * 3, offset).reshape(-1, 3)
    offset += count * 12
    colours = None
    if flags & 1:
        colours = np.frombuffer(data, np.uint8, count * 3, offset).reshape(-1, 3)
        offset += count * 3 + (-count * 3) % 4
    boundary = np.frombuffer(data, "<f4", outline * 3, offset).reshape(-1, 3)
    assert offset + outline * 12 == len(data), "bytes past the outline"
    return {
        "magic": magic,
        "version": version,
        "count": count,
        "stored": stored,
        "centre": np.array([cx, cy, cz]),
        "positions": positions,
        "colours": colours,
        "outline": boundary,
    }
