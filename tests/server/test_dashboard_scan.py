"""The dashboard's 3D view of a stored scan: the page and its packed points, read
from blobs a tablet really uploaded, scoped to the clinic and audited; decimation to
the cap (deterministic, colours kept); clear answers for a scan not uploaded, lost or
unreadable (the drawing in a real browser: tests/server/test_dashboard_browser.py)."""

from __future__ import annotations

import json
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from sync_server.audit.tables import AuditEvent
from sync_server.dashboard.scans import FORMAT_VERSION, HEADER_SIZE, MAGIC, pack_scan
from sync_server.errors import Unprocessable
from tests.server.dashboard_world import new_staff, sign_in
from tests.server.scan_world import ply_of, ring, seed_scan, unpack, wound_cloud


def _events(server: Any, user_id: str) -> list[tuple[str, str, str | None, str | None]]:
    """(action, outcome, target, patients) of what `user_id` did, oldest first."""
    with server.db.read() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.actor_id == user_id).order_by(AuditEvent.id)
        ).all()
        return [(e.action, e.outcome, e.target, e.patients) for e in events if e.action != "login"]


def _index_of(points: np.ndarray) -> np.ndarray:
    """Which point of `wound_cloud` each of `points` is (x grows 1 µm per point)."""
    return np.rint((points[:, 0] - 0.3 + 0.04) / 1e-6).astype(np.int64)


