"""The image operations the measurement pipeline uses, behind one module.

Every stage calls these instead of `scipy.ndimage` and `contourpy` directly, so the
pipeline's dependence on those packages is in one place. (Today they delegate to SciPy
and contourpy; the NumPy-only implementations land with issue 22.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "binary_closing",
    "binary_dilation",
    "binary_erosion",
    "binary_fill_holes",
    "center_of_mass",
    "contour_lines",
    "distance_transform_edt",
    "gaussian_filter",
    "gaussian_filter1d",
    "label",
    "map_coordinates",
    "sum_labels",
]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int32]


def label(mask: BoolArray) -> tuple[IntArray, int]:
    """4-connected components of a 2-D mask: (labels 1..count, 0 outside; count)."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    return labels, int(count)


def sum_labels(values: FloatArray, labels: IntArray, index: npt.ArrayLike) -> FloatArray:
    """The sum of `values` over each label in `index`."""
    from scipy import ndimage

    return np.asarray(ndimage.sum_labels(values, labels, index=index), dtype=np.float64)


def center_of_mass(
    values: npt.ArrayLike, labels: IntArray | None = None, index: npt.ArrayLike | None = None
) -> Any:
    """The centre of mass (row, column) of `values`, or of each label in `index`."""
    from scipy import ndimage

    return ndimage.center_of_mass(values, labels, index)


def binary_fill_holes(mask: BoolArray) -> BoolArray:
    """The mask with every region not connected to the border filled."""
    from scipy import ndimage

    return np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)


def binary_dilation(mask: BoolArray, iterations: int = 1) -> BoolArray:
    """Dilation by the 4-connected cross, `iterations` times."""
    from scipy import ndimage

    return np.asarray(ndimage.binary_dilation(mask, iterations=iterations), dtype=bool)


def binary_erosion(mask: BoolArray, iterations: int = 1) -> BoolArray:
    """Erosion by the 4-connected cross, `iterations` times (outside the array is 0)."""
    from scipy import ndimage

    return np.asarray(ndimage.binary_erosion(mask, iterations=iterations), dtype=bool)


def binary_closing(mask: BoolArray, iterations: int = 1) -> BoolArray:
    """Dilation then erosion by the 4-connected cross."""
    from scipy import ndimage

    return np.asarray(ndimage.binary_closing(mask, iterations=iterations), dtype=bool)


def distance_transform_edt(mask: BoolArray) -> FloatArray:
    """Each nonzero cell's Euclidean distance (cells) to the nearest zero cell."""
    from scipy import ndimage

    return np.asarray(ndimage.distance_transform_edt(mask), dtype=np.float64)


def gaussian_filter(field: npt.ArrayLike, sigma: float, mode: str = "reflect") -> FloatArray:
    """A separable Gaussian blur (truncated at 4 sigma)."""
    from scipy import ndimage

    return np.asarray(ndimage.gaussian_filter(field, sigma, mode=mode), dtype=np.float64)


def gaussian_filter1d(field: FloatArray, sigma: float, axis: int, mode: str) -> FloatArray:
    """A Gaussian blur along one axis (truncated at 4 sigma)."""
    from scipy import ndimage

    return np.asarray(ndimage.gaussian_filter1d(field, sigma, axis=axis, mode=mode))


def map_coordinates(image: FloatArray, coords: npt.ArrayLike, *, order: int = 1) -> FloatArray:
    """Samples of `image` at fractional (row, column) `coords`: nearest (order 0) or
    bilinear (order 1); 0 outside the image."""
    from scipy import ndimage

    return np.asarray(
        ndimage.map_coordinates(image, coords, order=order, mode="constant", cval=0.0),
        dtype=np.float64,
    )


def contour_lines(x: FloatArray, y: FloatArray, z: FloatArray, level: float) -> list[FloatArray]:
    """The iso-lines of `z` (indexed [y, x]) at `level` over the grid `x` by `y`."""
    import contourpy

    gen = contourpy.contour_generator(x, y, z, line_type=contourpy.LineType.Separate)
    return [np.asarray(line, dtype=np.float64) for line in gen.lines(level)]
