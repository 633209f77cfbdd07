"""File capture sources: point-cloud files through Open3D and Stray Scanner RGB-D folders.

Frames are rendered here analytically (a tilted plane with a spherical dent seen from a
known camera) so the tests do not lean on the synthetic generator.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
import pytest

from lidar_capture import (
    FileSource,
    open_scan,
    point_cloud_from_ply_bytes,
    point_cloud_to_ply_bytes,
    read_point_cloud,
    read_strayscanner,
    write_point_cloud,
    write_strayscanner,
)
from lidar_capture._errors import ScanFileError
from lidar_capture._point_files import POINT_CLOUD_SUFFIXES
from lidar_capture._types import CaptureSource, Frame, Intrinsics, PointCloud, Scan

o3d = pytest.importorskip(
    "open3d",
    reason="PCD/XYZ files and Stray Scanner depth PNGs go through Open3D (the capture-accel extra)",
)

DEPTH_K = Intrinsics(fx=60.0, fy=60.0, cx=31.5, cy=23.5, width=64, height=48)
COLOR_SIZE = (128, 96)  # same 4:3 field of view as the 64x48 depth grid
N_FRAMES = 3

# The scene: a tilted plane through the origin with a spherical bowl pressed into it.
PLANE_NORMAL = np.array([0.2, -0.1, 1.0]) / np.linalg.norm([0.2, -0.1, 1.0])
DENT_RADIUS = 0.03
DENT_CENTRE = PLANE_NORMAL * 0.02  # sphere centre above the plane: bowl 1 cm deep


# --------------------------------------------------------------------------- helpers


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV camera-to-world pose (z forward, y down) at `eye` looking at `target`."""
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross([0.0, -1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, y, z], axis=1)
    pose[:3, 3] = eye
    return pose


def surface_distance(points: np.ndarray) -> np.ndarray:
    """How far world points are from the scene's surface (plane outside the bowl, bowl in)."""
    height = points @ PLANE_NORMAL
    inside = np.linalg.norm(points - DENT_CENTRE, axis=1) < DENT_RADIUS + 2e-3
    on_sphere = np.abs(np.linalg.norm(points - DENT_CENTRE, axis=1) - DENT_RADIUS)
    below = np.abs(height)
    distance = np.where(inside & (height < 0), np.minimum(on_sphere, below), below)
    return np.asarray(distance, dtype=np.float64)


