"""Storing a measured scan as a wound assessment: figures, flags and two encrypted blobs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_sdk import EdgeClient, RecordNotFoundError
from lidar_capture import (
    SyntheticScan,
    WoundMeasurement,
    generate,
    measure,
    point_cloud_from_ply_bytes,
    random_spec,
)
from lidar_capture._points import merge_frames
from lidar_capture._record import DETAILS_BLOB_KIND, SCAN_BLOB_KIND, record_assessment
from lidar_capture._types import Frame, Intrinsics, Scan


@pytest.fixture(scope="module")
def synthetic() -> SyntheticScan:
    """A bowl-shaped elliptical wound on flat skin, 4 frames, with its ground truth."""
    spec = random_spec(7, surface="plane", profile="bowl", outline="ellipse", frames=4)
    return generate(spec)


@pytest.fixture(scope="module")
def measurement(synthetic: SyntheticScan) -> WoundMeasurement:
    return measure(synthetic.scan)


@pytest.fixture
def client(tmp_store: Any) -> EdgeClient:
    made: EdgeClient = tmp_store("store")
    return made


def _wound(client: EdgeClient) -> Any:
    patient = client.patients.add(given_name="Ada", family_name="Okafor", birth_date="1950-03-01")
    return client.wounds.add(patient_id=patient.id, body_site="left calf")


def test_the_assessment_holds_the_figures_flags_and_two_readable_blobs(
    client: EdgeClient, measurement: WoundMeasurement, synthetic: SyntheticScan, tmp_store: Any
) -> None:
    wound = _wound(client)
    flagged = dataclasses.replace(measurement, quality=("noise_high", "sparse_wound"))
    when = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    assessment = record_assessment(
        client, wound.id, flagged, clinician="RN Patel", captured_at=when
    )

    assert (assessment.wound_id, assessment.patient_id) == (wound.id, wound.patient_id)
    assert assessment.device_id == client.device_id
    assert assessment.clinician == "RN Patel"
    assert assessment.captured_at == when
    assert assessment.quality_flags == ("noise_high", "sparse_wound")
    figures = measurement.to_json()
    assert assessment.measurements.model_dump() == {
        name: figures[name]
        for name in (
            "area_cm2", "perimeter_cm", "length_cm", "width_cm",
            "max_depth_mm", "mean_depth_mm", "volume_cm3", "ruler_area_cm2",
        )
    } | {"area_method": "measured"}  # fmt: skip
    assert assessment.measurements.area_cm2 == pytest.approx(synthetic.truth.area_cm2, rel=0.05)

    scan_ref, details_ref = assessment.blobs
    assert (scan_ref.kind, scan_ref.media_type) == (SCAN_BLOB_KIND, "application/x-ply")
    assert (details_ref.kind, details_ref.media_type) == (DETAILS_BLOB_KIND, "application/json")
    path = client.path
    client.close()

    # Reopened from disk: the record and both blobs came back through the encryption.
    reopened = tmp_store.open(path)
    assert reopened.assessments.for_wound(wound.id) == [assessment]
    ply = reopened.blobs.read_bytes(scan_ref.sha256)
    assert (hashlib.sha256(ply).hexdigest(), len(ply)) == (scan_ref.sha256, scan_ref.size)
    cloud = point_cloud_from_ply_bytes(ply)
    assert len(cloud) == len(measurement.cloud) == measurement.point_count
    np.testing.assert_allclose(cloud.points, measurement.cloud.points)
    details = json.loads(reopened.blobs.read_bytes(details_ref.sha256))
    np.testing.assert_allclose(details["outline_world"], measurement.outline_world)
    np.testing.assert_allclose(details["wound_frame"], measurement.wound_frame)
    assert details["quality"] == ["noise_high", "sparse_wound"]
    assert details["boundary_source"] == measurement.boundary_source
    assert details["length_axis"] == "body"
    assert details["frame_count"] == 4
    assert details["format"] == 1
    assert set(details["timings_ms"]) >= {"detect", "measure", "total"}
    # Nothing readable on disk: the blob files are ciphertext.
    on_disk = b"".join(p.read_bytes() for p in Path(path, "blobs").rglob("*") if p.is_file())
    assert b"end_header" not in on_disk and b"outline_world" not in on_disk


def test_captured_at_defaults_to_now_utc(client: EdgeClient, measurement: WoundMeasurement) -> None:
    wound = _wound(client)
    before = datetime.now(UTC)
    assessment = record_assessment(client, wound.id, measurement)
    assert before - timedelta(seconds=1) <= assessment.captured_at <= datetime.now(UTC)
    assert assessment.captured_at.utcoffset() == timedelta(0)
    assert assessment.clinician is None
    assert assessment.quality_flags == measurement.quality


def test_an_unknown_wound_stores_nothing(client: EdgeClient, measurement: WoundMeasurement) -> None:
    wound = _wound(client)
    with pytest.raises(RecordNotFoundError, match="no-such-wound"):
        record_assessment(client, "no-such-wound", measurement)
    # A patient id is not a wound id either.
    with pytest.raises(RecordNotFoundError):
        record_assessment(client, wound.patient_id, measurement)
    assert client.assessments.list() == []
    assert list(client.blobs.list()) == []


def test_a_deleted_wound_stores_nothing(client: EdgeClient, measurement: WoundMeasurement) -> None:
    wound = _wound(client)
    client.wounds.delete(wound.id)
    with pytest.raises(RecordNotFoundError, match="deleted"):
        record_assessment(client, wound.id, measurement)
    assert client.assessments.list(include_deleted=True) == []
    assert list(client.blobs.list()) == []


def _flat_frame(confidence: int, z: float = 0.3) -> Frame:
    """A 64x48 view of a flat plane z metres ahead, half red and half blue."""
    color = np.zeros((48, 64, 3), dtype=np.uint8)
    color[:, :32] = (255, 0, 0)
    color[:, 32:] = (0, 0, 255)
    return Frame(
        depth=np.full((48, 64), z, dtype=np.float32),
        intrinsics=Intrinsics(fx=60.0, fy=60.0, cx=31.5, cy=23.5, width=64, height=48),
        pose=np.eye(4),
        confidence=np.full((48, 64), confidence, dtype=np.uint8),
        color=color,
    )


def test_merge_frames_pools_confident_pixels_into_one_voxel_grid() -> None:
    single = merge_frames(Scan(source="t", origin="t", frames=(_flat_frame(2),)))
    # Pixels 5 mm apart at 30 cm: each already has a voxel of its own.
    assert len(single) == 64 * 48
    assert single.colors is not None
    assert np.allclose(single.points[:, 2], 0.3)
    red = single.points[:, 0] < 0
    assert np.allclose(single.colors[red], [1, 0, 0]) and np.allclose(
        single.colors[~red], [0, 0, 1]
    )

    # The same view twice (and a low-confidence one) merges into the same points.
    twice = merge_frames(
        Scan(source="t", origin="t", frames=(_flat_frame(2), _flat_frame(1), _flat_frame(0, 0.2)))
    )
    assert len(twice) == len(single)
    assert np.allclose(twice.points[:, 2], 0.3)
    # 2 cm voxels over the 32 x 24 cm view: at most 17 x 13 of them.
    coarse = merge_frames(Scan(source="t", origin="t", frames=(_flat_frame(2),)), voxel_m=0.02)
    assert 16 * 12 <= len(coarse) <= 17 * 13

    with pytest.raises(ValueError, match="confidence"):
        merge_frames(Scan(source="t", origin="t", frames=(_flat_frame(0),)))
