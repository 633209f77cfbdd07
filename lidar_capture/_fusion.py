"""Stage 3, fuse: the frames' points around the wound, combined so depth noise averages out.

Each frame's depth is cropped to a sphere around the detected wound and placed by its
pose. ``fusion="points"`` pools the registered points (the next stages' grid averages
them); ``fusion="tsdf"`` integrates them into an Open3D voxel-block TSDF and extracts
its surface instead (the pooled points measured better on the synthetic suite). Then
Open3D's statistical outlier removal.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lidar_capture._detect import Detection
from lidar_capture._options import MeasureOptions
from lidar_capture._points import ScanPoints, color_at_depth_resolution, frame_points
from lidar_capture._types import Frame, PointCloud, Scan

__all__ = ["fuse", "remove_outliers", "roi_radius"]

FloatArray = npt.NDArray[np.float64]

# Open3D's voxel-block grid: voxels per block side, and blocks to allocate up front.
_TSDF_BLOCK_RESOLUTION = 8
_TSDF_BLOCK_COUNT = 4000


def roi_radius(radius: float, opts: MeasureOptions) -> float:
    """Half the side of the measurement grid around a wound of this radius: the wound,
    a margin and the ring of skin the surface is fitted on."""
    return radius + opts.grid_margin_m + max(opts.ring_width_m, opts.ring_width_per_radius * radius)


def fuse(
    scan: Scan, points: ScanPoints, detection: Detection, opts: MeasureOptions, flags: list[str]
) -> PointCloud:
    """All frames' points around the wound (a single frame's, or the cloud's, cropped)."""
    half = roi_radius(detection.radius, opts)
    roi = float(np.hypot(half, half)) + opts.roi_margin_m
    frames = scan.frames
    if len(frames) > 1:
        cropped = [
            _roi_depth(f, d, detection.centre, roi)
            for f, d in zip(frames, points.depths, strict=True)
        ]
        if opts.fusion == "tsdf":
            return _fuse_tsdf(frames, cropped, opts, detection.noise)
        parts = [frame_points(f, d) for f, d in zip(frames, cropped, strict=True)]
        colors = (
            None
            if any(p.colors is None for p in parts)
            else np.vstack([p.colors for p in parts if p.colors is not None])
        )
        return PointCloud(np.vstack([p.points for p in parts]), colors)
    if frames:
        flags.append("single_frame")
    return _crop(points.cloud, detection.centre, roi)


def _roi_depth(
    frame: Frame, depth: npt.NDArray[np.float32], centre: FloatArray, radius: float
) -> npt.NDArray[np.float32]:
    """The depth map with everything farther than `radius` from `centre` removed."""
    k = frame.intrinsics
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w), np.arange(h))
    cam = np.stack([(u - k.cx) * depth / k.fx, (v - k.cy) * depth / k.fy, depth], axis=-1)
    world = cam @ frame.pose[:3, :3].T + frame.pose[:3, 3]
    out = depth.copy()
    out[np.linalg.norm(world - centre, axis=-1) > radius] = 0.0
    return out


def _fuse_tsdf(
    frames: tuple[Frame, ...],
    depths: list[npt.NDArray[np.float32]],
    opts: MeasureOptions,
    noise: float,
) -> PointCloud:
    """Integrate the frames into an Open3D voxel-block TSDF and extract its surface."""
    import open3d as o3d
    import open3d.core as o3c

    low, high = opts.tsdf_truncation_m
    trunc_voxels = float(np.clip(opts.tsdf_truncation_sigmas * noise, low, high)) / opts.voxel_m
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"),
        attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=[o3c.SizeVector([1]), o3c.SizeVector([1]), o3c.SizeVector([3])],
        voxel_size=opts.voxel_m,
        block_resolution=_TSDF_BLOCK_RESOLUTION,
        block_count=_TSDF_BLOCK_COUNT,
    )
    has_color = all(f.color is not None for f in frames)
    for frame, depth in zip(frames, depths, strict=True):
        h, w = depth.shape
        color = color_at_depth_resolution(frame) if has_color else None
        rgb = (
            np.full((h, w, 3), 0.5, dtype=np.float32)
            if color is None
            else color.astype(np.float32) / 255.0
        )
        depth_image = o3d.t.geometry.Image(o3c.Tensor.from_numpy(np.ascontiguousarray(depth)))
        color_image = o3d.t.geometry.Image(o3c.Tensor.from_numpy(np.ascontiguousarray(rgb)))
        intrinsic = o3c.Tensor.from_numpy(np.ascontiguousarray(frame.intrinsics.matrix()))
        extrinsic = o3c.Tensor.from_numpy(np.ascontiguousarray(np.linalg.inv(frame.pose)))
        blocks = grid.compute_unique_block_coordinates(
            depth_image, intrinsic, extrinsic, 1.0, 10.0, trunc_voxels
        )
        grid.integrate(
            blocks, depth_image, color_image, intrinsic, extrinsic, 1.0, 10.0, trunc_voxels
        )
    # A surface seen by a share of the frames: at least once, and twice when there are several.
    threshold = float(min(max(opts.tsdf_view_share * len(frames), 1.0), 2.0))
    pcd = grid.extract_point_cloud(weight_threshold=threshold - 0.5)
    points = pcd.point.positions.numpy().astype(np.float64)
    colors = pcd.point.colors.numpy().astype(np.float64) if has_color else None
    return PointCloud(points, None if colors is None else np.clip(colors, 0.0, 1.0))


def remove_outliers(cloud: PointCloud, opts: MeasureOptions) -> PointCloud:
    """Open3D's statistical outlier removal (flying pixels, stray readings)."""
    import open3d as o3d

    if len(cloud) < opts.outlier_min_points:
        return cloud
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.points))
    _, kept = pcd.remove_statistical_outlier(
        nb_neighbors=opts.outlier_neighbours, std_ratio=opts.outlier_std_ratio
    )
    idx = np.asarray(kept, dtype=np.int64)
    return PointCloud(cloud.points[idx], None if cloud.colors is None else cloud.colors[idx])


def _crop(cloud: PointCloud, centre: FloatArray, radius: float) -> PointCloud:
    keep = np.linalg.norm(cloud.points - centre, axis=1) < radius
    return PointCloud(cloud.points[keep], None if cloud.colors is None else cloud.colors[keep])
