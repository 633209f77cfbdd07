"""Stage 2, detect: where the wound is, near the point the device aims at.

A coarse robust skin fit around the aim point; wound candidates by colour (Mahalanobis
distance from the skin's own colour) and by depth below the skin; the candidate region
that is large and near the aim point is the wound. Its centre, skin normal and radius
frame the later stages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lidar_capture import _ndimage as ndimage
from lidar_capture._colour import mahalanobis, skin_colour_model
from lidar_capture._errors import MeasurementRefused
from lidar_capture._grid import components
from lidar_capture._options import MeasureOptions
from lidar_capture._points import ScanPoints, check_distance
from lidar_capture._surface import fit_height_field, local_frame, to_local, to_world
from lidar_capture._types import PointCloud

__all__ = ["Detection", "detect"]

FloatArray = npt.NDArray[np.float64]


#: A wound seen from the other side is a bump; this quantile of the depths says which.
_SIDE_QUANTILE = 0.995


@dataclass
class Detection:
    """Where the wound is, roughly: what frames the fusion and the boundary."""

    centre: FloatArray
    """On the coarse skin fit, world metres."""
    normal: FloatArray
    """The skin normal there, pointing out of the body."""
    radius: float
    noise: float
    """The coarse skin fit's residual (metres): the scan's depth noise."""


def detect(points: ScanPoints, opts: MeasureOptions, flags: list[str]) -> Detection:
    """The wound near the aim point, with the gates on the device's distance to it.

    The distance to the aim point is checked first: a scan from too far may show no
    wound at all, and "too far" is the refusal that tells the clinician what to do.
    """
    if points.camera is not None:
        check_distance(float(np.linalg.norm(points.aim - points.camera)), opts)
    detection = _find(points.cloud, points.aim, points.towards, opts)
    if points.camera is not None:
        distance = float(np.linalg.norm(detection.centre - points.camera))
        check_distance(distance, opts)
        low, high = opts.recommended_distance_m
        if not low <= distance <= high:
            flags.append("distance_outside_recommended")
    return detection


def _find(
    cloud: PointCloud,
    aim: FloatArray,
    towards: FloatArray | None,
    opts: MeasureOptions,
) -> Detection:
    """Find the wound near the aim point: a coarse skin fit and candidate regions."""
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
        low, high = opts.coarse_skin_degrees
        skin = fit_height_field(loc[:, 0], loc[:, 1], loc[:, 2], max_degree=high, min_degree=low)
    except ValueError as exc:
        raise MeasurementRefused("too_few_points", str(exc)) from exc
    depth = skin(loc[:, 0], loc[:, 1]) - loc[:, 2]
    if towards is None and np.quantile(depth, _SIDE_QUANTILE) < np.quantile(-depth, _SIDE_QUANTILE):
        # Seen from the other side, a wound is a bump: flip so it is a depression.
        normal, depth = -normal, -depth
        frame = local_frame(aim, normal, None)
        loc = to_local(frame, pts)
    sigma = skin.residual_std
    on_body = np.abs(depth) < opts.body_band_m
    floor = max(opts.depth_threshold_mm / 1000.0, opts.detect_depth_sigmas * sigma)
    candidate = on_body & (depth > floor)
    colors = None if cloud.colors is None else cloud.colors[near]
    if colors is not None:
        skin_like = on_body & (np.abs(depth) < opts.skin_band_sigmas * sigma)
        if np.count_nonzero(skin_like) >= opts.min_skin_samples:
            mean, inv = skin_colour_model(colors[skin_like])
            candidate |= on_body & (mahalanobis(colors, mean, inv) > opts.colour_threshold)
    if not np.any(candidate):
        raise MeasurementRefused(
            "no_wound_found", "no wound found near the centre of the scan; aim at the wound"
        )
    cell = opts.detect_cell_m
    xy = loc[candidate, :2]
    lo = xy.min(axis=0)
    idx = np.floor((xy - lo) / cell).astype(int)
    grid = np.zeros(tuple(idx.max(axis=0) + 1), dtype=bool)
    grid[idx[:, 0], idx[:, 1]] = True
    grid = ndimage.binary_closing(grid, iterations=opts.detect_closing_cells) | grid
    labels, count = components(grid)
    best, best_score = 0, 0.0
    aim_cell = -lo / cell
    for label in range(1, count + 1):
        cells = np.argwhere(labels == label)
        area_mm2 = cells.shape[0] * (cell * 1000.0) ** 2
        if area_mm2 < opts.min_candidate_area_mm2:
            continue
        dist = float(np.linalg.norm(cells.mean(axis=0) - aim_cell)) * cell
        score = area_mm2 / (1.0 + (dist / opts.detect_aim_falloff_m) ** 2)
        if score > best_score:
            best, best_score = label, score
    if best == 0:
        raise MeasurementRefused(
            "no_wound_found", "no wound found near the centre of the scan; aim at the wound"
        )
    cells = np.argwhere(labels == best)
    if colors is None:
        # Depth alone finds the deep middle of a bowl, not its rim: look wider.
        grow = max(round(opts.depth_only_grow * np.sqrt(cells.shape[0] / np.pi)), 2)
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
    return Detection(centre, n_world, radius + cell, sigma)
