"""A seeded clinic for the dashboard's browser tests and benchmark, made through the real
paths: a tablet (an `edge_sdk.EdgeClient` with its own encrypted store) enrolled with
a one-time token, writing a patient, two wounds and their assessments, and syncing
them to the live server over HTTP, scans included (uploaded through the blob API).

- The healing wound: `assessments` assessments spread evenly over 10 weeks, its area
  shrinking from 12 cm² to 2 cm² (about 51 % less at 4 weeks: on track), its
  granulation rising as slough falls.
- The stalled wound: 6 assessments over the same 10 weeks, its area barely moving
  (about 5 % less at 4 weeks: flagged as not on track).
- The healing wound's last assessment carries a real scan: a ``scan-pointcloud`` blob
  (a binary PLY of `scan_points` coloured points, written by
  `lidar_capture.point_cloud_to_ply_bytes`: a patch of skin with a wound bed in its
  middle) and a ``measurement-details`` JSON blob whose ``outline_world`` is the wound's
  edge on the skin (metres, the scan's frame).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk import Argon2Params, EdgeClient, PassphraseKeyProvider
from lidar_capture import PointCloud, point_cloud_to_ply_bytes
from tests.server.scan_world import store_scan

__all__ = ["SeededWound", "enrolment_token", "scan_cloud", "seed_wound"]

WEEKS = 10
START_AREA_CM2 = 12.0
END_AREA_CM2 = 2.0
STALLED_AREA_CM2 = 8.0
STALLED_ASSESSMENTS = 6
SKIN_RGB = (0.85, 0.66, 0.55)
BED_RGB = (0.72, 0.16, 0.17)


@dataclass(frozen=True, slots=True)
class SeededWound:
    """What `seed_wound` made (ids as the server stores them)."""

    clinic_id: str
    device_id: str
    patient_id: str
    given_name: str
    family_name: str
    mrn: str
    wound_id: str
    stalled_wound_id: str
    assessment_ids: tuple[str, ...]
    """The healing wound's assessments, oldest first."""
    scan_assessment_id: str
    scan_sha256: str
    scan_points: int
    details_sha256: str


def enrolment_token(db: Any, clinic_id: str) -> str:
    """A one-time token enrolling one device into `clinic_id` (`db`: the server's
    `sync_server.db.Database`), as staff would hand one out."""
    from sync_server.identity.enrolment import create_enrolment_token

    with db.write() as session:
        token, _ = create_enrolment_token(
            session=session, clinic_id=clinic_id, ttl=timedelta(minutes=30)
        )
    return str(token)


def scan_cloud(points: int, area_cm2: float, *, seed: int = 7) -> tuple[PointCloud, Any]:
    """A scan of a 12 x 12 cm patch of gently curved skin with a round wound bed of
    `area_cm2` in its middle (up to 4 mm deep, red), `points` points coloured as
    captured; and the wound's outline on the skin (128 points, metres)."""
    rng = np.random.default_rng(seed)
    radius = math.sqrt(area_cm2 / math.pi) / 100.0
    xy = rng.uniform(-0.06, 0.06, size=(points, 2))
    skin_z = 0.02 - 2.0 * (xy[:, 0] ** 2 + xy[:, 1] ** 2)
    r = np.hypot(xy[:, 0], xy[:, 1])
    inside = r < radius
    depth = np.where(inside, 0.004 * (1.0 - (r / radius) ** 2), 0.0)
    z = skin_z - depth + rng.normal(0.0, 0.0002, size=points)
    colours = np.where(inside[:, None], BED_RGB, SKIN_RGB) + rng.normal(0.0, 0.03, (points, 3))
    cloud = PointCloud(np.column_stack([xy, z]), np.clip(colours, 0.0, 1.0))
    theta = np.linspace(0.0, 2.0 * math.pi, 128, endpoint=False)
    ox, oy = radius * np.cos(theta), radius * np.sin(theta)
    outline = np.column_stack([ox, oy, 0.02 - 2.0 * (ox**2 + oy**2)])
    return cloud, outline


def _area(day: float, *, stalled: bool) -> float:
    if stalled:
        return STALLED_AREA_CM2 * (1.0 - 0.0125 * day / 7)  # 5 % less at 4 weeks
    rate = math.log(START_AREA_CM2 / END_AREA_CM2) / (7 * WEEKS)
    return START_AREA_CM2 * math.exp(-rate * day)