def test_the_scan_page_and_its_points_are_scoped_and_audited(server: Any, tmp_path: Path) -> None:
    cloud = wound_cloud(3000)
    ply = ply_of(cloud)
    seeded = seed_scan(server, tmp_path, ply)
    account = new_staff(server, seeded.clinic_id)
    client, _ = sign_in(server, account)
    with closing(client):
        page = client.get(f"/dashboard/assessments/{seeded.assessment_id}/scan")
        assert page.status_code == 200, page.text
        assert f'data-src="/dashboard/assessments/{seeded.assessment_id}/scan.bin"' in page.text
        assert (
            '<script type="module" src="/dashboard/static/vendor/viewer.js"></script>' in page.text
        )
        assert 'tabindex="0"' in page.text and "aria-label=" in page.text
        assert "arrow keys" in page.text and "7.07 cm²" in page.text
        assert "<script>" not in page.text and " style=" not in page.text
        points = client.get(f"/dashboard/assessments/{seeded.assessment_id}/scan.bin")
        assert points.status_code == 200
        assert points.headers["content-type"] == "application/octet-stream"
        assert "no-store" in points.headers["cache-control"]
    packed = unpack(points.content)
    assert (packed["magic"], packed["version"]) == (MAGIC, FORMAT_VERSION)
    assert packed["count"] == packed["stored"] == 3000
    stored = cloud.points.astype(np.float32).astype(np.float64)  # the PLY holds float32
    np.testing.assert_allclose(packed["centre"], stored.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(packed["positions"] + packed["centre"], stored, atol=1e-6)
    assert packed["colours"] is not None
    expected = np.rint(np.clip(cloud.colors, 0, 1) * 255).astype(np.uint8)  # type: ignore[arg-type]
    np.testing.assert_array_equal(packed["colours"], expected)
    np.testing.assert_allclose(packed["outline"] + packed["centre"], ring(), atol=1e-6)

    other = new_staff(server, server.new_clinic())
    outsider, _ = sign_in(server, other)
    with closing(outsider):
        for suffix in ("scan", "scan.bin"):
            refused = outsider.get(f"/dashboard/assessments/{seeded.assessment_id}/{suffix}")
            assert refused.status_code == 404
            assert "text/html" in refused.headers["content-type"]
            assert "Scan" not in refused.text.replace("Scan in 3D", "")

    assert _events(server, account.user_id) == [
        ("read", "ok", json.dumps({"assessments": [seeded.assessment_id]}), seeded.patient_id),
        ("blob-download", "ok", seeded.scan_sha256, seeded.patient_id),
        ("blob-download", "ok", seeded.details_sha256, seeded.patient_id),
    ]
    refusals = _events(server, other.user_id)
    assert [(action, outcome) for action, outcome, _, _ in refusals] == [
        ("read", "not_found"),
        ("read", "not_found"),
    ]


def test_a_cloud_over_the_cap_is_decimated_to_the_cap_deterministically() -> None:
    cloud = wound_cloud(20_000)
    ply = ply_of(cloud)
    first = pack_scan(ply, max_points=1_500, outline=ring(), seed=b"scan-a")
    again = pack_scan(ply, max_points=1_500, outline=ring(), seed=b"scan-a")
    other = pack_scan(ply, max_points=1_500, outline=ring(), seed=b"scan-b")
    assert first.data[:4] == MAGIC and len(first.data) > HEADER_SIZE
    assert (first.points, first.stored_points, first.outline_points) == (1_500, 20_000, 64)
    assert first.data == again.data  # the same scan gives the same points
    assert first.data != other.data
    packed = unpack(first.data)
    assert packed["count"] == 1_500 and packed["stored"] == 20_000
    kept = _index_of(packed["positions"] + packed["centre"])
    assert len(np.unique(kept)) == 1_500 and np.all(np.diff(kept) > 0)  # stored order
    assert kept.min() >= 0 and kept.max() < 20_000
    # Uniform: every tenth of the stored points keeps about a tenth of the subset.
    per_tenth = np.bincount(kept * 10 // 20_000, minlength=10)
    assert per_tenth.min() > 100 and per_tenth.max() < 200, per_tenth
    # Colours as captured, for the points kept.
    expected = np.rint(np.clip(cloud.colors, 0, 1) * 255).astype(np.uint8)  # type: ignore[arg-type]
    np.testing.assert_array_equal(packed["colours"], expected[kept])
    # The centre is the kept points' centroid.
    np.testing.assert_allclose(packed["positions"].astype(np.float64).mean(axis=0), 0, atol=1e-6)
    # A cloud under the cap is sent whole.
    whole = pack_scan(ply, max_points=20_000, seed=b"scan-a")
    assert (whole.points, whole.outline_points) == (20_000, 0)


def test_a_scan_without_colours_and_a_bad_outline() -> None:
    packed = pack_scan(
        ply_of(wound_cloud(500, coloured=False)),
        max_points=1_000,
        outline=[[0.0, 1.0], [2.0, float("nan")]],
    )
    assert not packed.has_colour and packed.outline_points == 0
    unpacked = unpack(packed.data)
    assert unpacked["colours"] is None and unpacked["count"] == 500
    assert len(packed.data) == HEADER_SIZE + 500 * 12


@pytest.mark.parametrize(
    "ply",
    [
        b"not a point cloud",
        b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\n"
        b"property float x\nproperty float y\nproperty float z\nend_header\n" + b"\0" * 100,
    ],
)
def test_an_unreadable_scan_is_refused_clearly(ply: bytes) -> None:
    with pytest.raises(Unprocessable) as refused:
        pack_scan(ply, max_points=100)
    assert refused.value.code == "scan_unreadable"
    assert "cannot be read" in refused.value.message


def test_missing_lost_and_corrupt_scans_get_clear_answers(server: Any, tmp_path: Path) -> None:
    not_uploaded = seed_scan(server, tmp_path / "a", ply_of(wound_cloud(200)), upload_blobs=False)
    lost = seed_scan(server, tmp_path / "b", ply_of(wound_cloud(300)))
    server.app.state.blobs.blob_path(lost.clinic_id, lost.scan_sha256).unlink()
    corrupt = seed_scan(
        server,
        tmp_path / "c",
        b"ply\nformat binary_little_endian 1.0\nelement vertex 5000\n"
        b"property float x\nproperty float y\nproperty float z\nend_header\n" + b"\1" * 64,
    )
    cases = [
        (not_uploaded, 404, "has not reached the server yet"),
        (lost, 410, "storage has lost this scan"),
        (corrupt, 422, "cannot be read"),
    ]
    for seeded, status, sentence in cases:
        client, _ = sign_in(server, new_staff(server, seeded.clinic_id))
        with closing(client):
            page = client.get(f"/dashboard/assessments/{seeded.assessment_id}/scan")
            points = client.get(f"/dashboard/assessments/{seeded.assessment_id}/scan.bin")
        assert page.status_code == 200
        assert points.status_code == status, points.text
        assert "text/html" in points.headers["content-type"]
        if status == 422:
            assert sentence in points.text and "truncated" in points.text
            assert 'id="scan-viewer"' in page.text  # the viewer shows scan.bin's message
        else:
            assert sentence in page.text and 'id="scan-viewer"' not in page.text
            assert "viewer.js" not in page.text


def test_packing_a_500000_point_scan_takes_well_under_a_second() -> None:
    ply = ply_of(wound_cloud(500_000))
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        packed = pack_scan(ply, max_points=1_000_000, outline=ring(), seed=b"x")
        timings.append(time.perf_counter() - started)
    assert packed.points == 500_000
    assert min(timings) < 0.5, timings
    print(f"\npacking 500,000 points: {sorted(timings)} s, {len(packed.data)} bytes")
