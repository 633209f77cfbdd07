"""The measurement pipeline: from a scan (frames or a point cloud) to wound dimensions.

`measure` runs the stages in order, each timed in `WoundMeasurement.timings_ms`; each
stage lives in its own module, and every threshold it uses is a `MeasureOptions` field:

1. points (`lidar_capture._points`): confidence filter and back-projection of a
   reference frame (or the cloud); the motion gate.
2. detect (`lidar_capture._detect`): where the wound is, near the point the camera
   aims at; the distance gates.
3. fuse (`lidar_capture._fusion`): the frames' points around the wound, pooled (or
   integrated into a TSDF), then outlier removal.
4-5. surface and boundary (`lidar_capture._boundary`): the skin fitted as a polynomial
   height field on a ring around the wound, the outline from colour and depth (or the
   user's); the wound model's mask replaces it when a model is given
   (`lidar_capture._model_boundary`).
6. measure (`lidar_capture._figures`): area, perimeter, length, width, depths, volume.

Definitions follow `lidar_capture._synthetic_wound` (the ground truth the benchmark uses):
depth is measured along the skin normal at the wound centre, volume is the space
between the fitted skin lid and the floor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from lidar_capture._boundary import Region, find_region, raster
from lidar_capture._detect import detect
from lidar_capture._errors import CaptureError, MeasurementRefused
from lidar_capture._figures import figures
from lidar_capture._fusion import fuse, remove_outliers
from lidar_capture._measurement import ModelResult, Outline, WoundMeasurement, WoundModel
from lidar_capture._model_boundary import model_boundary
from lidar_capture._options import MeasureOptions
from lidar_capture._points import scan_points
from lidar_capture._surface import MIN_AXIS_TANGENT
from lidar_capture._types import Scan

__all__ = ["measure"]

FloatArray = npt.NDArray[np.float64]


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
    axis = _body_axis(scan, body_axis)
    with timer.stage("points"):
        points = scan_points(scan, opts, flags)
    with timer.stage("detect"):
        detection = detect(points, opts, flags)
    with timer.stage("fuse"):
        cloud = fuse(scan, points, detection, opts, flags)
    with timer.stage("outliers"):
        cloud = remove_outliers(cloud, opts)
    with timer.stage("surface_boundary"):
        region = find_region(cloud, detection, axis, outline, scan, opts, flags)
    wound_raster = raster(region)
    model_output: ModelResult | None = None
    if model is not None and outline is None:
        with timer.stage("model"):
            region, model_output = model_boundary(region, wound_raster, model, opts, flags)
    elif model is None:
        flags.append("model_not_used")
    axis_used = _along_skin(axis, region)
    with timer.stage("measure"):
        found = figures(region, axis_used, opts, flags)
    _check_wound(region, opts, flags)
    outline_world = found.pop("outline_world")
    return WoundMeasurement(
        **found,
        point_count=len(cloud),
        wound_point_count=region.wound_points,
        frame_count=len(scan.frames),
        quality=tuple(dict.fromkeys(flags)),
        boundary_source=region.source,
        length_axis="body" if axis_used else "major",
        skin_fit_degree=region.skin.degree,
        noise_mm=region.skin.residual_std * 1000.0,
        timings_ms=timer.total(),
        outline_world=outline_world,
        wound_frame=region.frame,
        cloud=cloud,
        raster=replace(wound_raster, wound=region.mask),
        model_output=model_output,
    )


def _body_axis(scan: Scan, given: npt.ArrayLike | None) -> FloatArray | None:
    """The head-ward axis to measure length along: the caller's, else the scan's."""
    if given is None and scan.body_axis is None:
        return None
    axis = np.asarray(given if given is not None else scan.body_axis, dtype=np.float64)
    if axis.shape != (3,) or not np.all(np.isfinite(axis)) or np.linalg.norm(axis) == 0:
        raise CaptureError("the body axis must be a non-zero 3-vector")
    return axis


def _along_skin(axis: FloatArray | None, region: Region) -> bool:
    """Whether length runs along the body axis: it must lie along the skin, not across it
    (`local_frame` ignores such an axis too)."""
    if axis is None:
        return False
    normal = region.frame[:3, 2]
    tangent = axis - float(np.dot(axis, normal)) * normal
    return bool(np.linalg.norm(tangent) > MIN_AXIS_TANGENT * np.linalg.norm(axis))


def _check_wound(region: Region, opts: MeasureOptions, flags: list[str]) -> None:
    """The last gates: skin noise and points on the wound bed."""
    if region.skin.residual_std * 1000.0 > opts.max_noise_mm * opts.noise_flag_share:
        flags.append("noise_high")
    if region.wound_points < opts.min_wound_points:
        raise MeasurementRefused(
            "too_few_points", f"only {region.wound_points} points on the wound bed; move closer"
        )
    if region.wound_points < opts.sparse_wound_points:
        flags.append("sparse_wound")
