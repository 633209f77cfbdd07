"""The image operations the measurement pipeline uses, behind one module.

Every stage calls these instead of `scipy.ndimage` and `contourpy` directly. Each has a
NumPy implementation, so the pipeline runs where neither package exists (iOS); when
SciPy or contourpy imports (and accelerators are not switched off, see
`lidar_capture._accelerators`) it is used instead. The NumPy versions follow SciPy's
conventions exactly (4-connectivity, the cross structuring element, 0 outside the
array for morphology, label numbering in raster order, ``truncate=4.0`` Gaussians), so
labels, morphology and distances are identical and blurs, samples and contours agree
to rounding; ``tests/capture/test_numpy_only.py`` checks both on random inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from lidar_capture._accelerators import accelerator

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

#: SciPy's boundary modes and NumPy's `np.pad` modes that extend an array the same way.
_PAD_MODES = {"reflect": "symmetric", "mirror": "reflect", "nearest": "edge", "wrap": "wrap"}

#: A Gaussian kernel reaches this many sigmas (SciPy's default ``truncate``).
_TRUNCATE = 4.0


def _scipy() -> Any:
    return accelerator("scipy.ndimage")


def label(mask: BoolArray) -> tuple[IntArray, int]:
    """4-connected components of a 2-D mask: (labels 1..count, 0 outside; count).

    Labels are numbered in raster order of each component's first cell, as SciPy does.
    """
    nd = _scipy()
    if nd is not None:
        labels, count = nd.label(mask)
        return np.asarray(labels, dtype=np.int32), int(count)
    mask = np.asarray(mask, dtype=bool)
    labels = np.zeros(mask.shape, dtype=np.int32)
    cells = np.flatnonzero(mask)
    if cells.size == 0:
        return labels, 0
    rank = np.full(mask.size, -1, dtype=np.int64)
    rank[cells] = np.arange(cells.size)
    grid = rank.reshape(mask.shape)
    pairs = [
        (grid[:, :-1][mask[:, :-1] & mask[:, 1:]], grid[:, 1:][mask[:, :-1] & mask[:, 1:]]),
        (grid[:-1, :][mask[:-1, :] & mask[1:, :]], grid[1:, :][mask[:-1, :] & mask[1:, :]]),
    ]
    u = np.concatenate([p[0] for p in pairs])
    v = np.concatenate([p[1] for p in pairs])
    roots = _union_roots(cells.size, u, v)
    # Each component's root is its first cell in raster order: numbering the roots in
    # order of appearance is SciPy's numbering.
    _, number = np.unique(roots, return_inverse=True)
    labels.ravel()[cells] = number.astype(np.int32) + 1
    return labels, int(number.max()) + 1


def _union_roots(count: int, u: npt.NDArray[np.int64], v: npt.NDArray[np.int64]) -> Any:
    """Each node's component root (its smallest index) for the graph with edges u-v.

    Vectorised hooking and pointer jumping: every round hooks the larger root of each
    edge whose ends disagree onto the smaller, then flattens the trees; roots only
    decrease, so the smallest node of a component ends as everyone's root.
    """
    parent = np.arange(count, dtype=np.int64)
    while True:
        pu, pv = parent[u], parent[v]
        split = pu != pv
        if not split.any():
            return parent
        np.minimum.at(parent, np.maximum(pu, pv)[split], np.minimum(pu, pv)[split])
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped


def sum_labels(values: FloatArray, labels: IntArray, index: npt.ArrayLike) -> FloatArray:
    """The sum of `values` over each label in `index`."""
    nd = _scipy()
    if nd is not None:
        return np.asarray(nd.sum_labels(values, labels, index=index), dtype=np.float64)
    return _label_sums(np.asarray(values, dtype=np.float64), labels, np.asarray(index))


def _label_sums(values: FloatArray, labels: IntArray, index: npt.NDArray[Any]) -> FloatArray:
    flat = np.asarray(labels).ravel()
    size = max(int(flat.max(initial=0)), int(index.max(initial=0))) + 1
    sums = np.bincount(flat, weights=np.broadcast_to(values, labels.shape).ravel(), minlength=size)
    return np.asarray(sums[index], dtype=np.float64)


def center_of_mass(
    values: npt.ArrayLike, labels: IntArray | None = None, index: npt.ArrayLike | None = None
) -> Any:
    """The centre of mass (row, column) of `values`, or of each label in `index`
    (a list of (row, column), as SciPy returns it)."""
    nd = _scipy()
    if nd is not None:
        return nd.center_of_mass(values, labels, index)
    field = np.asarray(values, dtype=np.float64)
    rows, cols = np.indices(field.shape, dtype=np.float64)
    if labels is None or index is None:
        weight = field if labels is None else field * (np.asarray(labels) > 0)
        total = float(weight.sum())
        return (float((weight * rows).sum()) / total, float((weight * cols).sum()) / total)
    ids = np.asarray(index)
    mass = _label_sums(field, labels, ids)
    r = _label_sums(field * rows, labels, ids) / mass
    c = _label_sums(field * cols, labels, ids) / mass
    if ids.ndim == 0:
        return (float(r), float(c))
    return [(float(a), float(b)) for a, b in zip(r, c, strict=True)]


def binary_fill_holes(mask: BoolArray) -> BoolArray:
    """The mask with every region not connected to the border filled."""
    nd = _scipy()
    if nd is not None:
        return np.asarray(nd.binary_fill_holes(mask), dtype=bool)
    mask = np.asarray(mask, dtype=bool)
    background, count = label(~mask)
    edge = np.zeros(count + 1, dtype=bool)
    for side in (background[0], background[-1], background[:, 0], background[:, -1]):
        edge[side] = True
    return np.asarray(mask | ~edge[background], dtype=bool)


def _cross_step(mask: BoolArray, grow: bool) -> BoolArray:
    """One dilation (`grow`) or erosion by the 4-connected cross, 0 outside the array."""
    padded = np.pad(mask, 1, constant_values=False)
    centre = padded[1:-1, 1:-1]
    sides = (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:])
    out = centre.copy()
    for side in sides:
        if grow:
            out |= side
        else:
            out &= side
    return out


def binary_dilation(mask: BoolArray, iterations: int = 1) -> BoolArray:
    """Dilation by the 4-connected cross, `iterations` times."""
    nd = _scipy()
    if nd is not None:
        return np.asarray(nd.binary_dilation(mask, iterations=iterations), dtype=bool)
    out = np.asarray(mask, dtype=bool)
    for _ in range(iterations):
        out = _cross_step(out, grow=True)
    return out


def binary_erosion(mask: BoolArray, iterations: int = 1) -> BoolArray:
    """Erosion by the 4-connected cross, `iterations` times (outside the array is 0)."""
    nd = _scipy()
    if nd is not None:
        return np.asarray(nd.binary_erosion(mask, iterations=iterations), dtype=bool)
    out = np.asarray(mask, dtype=bool)
    for _ in range(iterations):
        out = _cross_step(out, grow=False)
    return out


def binary_closing(mask: BoolArray, iterations: int = 1) -> BoolArray:
    """Dilation then erosion by the 4-connected cross (SciPy's convention: the erosion
    sees 0 outside the array, so cells on the border may open)."""
    nd = _scipy()
    if nd is not None:
        return np.asarray(nd.binary_closing(mask, iterations=iterations), dtype=bool)
    return binary_erosion(binary_dilation(mask, iterations), iterations)


def distance_transform_edt(mask: BoolArray) -> FloatArray:
    """Each nonzero cell's Euclidean distance (cells) to the nearest zero cell.

    Exact (Felzenszwalb and Huttenlocher's two passes): the distance along each column,
    then the lower envelope of parabolas along each row, all rows at once.
    """
    nd = _scipy()
    if nd is not None:
        return np.asarray(nd.distance_transform_edt(mask), dtype=np.float64)
    inside = np.asarray(mask, dtype=bool)
    h, w = inside.shape
    far = float(2 * (h + w) ** 2)  # beyond any real squared distance, exact in float64
    rows = np.arange(h, dtype=np.float64)[:, None]
    zero = ~inside
    before = np.maximum.accumulate(np.where(zero, rows, -np.inf), axis=0)
    after = np.minimum.accumulate(np.where(zero, rows, np.inf)[::-1], axis=0)[::-1]
    column = np.minimum(rows - before, after - rows)
    squared = np.where(np.isfinite(column), column**2, far)
    return np.asarray(np.sqrt(_parabola_envelope(squared)), dtype=np.float64)


def _parabola_envelope(f: FloatArray) -> FloatArray:
    """min over p of (q - p)^2 + f[r, p], for every row r and column q (all rows at once)."""
    n_rows, w = f.shape
    r = np.arange(n_rows)
    v = np.zeros((n_rows, w), dtype=np.intp)  # the envelope's parabolas (their columns)
    z = np.full((n_rows, w + 1), np.inf)  # where each one starts to be lowest
    z[:, 0] = -np.inf
    k = np.zeros(n_rows, dtype=np.intp)
    for q in range(1, w):
        fq = f[:, q] + q * q
        todo = r
        while todo.size:
            p = v[todo, k[todo]]
            s = (fq[todo] - (f[todo, p] + p * p)) / (2.0 * (q - p))
            pop = s <= z[todo, k[todo]]
            k[todo[pop]] -= 1
            done = todo[~pop]
            z[done, k[done] + 1] = s[~pop]
            todo = todo[pop]
        k += 1
        v[r, k] = q
        z[r, k + 1] = np.inf
    out = np.empty_like(f)
    k[:] = 0
    for q in range(w):
        while True:
            step = z[r, k + 1] < q
            if not step.any():
                break
            k += step
        p = v[r, k]
        out[:, q] = (q - p) ** 2 + f[r, p]
    return out


def _gaussian_kernel(sigma: float) -> FloatArray:
    radius = int(_TRUNCATE * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (float(sigma) ** 2) * x**2)
    return np.asarray(phi / phi.sum(), dtype=np.float64)


def _blur_axis(field: FloatArray, sigma: float, axis: int, mode: str) -> FloatArray:
    """The NumPy Gaussian along one axis: the array extended by `mode`, then the kernel's
    taps summed over shifted views."""
    weights = _gaussian_kernel(sigma)
    radius = len(weights) // 2
    moved = np.moveaxis(field, axis, 0)
    pad = [(radius, radius)] + [(0, 0)] * (moved.ndim - 1)
    if mode == "constant":
        padded = np.pad(moved, pad, mode="constant")
    else:
        padded = np.pad(moved, pad, mode=_PAD_MODES[mode])  # type: ignore[call-overload]
    n = moved.shape[0]
    out = np.zeros(moved.shape, dtype=np.float64)
    for tap, weight in enumerate(weights):
        out += weight * padded[tap : tap + n]
    return np.moveaxis(out, 0, axis)


def gaussian_filter(field: npt.ArrayLike, sigma: float, mode: str = "reflect") -> FloatArray:
    """A separable Gaussian blur (truncated at 4 sigma)."""
    nd = _scipy()
    if nd is not None:
        return np.asarray(nd.gaussian_filter(field, sigma, mode=mode), dtype=np.float64)
    out = np.asarray(field, dtype=np.float64)
    for axis in range(out.ndim):
        out = _blur_axis(out, sigma, axis, mode)
    return out


def gaussian_filter1d(field: FloatArray, sigma: float, axis: int, mode: str) -> FloatArray:
    """A Gaussian blur along one axis (truncated at 4 sigma)."""
    nd = _scipy()
    if nd is not None:
        return np.asarray(nd.gaussian_filter1d(field, sigma, axis=axis, mode=mode))
    return _blur_axis(np.asarray(field, dtype=np.float64), sigma, axis, mode)


def map_coordinates(image: FloatArray, coords: npt.ArrayLike, *, order: int = 1) -> FloatArray:
    """Samples of `image` at fractional (row, column) `coords`: nearest (order 0) or
    bilinear (order 1); 0 outside the image."""
    nd = _scipy()
    if nd is not None:
        return np.asarray(
            nd.map_coordinates(image, coords, order=order, mode="constant", cval=0.0),
            dtype=np.float64,
        )
    img = np.asarray(image, dtype=np.float64)
    rc = np.asarray(coords, dtype=np.float64)
    row, col = rc[0], rc[1]
    h, w = img.shape
    # SciPy's "constant" mode: no interpolation beyond the first and last samples.
    inside = (row >= 0) & (row <= h - 1) & (col >= 0) & (col <= w - 1)
    r = np.where(inside, row, 0.0)
    c = np.where(inside, col, 0.0)
    if order == 0:
        values = img[np.floor(r + 0.5).astype(np.intp), np.floor(c + 0.5).astype(np.intp)]
    elif order == 1:
        r0 = np.clip(np.floor(r).astype(np.intp), 0, max(h - 2, 0))
        c0 = np.clip(np.floor(c).astype(np.intp), 0, max(w - 2, 0))
        r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
        tr, tc = r - r0, c - c0
        top = img[r0, c0] * (1 - tc) + img[r0, c1] * tc
        bottom = img[r1, c0] * (1 - tc) + img[r1, c1] * tc
        values = top * (1 - tr) + bottom * tr
    else:
        raise ValueError(f"map_coordinates supports order 0 and 1, not {order}")
    return np.asarray(np.where(inside, values, 0.0), dtype=np.float64)


def contour_lines(x: FloatArray, y: FloatArray, z: FloatArray, level: float) -> list[FloatArray]:
    """The iso-lines of `z` (indexed [y, x]) at `level` over the grid `x` by `y`.

    Each line is an (n, 2) array of (x, y); a closed line repeats its first point at the
    end (contourpy's ``LineType.Separate``).
    """
    contourpy = accelerator("contourpy")
    if contourpy is not None:
        gen = contourpy.contour_generator(x, y, z, line_type=contourpy.LineType.Separate)
        return [np.asarray(line, dtype=np.float64) for line in gen.lines(level)]
    points, first, second = _marching_squares(
        np.asarray(x, dtype=np.float64),
        np.asarray(y, dtype=np.float64),
        np.asarray(z, dtype=np.float64),
        float(level),
    )
    return [points[chain] for chain in _chains(first, second)]


# Marching squares: a cell's corners a (j, i), b (j, i+1), c (j+1, i+1), d (j+1, i) and
# its edges S (a-b), E (b-c), N (d-c), W (a-d), numbered 0-3. Each case with two crossed
# edges joins them; the two saddles join pairs chosen by the cell's mean value.
_S, _E, _N, _W = 0, 1, 2, 3
#: Saddles: (corner code, mean above the level) -> the two segments.
_SADDLES = {
    (5, True): ((_S, _E), (_N, _W)),  # a, c above and joined: b and d cut off
    (5, False): ((_S, _W), (_E, _N)),  # a, c above, apart: a and c cut off
    (10, True): ((_S, _W), (_N, _E)),  # b, d above and joined: a and c cut off
    (10, False): ((_S, _E), (_N, _W)),  # b, d above, apart: b and d cut off
}


def _marching_squares(
    x: FloatArray, y: FloatArray, z: FloatArray, level: float
) -> tuple[FloatArray, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The crossing points of `z` with `level` on every grid edge (linearly interpolated)
    and each point's one or two neighbours along the iso-line (-1 for none)."""
    ny, nx = z.shape
    above = z > level
    # Crossings on horizontal edges (j, i)-(j, i+1), then vertical edges (j, i)-(j+1, i).
    with np.errstate(divide="ignore", invalid="ignore"):
        th = (level - z[:, :-1]) / (z[:, 1:] - z[:, :-1])
        tv = (level - z[:-1, :]) / (z[1:, :] - z[:-1, :])
    hx = x[None, :-1] + th * np.diff(x)[None, :]
    hy = np.broadcast_to(y[:, None], th.shape)
    vx = np.broadcast_to(x[None, :], tv.shape)
    vy = y[:-1, None] + tv * np.diff(y)[:, None]
    points = np.concatenate(
        [np.stack([hx, hy], axis=-1).reshape(-1, 2), np.stack([vx, vy], axis=-1).reshape(-1, 2)]
    )
    n_h = ny * (nx - 1)
    hid = np.arange(n_h).reshape(ny, nx - 1)
    vid = n_h + np.arange((ny - 1) * nx).reshape(ny - 1, nx)
    edges = np.stack([hid[:-1, :], vid[:, 1:], hid[1:, :], vid[:, :-1]], axis=-1).reshape(-1, 4)
    a, b = above[:-1, :-1], above[:-1, 1:]
    c, d = above[1:, 1:], above[1:, :-1]
    code = (a * 1 + b * 2 + c * 4 + d * 8).ravel()
    crossed = np.stack([a != b, b != c, d != c, a != d], axis=-1).reshape(-1, 4)
    mean_above = ((z[:-1, :-1] + z[:-1, 1:] + z[1:, 1:] + z[1:, :-1]) / 4.0 > level).ravel()
    single = crossed.sum(axis=1) == 2
    cells = np.flatnonzero(single)
    which = np.nonzero(crossed[cells])[1].reshape(-1, 2)
    starts = [edges[cells, which[:, 0]]]
    ends = [edges[cells, which[:, 1]]]
    for (saddle, joined), pairs in _SADDLES.items():
        cells = np.flatnonzero((code == saddle) & (mean_above == joined))
        for one, other in pairs:
            starts.append(edges[cells, one])
            ends.append(edges[cells, other])
    p, q = np.concatenate(starts), np.concatenate(ends)
    nodes = np.concatenate([p, q])
    partners = np.concatenate([q, p])
    order = np.argsort(nodes, kind="stable")
    nodes, partners = nodes[order], partners[order]
    first = np.full(len(points), -1, dtype=np.intp)
    second = np.full(len(points), -1, dtype=np.intp)
    lead = np.ones(len(nodes), dtype=bool)
    lead[1:] = nodes[1:] != nodes[:-1]
    first[nodes[lead]] = partners[lead]
    second[nodes[~lead]] = partners[~lead]
    return points, first, second


def _chains(first: npt.NDArray[np.intp], second: npt.NDArray[np.intp]) -> list[list[int]]:
    """The point indices of each polyline: open ones from an end (a point with one
    neighbour), then closed ones, which repeat their first point at the end."""
    nb1, nb2 = first.tolist(), second.tolist()
    seen = [False] * len(nb1)
    chains: list[list[int]] = []
    ends = np.flatnonzero((first >= 0) & (second < 0)).tolist()
    loops = np.flatnonzero(second >= 0).tolist()
    for start, closed in [(s, False) for s in ends] + [(s, True) for s in loops]:
        if seen[start]:
            continue
        chain, prev, node = [start], -1, start
        seen[start] = True
        while True:
            step = nb1[node] if nb1[node] != prev else nb2[node]
            if step < 0 or step == start:
                break
            if seen[step]:
                break
            chain.append(step)
            seen[step] = True
            prev, node = node, step
        if closed:
            chain.append(start)
        chains.append(chain)
    return chains
