"""Stage 1, points: depth frames (or a cloud) to world points, and the gates on the device.

Depth pixels below the confidence threshold are dropped and the first frame is
back-projected; the aim point is the reading nearest its image centre (the cloud's
middle for a point cloud). The device's motion between frames and its distance to the
wound are checked here (`MeasurementRefused` ``too_much_motion``, ``too_close``,
``too_far``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from lidar_capture._errors import MeasurementRefused
from lidar_capture._options import MeasureOptions
from lidar_capture._types import Frame, PointCloud, Scan

__all__ = [
    "ScanPoints",
    "check_distance",
    "color_at_depth_resolution",
    "frame_points",
    "merge_frames",
    "scan_points",
    "valid_depth",
]

FloatArray = npt.NDArray[np.float64]


@dataclass
class ScanPoints:
    """The first frame's points (or the cloud) and where the device was aiming."""

    cloud: PointCloud
    aim: FloatArray
    """The world point the wound is looked for around."""
    depths: list[npt.NDArray[np.float32]] = field(default_factory=list)
    """Each frame's depth map after the confidence filter (none for a cloud)."""
    camera: FloatArray | None = None
    """The first frame's camera position (None for a cloud)."""
    towards: FloatArray | None = None
    """Unit vector from the wound towards the camera (None for a cloud)."""


def color_at_depth_resolution(frame: Frame) -> npt.NDArray[np.uint8] | None:
    """The colour image resampled to the depth grid (area average when it is a multiple)."""
    if frame.color is None:
        return None
    h, w = frame.depth.shape
    ch, cw = frame.color.shape[:2]
    if (ch, cw) == (h, w):
        return np.asarray(frame.color, dtype=np.uint8)
    if ch % h == 0 and cw % w == 0 and ch // h == cw // w:
        k = ch // h
        blocks = frame.color.reshape(h, k, w, k, 3).astype(np.float32).mean(axis=(1, 3))
        return np.asarray(np.clip(blocks + 0.5, 0, 255), dtype=np.uint8)
    rows = np.clip(((np.arange(h) + 0.5) * ch / h).astype(int), 0, ch - 1)
    cols = np.clip(((np.arange(w) + 0.5) * cw / w).astype(int), 0, cw - 1)
    return np.asarray(frame.color[rows][:, cols], dtype=np.uint8)


def valid_depth(frame: Frame, min_confidence: int) -> npt.NDArray[np.float32]:
    depth = np.where(np.isfinite(frame.depth), frame.depth, 0.0).astype(np.float32)
    depth[depth < 0] = 0.0
    if frame.confidence is not None:
        depth[frame.confidence < min_confidence] = 0.0
    return depth


def frame_points(frame: Frame, depth: npt.NDArray[np.float32]) -> PointCloud:
    """Back-project the valid pixels of one frame into world points with colours."""
    k = frame.intrinsics
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=1)
    world = cam @ frame.pose[:3, :3].T + frame.pose[:3, 3]
    color = color_at_depth_resolution(frame)
    colors = None if color is None else color[v, u].astype(np.float64) / 255.0
    return PointCloud(world, colors)


def check_distance(distance: float, opts: MeasureOptions) -> None:
    """Refuse a scan taken from closer or farther than the sensor measures well."""
    if distance < opts.min_distance_m:
        raise MeasurementRefused(
            "too_close",
            f"the device is {distance * 100:.0f} cm from the wound; hold it 20-40 cm away",
        )
    if distance > opts.max_distance_m:
        raise MeasurementRefused(
            "too_far",
            f"the device is {distance * 100:.0f} cm from the wound; hold it 20-40 cm away",
        )


def _check_motion(frames: tuple[Frame, ...], opts: MeasureOptions, flags: list[str]) -> None:
    speed, angular = 0.0, 0.0
    for a, b in itertools.pairwise(frames):
        dt = b.timestamp - a.timestamp
        dt = dt if dt > 1e-4 else opts.frame_interval_s
        speed = max(speed, float(np.linalg.norm(b.pose[:3, 3] - a.pose[:3, 3])) / dt)
        rel = a.pose[:3, :3].T @ b.pose[:3, :3]
        angle = np.degrees(np.arccos(np.clip((np.trace(rel) - 1.0) / 2.0, -1.0, 1.0)))
        angular = max(angular, float(angle) / dt)
    if speed > opts.max_speed_m_s or angular > opts.max_angular_speed_deg_s:
        raise MeasurementRefused(
            "too_much_motion",
            f"the device moved too fast between frames ({speed * 100:.0f} cm/s, "
            f"{angular:.0f} deg/s); hold it still over the wound and scan again",
        )
    share = opts.motion_flag_share
    if speed > opts.max_speed_m_s * share or angular > opts.max_angular_speed_deg_s * share:
        flags.append("motion_high")


