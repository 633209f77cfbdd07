"""The measurement pipeline: from a scan (frames or a point cloud) to wound dimensions.

Stages, each timed in `WoundMeasurement.timings_ms`:

1. points: confidence filter and back-projection of a reference frame (or the cloud).
2. detect: a coarse robust skin fit around the point the camera aims at; wound
   candidates by colour (Mahalanobis distance from the skin's own colour) and depth; the
   candidate region nearest the aim point is the wound. Quality gates refuse scans taken
   too close or too far, with too much motion or too few points, or with no wound.
3. fuse: the frames' points around the wound, placed by their poses, pooled so depth
   noise averages out in the next stages (``fusion="tsdf"`` integrates them into an
   Open3D voxel-block TSDF instead; the pooled points measured better on the synthetic
   suite); then Open3D's statistical outlier removal.
4. surface: the skin fitted as a polynomial height field (degree chosen per scan, up to
   4, which holds on 4 cm limbs) on a ring of skin around the wound only, in a frame
   whose z axis is the skin normal at the wound centre; refitted once the boundary is
   known.
5. boundary: the points splatted onto a 0.5 mm grid on that frame, each cell's colour
   read from the frames' colour images at their own resolution (point colours for a
   point cloud); the wound is where a cell's colour is more than half-way from the
   skin's (fitted across the ring) to the nearest wound tissue's (clusters of the
   clearly-not-skin colours), so blurred edges split where they are half mixed, or
   where the floor lies clearly below the skin; a user-drawn outline replaces this.
6. measure: area on the fitted skin surface, perimeter of the outline on that surface,
   length along the body axis (major axis when unknown) and width across it, depth
   below the skin (max robust: the deepest point of the smoothed floor), mean depth,
   volume, and the ruler estimate (length x width).

Definitions follow `lidar_capture._synthetic` (the ground truth the benchmark uses):
depth is measured along the skin normal at the wound centre, volume is the space
between the fitted skin lid and the floor.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lidar_capture._errors import CaptureError, MeasurementRefused
from lidar_capture._surface import HeightField, fit_height_field, local_frame, to_local, to_world
from lidar_capture._types import Frame, PointCloud, Scan

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

__all__ = [
    "QUALITY_FLAGS",
    "REFUSAL_REASONS",
    "MeasureOptions",
    "ModelResult",
    "Outline",
    "WoundMeasurement",
    "WoundModel",
    "WoundRaster",
    "measure",
]

#: Stable codes of `MeasurementRefused.reason`.
REFUSAL_REASONS = (
    "too_close",
    "too_far",
    "too_few_points",
    "too_much_motion",
    "noise_too_high",
    "no_wound_found",
)

#: Flags a measurement may carry: it was measured, but read it with this in mind.
QUALITY_FLAGS = (
    "single_frame",  # no fusion: depth and volume carry one frame's noise
    "distance_outside_recommended",  # outside 18-45 cm: fewer or noisier points
    "motion_high",  # the device moved fast between frames
    "noise_high",  # the skin around the wound is noisier than 1.5 mm
    "boundary_from_depth",  # no usable colour: the boundary follows the floor's depth
    "boundary_from_outline",  # a user-drawn outline gave the boundary
    "wound_cut_off",  # part of the boundary runs along missing data
    "sparse_wound",  # fewer than 150 points on the wound bed
    "model_not_used",  # no wound model given (or none installed): colour/depth boundary
    "model_found_no_wound",  # the model saw no wound where the scan's geometry did
    "model_incompatible",  # the model does not read the canonical input: not used
)


@dataclass(frozen=True)
class MeasureOptions:
    """Tunables of the pipeline; the defaults suit an iPad/iPhone LiDAR at 20-40 cm."""

    min_confidence: int = 1
    """Drop depth pixels below this confidence (0 low, 1 medium, 2 high)."""
    fusion: str = "points"
    """``tsdf`` (Open3D TSDF volume) or ``points`` (registered points pooled)."""
    voxel_m: float = 0.001
    grid_m: float = 0.0005
    search_radius_m: float = 0.07
    """How far from the aim point the wound is looked for."""
    min_distance_m: float = 0.12
    max_distance_m: float = 0.60
    recommended_distance_m: tuple[float, float] = (0.18, 0.45)
    max_speed_m_s: float = 0.30
    max_angular_speed_deg_s: float = 90.0
    max_noise_mm: float = 3.0
    min_points: int = 500
    colour_threshold: float = 6.0
    """Mahalanobis distance from the skin colour that is certainly not skin."""
    depth_threshold_mm: float = 2.0
    """Depth below the skin that is certainly wound (raised to 4 sigma of the noise)."""
    max_skin_degree: int = 4
    """Highest polynomial degree of the skin fit; 1 fits a plane (for comparison only)."""

    def __post_init__(self) -> None:
        positive = {
            "voxel_m": (self.voxel_m, 0.0002, 0.01),
            "grid_m": (self.grid_m, 0.0002, 0.005),
            "search_radius_m": (self.search_radius_m, 0.01, 0.5),
            "max_noise_mm": (self.max_noise_mm, 0.01, 1000.0),
            "colour_threshold": (self.colour_threshold, 0.5, 100.0),
            "depth_threshold_mm": (self.depth_threshold_mm, 0.1, 50.0),
        }
        for name, (value, low, high) in positive.items():
            if not low <= value <= high:
                raise CaptureError(f"{name} must be between {low} and {high}, not {value}")
        if self.min_points < 10:
            raise CaptureError("min_points must be at least 10")
        near, far = self.recommended_distance_m
        if not 0 < self.min_distance_m <= near <= far <= self.max_distance_m:
            raise CaptureError(
                "distances must satisfy 0 < min_distance_m <= recommended range <= max_distance_m"
            )
        if self.fusion not in ("points", "tsdf"):
            raise CaptureError(f"fusion must be 'points' or 'tsdf', not {self.fusion!r}")
        if not 1 <= self.max_skin_degree <= 4:
            raise CaptureError("max_skin_degree must be between 1 and 4")
        if not 0 <= self.min_confidence <= 2:
            raise CaptureError("min_confidence must be 0, 1 or 2")


@dataclass(frozen=True, eq=False)
class Outline:
    """A user-drawn wound outline that overrides the detected boundary.

    Either world points (N, 3) in metres, on or near the skin, or pixel coordinates
    (N, 2) in the colour image of frame `frame` (the pipeline casts them onto the
    fitted skin surface).
    """

    points: FloatArray
    frame: int | None = None

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] not in (2, 3):
            raise CaptureError(
                "an outline needs at least 3 points of 2 (pixels) or 3 (metres) values"
            )
        if not np.all(np.isfinite(pts)):
            raise CaptureError("an outline has non-finite coordinates")
        if pts.shape[1] == 2 and self.frame is None:
            raise CaptureError("a pixel outline needs the frame it was drawn on")
        object.__setattr__(self, "points", pts)

    @classmethod
    def from_json(cls, obj: object) -> Outline:
        """``[[x, y, z], ...]`` in metres, or ``{"frame": i, "pixels": [[u, v], ...]}``.

        Pixels are in the colour image of that frame as the `Scan` holds it.
        """
        shape = 'an outline is [[x, y, z], ...] in metres or {"frame": i, "pixels": [[u, v], ...]}'
        try:
            if isinstance(obj, dict) and "pixels" in obj:
                frame = obj.get("frame", 0)
                if isinstance(frame, bool) or not isinstance(frame, int):
                    raise CaptureError(f"{shape}; the frame must be a whole number")
                return cls(np.asarray(obj["pixels"], dtype=np.float64), frame=frame)
            if isinstance(obj, dict) and "points" in obj:
                return cls(np.asarray(obj["points"], dtype=np.float64))
            if isinstance(obj, list):
                return cls(np.asarray(obj, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise CaptureError(f"{shape}; the coordinates must be numbers") from exc
        raise CaptureError(shape)


@dataclass(frozen=True)
class ModelResult:
    """What the wound model said about a scan (stored as the assessment's model output)."""

    model_id: str
    model_version: str
    tissue_composition: dict[str, float]
    """% of the wound's cells per tissue class."""
    confidence: float
    """The model's mean top-class probability over the wound, 0 to 1."""

    def to_json(self) -> dict[str, Any]:
        """As a JSON-able object."""
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "tissue_composition": dict(self.tissue_composition),
            "confidence": round(self.confidence, 4),
        }


