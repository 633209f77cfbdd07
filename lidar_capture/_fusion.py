"""Stage 3, fuse: the frames' points around the wound, combined so depth noise averages out.

Each frame's depth is cropped to a sphere around the detected wound and placed by its
pose. ``fusion="points"`` pools the registered points (the next stages' grid averages
them); ``fusion="tsdf"`` integrates them into an Open3D voxel-block TSDF and extracts
its surface instead (the pooled points measured better on the synthetic suite), and
is refused where Open3D is absent (`CaptureError`). Then statistical outlier removal:
Open3D's when it imports, else the same rule in NumPy (`nearest_mean_distances`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lidar_capture._accelerators import accelerator
from lidar_capture._detect import Detection
from lidar_capture._errors import CaptureError
from lidar_capture._options import MeasureOptions
from lidar_capture._points import ScanPoints, color_at_depth_resolution, frame_points
from lidar_capture._types import Frame, PointCloud, Scan

__all__ = ["fuse", "nearest_mean_distances", "remove_outliers", "roi_radius"]

FloatArray = npt.NDArray[np.float64]

# Open3D's voxel-block grid: voxels per block side, and blocks to allocate up front.
_TSDF_BLOCK_RESOLUTION = 8
_TSDF_BLOCK_COUNT = 4000

# The NumPy neighbour search holds at most this many candidate distances at once.
_KNN_BATCH = 4_000_000
# Points whose k-th neighbour sets the first cube side, and the share it must cover.
_KNN_SAMPLE = 64
_KNN_SAMPLE_SHARE = 0.95


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
    o3d = accelerator("open3d")
    if o3d is None:
        raise CaptureError(
            "fusion='tsdf' needs Open3D (pip install 'coherency[capture-accel]'), which is "
            "not available here (or accelerators are switched off); use fusion='points', "
            "the default, which runs with NumPy alone"
        )
    o3c = o3d.core

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
    """Statistical outlier removal (flying pixels, stray readings): a point goes when its
    mean distance to its `outlier_neighbours` nearest points (itself included) is not
    below the cloud's mean of those plus `outlier_std_ratio` standard deviations.

    Open3D's `remove_statistical_outlier` when it imports; else the same rule in NumPy,
    which keeps the same points (the neighbour search is exact).
    """
    if len(cloud) < opts.outlier_min_points:
        return cloud
    o3d = accelerator("open3d")
    if o3d is not None:
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.points))
        _, kept = pcd.remove_statistical_outlier(
            nb_neighbors=opts.outlier_neighbours, std_ratio=opts.outlier_std_ratio
        )
        idx = np.asarray(kept, dtype=np.int64)
    else:
        mean = nearest_mean_distances(cloud.points, opts.outlier_neighbours)
        # Open3D's arithmetic: points whose neighbours all coincide with them (mean 0)
        # count in the denominator but not the sums, and are dropped.
        valid = len(mean)
        centre = float(mean[mean > 0].sum()) / valid
        spread = float(np.sqrt(((mean[mean > 0] - centre) ** 2).sum() / max(valid - 1, 1)))
        idx = np.flatnonzero((mean > 0) & (mean < centre + opts.outlier_std_ratio * spread))
    return PointCloud(cloud.points[idx], None if cloud.colors is None else cloud.colors[idx])


def nearest_mean_distances(points: FloatArray, k: int) -> FloatArray:
    """Each point's mean distance to its `k` nearest points (itself first, at 0), exactly.

    The points are hashed into cubes; a point's candidates are the 27 cubes around its
    own, which hold every point within one cube side, so its neighbours are right when
    the k-th is within that side. The rest are searched again with cubes twice as big.
    The first side is the distance to the k-th neighbour that most points of a small
    random sample have (found by brute force), so most finish in the first round.
    """
    n = len(points)
    k = min(k, n)
    out = np.empty(n, dtype=np.float64)
    lo = points.min(axis=0)
    extent = points.max(axis=0) - lo
    widest = float(extent.max())
    side = max(_kth_distance_quantile(points, k), widest / 1024.0, 1e-9)
    todo = np.arange(n)
    while todo.size:
        # Once a cube is as wide as the cloud, the 27 around any point hold all of it.
        everything = side >= widest
        mean, sure = _block_knn(points, todo, k, side, lo)
        sure |= everything
        out[todo[sure]] = mean[sure]
        todo = todo[~sure]
        side *= 2.0
    return out


def _kth_distance_quantile(points: FloatArray, k: int) -> float:
    """The distance to the k-th nearest point that `_KNN_SAMPLE_SHARE` of a random
    sample of the points are within (seeded: the same cloud gives the same side)."""
    rng = np.random.default_rng(0)
    sample = points[rng.choice(len(points), size=min(_KNN_SAMPLE, len(points)), replace=False)]
    diff = sample[:, None, :] - points[None, :, :]
    d2 = np.einsum("ijk,ijk->ij", diff, diff)
    kth = np.sqrt(np.partition(d2, k - 1, axis=1)[:, k - 1])
    return float(np.quantile(kth, _KNN_SAMPLE_SHARE))


def _block_knn(
    points: FloatArray, queries: npt.NDArray[np.intp], k: int, side: float, lo: FloatArray
) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """The mean distance to the k nearest among the 27 cubes around each query, and
    whether that is exact (the k-th is within one cube side)."""
    cube = np.floor((points - lo) / side).astype(np.int64) + 1
    dims = cube.max(axis=0) + 2
    key = np.asarray(np.ravel_multi_index(cube.T, dims), dtype=np.int64)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    offsets = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij"), -1)
    around = cube[queries][None, :, :] + offsets.reshape(-1, 1, 3)
    near = np.ravel_multi_index(np.moveaxis(around, -1, 0), dims)
    start = np.searchsorted(sorted_key, near, side="left")
    count = np.searchsorted(sorted_key, near, side="right") - start
    total = count.sum(axis=0)
    mean = np.empty(len(queries), dtype=np.float64)
    sure = np.empty(len(queries), dtype=bool)
    width = int(total.max())
    step = max(1, _KNN_BATCH // max(width, 1))
    for a in range(0, len(queries), step):
        b = min(a + step, len(queries))
        d2 = np.full((b - a, width), np.inf)
        column = np.zeros(b - a, dtype=np.int64)
        rows = np.arange(b - a)
        for o in range(count.shape[0]):
            c = count[o, a:b]
            row = np.repeat(rows, c)
            within = np.arange(int(c.sum())) - np.repeat(np.cumsum(c) - c, c)
            cand = order[np.repeat(start[o, a:b], c) + within]
            diff = points[cand] - points[queries[a + row]]
            d2[row, column[row] + within] = np.einsum("ij,ij->i", diff, diff)
            column += c
        nearest = np.partition(d2, k - 1, axis=1)[:, :k]
        mean[a:b] = np.sqrt(nearest).mean(axis=1)
        sure[a:b] = nearest.max(axis=1) <= side * side
    return mean, sure


def _crop(cloud: PointCloud, centre: FloatArray, radius: float) -> PointCloud:
    keep = np.linalg.norm(cloud.points - centre, axis=1) < radius
    return PointCloud(cloud.points[keep], None if cloud.colors is None else cloud.colors[keep])