def _assessment(
    client: EdgeClient,
    wound: Any,
    when: datetime,
    area: float,
    progress: float,
    blobs: list[dict[str, Any]],
) -> Any:
    granulation = round(40.0 + 50.0 * progress, 1)
    slough = round(45.0 - 40.0 * progress, 1)
    necrosis = round(100.0 - granulation - slough - 5.0, 1)
    length = math.sqrt(area * 4 / math.pi) * 1.2
    return client.assessments.add(
        wound_id=wound.id,
        patient_id=wound.patient_id,
        captured_at=when,
        device_id=client.device_id,
        clinician="RN Seed",
        measurements={
            "area_cm2": round(area, 2),
            "perimeter_cm": round(2 * math.sqrt(math.pi * area), 2),
            "length_cm": round(length, 2),
            "width_cm": round(area * 4 / math.pi / length, 2),
            "max_depth_mm": round(4.0 * (1.0 - 0.5 * progress), 2),
            "volume_cm3": round(area * 0.2, 2),
            "area_method": "measured",
        },
        model_output={
            "model_id": "wound-seg",
            "model_version": "1.0",
            "tissue_composition": {
                "granulation": granulation,
                "slough": slough,
                "necrosis": necrosis,
                "epithelium": 5.0,
            },
            "confidence": 0.9,
        },
        blobs=blobs,
        quality_flags=["low_light"] if progress == 0.0 else [],
    )


def seed_wound(
    server_url: str,
    token: str,
    folder: Path,
    *,
    given_name: str = "Ada",
    family_name: str = "Seedwell",
    mrn: str = "MRN-SEED-1",
    assessments: int = 50,
    scan_points: int = 500_000,
) -> SeededWound:
    """Enrol a tablet (its store in `folder`) with the server at `server_url` using the
    enrolment `token`, write a patient with two wounds and their assessments (see the
    module's docstring), and sync it all, scan blobs included.

    Raises:
        RuntimeError: The sync did not push every record or upload both blobs.
    """
    if assessments < 2:
        raise ValueError("a healing curve needs at least 2 assessments")
    client = EdgeClient.init(
        folder, PassphraseKeyProvider("seed pass phrase", params=Argon2Params.fast())
    )
    try:
        client.enroll(server_url, token, name="dashboard-seed")
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(weeks=WEEKS, days=1)
        patient = client.patients.add(
            given_name=given_name,
            family_name=family_name,
            birth_date=date(1948, 3, 14),
            sex="female",
            mrn=mrn,
        )
        wound = client.wounds.add(
            patient_id=patient.id,
            body_site="left heel",
            etiology="diabetic",
            onset=(start - timedelta(weeks=2)).date(),
        )
        stalled = client.wounds.add(
            patient_id=patient.id,
            body_site="right lateral malleolus",
            etiology="venous",
            onset=(start - timedelta(weeks=3)).date(),
        )
        ids = []
        scan_blobs: list[dict[str, Any]] = []
        for i in range(assessments):
            day = 7 * WEEKS * i / (assessments - 1)
            area = _area(day, stalled=False)
            blobs: list[dict[str, Any]] = []
            if i == assessments - 1:
                cloud, outline = scan_cloud(scan_points, area)
                ply = point_cloud_to_ply_bytes(cloud, comments=["frame: seeded scan"])
                details = {
                    "format": 1,
                    "pipeline": {"package": "coherency", "version": "seed"},
                    "area_cm2": round(area, 2),
                    "outline_world": outline.tolist(),
                    "wound_frame": np.eye(4).tolist(),
                }
                blobs = scan_blobs = store_scan(client, ply, details)
            made = _assessment(
                client, wound, start + timedelta(days=day), area, day / (7 * WEEKS), blobs
            )
            ids.append(made.id)
        for i in range(STALLED_ASSESSMENTS):
            day = 7 * WEEKS * i / (STALLED_ASSESSMENTS - 1)
            _assessment(
                client, stalled, start + timedelta(days=day), _area(day, stalled=True), 0.1, []
            )
        result = client.sync()
        scan_sha256, details_sha256 = (blob["sha256"] for blob in scan_blobs)
        expected = 3 + assessments + STALLED_ASSESSMENTS
        if len(result.pushed) < expected:
            raise RuntimeError(f"pushed {len(result.pushed)} records of {expected}")
        if not {scan_sha256, details_sha256} <= set(result.blobs_uploaded):
            raise RuntimeError(f"the scan blobs were not uploaded: {result.blobs_uploaded}")
        return SeededWound(
            clinic_id=str(client.replica.clinic_id),
            device_id=client.device_id,
            patient_id=patient.id,
            given_name=given_name,
            family_name=family_name,
            mrn=mrn,
            wound_id=wound.id,
            stalled_wound_id=stalled.id,
            assessment_ids=tuple(ids),
            scan_assessment_id=ids[-1],
            scan_sha256=scan_sha256,
            scan_points=scan_points,
            details_sha256=details_sha256,
        )
    finally:
        client.close()