class WoundModel(Protocol):
    """What `measure` needs of a wound model; `edge_sdk.ModelRunner` is one.

    ``manifest`` names the model (``model_id``, ``version``, ``classes``, class 0 the
    background); ``segment(image, valid)`` takes one canonical input (see
    `lidar_capture.model_input`) and returns an object with ``labels`` (H x W class
    ids) and ``confidence``.
    """

    @property
    def manifest(self) -> Any: ...

    def segment(
        self, image: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_] | None = None
    ) -> Any: ...


@dataclass(frozen=True, eq=False)
class WoundRaster:
    """The wound and the skin around it, resampled on a square grid in the wound frame.

    Cell (i, j) is at x = ``centres[i]``, y = ``centres[j]`` of `frame` (metres; z is the
    skin normal at the wound centre). Every source ends up here, which is why the wound
    model reads its input from it.
    """

    frame: FloatArray
    """4x4 local-to-world of the wound frame."""
    centres: FloatArray
    """(n,) cell centres along x and along y, metres."""
    colour: FloatArray | None
    """(n, n, 3) RGB in [0, 1], or None for a scan without colour."""
    depth: FloatArray
    """(n, n) depth below the fitted skin, metres (negative above it)."""
    surface: FloatArray
    """(n, n) z of the scanned surface in the wound frame (the skin, or the wound floor)."""
    valid: BoolArray
    """(n, n) cells the scan covered."""
    wound: BoolArray
    """(n, n) cells inside the measured outline."""

    @property
    def cell(self) -> float:
        """Cell size, metres."""
        return float(self.centres[1] - self.centres[0])


@dataclass(frozen=True, eq=False)
class WoundMeasurement:
    """A wound's dimensions and how they were obtained."""

    area_cm2: float
    perimeter_cm: float
    length_cm: float
    width_cm: float
    max_depth_mm: float
    mean_depth_mm: float
    volume_cm3: float
    ruler_area_cm2: float
    point_count: int
    """Points of the fused, cleaned cloud around the wound."""
    wound_point_count: int
    frame_count: int
    quality: tuple[str, ...]
    boundary_source: str
    """``colour``, ``depth`` or ``outline`` (``model`` once a model gives the mask)."""
    length_axis: str
    """``body`` when the body axis was known, else ``major``."""
    skin_fit_degree: int
    noise_mm: float
    timings_ms: dict[str, float]
    outline_world: FloatArray
    """(N, 3) the wound outline on the fitted skin, world metres."""
    wound_frame: FloatArray
    """4x4 local-to-world: origin at the wound centre, z the skin normal."""
    cloud: PointCloud = field(repr=False)
    """The fused, cleaned point cloud around the wound (what is stored as the scan)."""
    raster: WoundRaster = field(repr=False)
    """The skin around the wound on the measurement grid (the model's input comes from it)."""
    model_output: ModelResult | None = None
    """What the wound model said, when one drew the boundary."""

    def to_json(self) -> dict[str, Any]:
        """The figures as one JSON-able object (no arrays but the outline)."""
        return {
            "area_cm2": round(self.area_cm2, 3),
            "perimeter_cm": round(self.perimeter_cm, 3),
            "length_cm": round(self.length_cm, 3),
            "width_cm": round(self.width_cm, 3),
            "max_depth_mm": round(self.max_depth_mm, 2),
            "mean_depth_mm": round(self.mean_depth_mm, 2),
            "volume_cm3": round(self.volume_cm3, 4),
            "ruler_area_cm2": round(self.ruler_area_cm2, 3),
            "point_count": self.point_count,
            "wound_point_count": self.wound_point_count,
            "frame_count": self.frame_count,
            "quality": list(self.quality),
            "boundary_source": self.boundary_source,
            "length_axis": self.length_axis,
            "skin_fit_degree": self.skin_fit_degree,
            "noise_mm": round(self.noise_mm, 3),
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
            "model": None if self.model_output is None else self.model_output.to_json(),
        }


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - start) * 1000.0

    def total(self) -> dict[str, float]:
        return {**self.ms, "total": (time.perf_counter() - self._start) * 1000.0}


# --- frames -> points -----------------------------------------------------------------


def _color_at_depth_resolution(frame: Frame) -> npt.NDArray[np.uint8] | None:
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


def _valid_depth(frame: Frame, min_confidence: int) -> npt.NDArray[np.float32]:
    depth = np.where(np.isfinite(frame.depth), frame.depth, 0.0).astype(np.float32)
    depth[depth < 0] = 0.0
    if frame.confidence is not None:
        depth[frame.confidence < min_confidence] = 0.0
    return depth


def _frame_points(frame: Frame, depth: npt.NDArray[np.float32]) -> PointCloud:
    """Back-project the valid pixels of one frame into world points with colours."""
    k = frame.intrinsics
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    cam = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], axis=1)
    world = cam @ frame.pose[:3, :3].T + frame.pose[:3, 3]
    color = _color_at_depth_resolution(frame)
    colors = None if color is None else color[v, u].astype(np.float64) / 255.0
    return PointCloud(world, colors)


def _check_distance(distance: float, opts: MeasureOptions) -> None:
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
        dt = dt if dt > 1e-4 else 1.0 / 30.0
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
    if speed > opts.max_speed_m_s / 3 or angular > opts.max_angular_speed_deg_s / 3:
        flags.append("motion_high")


# --- detection ------------------------------------------------------------------------


@dataclass
class _Detection:
    centre: FloatArray
    normal: FloatArray
    radius: float
    noise: float