def scan_points(scan: Scan, opts: MeasureOptions, flags: list[str]) -> ScanPoints:
    """The first frame's valid points and the aim point, after the motion gate; or the
    cloud's finite points and its middle."""
    frames = scan.frames
    if frames:
        _check_motion(frames, opts, flags)
        ref = frames[0]
        depths = [valid_depth(f, opts.min_confidence) for f in frames]
        cloud = frame_points(ref, depths[0])
        if len(cloud) < opts.min_points:
            raise MeasurementRefused(
                "too_few_points",
                f"only {len(cloud)} valid depth readings in the first frame "
                f"(need {opts.min_points}); move closer and avoid glare",
            )
        camera = ref.pose[:3, 3]
        view = ref.pose[:3, 2]
        # The aim point: the valid pixel nearest the image centre.
        rays = cloud.points - camera
        along = rays @ view
        off = np.linalg.norm(rays - along[:, None] * view, axis=1) / np.maximum(along, 1e-6)
        aim = cloud.points[int(np.argmin(off))]
        return ScanPoints(cloud, aim, depths, camera, -view)
    assert scan.cloud is not None
    cloud = scan.cloud
    finite = np.all(np.isfinite(cloud.points), axis=1)
    if cloud.colors is not None:
        finite &= np.all(np.isfinite(cloud.colors), axis=1)
    if not np.all(finite):  # points with no reading: dropped, like depth 0
        colors = None if cloud.colors is None else cloud.colors[finite]
        cloud = PointCloud(cloud.points[finite], colors)
    if len(cloud) < opts.min_points:
        raise MeasurementRefused(
            "too_few_points",
            f"the point cloud has only {len(cloud)} usable points (need "
            f"{opts.min_points}); export the scan at full density, or scan again "
            "closer to the wound",
        )
    aim = np.median(cloud.points, axis=0)
    dist = np.linalg.norm(cloud.points - aim, axis=1)
    return ScanPoints(cloud, cloud.points[int(np.argmin(dist))])


def merge_frames(scan: Scan, *, min_confidence: int = 1, voxel_m: float = 0.001) -> PointCloud:
    """A scan's frames back-projected and merged into one cloud, voxel-downsampled.

    What a capture app would export as a point-cloud file: every frame's depth pixels of
    at least `min_confidence`, placed by their poses, coloured when the frames have
    colour, then thinned to one point per `voxel_m` cube (its points and colours
    averaged; cubes laid from the cloud's lowest corner less half a cube, as Open3D's
    `voxel_down_sample` lays them). Points come out in the cubes' (x, y, z) index order.

    Raises:
        ValueError: the scan has no frames, or no pixel passes the confidence filter.
    """
    if not scan.frames:
        raise ValueError("the scan holds no frames to merge")
    parts = [frame_points(f, valid_depth(f, min_confidence)) for f in scan.frames]
    points = np.vstack([p.points for p in parts])
    if points.shape[0] == 0:
        raise ValueError(f"no depth reading of confidence {min_confidence} or more")
    coloured = all(p.colors is not None for p in parts)
    cube = np.floor((points - (points.min(axis=0) - 0.5 * voxel_m)) / voxel_m).astype(np.int64)
    _, which, count = np.unique(cube, axis=0, return_inverse=True, return_counts=True)
    which = which.ravel()

    def averaged(values: FloatArray) -> FloatArray:
        sums = np.stack(
            [np.bincount(which, weights=values[:, c], minlength=len(count)) for c in range(3)],
            axis=1,
        )
        return np.asarray(sums / count[:, None], dtype=np.float64)

    colors = (
        averaged(np.vstack([p.colors for p in parts if p.colors is not None])) if coloured else None
    )
    return PointCloud(averaged(points), colors)
