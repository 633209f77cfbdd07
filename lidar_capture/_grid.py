"""The measurement grid on the skin and what is drawn on it: splatting points, filling
and tracing outlines, connected regions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lidar_capture import _ndimage as ndimage

__all__ = ["Grid", "components", "main_contour", "polygon_mask", "smooth_closed", "splat"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass
class Grid:
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


def components(cells: BoolArray) -> tuple[npt.NDArray[np.int32], int]:
    return ndimage.label(cells)


def splat(
    grid: Grid, xy: FloatArray, values: FloatArray, sigma_cells: float
) -> tuple[FloatArray, FloatArray]:
    """Gaussian normalised convolution of point values onto the grid: (field, weight)."""
    i, j, inside = grid.index(xy)
    i, j, values = i[inside], j[inside], values[inside]
    flat = i * grid.n + j
    weight = np.bincount(flat, minlength=grid.n * grid.n).astype(np.float64).reshape(grid.n, grid.n)
    weight = ndimage.gaussian_filter(weight, sigma_cells, mode="constant")
    fields = []
    for column in np.atleast_2d(values.T):
        counts = np.bincount(flat, weights=column, minlength=grid.n * grid.n)
        total = ndimage.gaussian_filter(
            counts.reshape(grid.n, grid.n), sigma_cells, mode="constant"
        )
        fields.append(np.divide(total, weight, out=np.zeros_like(total), where=weight > 1e-9))
    return np.stack(fields, axis=-1), weight


def polygon_mask(poly: FloatArray, grid: Grid) -> BoolArray:
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


def smooth_closed(poly: FloatArray, step: float, sigma: float) -> FloatArray:
    """Resample a closed polyline every `step` metres and smooth it along its length."""
    closed = np.vstack([poly, poly[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    total = s[-1]
    count = max(int(total / step), 8)
    t = np.linspace(0.0, total, count, endpoint=False)
    res = np.stack([np.interp(t, s, closed[:, k]) for k in range(poly.shape[1])], axis=1)
    return np.asarray(ndimage.gaussian_filter1d(res, sigma / (total / count), axis=0, mode="wrap"))


def main_contour(
    field: FloatArray, grid: Grid, level: float, inside: tuple[float, float]
) -> FloatArray | None:
    """The closed contour of `field` at `level` that encloses `inside`, else the longest."""
    c = grid.centres
    lines = [ln for ln in ndimage.contour_lines(c, c, field.T, level) if len(ln) >= 8]
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