def _skin_colour_model(colors: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Robust mean and inverse covariance of skin colours (trimmed twice)."""
    keep = colors
    for _ in range(3):
        cov = np.cov(keep.T) + np.eye(3) * (3.0 / 255.0) ** 2
        inv = np.asarray(np.linalg.inv(cov), dtype=np.float64)
        mean = np.asarray(keep.mean(axis=0), dtype=np.float64)
        d = _mahalanobis(colors, mean, inv)
        keep = colors[d <= np.quantile(d, 0.8)]
    cov = np.cov(keep.T) * 1.6 + np.eye(3) * (3.0 / 255.0) ** 2  # undo the trim's shrinkage
    mean = np.asarray(keep.mean(axis=0), dtype=np.float64)
    return mean, np.asarray(np.linalg.inv(cov), dtype=np.float64)


def _mahalanobis(colors: FloatArray, mean: FloatArray, inv: FloatArray) -> FloatArray:
    d = colors - mean
    return np.asarray(np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, inv, d), 0.0)), np.float64)


def _components(cells: BoolArray) -> tuple[npt.NDArray[np.int32], int]:
    from scipy import ndimage

    labels, count = ndimage.label(cells)
    return labels, int(count)


def _detect(
    cloud: PointCloud,
    aim: FloatArray,
    towards: FloatArray | None,
    opts: MeasureOptions,
) -> _Detection:
    """Find the wound near the aim point: a coarse skin fit and candidate regions."""
    from scipy import ndimage

    near = np.linalg.norm(cloud.points - aim, axis=1) < opts.search_radius_m
    pts = cloud.points[near]
    if pts.shape[0] < opts.min_points:
        raise MeasurementRefused(
            "too_few_points",
            f"only {pts.shape[0]} valid points near the wound (need {opts.min_points}); "
            "move closer, keep the wound in view and avoid glare",
        )
    centroid = pts.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov((pts - centroid).T))
    normal = vecs[:, 0]
    if towards is not None and float(np.dot(normal, towards)) < 0:
        normal = -normal
    frame = local_frame(aim, normal, None)
    loc = to_local(frame, pts)
    try:
        skin = fit_height_field(loc[:, 0], loc[:, 1], loc[:, 2], max_degree=4, min_degree=2)
    except ValueError as exc:
        raise MeasurementRefused("too_few_points", str(exc)) from exc
    depth = skin(loc[:, 0], loc[:, 1]) - loc[:, 2]
    if towards is None and np.quantile(depth, 0.995) < np.quantile(-depth, 0.995):
        # Seen from the other side, a wound is a bump: flip so it is a depression.
        normal, depth = -normal, -depth
        frame = local_frame(aim, normal, None)
        loc = to_local(frame, pts)
    sigma = skin.residual_std
    on_body = np.abs(depth) < 0.025
    candidate = on_body & (depth > max(opts.depth_threshold_mm / 1000.0, 5.0 * sigma))
    colors = None if cloud.colors is None else cloud.colors[near]
    if colors is not None:
        skin_like = on_body & (np.abs(depth) < 3.0 * sigma)
        if np.count_nonzero(skin_like) >= 50:
            mean, inv = _skin_colour_model(colors[skin_like])
            candidate |= on_body & (_mahalanobis(colors, mean, inv) > opts.colour_threshold)
    if not np.any(candidate):
        raise MeasurementRefused(
            "no_wound_found", "no wound found near the centre of the scan; aim at the wound"
        )
    cell = 0.001
    xy = loc[candidate, :2]
    lo = xy.min(axis=0)
    idx = np.floor((xy - lo) / cell).astype(int)
    grid = np.zeros(tuple(idx.max(axis=0) + 1), dtype=bool)
    grid[idx[:, 0], idx[:, 1]] = True
    grid = ndimage.binary_closing(grid, iterations=2) | grid
    labels, count = _components(grid)
    best, best_score = 0, 0.0
    aim_cell = -lo / cell
    for label in range(1, count + 1):
        cells = np.argwhere(labels == label)
        area_mm2 = cells.shape[0] * (cell * 1000.0) ** 2
        if area_mm2 < 15.0:
            continue
        dist = float(np.linalg.norm(cells.mean(axis=0) - aim_cell)) * cell
        score = area_mm2 / (1.0 + (dist / 0.03) ** 2)
        if score > best_score:
            best, best_score = label, score
    if best == 0:
        raise MeasurementRefused(
            "no_wound_found", "no wound found near the centre of the scan; aim at the wound"
        )
    cells = np.argwhere(labels == best)
    if colors is None:
        # Depth alone finds the deep middle of a bowl, not its rim: look wider.
        grow = max(round(0.6 * np.sqrt(cells.shape[0] / np.pi)), 2)
        grown = np.zeros_like(grid)
        grown[tuple(cells.T)] = True
        grown = ndimage.binary_dilation(grown, iterations=grow)
        cells = np.argwhere(grown)
    centre_xy = (cells.mean(axis=0) + 0.5) * cell + lo
    radius = float(np.max(np.linalg.norm((cells + 0.5) * cell + lo - centre_xy, axis=1)))
    centre_local = np.array([centre_xy[0], centre_xy[1], skin(centre_xy[:1], centre_xy[1:])[0]])
    centre = to_world(frame, centre_local[None, :])[0]
    gx, gy = skin.gradient(centre_xy[:1], centre_xy[1:])
    n_local = np.array([-gx[0], -gy[0], 1.0])
    n_world = frame[:3, :3] @ (n_local / np.linalg.norm(n_local))
    return _Detection(centre, n_world, radius + cell, sigma)


# --- fusion ---------------------------------------------------------------------------


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

    trunc_voxels = float(np.clip(4.0 * noise, 0.003, 0.010)) / opts.voxel_m
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"),
        attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=[o3c.SizeVector([1]), o3c.SizeVector([1]), o3c.SizeVector([3])],
        voxel_size=opts.voxel_m,
        block_resolution=8,
        block_count=4000,
    )
    has_color = all(f.color is not None for f in frames)
    for frame, depth in zip(frames, depths, strict=True):
        h, w = depth.shape
        color = _color_at_depth_resolution(frame) if has_color else None
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
    # A surface seen by at least a fifth of the frames (and twice, when there are several).
    threshold = float(min(max(0.2 * len(frames), 1.0), 2.0))
    pcd = grid.extract_point_cloud(weight_threshold=threshold - 0.5)
    points = pcd.point.positions.numpy().astype(np.float64)
    colors = pcd.point.colors.numpy().astype(np.float64) if has_color else None
    return PointCloud(points, None if colors is None else np.clip(colors, 0.0, 1.0))


def _remove_outliers(cloud: PointCloud) -> PointCloud:
    import open3d as o3d

    if len(cloud) < 50:
        return cloud
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.points))
    _, kept = pcd.remove_statistical_outlier(nb_neighbors=16, std_ratio=2.5)
    idx = np.asarray(kept, dtype=np.int64)
    return PointCloud(cloud.points[idx], None if cloud.colors is None else cloud.colors[idx])


def _crop(cloud: PointCloud, centre: FloatArray, radius: float) -> PointCloud:
    keep = np.linalg.norm(cloud.points - centre, axis=1) < radius
    return PointCloud(cloud.points[keep], None if cloud.colors is None else cloud.colors[keep])


# --- the grid on the skin -------------------------------------------------------------


@dataclass
class _Grid:
    """A square raster in the wound frame's x-y plane; cell (i, j) is x[i], y[j]."""

    lo: float
    cell: float
    n: int

    @property
    def centres(self) -> FloatArray:
        return np.asarray(self.lo + (np.arange(self.n) + 0.5) * self.cell, dtype=np.float64)

    def index(self, xy: FloatArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], BoolArray]:
        ij = np.floor((xy - self.lo) / self.cell).astype(np.intp)
        inside = np.all((ij >= 0) & (ij < self.n), axis=1)
        return ij[:, 0], ij[:, 1], inside


