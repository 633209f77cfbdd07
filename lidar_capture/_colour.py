"""Colour: the skin's colour model, each grid cell's colour, and the share of wound
tissue in it.

The skin colour is a robust mean and spread (its Mahalanobis metric); the wound's
tissues are clusters of the clearly-not-skin colours, and a cell blurred across the
edge is read as a mix of skin and its nearest tissue. The constants below belong to
these estimators (how much is trimmed, how the trim's shrinkage is undone), not to the
scan: the thresholds a caller may tune are in `MeasureOptions`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from lidar_capture import _ndimage as ndimage
from lidar_capture._grid import Grid
from lidar_capture._options import MeasureOptions
from lidar_capture._surface import HeightField, to_world
from lidar_capture._types import Frame

__all__ = ["colour_split", "mahalanobis", "project_colour", "skin_colour_model"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Fewest inner tissue cells to cluster (else every clearly-not-skin cell), fewest
# samples at all, and fewest unexplained cells worth a tissue of their own.
_MIN_INNER_SAMPLES = 20
_MIN_TISSUE_SAMPLES = 5
_MIN_UNEXPLAINED = 10


def skin_colour_model(colors: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Robust mean and inverse covariance of skin colours (trimmed twice)."""
    keep = colors
    for _ in range(3):
        cov = np.cov(keep.T) + np.eye(3) * (3.0 / 255.0) ** 2
        inv = np.asarray(np.linalg.inv(cov), dtype=np.float64)
        mean = np.asarray(keep.mean(axis=0), dtype=np.float64)
        d = mahalanobis(colors, mean, inv)
        keep = colors[d <= np.quantile(d, 0.8)]
    cov = np.cov(keep.T) * 1.6 + np.eye(3) * (3.0 / 255.0) ** 2  # undo the trim's shrinkage
    mean = np.asarray(keep.mean(axis=0), dtype=np.float64)
    return mean, np.asarray(np.linalg.inv(cov), dtype=np.float64)


def mahalanobis(colors: FloatArray, mean: FloatArray, inv: FloatArray) -> FloatArray:
    d = colors - mean
    return np.asarray(np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, inv, d), 0.0)), np.float64)


def project_colour(
    frames: tuple[Frame, ...],
    frame_tf: FloatArray,
    grid: Grid,
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


def colour_split(
    colour: FloatArray,
    skin_cells: BoolArray,
    coverage: BoolArray,
    grid: Grid,
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
    if np.count_nonzero(skin_cells) < opts.min_skin_samples:
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
    contrast = mahalanobis(offset.reshape(-1, 3), np.zeros(3), inv).reshape(offset.shape[:2])
    contrast[~coverage] = 0.0
    clear = coverage & (contrast > opts.clear_contrast_factor * opts.colour_threshold)
    inner = ndimage.binary_erosion(clear, iterations=opts.tissue_inset_cells)
    samples = offset[inner] if np.count_nonzero(inner) >= _MIN_INNER_SAMPLES else offset[clear]
    if samples.shape[0] < _MIN_TISSUE_SAMPLES:
        return None
    tissues = _kmeans(samples, opts.tissue_clusters)
    for _ in range(2):
        best_share, best_off = _shares(offset, inv, tissues, opts.colour_threshold)
        # Clearly-not-skin cells no skin-to-tissue segment explains are a tissue the
        # clusters missed (a thin band of epithelium along the edge, say): add it.
        unexplained = (
            coverage
            & (contrast > opts.clear_contrast_factor * opts.colour_threshold)
            & (np.sqrt(best_off) > opts.colour_threshold)
        )
        if np.count_nonzero(unexplained) < _MIN_UNEXPLAINED:
            break
        tissues = np.vstack([tissues, _kmeans(offset[unexplained], 2)])
    best_share, _ = _shares(offset, inv, tissues, opts.colour_threshold)
    best_share[~coverage] = 0.0
    return np.asarray(best_share, dtype=np.float64), np.asarray(contrast, dtype=np.float64)