def render_depth(pose: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Exact z-depth of the scene for every pixel (rays with z = 1 in camera axes)."""
    v, u = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
    rays_cam = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)
    rays = rays_cam.reshape(-1, 3) @ pose[:3, :3].T
    origin = pose[:3, 3]
    t = (-(origin @ PLANE_NORMAL)) / (rays @ PLANE_NORMAL)
    hit = origin + t[:, None] * rays
    in_bowl = np.linalg.norm(hit - DENT_CENTRE, axis=1) < DENT_RADIUS
    # Far root of |origin + s*ray - centre| = r: where the ray leaves the sphere, below the plane.
    oc = origin - DENT_CENTRE
    a = np.einsum("ij,ij->i", rays, rays)
    b = 2 * rays @ oc
    c = oc @ oc - DENT_RADIUS**2
    far = (-b + np.sqrt(np.maximum(b * b - 4 * a * c, 0))) / (2 * a)
    depth = np.where(in_bowl, far, t)
    return np.asarray(depth.reshape(k.height, k.width), dtype=np.float32)


def make_scan(*, confidence: bool = True, color: bool = True, frames: int = N_FRAMES) -> Scan:
    out = []
    target = np.zeros(3)
    for i in range(frames):
        angle = 0.3 * i
        eye = np.array([0.05 * math.cos(angle), 0.05 * math.sin(angle) - 0.04, 0.3])
        pose = look_at(eye, target)
        depth = render_depth(pose, DEPTH_K)
        conf = None
        if confidence:
            conf = np.full(depth.shape, 2, np.uint8)
            conf[:, :10] = 1
            conf[:5, :] = 0
        rgb = None
        if color:
            w, h = COLOR_SIZE
            y, x = np.mgrid[0:h, 0:w]
            rgb = np.stack(
                [(x * 2 + 20 * i) % 256, (y * 2) % 256, np.full_like(x, 90 + 40 * i)], axis=-1
            ).astype(np.uint8)
        out.append(
            Frame(
                depth=depth,
                intrinsics=DEPTH_K,
                pose=pose,
                confidence=conf,
                color=rgb,
                timestamp=10.0 + i / 60,
            )
        )
    return Scan(source="test", origin="rendered", frames=tuple(out))


def backproject(frame: Frame) -> np.ndarray:
    k = frame.intrinsics
    v, u = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
    z = frame.depth.astype(np.float64)
    cam = np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], axis=-1).reshape(-1, 3)
    return cam @ frame.pose[:3, :3].T + frame.pose[:3, 3]


def random_cloud(n: int = 200, colored: bool = True, seed: int = 0) -> PointCloud:
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3)) * 0.03 + [0.1, -0.2, 0.3]
    colors = rng.uniform(size=(n, 3)) if colored else None
    return PointCloud(points=points, colors=colors)


def write_png(path: Path, pixels: np.ndarray) -> None:
    image = o3d.geometry.Image(cast(Any, np.ascontiguousarray(pixels)))
    assert o3d.io.write_image(path, image)


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=60)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv444p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def assert_names(exc: pytest.ExceptionInfo[ScanFileError], path: Path) -> None:
    assert exc.value.path == str(path)
    assert str(path) in str(exc.value)


@pytest.fixture
def stray(tmp_path: Path) -> Path:
    folder = tmp_path / "scan"
    write_strayscanner(folder, make_scan())
    return folder


# --------------------------------------------------------------------------- point clouds


@pytest.mark.parametrize("suffix", [".ply", ".pcd", ".xyzrgb", ".pts"])
def test_colored_cloud_round_trip(tmp_path: Path, suffix: str) -> None:
    cloud = random_cloud()
    path = tmp_path / f"cloud{suffix}"
    write_point_cloud(path, cloud)
    back = read_point_cloud(path)
    # PCD and PLY store float32 coordinates; the text formats keep (nearly) double precision.
    single = suffix in (".pcd", ".ply")
    np.testing.assert_allclose(back.points, cloud.points, atol=1e-6 if single else 1e-9)
    assert back.points.dtype == np.float64
    assert back.colors is not None and back.colors.dtype == np.float64
    assert back.colors.min() >= 0 and back.colors.max() <= 1
    assert cloud.colors is not None
    np.testing.assert_allclose(back.colors, cloud.colors, atol=0.5 / 255 + 1e-9)


@pytest.mark.parametrize("suffix", [".ply", ".pcd", ".xyz", ".PLY"])
def test_uncolored_cloud_round_trip(tmp_path: Path, suffix: str) -> None:
    cloud = random_cloud(colored=False)
    path = tmp_path / f"cloud{suffix}"
    write_point_cloud(path, cloud)
    back = read_point_cloud(path)
    np.testing.assert_allclose(back.points, cloud.points, atol=1e-6)
    assert back.colors is None


def test_xyzn_is_read(tmp_path: Path) -> None:
    path = tmp_path / "cloud.xyzn"
    path.write_text("0.01 0.02 0.03 0 0 1\n0.04 0.05 0.06 0 1 0\n")
    back = read_point_cloud(path)
    np.testing.assert_allclose(back.points, [[0.01, 0.02, 0.03], [0.04, 0.05, 0.06]])
    with pytest.raises(ScanFileError, match="normals") as exc:
        write_point_cloud(tmp_path / "out.xyzn", back)
    assert_names(exc, tmp_path / "out.xyzn")


@pytest.mark.parametrize("colored", [True, False])
def test_ply_bytes_round_trip(colored: bool) -> None:
    cloud = random_cloud(colored=colored)
    data = point_cloud_to_ply_bytes(cloud)
    assert data.startswith(b"ply\nformat binary_little_endian 1.0\n")
    assert (b"property uchar red" in data) == colored
    assert b"property float x\n" in data and b"\ncomment units: metres\n" in data
    back = point_cloud_from_ply_bytes(data)
    np.testing.assert_array_equal(back.points, cloud.points.astype(np.float32))
    if colored:
        assert back.colors is not None and cloud.colors is not None
        np.testing.assert_allclose(back.colors, cloud.colors, atol=0.5 / 255 + 1e-12)
    else:
        assert back.colors is None


def test_ply_bytes_are_a_ply_open3d_reads(tmp_path: Path) -> None:
    cloud = random_cloud()
    path = tmp_path / "blob.ply"
    path.write_bytes(point_cloud_to_ply_bytes(cloud))
    o3d_cloud = o3d.io.read_point_cloud(str(path))
    np.testing.assert_array_equal(o3d_cloud.points, cloud.points.astype(np.float32))


def test_ply_bytes_read_open3d_and_ascii_files(tmp_path: Path) -> None:
    cloud = random_cloud()
    path = tmp_path / "o3d.ply"
    write_point_cloud(path, cloud)
    back = point_cloud_from_ply_bytes(path.read_bytes())
    np.testing.assert_array_equal(back.points, cloud.points.astype(np.float32))
    ascii_ply = (
        b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
        b"property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
        b"end_header\n0.1 0.2 0.3 255 0 51\n0.4 0.5 0.6 0 255 0\n"
    )
    back = point_cloud_from_ply_bytes(ascii_ply)
    np.testing.assert_allclose(back.points, [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    assert back.colors is not None
    np.testing.assert_allclose(back.colors, [[1.0, 0.0, 0.2], [0.0, 1.0, 0.0]])


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "not a PLY"),
        (b"hello world", "not a PLY"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\n", "end_header"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n", "x, y"),
        (b"ply\nformat weird 1.0\nend_header\n", "unknown PLY format"),
    ],
)
def test_ply_bytes_errors(data: bytes, problem: str) -> None:
    with pytest.raises(ScanFileError, match=problem) as exc:
        point_cloud_from_ply_bytes(data, name="blob 42")
    assert exc.value.path == "blob 42"


def test_ply_bytes_truncated() -> None:
    data = point_cloud_to_ply_bytes(random_cloud(n=10))
    with pytest.raises(ScanFileError, match="truncated: the header declares 10 points"):
        point_cloud_from_ply_bytes(data[:-5])


def _truncated_binary_ply(path: Path) -> None:
    write_point_cloud(path, random_cloud(n=50))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_ascii_ply(path: Path) -> None:
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n0.1 0.2 0.3\n0.4 0.5 0.6\n"
    )


def _bad_token_ascii_ply(path: Path) -> None:
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n0.1 0.2 0.3\n0.4 oops 0.6\n"
    )


def _zero_vertex_ply(path: Path) -> None:
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
        "property float z\nend_header\n"
    )


def _millimetre_ply(path: Path) -> None:
    cloud = random_cloud()
    write_point_cloud(path, PointCloud(points=cloud.points * 1000.0, colors=cloud.colors))


def _nan_xyz(path: Path) -> None:
    path.write_text("0.1 0.1 0.1\nnan 0.2 0.2\n0.3 0.3 inf\n")


def _broken_pcd(path: Path) -> None:
    write_point_cloud(path, random_cloud())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("name", "make", "problem"),
    [
        ("missing.ply", None, "no such file"),
        ("cloud.obj", lambda p: p.write_text("v 0 0 0\n"), "unsupported point-cloud format '.obj'"),
        ("noext", lambda p: p.write_text("0 0 0\n"), "unsupported point-cloud format"),
        ("empty.ply", lambda p: p.write_bytes(b""), "is empty"),
        ("garbage.ply", lambda p: p.write_bytes(b"\x00\x01garbage" * 10), "not a PLY"),
        ("trunc.ply", _truncated_binary_ply, "truncated: the header declares 50 points"),
        ("trunc_ascii.ply", _truncated_ascii_ply, "truncated: the header declares 3 points"),
        ("token.ply", _bad_token_ascii_ply, "vertex 1 is not 3 numbers"),
        ("zero.ply", _zero_vertex_ply, "holds no points"),
        ("mm.ply", _millimetre_ply, "looks like millimetres"),
        ("nan.xyz", _nan_xyz, "1 of 3 points have infinite coordinates"),
        ("bad.xyz", lambda p: p.write_text("0.1 0.2 0.3\n0.4 abc 0.6\n"), "line 2 is not 3"),
        ("blank.xyz", lambda p: p.write_text("\n\n"), "is empty"),
        ("comments.xyz", lambda p: p.write_text("# nothing\n"), "holds no points"),
        ("short.xyzrgb", lambda p: p.write_text("0.1 0.2 0.3\n"), "line 1 is not 6 numbers"),
        ("trunc.pcd", _broken_pcd, "corrupt or truncated"),
    ],
)
def test_point_cloud_errors(
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    name: str,
    make: Callable[[Path], None] | None,
    problem: str,
) -> None:
    path = tmp_path / name
    if make is not None:
        make(path)
    capfd.readouterr()
    with pytest.raises(ScanFileError, match=problem) as exc:
        read_point_cloud(path)
    assert_names(exc, path)
    # Open3D's own warnings (and RPly's) are kept off the terminal.
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_folder_is_not_a_point_cloud(tmp_path: Path) -> None:
    folder = tmp_path / "scan.ply"
    folder.mkdir()
    with pytest.raises(ScanFileError, match="is a folder") as exc:
        read_point_cloud(folder)
    assert_names(exc, folder)


def test_write_point_cloud_errors(tmp_path: Path) -> None:
    with pytest.raises(ScanFileError, match="does not exist"):
        write_point_cloud(tmp_path / "nope" / "cloud.ply", random_cloud())
    with pytest.raises(ScanFileError, match=r"unsupported point-cloud format '\.stl'"):
        write_point_cloud(tmp_path / "cloud.stl", random_cloud())
    assert set(POINT_CLOUD_SUFFIXES) == {".ply", ".pcd", ".xyz", ".xyzrgb", ".xyzn", ".pts"}


# --------------------------------------------------------------------------- Stray Scanner


def test_rendered_scene_is_consistent() -> None:
    # Guard for the helper the round trips rely on: back-projected depth lies on the scene,
    # and some pixels see into the bowl.
    frame = make_scan().frames[0]
    points = backproject(frame)
    assert surface_distance(points).max() < 1e-6
    assert (points @ PLANE_NORMAL < -5e-3).any()


@pytest.mark.parametrize("video", [False, True])
def test_strayscanner_round_trip(tmp_path: Path, video: bool) -> None:
    scan = make_scan()
    folder = tmp_path / "scan"
    write_strayscanner(folder, scan, video=video)
    assert (folder / "rgb.mp4").is_file() == video
    assert (folder / "rgb").is_dir() == (not video)
    assert not (folder / "coherency.json").exists()
    back = read_strayscanner(folder)
    assert back.source == "strayscanner"
    assert back.origin == str(folder)
    assert back.body_axis is None and back.metadata == {}
    assert len(back.frames) == N_FRAMES
    for original, read in zip(scan.frames, back.frames, strict=True):
        np.testing.assert_allclose(read.pose, original.pose, atol=1e-12)
        assert read.intrinsics.width == 64 and read.intrinsics.height == 48
        np.testing.assert_allclose(
            [read.intrinsics.fx, read.intrinsics.fy, read.intrinsics.cx, read.intrinsics.cy],
            [DEPTH_K.fx, DEPTH_K.fy, DEPTH_K.cx, DEPTH_K.cy],
            atol=1e-9,
        )
        assert read.depth.dtype == np.float32 and read.depth.shape == (48, 64)
        assert np.abs(read.depth - original.depth).max() <= 0.0005 + 1e-6
        assert read.confidence is not None and original.confidence is not None
        np.testing.assert_array_equal(read.confidence, original.confidence)
        assert read.color is not None and original.color is not None
        assert read.color.shape == (96, 128, 3) and read.color.dtype == np.uint8
        diff = np.abs(read.color.astype(int) - original.color)
        if video:
            assert diff.mean() < 1.5 and diff.max() <= 8
        else:
            np.testing.assert_array_equal(read.color, original.color)
        assert read.timestamp == pytest.approx(original.timestamp, abs=1e-12)
        # Back-projected depth still lies on the scene: intrinsics and pose agree.
        assert surface_distance(backproject(read)).max() < 2e-3


def test_strayscanner_without_confidence_or_colour(tmp_path: Path) -> None:
    scan = make_scan(confidence=False, color=False)
    write_strayscanner(tmp_path / "scan", scan)
    assert not (tmp_path / "scan" / "confidence").exists()
    back = read_strayscanner(tmp_path / "scan")
    assert all(f.confidence is None and f.color is None for f in back.frames)
    assert back.frames[0].intrinsics == DEPTH_K
    assert surface_distance(backproject(back.frames[2])).max() < 2e-3


def test_arkit_pose_convention(tmp_path: Path) -> None:
    """A hand-written device export: ARKit poses, camera looking down at the floor z = 0."""
    folder = tmp_path / "device"
    (folder / "depth").mkdir(parents=True)
    (folder / "rgb").mkdir()
    # Colour 128x96 (K given at that resolution), depth 64x48.
    (folder / "camera_matrix.csv").write_text("120.0,0.0,63.5\n0.0,120.0,47.5\n0.0,0.0,1.0\n")
    s = math.sqrt(0.5)
    (folder / "odometry.csv").write_text(
        "timestamp,frame,x,y,z,qx,qy,qz,qw\n"
        # identity: ARKit camera looks along its -z, i.e. straight down from 30 cm
        "1.0, 0, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0, 1.0\n"
        # 90 degrees about world z, 10 cm along x: camera x axis points along world y
        f"1.5, 1, 0.1, 0.0, 0.3, 0.0, 0.0, {s}, {s}\n"
    )
    for i in range(2):
        write_png(folder / "depth" / f"{i:06d}.png", np.full((48, 64), 300, np.uint16))
        write_png(folder / "rgb" / f"{i:06d}.jpg", np.full((96, 128, 3), 120, np.uint8))
    scan = read_strayscanner(folder)
    first, second = scan.frames
    assert first.color is not None and first.color.shape == (96, 128, 3)
    assert np.abs(first.color.astype(int) - 120).max() <= 2  # JPEG colour frames read too
    assert first.intrinsics == Intrinsics(60.0, 60.0, 31.5, 23.5, 64, 48)
    assert (first.timestamp, second.timestamp) == (1.0, 1.5)

    u, v = np.array([41, 20]), np.array([44, 18])  # right-and-down, left-and-up of centre
    # Image right is world +x and image down is world -y (ARKit y is up) in frame 0 ...
    expected0 = np.stack([0.3 * (u - 31.5) / 60, -0.3 * (v - 23.5) / 60, [0, 0]], axis=1)
    # ... and after the 90-degree turn image right is world +y, image down world +x.
    expected1 = np.stack([0.1 + 0.3 * (v - 23.5) / 60, 0.3 * (u - 31.5) / 60, [0, 0]], axis=1)
    for frame, expected in ((first, expected0), (second, expected1)):
        points = backproject(frame).reshape(48, 64, 3)
        np.testing.assert_allclose(points[v, u], expected, atol=1e-7)  # float32 depth
        # Projecting the world point with the read pose and intrinsics lands on the pixel.
        pose, k = frame.pose, frame.intrinsics
        cam = (expected - pose[:3, 3]) @ pose[:3, :3]  # world -> camera: R^T (p - t)
        np.testing.assert_allclose(cam[:, 2], [0.3, 0.3], atol=1e-12)  # exact world points
        np.testing.assert_allclose(k.fx * cam[:, 0] / cam[:, 2] + k.cx, u, atol=1e-9)
        np.testing.assert_allclose(k.fy * cam[:, 1] / cam[:, 2] + k.cy, v, atol=1e-9)


@pytest.mark.parametrize("video", [False, True])
def test_max_frames(tmp_path: Path, video: bool) -> None:
    scan = make_scan()
    write_strayscanner(tmp_path / "scan", scan, video=video)
    two = read_strayscanner(tmp_path / "scan", max_frames=2)
    assert len(two.frames) == 2
    for original, read in zip(scan.frames[:2], two.frames, strict=True):
        np.testing.assert_allclose(read.pose, original.pose, atol=1e-12)
        assert read.color is not None and original.color is not None
        assert np.abs(read.color.astype(int) - original.color).mean() < 1.5
    assert len(read_strayscanner(tmp_path / "scan", max_frames=10).frames) == N_FRAMES
    with pytest.raises(ValueError, match="max_frames"):
        read_strayscanner(tmp_path / "scan", max_frames=0)


def test_sidecar_body_axis(tmp_path: Path) -> None:
    scan = make_scan()
    scan = Scan(source="test", origin="x", frames=scan.frames, body_axis=np.array([0.0, 1.0, 0.0]))
    write_strayscanner(tmp_path / "scan", scan, extra={"ground_truth": "truth.json", "seed": 3})
    sidecar = json.loads((tmp_path / "scan" / "coherency.json").read_text())
    assert sidecar == {"body_axis": [0.0, 1.0, 0.0], "ground_truth": "truth.json", "seed": 3}
    back = read_strayscanner(tmp_path / "scan")
    assert back.body_axis is not None
    np.testing.assert_allclose(back.body_axis, [0, 1, 0])
    assert back.metadata["ground_truth"] == "truth.json" and back.metadata["seed"] == 3
    # A hand-written axis is normalised.
    (tmp_path / "scan" / "coherency.json").write_text('{"body_axis": [0, 3, 4]}')
    back = read_strayscanner(tmp_path / "scan")
    assert back.body_axis is not None
    np.testing.assert_allclose(back.body_axis, [0, 0.6, 0.8])


def test_write_strayscanner_refusals(tmp_path: Path, stray: Path) -> None:
    with pytest.raises(ScanFileError, match="not an empty folder") as exc:
        write_strayscanner(stray, make_scan())
    assert_names(exc, stray)
    cloud_scan = Scan(source="pointcloud", origin="x", cloud=random_cloud())
    with pytest.raises(ValueError, match="write_point_cloud"):
        write_strayscanner(tmp_path / "a", cloud_scan)
    with pytest.raises(ValueError, match="video=True needs colour"):
        write_strayscanner(tmp_path / "b", make_scan(color=False), video=True)
    frames = make_scan().frames
    mixed = (*frames[:2], Frame(depth=frames[2].depth, intrinsics=DEPTH_K, pose=frames[2].pose))
    with pytest.raises(ValueError, match="frame 2: confidence given for some frames only"):
        write_strayscanner(tmp_path / "c", Scan(source="t", origin="t", frames=mixed))
    with pytest.raises(ValueError, match="JSON"):
        write_strayscanner(tmp_path / "d", make_scan(), extra={"x": object()})
    assert not any((tmp_path / name).exists() for name in "abcd")


# Each breaker damages a valid folder (3 frames, confidence, rgb/ PNGs) and returns the
# file the error must name.
Breaker = Callable[[Path], Path]


def _rewrite(name: str, text: str) -> Breaker:
    def breaker(folder: Path) -> Path:
        (folder / name).write_text(text)
        return folder / name

    return breaker


def _remove(name: str) -> Breaker:
    def breaker(folder: Path) -> Path:
        target = folder / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
        return target

    return breaker


def _odometry_line(index: int, line: str) -> Breaker:
    def breaker(folder: Path) -> Path:
        path = folder / "odometry.csv"
        lines = path.read_text().splitlines()
        lines[index] = line
        path.write_text("\n".join(lines) + "\n")
        return path

    return breaker


def _png(name: str, pixels: np.ndarray) -> Breaker:
    def breaker(folder: Path) -> Path:
        write_png(folder / name, pixels)
        return folder / name

    return breaker


def _truncate(name: str) -> Breaker:
    def breaker(folder: Path) -> Path:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
        return folder / name

    return breaker


def _flip_byte(name: str) -> Breaker:
    def breaker(folder: Path) -> Path:
        data = bytearray((folder / name).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (folder / name).write_bytes(bytes(data))
        return folder / name

    return breaker


def _remove_last(name: str) -> Breaker:
    def breaker(folder: Path) -> Path:
        (folder / name / f"{N_FRAMES - 1:06d}.png").unlink()
        return folder / name

    return breaker


def _truncated_jpeg(folder: Path) -> Path:
    for i in range(N_FRAMES):
        (folder / "rgb" / f"{i:06d}.png").unlink()
        write_png(folder / "rgb" / f"{i:06d}.jpg", np.full((96, 128, 3), 80, np.uint8))
    return _truncate("rgb/000001.jpg")(folder)


def _empty_depth(folder: Path) -> Path:
    shutil.rmtree(folder / "depth")
    (folder / "depth").mkdir()
    return folder / "depth"


def _all_colour(size: tuple[int, int]) -> Breaker:
    def breaker(folder: Path) -> Path:
        for i in range(N_FRAMES):
            write_png(folder / "rgb" / f"{i:06d}.png", np.zeros((size[1], size[0], 3), np.uint8))
        return folder / "rgb"

    return breaker


def _video(frames: int) -> Breaker:
    def breaker(folder: Path) -> Path:
        shutil.rmtree(folder / "rgb")
        write_video(folder / "rgb.mp4", [np.zeros((96, 128, 3), np.uint8)] * frames)
        return folder / "rgb.mp4"

    return breaker


def _truncated_video(folder: Path) -> Path:
    _video(N_FRAMES)(folder)
    return _truncate("rgb.mp4")(folder)


def _junk_video(folder: Path) -> Path:
    shutil.rmtree(folder / "rgb")
    (folder / "rgb.mp4").write_bytes(b"not a video" * 100)
    return folder / "rgb.mp4"


def _device_matrix_without_colour(folder: Path) -> Path:
    shutil.rmtree(folder / "rgb")
    return _rewrite("camera_matrix.csv", "1400,0,960\n0,1400,720\n0,0,1\n")(folder)


def _depth_gap(folder: Path) -> Path:
    (folder / "depth" / "000001.png").unlink()
    return folder / "depth" / "000001.png"


def _duplicate_frame(folder: Path) -> Path:
    shutil.copy(folder / "depth" / "000001.png", folder / "depth" / "000001.jpg")
    return folder / "depth" / "000001.png"


STRAY_ERRORS: dict[str, tuple[Breaker, str]] = {
    "camera matrix missing": (_remove("camera_matrix.csv"), "missing"),
    "camera matrix 2 rows": (_rewrite("camera_matrix.csv", "1,0,1\n0,1,1\n"), "not a 3x3 matrix"),
    "camera matrix text": (
        _rewrite("camera_matrix.csv", "60,0,abc\n0,60,20\n0,0,1\n"),
        "not a 3x3 matrix",
    ),
    "camera matrix not pinhole": (
        _rewrite("camera_matrix.csv", "60,0,30\n0,60,20\n1,0,1\n"),
        "not a pinhole camera matrix",
    ),
    "principal point off the frames": (_device_matrix_without_colour, "principal point"),
    "odometry missing": (_remove("odometry.csv"), "missing"),
    "odometry header": (_odometry_line(0, "t, frame, x, y, z, qw, qx, qy, qz"), "header must be"),
    "odometry short row": (
        _odometry_line(2, "1.0, 1, 0, 0, 0.3, 0, 0, 1"),
        "line 3: expected 9 comma-separated numbers",
    ),
    "odometry text": (
        _odometry_line(1, "1.0, 0, zero, 0, 0.3, 0, 0, 0, 1"),
        "line 2: expected 9",
    ),
    "odometry fractional frame": (
        _odometry_line(1, "1.0, 0.5, 0, 0, 0.3, 0, 0, 0, 1"),
        "line 2: frame 0.5 is not a frame number",
    ),
    "zero quaternion": (_odometry_line(2, "1.0, 1, 0, 0, 0.3, 0, 0, 0, 0"), "line 3: zero quat"),
    "non-unit quaternion": (
        _odometry_line(2, "1.0, 1, 0, 0, 0.3, 0, 0, 0, 1.1"),
        r"line 3: non-unit quaternion \(norm 1.1\)",
    ),
    "duplicate odometry frame": (
        _odometry_line(3, "1.0, 1, 0, 0, 0.3, 0, 0, 0, 1"),
        "line 4: frame 1 already given on line 3",
    ),
    "odometry row missing": (
        _odometry_line(3, ""),
        "has 2 rows but depth/ holds 3 frames",
    ),
    "depth missing": (_remove("depth"), "missing folder"),
    "no depth frames": (_empty_depth, "no depth frames"),
    "depth gap": (_depth_gap, "missing: depth frames must be numbered from 0"),
    "depth frame twice": (_duplicate_frame, "frame 1 is also given as 000001.jpg"),
    "depth truncated": (_truncate("depth/000001.png"), "truncated PNG"),
    "depth bit flip": (_flip_byte("depth/000001.png"), "corrupt PNG: bad checksum in its IDAT"),
    "depth junk": (_rewrite("depth/000000.png", "not a png"), "not a PNG or JPEG"),
    "depth 8-bit": (
        _png("depth/000001.png", np.zeros((48, 64), np.uint8)),
        "16-bit single-channel PNG.*got 8-bit 1-channel",
    ),
    "depth 16-bit rgb": (
        _png("depth/000002.png", np.zeros((48, 64, 3), np.uint16)),
        "got 16-bit 3-channel",
    ),
    "depth size": (
        _png("depth/000002.png", np.zeros((24, 32), np.uint16)),
        "is 32x24 but 000000.png is 64x48",
    ),
    "confidence out of range": (
        _png("confidence/000001.png", np.full((48, 64), 3, np.uint8)),
        "confidence values must be 0, 1 or 2, found 3",
    ),
    "confidence 16-bit": (
        _png("confidence/000000.png", np.zeros((48, 64), np.uint16)),
        "8-bit single-channel",
    ),
    "confidence size": (
        _png("confidence/000001.png", np.zeros((24, 32), np.uint8)),
        "is 32x24 but 000001.png is 64x48",
    ),
    "confidence truncated": (_truncate("confidence/000002.png"), "truncated PNG"),
    "confidence count": (_remove_last("confidence"), "holds 2 frames but depth/ holds 3"),
    "colour count": (_remove_last("rgb"), "holds 2 frames but depth/ holds 3"),
    "colour aspect": (_all_colour((100, 100)), "colour frames are 100x100 but depth .* 64x48"),
    "colour size": (
        _png("rgb/000001.png", np.zeros((48, 64, 3), np.uint8)),
        "is 64x48 but 000000.png is 128x96",
    ),
    "colour grey": (_png("rgb/000000.png", np.zeros((96, 128), np.uint8)), "8-bit RGB"),
    "colour truncated": (_truncate("rgb/000001.png"), "truncated PNG"),
    "colour jpeg truncated": (_truncated_jpeg, "truncated JPEG"),
    "video short": (_video(2), "has 2 frames but depth/ holds 3"),
    "video long": (_video(4), "has 4 frames but depth/ holds 3"),
    "video junk": (_junk_video, "cannot be decoded as video"),
    "video truncated": (_truncated_video, "no video stream"),
    "sidecar json": (_rewrite("coherency.json", "{body_axis: 1"), "not valid JSON"),
    "sidecar list": (_rewrite("coherency.json", "[1, 2]"), "must hold a JSON object"),
    "sidecar axis": (
        _rewrite("coherency.json", '{"body_axis": [0, 0]}'),
        "body_axis must be 3 finite numbers",
    ),
    "sidecar zero axis": (
        _rewrite("coherency.json", '{"body_axis": [0, 0, 0]}'),
        "not all zero",
    ),
}


@pytest.mark.parametrize("case", list(STRAY_ERRORS))
def test_strayscanner_errors(stray: Path, capfd: pytest.CaptureFixture[str], case: str) -> None:
    breaker, problem = STRAY_ERRORS[case]
    culprit = breaker(stray)
    capfd.readouterr()
    with pytest.raises(ScanFileError, match=problem) as exc:
        read_strayscanner(stray)
    assert_names(exc, culprit)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_strayscanner_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ScanFileError, match="no such folder") as exc:
        read_strayscanner(tmp_path / "nope")
    assert_names(exc, tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ScanFileError, match="not a folder") as exc:
        read_strayscanner(tmp_path / "file")
    assert_names(exc, tmp_path / "file")


def test_real_device_header_spacing(stray: Path) -> None:
    # Exports differ in whether a space follows each comma; both read the same.
    path = stray / "odometry.csv"
    before = read_strayscanner(stray).frames[1].pose
    path.write_text(path.read_text().replace(", ", ","))
    np.testing.assert_array_equal(read_strayscanner(stray).frames[1].pose, before)


# --------------------------------------------------------------------------- dispatch


def test_open_scan_dispatch(tmp_path: Path, stray: Path) -> None:
    sequence = open_scan(stray, max_frames=1)
    assert sequence.source == "strayscanner" and len(sequence.frames) == 1
    assert sequence.cloud is None

    cloud = random_cloud()
    path = tmp_path / "wound.ply"
    write_point_cloud(path, cloud)
    scan = open_scan(path)
    assert scan.source == "pointcloud" and scan.origin == str(path) and scan.frames == ()
    assert scan.cloud is not None
    np.testing.assert_array_equal(scan.cloud.points, cloud.points.astype(np.float32))
    assert scan.body_axis is None and scan.metadata == {}

    (tmp_path / "wound.coherency.json").write_text('{"body_axis": [2, 0, 0], "site": "calf"}')
    scan = open_scan(path)
    assert scan.body_axis is not None
    np.testing.assert_allclose(scan.body_axis, [1, 0, 0])
    assert scan.metadata["site"] == "calf"

    with pytest.raises(ScanFileError, match="no such file or folder"):
        open_scan(tmp_path / "absent.ply")


def test_file_source_is_a_capture_source(tmp_path: Path, stray: Path) -> None:
    source = FileSource(stray)
    assert isinstance(source, CaptureSource)
    assert source.name == "file"
    scan = source.capture(max_frames=2)
    assert scan.source == "strayscanner" and len(scan.frames) == 2
    path = tmp_path / "c.pcd"
    write_point_cloud(path, random_cloud())
    assert FileSource(str(path)).capture().source == "pointcloud"


def test_nan_points_of_an_organised_cloud_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "organised.xyz"
    path.write_text("0.1 0.1 0.1\nnan nan nan\n0.3 0.3 0.3\n0.2 0.2 0.25\n")
    cloud = read_point_cloud(path)
    assert len(cloud) == 3 and np.isfinite(cloud.points).all()
    empty = tmp_path / "empty.xyz"
    empty.write_text("nan nan nan\nnan nan nan\n")
    with pytest.raises(ScanFileError, match="all NaN"):
        read_point_cloud(empty)