def _splat(
    grid: _Grid, xy: FloatArray, values: FloatArray, sigma_cells: float
) -> tuple[FloatArray, FloatArray]:
    """Gaussian normalised convolution of point values onto the grid: (field, weight)."""
    from scipy import ndimage

    i, j, inside = grid.index(xy)
    i, j, values = i[inside], j[inside], values[inside]
    flat = i * grid.n + j
    weight = np.bincount(flat, minlength=grid.n * grid.n).astype(np.float64).reshape(grid.n, grid.n)
    weight = ndimage.gaussian_filter(weight, sigma_cells, mode="constant")
    fields = []
    for column in np.atleast_2d(values.T):
        total = np.bincount(flat, weights=column, minlength=grid.n * grid.n).reshape(grid.n, grid.n)
        total = ndimage.gaussian_filter(total, sigma_cells, mode="constant")
        fields.append(np.divide(total, weight, out=np.zeros_like(total), where=weight > 1e-9))
    return np.stack(fields, axis=-1), weight


def _project_colour(
    frames: tuple[Frame, ...],
    frame_tf: FloatArray,
    grid: _Grid,
    skin: HeightField,
    depth: FloatArray,
) -> tuple[FloatArray, float]:
    """Each cell's colour, averaged over the frames' colour images (bilinear).

    The cell's surface point (on the floor inside the wound, on the skin outside) is
    projected into every frame, so the colour comes at the colour camera's resolution
    rather than the depth grid's. Returns the (n, n, 3) colours in [0, 1] and the
    colour pixel's footprint on the skin in metres.
    """
    gx, gy = np.meshgrid(grid.centres, grid.centres, indexing="ij")
    surface = np.stack([gx, gy, skin(gx, gy) - depth], axis=-1).reshape(-1, 3)
    world = to_world(frame_tf, surface)
    total = np.zeros_like(world)
    count = np.zeros(world.shape[0])
    footprints = []
    for fr in frames:
        assert fr.color is not None
        ch, cw = fr.color.shape[:2]
        k = fr.intrinsics.scaled(cw, ch)
        cam = (world - fr.pose[:3, 3]) @ fr.pose[:3, :3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = k.fx * cam[:, 0] / z + k.cx
            v = k.fy * cam[:, 1] / z + k.cy
        ok = (z > 0) & (u >= 0) & (u <= cw - 1) & (v >= 0) & (v <= ch - 1)
        if not np.any(ok):
            continue
        u0 = np.clip(np.floor(u[ok]).astype(np.intp), 0, cw - 2)
        v0 = np.clip(np.floor(v[ok]).astype(np.intp), 0, ch - 2)
        fu, fv = (u[ok] - u0)[:, None], (v[ok] - v0)[:, None]
        img = fr.color
        sample = (
            img[v0, u0] * (1 - fu) * (1 - fv)
            + img[v0, u0 + 1] * fu * (1 - fv)
            + img[v0 + 1, u0] * (1 - fu) * fv
            + img[v0 + 1, u0 + 1] * fu * fv
        )
        total[ok] += sample / 255.0
        count[ok] += 1
        footprints.append(float(np.median(z[ok])) / k.fx)
    colours = np.divide(total, count[:, None], out=np.zeros_like(total), where=count[:, None] > 0)
    footprint = float(np.median(footprints)) if footprints else grid.cell
    return colours.reshape(grid.n, grid.n, 3), footprint


def _kmeans(samples: FloatArray, k: int, iterations: int = 12) -> FloatArray:
    """Cluster centres of `samples` (deterministic: seeded along the brightness order)."""
    order = np.argsort(samples.sum(axis=1))
    k = max(1, min(k, samples.shape[0]))
    centres = samples[order[((np.arange(k) + 0.5) * samples.shape[0] / k).astype(int)]]
    for _ in range(iterations):
        nearest = np.argmin(((samples[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        for j in range(k):
            members = samples[nearest == j]
            if members.shape[0]:
                centres[j] = members.mean(axis=0)
    return np.asarray(centres, dtype=np.float64)


def _shares(
    offset: FloatArray, inv: FloatArray, tissues: FloatArray, threshold: float
) -> tuple[FloatArray, FloatArray]:
    """Each cell's share along its closest skin-to-tissue segment, and its squared
    distance off that segment (both in the skin's colour metric)."""
    best_share = np.zeros(offset.shape[:2])
    best_off = np.full(offset.shape[:2], np.inf)
    for tissue in tissues:
        length2 = float(tissue @ inv @ tissue)
        if length2 < threshold**2:
            continue
        share = np.einsum("...i,ij,j->...", offset, inv, tissue) / length2
        clipped = np.clip(share, 0.0, 1.0)
        rest = offset - clipped[..., None] * tissue
        off = np.einsum("...i,ij,...j->...", rest, inv, rest)
        better = off < best_off
        best_share[better], best_off[better] = share[better], off[better]
    return best_share, best_off


def _colour_split(
    colour: FloatArray,
    skin_cells: BoolArray,
    coverage: BoolArray,
    grid: _Grid,
    opts: MeasureOptions,
) -> tuple[FloatArray, FloatArray] | None:
    """How far each cell's colour is from skin towards the wound's own colours.

    The skin colour is fitted across the ring as a smooth function of position (the
    shading of a limb changes it), with its spread as the metric. The wound's tissues
    (clusters of the clearly-not-skin colours well inside it) are the far ends: a cell
    blurred across the edge is a mix of skin and the nearest tissue, and its share of
    the tissue (0 skin, 1 tissue) is its projection onto that skin-to-tissue segment.
    The edge is where the share is one half, whatever the tissue's contrast, the blur
    or the point density. Returns (share, Mahalanobis contrast from skin) or None when
    there is too little skin to model.
    """
    from scipy import ndimage

    if np.count_nonzero(skin_cells) < 50:
        return None
    gx, gy = np.meshgrid(grid.centres, grid.centres, indexing="ij")
    scale = max(float(np.max(np.abs(grid.centres))), 1e-3)
    u, v = gx / scale, gy / scale
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1)
    a = design[skin_cells]
    coef = np.linalg.lstsq(a, colour[skin_cells], rcond=None)[0]
    for _ in range(2):  # refit without skin cells far off the first fit (hair, glare)
        resid = colour[skin_cells] - a @ coef
        norm = np.linalg.norm(resid, axis=1)
        keep = norm <= max(float(np.quantile(norm, 0.9)), 1e-6)
        coef = np.linalg.lstsq(a[keep], colour[skin_cells][keep], rcond=None)[0]
    skin = design @ coef
    resid = colour[skin_cells] - a @ coef
    resid = resid[np.linalg.norm(resid, axis=1) <= np.quantile(np.linalg.norm(resid, axis=1), 0.9)]
    cov = np.cov(resid.T) * 1.3 + np.eye(3) * (2.0 / 255.0) ** 2
    inv = np.asarray(np.linalg.inv(cov), dtype=np.float64)
    offset = colour - skin
    contrast = _mahalanobis(offset.reshape(-1, 3), np.zeros(3), inv).reshape(offset.shape[:2])
    contrast[~coverage] = 0.0
    clear = coverage & (contrast > 2.0 * opts.colour_threshold)
    inner = ndimage.binary_erosion(clear, iterations=3)
    samples = offset[inner] if np.count_nonzero(inner) >= 20 else offset[clear]
    if samples.shape[0] < 5:
        return None
    tissues = _kmeans(samples, 4)
    for _ in range(2):
        best_share, best_off = _shares(offset, inv, tissues, opts.colour_threshold)
        # Clearly-not-skin cells no skin-to-tissue segment explains are a tissue the
        # clusters missed (a thin band of epithelium along the edge, say): add it.
        unexplained = (
            coverage
            & (contrast > 2.0 * opts.colour_threshold)
            & (np.sqrt(best_off) > opts.colour_threshold)
        )
        if np.count_nonzero(unexplained) < 10:
            break
        tissues = np.vstack([tissues, _kmeans(offset[unexplained], 2)])
    best_share, _ = _shares(offset, inv, tissues, opts.colour_threshold)
    best_share[~coverage] = 0.0
    return np.asarray(best_share, dtype=np.float64), np.asarray(contrast, dtype=np.float64)


def _polygon_mask(poly: FloatArray, grid: _Grid) -> BoolArray:
    """Cells whose centre is inside the polygon (even-odd rule, scanline fill)."""
    centres = grid.centres
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    mask = np.zeros((grid.n, grid.n), dtype=bool)
    for j, y in enumerate(centres):
        crosses = (y0 <= y) != (y1 <= y)
        if not np.any(crosses):
            continue
        t = (y - y0[crosses]) / (y1[crosses] - y0[crosses])
        xs = np.sort(x0[crosses] + t * (x1[crosses] - x0[crosses]))
        for a, b in zip(xs[0::2], xs[1::2], strict=False):
            mask[(centres >= a) & (centres < b), j] = True
    return mask


def _smooth_closed(poly: FloatArray, step: float, sigma: float) -> FloatArray:
    """Resample a closed polyline every `step` metres and smooth it along its length."""
    from scipy import ndimage

    closed = np.vstack([poly, poly[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    total = s[-1]
    count = max(int(total / step), 8)
    t = np.linspace(0.0, total, count, endpoint=False)
    res = np.stack([np.interp(t, s, closed[:, k]) for k in range(poly.shape[1])], axis=1)
    return np.asarray(ndimage.gaussian_filter1d(res, sigma / (total / count), axis=0, mode="wrap"))


def _main_contour(
    field: FloatArray, grid: _Grid, level: float, inside: tuple[float, float]
) -> FloatArray | None:
    """The closed contour of `field` at `level` that encloses `inside`, else the longest."""
    import contourpy

    c = grid.centres
    gen = contourpy.contour_generator(c, c, field.T, line_type=contourpy.LineType.Separate)
    lines = [np.asarray(ln, dtype=np.float64) for ln in gen.lines(level) if len(ln) >= 8]
    if not lines:
        return None
    px, py = inside

    def encloses(line: FloatArray) -> bool:
        x0, y0 = line[:, 0], line[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        crosses = (y0 <= py) != (y1 <= py)
        t = (py - y0[crosses]) / (y1[crosses] - y0[crosses])
        return bool(np.count_nonzero(x0[crosses] + t * (x1[crosses] - x0[crosses]) > px) % 2)

    def area(line: FloatArray) -> float:
        x, y = line[:, 0], line[:, 1]
        return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))

    enclosing = [ln for ln in lines if encloses(ln)]
    pool = enclosing or lines
    return np.asarray(max(pool, key=area), dtype=np.float64)


# --- the measurement ------------------------------------------------------------------


@dataclass
class _Region:
    frame: FloatArray
    skin: HeightField
    grid: _Grid
    mask: BoolArray
    polygon: FloatArray
    outline_world: FloatArray
    depth: FloatArray
    coverage: BoolArray
    source: str
    wound_points: int
    colour: FloatArray | None
    point_cells: npt.NDArray[np.intp]
    """(2, M) grid cells of the cloud's points around the wound."""


def _line_length(
    skin: HeightField, start: FloatArray, direction: FloatArray, t0: float, t1: float
) -> float:
    t = np.linspace(t0, t1, 400)
    x, y = start[0] + t * direction[0], start[1] + t * direction[1]
    z = skin(x, y)
    return float(np.sum(np.linalg.norm(np.diff(np.stack([x, y, z], axis=1), axis=0), axis=1)))


def _cast_outline(
    outline: Outline, scan: Scan, frame_tf: FloatArray, skin: HeightField
) -> FloatArray:
    """The outline's points in the wound frame's x-y plane."""
    if outline.points.shape[1] == 3:
        return to_local(frame_tf, outline.points)[:, :2]
    index = outline.frame if outline.frame is not None else 0
    if not scan.frames or not 0 <= index < len(scan.frames):
        raise CaptureError(f"the outline refers to frame {index}, which this scan does not have")
    fr = scan.frames[index]
    k = fr.intrinsics
    if fr.color is not None:
        k = k.scaled(fr.color.shape[1], fr.color.shape[0])
    u, v = outline.points[:, 0], outline.points[:, 1]
    if np.any((u < -0.5) | (v < -0.5) | (u > k.width - 0.5) | (v > k.height - 0.5)):
        raise CaptureError(
            f"the outline has pixels outside frame {index}'s {k.width}x{k.height} colour image"
        )
    rays = np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=1)
    origin = to_local(frame_tf, fr.pose[:3, 3][None, :])[0]
    dirs = (rays @ fr.pose[:3, :3].T) @ frame_tf[:3, :3]
    t = (0.0 - origin[2]) / dirs[:, 2]
    for _ in range(20):  # fixed point on the skin: where the ray meets z = s(x, y)
        p = origin + t[:, None] * dirs
        t = t + (skin(p[:, 0], p[:, 1]) - p[:, 2]) / dirs[:, 2]
    p = origin + t[:, None] * dirs
    if not np.all(np.isfinite(p)) or np.any(t <= 0):
        raise CaptureError("the outline's pixels do not all land on the scanned skin")
    return np.asarray(p[:, :2])


def _check_outline(
    polygon: FloatArray, outline: Outline, skin: HeightField, frame_tf: FloatArray, limit: float
) -> None:
    """Refuse an outline that is not around the scanned wound (wrong units or frame)."""
    reach = float(np.max(np.hypot(polygon[:, 0], polygon[:, 1])))
    if not np.isfinite(reach) or reach > limit:
        raise CaptureError(
            f"the outline reaches {reach * 100:.0f} cm from the scanned wound; outline points "
            "are world metres (or colour-image pixels with a frame) around the wound"
        )
    if outline.points.shape[1] == 3:
        local = to_local(frame_tf, outline.points)
        off = np.abs(local[:, 2] - skin(local[:, 0], local[:, 1]))
        if float(np.max(off)) > 0.01:
            raise CaptureError(
                f"the outline lies up to {float(np.max(off)) * 100:.1f} cm off the scanned "
                "skin; outline points are world metres on the skin around the wound"
            )


def _region(
    cloud: PointCloud,
    detection: _Detection,
    axis: FloatArray | None,
    outline: Outline | None,
    scan: Scan,
    opts: MeasureOptions,
    flags: list[str],
) -> _Region:
    from scipy import ndimage

    centre, normal, radius = detection.centre, detection.normal, detection.radius
    ring_width = max(0.012, 0.6 * radius)
    region: _Region | None = None
    for _ in range(3):
        frame = local_frame(centre, normal, axis)
        loc = to_local(frame, cloud.points)
        half = radius + 0.004 + ring_width
        grid = _Grid(lo=-half, cell=opts.grid_m, n=int(np.ceil(2 * half / opts.grid_m)))
        keep = np.all(np.abs(loc[:, :2]) < half, axis=1) & (np.abs(loc[:, 2]) < 0.04)
        loc_k = loc[keep]
        colors = None if cloud.colors is None else cloud.colors[keep]
        if loc_k.shape[0] < opts.min_points:
            raise MeasurementRefused(
                "too_few_points",
                f"only {loc_k.shape[0]} points around the wound (need {opts.min_points}); "
                "move closer and keep the wound in view",
            )
        # The ring: skin at least 3 mm outside the current wound region.
        i, j, inside = grid.index(loc_k[:, :2])
        gx_c, gy_c = np.meshgrid(grid.centres, grid.centres, indexing="ij")
        if region is None:
            outside_cells = np.hypot(gx_c, gy_c) > radius + 0.003
        else:
            previous = to_local(frame, region.outline_world)[:, :2]
            before = _polygon_mask(previous, grid)
            outside_cells = ndimage.distance_transform_edt(~before) * grid.cell > 0.003
        ic, jc = np.clip(i, 0, grid.n - 1), np.clip(j, 0, grid.n - 1)
        outside = inside & outside_cells[ic, jc]
        ring = outside & (np.hypot(loc_k[:, 0], loc_k[:, 1]) < half)
        try:
            skin = fit_height_field(
                loc_k[ring, 0], loc_k[ring, 1], loc_k[ring, 2], max_degree=opts.max_skin_degree
            )
        except ValueError as exc:
            raise MeasurementRefused(
                "too_few_points", f"not enough skin around the wound: {exc}"
            ) from exc
        if skin.residual_std * 1000.0 > opts.max_noise_mm:
            raise MeasurementRefused(
                "noise_too_high",
                f"the skin around the wound is too noisy ({skin.residual_std * 1000:.1f} mm); "
                "avoid glare and wet dressings, hold the device 20-40 cm away",
            )
        depth_pts = skin(loc_k[:, 0], loc_k[:, 1]) - loc_k[:, 2]
        spacing = float(np.sqrt((2 * half) ** 2 / max(loc_k.shape[0], 1)))
        sigma_cells = max(0.6 * spacing / grid.cell, 1.0)
        values = depth_pts[:, None] if colors is None else np.column_stack([depth_pts, colors])
        fields, weight = _splat(grid, loc_k[:, :2], values, sigma_cells)
        coverage = weight > 0.05 * float(np.quantile(weight[weight > 0], 0.5))
        depth = fields[..., 0]
        colour_field: FloatArray | None = None if colors is None else fields[..., 1:]
        colour_sigma = sigma_cells
        if scan.frames and all(f.color is not None for f in scan.frames):
            # The colour images are sharper than the depth grid (1920x1440 against
            # 256x192 on a device): look each cell's surface point up in every frame.
            colour_field, footprint = _project_colour(scan.frames, frame, grid, skin, depth)
            colour_sigma = max(footprint / grid.cell, 1.0)
        if outline is not None:
            polygon = _cast_outline(outline, scan, frame, skin)
            _check_outline(polygon, outline, skin, frame, opts.search_radius_m)
            source = "outline"
        else:
            ring_cells = outside_cells & coverage
            depth_noise = (
                1.4826 * float(np.median(np.abs(depth[ring_cells])))
                if np.any(ring_cells)
                else skin.residual_std
            )
            depth_core = coverage & (
                depth > max(opts.depth_threshold_mm / 1000.0, 4.0 * depth_noise)
            )
            core = depth_core.copy()
            alpha = np.zeros_like(depth)
            source = "depth"
            if colour_field is not None:
                skin_cells = ring_cells & (np.abs(depth) < 3 * depth_noise + 1e-4)
                split = _colour_split(colour_field, skin_cells, coverage, grid, opts)
                if split is not None:
                    alpha, contrast = split
                    colour_core = (contrast > opts.colour_threshold) & (alpha >= 0.5)
                    if np.count_nonzero(colour_core) * grid.cell**2 > 10e-6:
                        source = "colour"
                        core |= colour_core
            labels, count = _components(core)
            if count == 0:
                raise MeasurementRefused(
                    "no_wound_found", "no wound found near the centre of the scan; aim at the wound"
                )
            sizes = ndimage.sum_labels(np.ones_like(depth), labels, index=np.arange(1, count + 1))
            centres_lab = ndimage.center_of_mass(
                np.ones_like(depth), labels, index=np.arange(1, count + 1)
            )
            mid = grid.n / 2.0
            scores = [
                s / (1.0 + (np.hypot(c[0] - mid, c[1] - mid) * grid.cell / 0.01) ** 2)
                for s, c in zip(sizes, centres_lab, strict=True)
            ]
            chosen = labels == (int(np.argmax(scores)) + 1)
            main = ndimage.binary_fill_holes(chosen)
            if source == "colour":
                # Inside the chosen region's outline everything is wound (islands of
                # skin colour included); around it the colour decides.
                near = ndimage.binary_dilation(main, iterations=max(round(3 * colour_sigma), 2))
                wound_field = np.where(main & ~chosen, 1.0, np.where(near, alpha, 0.0))
                wound_field = np.maximum(wound_field, (main & depth_core).astype(np.float64))
            else:
                # Without colour the floor's depth draws the edge: where it is clearly
                # below the skin, down to 0.5 mm (a bowl's sloping rim is lost below it).
                shallow = coverage & (depth > max(0.0005, 4.0 * depth_noise))
                grown, _ = ndimage.label(shallow)
                ids = np.unique(grown[chosen & (grown > 0)])
                main = ndimage.binary_fill_holes(np.isin(grown, ids[ids > 0]) | chosen)
                wound_field = ndimage.gaussian_filter(main.astype(np.float64), 1.0)
            com = ndimage.center_of_mass(main)
            cx, cy = (
                float(grid.centres[0] + com[0] * grid.cell),
                float(grid.centres[0] + com[1] * grid.cell),
            )
            contour = _main_contour(wound_field, grid, 0.5, (cx, cy))
            if contour is None:
                raise MeasurementRefused(
                    "no_wound_found", "no closed wound boundary found; aim at the wound"
                )
            polygon = contour
        mask = _polygon_mask(polygon, grid)
        wound_pts = int(np.count_nonzero(mask[ic, jc] & inside))
        lifted = np.column_stack([polygon, skin(polygon[:, 0], polygon[:, 1])])
        region = _Region(
            frame,
            skin,
            grid,
            mask,
            polygon,
            to_world(frame, lifted),
            depth,
            coverage,
            source,
            wound_pts,
            colour_field,
            np.stack([ic[inside], jc[inside]]),
        )
        # Recentre on the wound and take the skin normal there for the next round.
        com = (
            np.argwhere(mask).mean(axis=0)
            if np.any(mask)
            else np.array([grid.n / 2.0, grid.n / 2.0])
        )
        cxy = grid.lo + (com + 0.5) * grid.cell
        cz = skin(cxy[:1], cxy[1:])[0]
        gx, gy = skin.gradient(cxy[:1], cxy[1:])
        n_local = np.array([-gx[0], -gy[0], 1.0])
        new_centre = to_world(frame, np.array([[cxy[0], cxy[1], cz]]))[0]
        normal = frame[:3, :3] @ (n_local / np.linalg.norm(n_local))
        r_poly = np.hypot(polygon[:, 0] - cxy[0], polygon[:, 1] - cxy[1])
        radius = float(np.max(r_poly))
        moved = float(np.linalg.norm(new_centre - centre))
        centre = new_centre
        if outline is None and moved < 0.0005:
            break
    assert region is not None
    if region.source == "depth" and outline is None:
        flags.append("boundary_from_depth")
    if outline is not None:
        flags.append("boundary_from_outline")
    return region


def _measure_region(region: _Region, axis_known: bool, flags: list[str]) -> dict[str, Any]:
    from scipy import ndimage

    grid, skin, mask = region.grid, region.skin, region.mask
    if not np.any(mask):
        raise MeasurementRefused("no_wound_found", "the wound boundary encloses no skin surface")
    gx_c, gy_c = np.meshgrid(grid.centres, grid.centres, indexing="ij")
    sx, sy = skin.gradient(gx_c[mask], gy_c[mask])
    cell2 = grid.cell**2
    area = float(np.sum(np.sqrt(1.0 + sx**2 + sy**2)) * cell2)
    projected = float(np.count_nonzero(mask) * cell2)
    depth = np.where(region.coverage, region.depth, 0.0)
    volume = max(float(np.sum(depth[mask]) * cell2), 0.0)
    smooth_w = ndimage.gaussian_filter(region.coverage.astype(np.float64), 2.0)
    smooth_d = np.divide(
        ndimage.gaussian_filter(depth, 2.0),
        smooth_w,
        out=np.zeros_like(depth),
        where=smooth_w > 1e-6,
    )
    max_depth = max(float(np.max(smooth_d[mask])), 0.0)
    missing = float(np.count_nonzero(mask & ~region.coverage)) / max(int(np.count_nonzero(mask)), 1)
    edge = mask & ~ndimage.binary_erosion(mask)
    if missing > 0.05 or np.count_nonzero(edge & ~region.coverage) > 0.1 * np.count_nonzero(edge):
        flags.append("wound_cut_off")
    cx, cy = float(np.mean(gx_c[mask])), float(np.mean(gy_c[mask]))
    if axis_known:
        a = np.array([0.0, 1.0])
    else:
        xy = np.stack([gx_c[mask] - cx, gy_c[mask] - cy])
        _, vecs = np.linalg.eigh(xy @ xy.T)
        a = vecs[:, 1]
    b = np.array([a[1], -a[0]])
    rel = region.polygon - np.array([cx, cy])
    c = np.array([cx, cy])
    length = _line_length(skin, c, a, float(np.min(rel @ a)), float(np.max(rel @ a)))
    width = _line_length(skin, c, b, float(np.min(rel @ b)), float(np.max(rel @ b)))
    smooth = _smooth_closed(region.polygon, grid.cell, 0.001)
    lifted = np.column_stack([smooth, skin(smooth[:, 0], smooth[:, 1])])
    perimeter = float(
        np.sum(np.linalg.norm(np.diff(np.vstack([lifted, lifted[:1]]), axis=0), axis=1))
    )
    return {
        "area_cm2": area * 1e4,
        "perimeter_cm": perimeter * 100.0,
        "length_cm": length * 100.0,
        "width_cm": width * 100.0,
        "max_depth_mm": max_depth * 1000.0,
        "mean_depth_mm": volume / projected * 1000.0 if projected > 0 else 0.0,
        "volume_cm3": volume * 1e6,
        "ruler_area_cm2": length * width * 1e4,
        "outline_world": to_world(region.frame, lifted),
    }


def _raster(region: _Region) -> WoundRaster:
    return WoundRaster(
        frame=region.frame,
        centres=region.grid.centres,
        colour=region.colour,
        depth=np.where(region.coverage, region.depth, 0.0),
        surface=_surface_z(region),
        valid=region.coverage,
        wound=region.mask,
    )


def _incompatible(model: WoundModel) -> str | None:
    """Why the model cannot read the canonical input, or None when it can."""
    from lidar_capture._model_input import MODEL_CHANNELS, MODEL_INPUT_SIZE

    manifest = model.manifest
    size = MODEL_INPUT_SIZE
    if tuple(manifest.input.shape)[1:] != (len(MODEL_CHANNELS), size, size):
        return f"input shape {tuple(manifest.input.shape)}"
    if tuple(manifest.output.shape)[2:] != (size, size):
        return f"output shape {tuple(manifest.output.shape)}"
    channels = manifest.preprocessing.get("channels")
    if channels is not None and tuple(channels) != MODEL_CHANNELS:
        return f"channels {channels}"
    return None


def _model_boundary(
    region: _Region, raster: WoundRaster, model: WoundModel, flags: list[str]
) -> tuple[_Region, ModelResult | None]:
    """The wound model's outline and tissue mix, in place of the colour/depth boundary.

    The geometric boundary still frames the model's input (centre and scale). When the
    model sees no wound there, the geometric boundary stands and the result says so.
    """
    from scipy import ndimage

    from lidar_capture._model_input import model_input, raster_mask

    problem = _incompatible(model)
    if problem is not None:
        flags.append("model_incompatible")
        return region, None
    inp = model_input(raster)
    seg = model.segment(inp.image, inp.image[-1] > 0.5)
    labels = np.asarray(seg.labels)
    centre = (labels.shape[0] // 2, labels.shape[1] // 2)
    found, count = ndimage.label(labels > 0)
    if count == 0:
        flags.append("model_found_no_wound")
        return region, None
    sizes = ndimage.sum_labels(np.ones(labels.shape), found, index=np.arange(1, count + 1))
    middle = found[centre] if found[centre] > 0 else int(np.argmax(sizes)) + 1
    wound = ndimage.binary_fill_holes(found == middle)
    grid = region.grid
    on_grid = raster_mask(wound, inp, raster)
    if np.count_nonzero(on_grid) * grid.cell**2 < 10e-6:
        flags.append("model_found_no_wound")
        return region, None
    # The edge where the model's wound probability crosses one half, interpolated
    # between its pixels (sharper than its labels), within the chosen wound.
    probability = 1.0 - np.asarray(seg.probabilities)[0]
    gx, gy = np.meshgrid(grid.centres, grid.centres, indexing="ij")
    step = float(inp.centres_x[1] - inp.centres_x[0])
    coords = [(gx - inp.centres_x[0]) / step, (gy - inp.centres_y[0]) / step]
    field_ = ndimage.map_coordinates(probability, coords, order=1, mode="constant", cval=0.0)
    near = ndimage.binary_dilation(on_grid, iterations=max(round(2 * step / grid.cell), 2))
    field_ = np.where(near, field_, 0.0)
    com = ndimage.center_of_mass(on_grid)
    inside = (
        float(grid.centres[0] + com[0] * grid.cell),
        float(grid.centres[0] + com[1] * grid.cell),
    )
    polygon = _main_contour(field_, grid, 0.5, inside)
    if polygon is None:
        flags.append("model_found_no_wound")
        return region, None
    mask = _polygon_mask(polygon, grid)
    lifted = np.column_stack([polygon, region.skin(polygon[:, 0], polygon[:, 1])])
    composition: dict[str, float] = {}
    classes = list(model.manifest.classes)
    counts = []
    for k in range(1, len(classes)):
        counts.append(np.count_nonzero(raster_mask(labels == k, inp, raster) & mask))
    total = sum(counts)
    if total:
        composition = {classes[k + 1]: round(100.0 * c / total, 2) for k, c in enumerate(counts)}
    result = ModelResult(
        model_id=str(model.manifest.model_id),
        model_version=str(model.manifest.version),
        tissue_composition=composition,
        confidence=float(seg.confidence),
    )
    new = replace(
        region,
        mask=mask,
        polygon=polygon,
        outline_world=to_world(region.frame, lifted),
        source="model",
        wound_points=int(np.count_nonzero(mask[region.point_cells[0], region.point_cells[1]])),
    )
    return new, result


def _surface_z(region: _Region) -> FloatArray:
    gx, gy = np.meshgrid(region.grid.centres, region.grid.centres, indexing="ij")
    depth = np.where(region.coverage, region.depth, 0.0)
    return np.asarray(region.skin(gx, gy) - depth, dtype=np.float64)


def measure(
    scan: Scan,
    *,
    outline: Outline | None = None,
    body_axis: npt.ArrayLike | None = None,
    options: MeasureOptions | None = None,
    model: WoundModel | None = None,
) -> WoundMeasurement:
    """Measure the wound in a scan.

    Args:
        scan: frames (fused with their poses) or a point cloud, world metres.
        outline: a user-drawn boundary that replaces the detected one.
        body_axis: head-ward direction in world coordinates; defaults to the scan's.
            With it, length runs head to toe; without it, along the major axis.
        options: pipeline tunables.
        model: a wound model (e.g. `edge_sdk.ModelRunner`) whose mask draws the boundary
            and gives the tissue mix; without one the colour/depth boundary is used and
            the result carries the ``model_not_used`` flag.

    Raises:
        MeasurementRefused: a quality gate refused the scan (`reason` says which).
        CaptureError: the scan or outline is unusable.
    """
    opts = options or MeasureOptions()
    timer = _Timer()
    flags: list[str] = []
    axis_arr = (
        np.asarray(body_axis if body_axis is not None else scan.body_axis, dtype=np.float64)
        if (body_axis is not None or scan.body_axis is not None)
        else None
    )
    if axis_arr is not None and (
        axis_arr.shape != (3,) or not np.all(np.isfinite(axis_arr)) or np.linalg.norm(axis_arr) == 0
    ):
        raise CaptureError("the body axis must be a non-zero 3-vector")
    towards: FloatArray | None = None
    camera: FloatArray | None = None
    frames = scan.frames
    with timer.stage("points"):
        if frames:
            _check_motion(frames, opts, flags)
            ref = frames[0]
            depths = [_valid_depth(f, opts.min_confidence) for f in frames]
            cloud = _frame_points(ref, depths[0])
            if len(cloud) < opts.min_points:
                raise MeasurementRefused(
                    "too_few_points",
                    f"only {len(cloud)} valid depth readings in the first frame "
                    f"(need {opts.min_points}); move closer and avoid glare",
                )
            camera = ref.pose[:3, 3]
            view = ref.pose[:3, 2]
            towards = -view
            # The aim point: the valid pixel nearest the image centre.
            rays = cloud.points - camera
            along = rays @ view
            off = np.linalg.norm(rays - along[:, None] * view, axis=1) / np.maximum(along, 1e-6)
            aim = cloud.points[int(np.argmin(off))]
        else:
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
            aim = cloud.points[int(np.argmin(dist))]
    if camera is not None:
        # Before looking for the wound: a scan from too far may show no wound at all,
        # and "too far" is the refusal that tells the clinician what to do.
        _check_distance(float(np.linalg.norm(aim - camera)), opts)
    with timer.stage("detect"):
        detection = _detect(cloud, aim, towards, opts)
        if camera is not None:
            distance = float(np.linalg.norm(detection.centre - camera))
            _check_distance(distance, opts)
            low, high = opts.recommended_distance_m
            if not low <= distance <= high:
                flags.append("distance_outside_recommended")
    roi = detection.radius + 0.004 + max(0.012, 0.6 * detection.radius)
    roi = float(np.hypot(roi, roi)) + 0.01
    with timer.stage("fuse"):
        if len(frames) > 1:
            cropped = [
                _roi_depth(f, d, detection.centre, roi) for f, d in zip(frames, depths, strict=True)
            ]
            if opts.fusion == "tsdf":
                cloud = _fuse_tsdf(frames, cropped, opts, detection.noise)
            else:
                parts = [_frame_points(f, d) for f, d in zip(frames, cropped, strict=True)]
                colors = (
                    None
                    if any(p.colors is None for p in parts)
                    else np.vstack([p.colors for p in parts if p.colors is not None])
                )
                cloud = PointCloud(np.vstack([p.points for p in parts]), colors)
        else:
            cloud = _crop(cloud, detection.centre, roi)
            flags.append("single_frame") if frames else None
    with timer.stage("outliers"):
        cloud = _remove_outliers(cloud)
    with timer.stage("surface_boundary"):
        region = _region(cloud, detection, axis_arr, outline, scan, opts, flags)
    axis_used = False
    if axis_arr is not None:
        normal = region.frame[:3, 2]
        along_skin = axis_arr - float(np.dot(axis_arr, normal)) * normal
        # local_frame ignores an axis this close to the skin normal; so does the length.
        axis_used = bool(np.linalg.norm(along_skin) > 0.2 * np.linalg.norm(axis_arr))
    raster = _raster(region)
    model_output: ModelResult | None = None
    if model is not None and outline is None:
        with timer.stage("model"):
            region, model_output = _model_boundary(region, raster, model, flags)
    elif model is None:
        flags.append("model_not_used")
    with timer.stage("measure"):
        figures = _measure_region(region, axis_used, flags)
    if region.skin.residual_std * 1000.0 > opts.max_noise_mm / 2:
        flags.append("noise_high")
    if region.wound_points < 30:
        raise MeasurementRefused(
            "too_few_points", f"only {region.wound_points} points on the wound bed; move closer"
        )
    if region.wound_points < 150:
        flags.append("sparse_wound")
    outline_world = figures.pop("outline_world")
    return WoundMeasurement(
        **figures,
        point_count=len(cloud),
        wound_point_count=region.wound_points,
        frame_count=len(frames),
        quality=tuple(dict.fromkeys(flags)),
        boundary_source=region.source,
        length_axis="body" if axis_used else "major",
        skin_fit_degree=region.skin.degree,
        noise_mm=region.skin.residual_std * 1000.0,
        timings_ms=timer.total(),
        outline_world=outline_world,
        wound_frame=region.frame,
        cloud=cloud,
        raster=replace(raster, wound=region.mask),
        model_output=model_output,
    )
