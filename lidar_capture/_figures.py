"""Stage 6, figures: area, perimeter, length, width, depth and volume of the outlined wound.

Definitions follow `lidar_capture._synthetic_wound` (the ground truth the benchmark uses):
area on the fitted skin surface (the lid), perimeter of the outline on that surface,
length along the body axis (the wound's major axis when unknown) and width across it,
both measured along the skin; depth along the skin normal at the wound centre (max
robust: the deepest point of the smoothed floor), mean depth, volume between the lid and
the floor, and the ruler estimate (length x width).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from lidar_capture import _ndimage as ndimage
from lidar_capture._boundary import Region
from lidar_capture._errors import MeasurementRefused
from lidar_capture._grid import smooth_closed
from lidar_capture._options import MeasureOptions
from lidar_capture._surface import HeightField, to_world

__all__ = ["figures"]

FloatArray = npt.NDArray[np.float64]

# Samples along a length or width line on the skin.
_LINE_SAMPLES = 400


def _line_length(
    skin: HeightField, start: FloatArray, direction: FloatArray, t0: float, t1: float
) -> float:
    t = np.linspace(t0, t1, _LINE_SAMPLES)
    x, y = start[0] + t * direction[0], start[1] + t * direction[1]
    z = skin(x, y)
    return float(np.sum(np.linalg.norm(np.diff(np.stack([x, y, z], axis=1), axis=0), axis=1)))


def figures(
    region: Region, axis_known: bool, opts: MeasureOptions, flags: list[str]
) -> dict[str, Any]:
    """The figures (`WoundMeasurement`'s names and units) and the outline in the world.

    Args:
        region: the skin and the wound's outline.
        axis_known: length runs along the frame's y axis (the body axis); else along
            the wound's major axis.
        opts: the thresholds of the ``wound_cut_off`` flag and the smoothing.
        flags: ``wound_cut_off`` is added when part of the wound was not seen.
    """
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
    sigma = opts.max_depth_smoothing_cells
    smooth_w = ndimage.gaussian_filter(region.coverage.astype(np.float64), sigma)
    smooth_d = np.divide(
        ndimage.gaussian_filter(depth, sigma),
        smooth_w,
        out=np.zeros_like(depth),
        where=smooth_w > 1e-6,
    )
    max_depth = max(float(np.max(smooth_d[mask])), 0.0)
    missing = float(np.count_nonzero(mask & ~region.coverage)) / max(int(np.count_nonzero(mask)), 1)
    edge = mask & ~ndimage.binary_erosion(mask)
    edge_missing, edge_total = np.count_nonzero(edge & ~region.coverage), np.count_nonzero(edge)
    if missing > opts.cut_off_share or edge_missing > opts.cut_off_edge_share * edge_total:
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
    smooth = smooth_closed(region.polygon, grid.cell, opts.perimeter_smoothing_m)
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
