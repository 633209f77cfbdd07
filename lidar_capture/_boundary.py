"""Stages 4 and 5, surface and boundary: the skin around the wound and the wound's outline.

In a frame whose z axis is the skin normal at the wound centre, the skin is fitted as a
polynomial height field (`lidar_capture._surface`) on a ring of skin around the wound
only, and the points are splatted onto a grid on it (0.5 mm by default), each cell's
colour read from the frames' colour images at their own resolution (point colours for
a point cloud). Depth and colour draw the edge together. A wound with a depression (the
surface below the skin past the noise floor judged from the ring) is the depression
and the colour inside it that differs from the skin's even a little (a pale margin);
its edge is half-way up the rim's outermost step in depth or in colour, whichever is
further out, so neither the depth's blur nor a pale margin pulls it inwards. A faint
pale margin past a rim too shallow to see in depth counts too, when its colour ends in
a step down to the skin's and its floor, taken as a whole, is below the skin
(`_faint_margin`; redness fading out from the rim does not; a band with only one of
the two is left out and flagged ``edge_undecided``). A flat wound (no
depression: an abrasion, an epithelialising wound) is where a cell's colour is more
than half-way from the skin's to the nearest wound tissue's
(`lidar_capture._colour`); colour off the skin's counts beside a depression only as
far as it joins it. Without colour the floor's depth draws the edge. A user-drawn
outline replaces this. The skin is refitted around the new outline and the wound
recentred, for a few rounds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lidar_capture import _ndimage as ndimage
from lidar_capture._colour import colour_split, project_colour
from lidar_capture._detect import Detection
from lidar_capture._errors import CaptureError, MeasurementRefused
from lidar_capture._grid import Grid, components, main_contour, polygon_mask, splat
from lidar_capture._measurement import Outline, WoundRaster
from lidar_capture._options import MeasureOptions
from lidar_capture._surface import HeightField, fit_height_field, local_frame, to_local, to_world
from lidar_capture._types import PointCloud, Scan

__all__ = ["Region", "find_region", "raster"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

# Robust sigma of normally distributed residuals from their median absolute deviation.
_MAD_TO_SIGMA = 1.4826
# Fixed-point steps that land a drawn pixel's ray on the fitted skin.
_RAY_STEPS = 20


@dataclass
class Region:
    """The skin around the wound on the measurement grid, and the wound's outline."""

    frame: FloatArray
    """4x4 local-to-world of the wound frame (z the skin normal at the wound centre)."""
    skin: HeightField
    grid: Grid
    mask: BoolArray
    polygon: FloatArray
    outline_world: FloatArray
    depth: FloatArray
    coverage: BoolArray
    source: str
    """What drew the outline: ``colour``, ``depth``, ``outline`` or ``model``."""
    wound_points: int
    colour: FloatArray | None
    point_cells: npt.NDArray[np.intp]
    """(2, M) grid cells of the cloud's points around the wound."""
    depression: FloatArray | None = None
    """When the wound is a depression, its share-of-wound field from depth and colour
    (the outline is its `MeasureOptions.edge_level` contour); a wound model's outline
    may not lie inside it (`lidar_capture._model_boundary`). None otherwise."""
    edge_undecided: bool = False
    """A faint band of colour off the skin's joins the depression's rim that only one of
    its floor and the fall of its colour tells from reddened skin: left out of the
    outline drawn from colour and depth (`_faint_margin`)."""


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
    for _ in range(_RAY_STEPS):  # fixed point on the skin: where the ray meets z = s(x, y)
        p = origin + t[:, None] * dirs
        t = t + (skin(p[:, 0], p[:, 1]) - p[:, 2]) / dirs[:, 2]
    p = origin + t[:, None] * dirs
    if not np.all(np.isfinite(p)) or np.any(t <= 0):
        raise CaptureError("the outline's pixels do not all land on the scanned skin")
    return np.asarray(p[:, :2])


def _check_outline(
    polygon: FloatArray,
    outline: Outline,
    skin: HeightField,
    frame_tf: FloatArray,
    opts: MeasureOptions,
) -> None:
    """Refuse an outline that is not around the scanned wound (wrong units or frame)."""
    reach = float(np.max(np.hypot(polygon[:, 0], polygon[:, 1])))
    if not np.isfinite(reach) or reach > opts.search_radius_m:
        raise CaptureError(
            f"the outline reaches {reach * 100:.0f} cm from the scanned wound; outline points "
            "are world metres (or colour-image pixels with a frame) around the wound"
        )
    if outline.points.shape[1] == 3:
        local = to_local(frame_tf, outline.points)
        off = np.abs(local[:, 2] - skin(local[:, 0], local[:, 1]))
        if float(np.max(off)) > opts.outline_max_off_skin_m:
            raise CaptureError(
                f"the outline lies up to {float(np.max(off)) * 100:.1f} cm off the scanned "
                "skin; outline points are world metres on the skin around the wound"
            )


def find_region(
    cloud: PointCloud,
    detection: Detection,
    axis: FloatArray | None,
    outline: Outline | None,
    scan: Scan,
    opts: MeasureOptions,
    flags: list[str],
) -> Region:
    """The skin fitted around the wound and the wound's outline on it.

    Each round fits the skin on the ring outside the current outline, draws the outline
    again (or casts the drawn one onto the skin) and recentres on it, until the centre
    settles (a drawn outline takes every round: the skin under it moves with the ring).
    """
    centre, normal, radius = detection.centre, detection.normal, detection.radius
    ring_width = max(opts.ring_width_m, opts.ring_width_per_radius * radius)
    region: Region | None = None
    for _ in range(opts.boundary_rounds):
        frame = local_frame(centre, normal, axis)
        loc = to_local(frame, cloud.points)
        half = radius + opts.grid_margin_m + ring_width
        grid = Grid(lo=-half, cell=opts.grid_m, n=int(np.ceil(2 * half / opts.grid_m)))
        keep = np.all(np.abs(loc[:, :2]) < half, axis=1) & (np.abs(loc[:, 2]) < opts.surface_band_m)
        loc_k = loc[keep]
        colors = None if cloud.colors is None else cloud.colors[keep]
        if loc_k.shape[0] < opts.min_points:
            raise MeasurementRefused(
                "too_few_points",
                f"only {loc_k.shape[0]} points around the wound (need {opts.min_points}); "
                "move closer and keep the wound in view",
            )
        # The ring: skin at least `ring_gap_m` outside the current wound region.
        i, j, inside = grid.index(loc_k[:, :2])
        gx_c, gy_c = np.meshgrid(grid.centres, grid.centres, indexing="ij")
        if region is None:
            outside_cells = np.hypot(gx_c, gy_c) > radius + opts.ring_gap_m
        else:
            previous = to_local(frame, region.outline_world)[:, :2]
            before = polygon_mask(previous, grid)
            outside_cells = ndimage.distance_transform_edt(~before) * grid.cell > opts.ring_gap_m
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
        sigma_cells = max(opts.splat_spacing_share * spacing / grid.cell, 1.0)
        values = depth_pts[:, None] if colors is None else np.column_stack([depth_pts, colors])
        fields, weight = splat(grid, loc_k[:, :2], values, sigma_cells)
        coverage = weight > opts.coverage_share * float(np.quantile(weight[weight > 0], 0.5))
        depth = fields[..., 0]
        colour_field: FloatArray | None = None if colors is None else fields[..., 1:]
        colour_sigma = sigma_cells
        if scan.frames and all(f.color is not None for f in scan.frames):
            # The colour images are sharper than the depth grid (1920x1440 against
            # 256x192 on a device): look each cell's surface point up in every frame.
            colour_field, footprint = project_colour(scan.frames, frame, grid, skin, depth)
            colour_sigma = max(footprint / grid.cell, 1.0)
        if outline is not None:
            polygon = _cast_outline(outline, scan, frame, skin)
            _check_outline(polygon, outline, skin, frame, opts)
            source, dip_field, undecided = "outline", None, False
        else:
            polygon, source, dip_field, undecided = _draw_outline(
                depth, coverage, outside_cells & coverage, skin, colour_field, sigma_cells,
                colour_sigma, grid, opts,
            )  # fmt: skip
        mask = polygon_mask(polygon, grid)
        wound_pts = int(np.count_nonzero(mask[ic, jc] & inside))
        lifted = np.column_stack([polygon, skin(polygon[:, 0], polygon[:, 1])])
        region = Region(
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
            dip_field,
            undecided,
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
        if outline is None and moved < opts.recentre_tolerance_m:
            break
    assert region is not None
    if region.source == "depth" and outline is None:
        flags.append("boundary_from_depth")
    if region.edge_undecided:
        flags.append("edge_undecided")
    if outline is not None:
        flags.append("boundary_from_outline")
    return region


def _touching(mask: BoolArray, seed: BoolArray) -> BoolArray:
    """The connected regions of `mask` that overlap `seed`."""
    labels, _ = ndimage.label(mask)
    ids = np.unique(labels[seed & (labels > 0)])
    return np.isin(labels, ids[ids > 0])


def _half_way(field: FloatArray, inner: BoolArray, sigma: float) -> FloatArray:
    """`field` as a share of its plateau just inside the rim: one half is half-way.

    The plateau is the Gaussian-weighted mean of `field` over the `inner` cells (the
    region eroded past the blur), so a blurred step from skin (0) to whatever lies just
    inside it (a pale margin, a cliff's floor) crosses one half at the step itself, the
    half-maximum rule, whatever the height of the step.
    """
    total = ndimage.gaussian_filter(np.where(inner, field, 0.0), sigma)
    weight = ndimage.gaussian_filter(inner.astype(np.float64), sigma)
    plateau = np.divide(total, weight, out=np.zeros_like(total), where=weight > 1e-3)
    share = np.divide(field, plateau, out=np.zeros_like(field), where=plateau > 0)
    return np.asarray(np.clip(share, 0.0, 1.0), dtype=np.float64)


# A faint margin's colour is off the skin's past this quantile of the ring's contrast;
# its floor's standard error counts this many grid cells per independent depth sample
# (the splat spreads a point over about a cell each way); the rim's own blur, predicted
# from the wound's colour, is this many colour sigmas wide; this many colour sigmas past
# the margin's step, the colour around the wound has fallen to within this share of the
# step's height of the skin's beyond the reach; the edge is drawn this many cells around
# the margin; and at least this many cells are needed for each figure read.
_FAINT_QUANTILE = 0.95
_CELLS_PER_DEPTH_SAMPLE = 4.0
_RIM_BLUR_SIGMAS = 1.0
_STEP_SIGMAS = 2.0
_TAIL_SHARE = 0.02
_MARGIN_EDGE_CELLS = 2
_MIN_MARGIN_CELLS = 20


@dataclass(frozen=True)
class _FaintBand:
    """Faint colour off the skin's joined to a depression's rim, at least
    `MeasureOptions.faint_margin_width_m` wide: a pale margin, with its share-of-wound
    field, or undecided (`share` None) when only one of its floor and the fall of its
    colour tells it from reddened skin."""

    band: BoolArray
    share: FloatArray | None


def _faint_margin(
    wound: BoolArray,
    depth: FloatArray,
    contrast: FloatArray,
    ring_cells: BoolArray,
    depth_noise: float,
    colour_sigma: float,
    opts: MeasureOptions,
) -> _FaintBand | None:
    """A pale margin just past a depression's drawn wound, and its share-of-wound field.

    A shallow wound's outer rim can be within the depth noise of the skin and its pale
    epithelial margin only faintly off the skin's colour: neither the depression nor
    the clear colour reaches it. The margin is the colour off the skin's (past the
    skin ring's 95th percentile, after the blur the wound's own colour predicts there)
    joined to the wound within `faint_margin_reach_m`. It counts only when:

    - it ends in a step: read shell by shell outwards, the colour around the wound falls
      to the skin's within two colour sigmas of its half-way point (redness fading out
      from the rim is still off the skin's colour there, and skin still off it at the
      reach is reddened skin running on);
    - it is at least `faint_margin_width_m` wide (the rim's blur is not);
    - it is fainter than clearly not skin;
    - it lies below the skin taken as a whole: its mean floor below that of the skin
      just beyond it by `faint_margin_floor_sigmas` standard errors (reddened skin
      around a wound does not).

    Its edge is half-way between the skin's colour and the margin's. A band wide enough
    that passes one of the step and floor tests but not the other is returned undecided
    (no share): a margin whose depression or colour step is too faint to see, or
    reddened skin. None when there is no such band, or when it is plainly skin (neither
    test passed, or still off the skin's colour at the reach) or plainly not faint.
    """
    cell = opts.grid_m
    reach = int(opts.faint_margin_reach_m / cell)
    if reach < 3 or np.count_nonzero(ring_cells) < _MIN_MARGIN_CELLS:
        return None
    covered = contrast > 0.0  # `colour_split` zeroes the cells without coverage
    skin_level = float(np.median(contrast[ring_cells]))
    faint_level = float(np.quantile(contrast[ring_cells], _FAINT_QUANTILE))
    dist = ndimage.distance_transform_edt(~wound)
    rim_blur = ndimage.gaussian_filter(
        np.where(wound, contrast, 0.0), _RIM_BLUR_SIGMAS * max(colour_sigma, 1.0)
    )
    faint = covered & (contrast - rim_blur > faint_level) & (dist <= reach)
    band = _touching(wound | faint, wound) & ~wound
    plateau = band & ndimage.binary_erosion(wound | band, iterations=1)
    if np.count_nonzero(plateau) < _MIN_MARGIN_CELLS:
        return None
    rings = [covered & (dist > k - 1) & (dist <= k) for k in range(1, reach + 1)]
    if not all(np.any(ring) for ring in rings):
        return None  # the scan does not reach all round the wound
    shells = [float(np.median(contrast[ring])) for ring in rings]
    level, far = float(np.median(contrast[plateau])), shells[-1]
    if far > faint_level or level <= far:
        return None  # still off the skin's colour at the reach: reddened skin runs on
    # The last shell (far) is below half-way, so there is a first one that is.
    step = next(k for k, c in enumerate(shells) if c < 0.5 * (level + far))
    past = step + max(round(_STEP_SIGMAS * colour_sigma), 1)
    # Colour with no step down to the skin's is a redness fading out, or a margin on
    # skin whose colour drifts just past it.
    stepped = (shells[min(past, reach - 1)] - far) / (level - far) <= _TAIL_SHARE
    band &= dist <= past + 1  # faint skin joined to the margin beyond its step is skin
    width = max(round(opts.faint_margin_width_m / cell), 1)
    wide = band & (dist >= width)
    if np.count_nonzero(wide) < _MIN_MARGIN_CELLS:
        return None
    band &= ndimage.binary_dilation(wide, iterations=width)
    grown = wound | band
    near_skin = ndimage.binary_dilation(grown, iterations=6) & ~ndimage.binary_dilation(
        grown, iterations=2
    )
    beyond = covered & near_skin
    plateau = band & ndimage.binary_erosion(grown, iterations=1)
    counts = (np.count_nonzero(band), np.count_nonzero(beyond), np.count_nonzero(plateau))
    if min(counts) < _MIN_MARGIN_CELLS:
        return None
    level = float(np.median(contrast[plateau]))
    clear = opts.clear_contrast_factor * opts.colour_threshold
    if not faint_level < level < clear:
        return None
    below = float(np.mean(depth[band]) - np.mean(depth[beyond]))
    error = depth_noise * np.sqrt(_CELLS_PER_DEPTH_SAMPLE * (1.0 / counts[0] + 1.0 / counts[1]))
    sunk = below >= opts.faint_margin_floor_sigmas * error
    if not (stepped and sunk):  # one test passed: undecided; neither: skin
        return _FaintBand(band, None) if stepped or sunk else None
    share = np.clip((contrast - skin_level) / (level - skin_level), 0.0, 1.0)
    edge = ndimage.binary_dilation(band, iterations=_MARGIN_EDGE_CELLS)
    return _FaintBand(band, np.where(edge, share, 0.0))


def _depression_field(
    chosen: BoolArray,
    depth: FloatArray,
    depression: BoolArray,
    contrast: FloatArray | None,
    alpha: FloatArray,
    depth_sigma: float,
    colour_sigma: float,
    ring_cells: BoolArray,
    depth_noise: float,
    opts: MeasureOptions,
) -> tuple[BoolArray, FloatArray, bool]:
    """The wound of a depression, its share-of-wound field (edge at `edge_level`) and
    whether a faint band at its rim was left undecided.

    The depression (the surface below the skin past the noise floor) joined to the
    chosen wound is wound, and so is colour inside it that differs from the skin's even
    a little (a pale margin). Its edge is the half-way point of the rim's outermost
    step, in depth (a cliff: half its height) or in colour (the bed: half its contrast,
    or half-way to its nearest tissue as for a flat wound), whichever lies further out:
    the blur of each is undone by reading the step's height just inside it, not at a
    fixed level. A faint margin past the drawn wound is added by `_faint_margin`.
    """
    dip = ndimage.binary_fill_holes(_touching(depression, chosen) | chosen)
    wound = dip.copy()
    undecided = False
    reach_d = max(round(opts.edge_plateau_sigmas * depth_sigma), 2)
    inner_dip = ndimage.binary_erosion(dip, iterations=reach_d)
    # Only inside the depression: beyond it a shallow floor's half-height is in the noise.
    share = np.where(dip, _half_way(depth, inner_dip, max(depth_sigma, 1.0)), 0.0)
    if contrast is not None:
        reach_c = max(round(opts.edge_plateau_sigmas * colour_sigma), 2)
        near = ndimage.binary_dilation(dip, iterations=reach_c)
        clear = contrast > opts.clear_contrast_factor * opts.colour_threshold
        wound = ndimage.binary_fill_holes(dip | (near & clear))
        inner = ndimage.binary_erosion(wound, iterations=reach_c)
        halves = _half_way(contrast, inner, max(colour_sigma, 1.0))
        share = np.maximum(share, np.where(near, halves, 0.0))
        share = np.maximum(share, np.where(near, alpha, 0.0))
        faint = _faint_margin(wound, depth, contrast, ring_cells, depth_noise, colour_sigma, opts)
        if faint is not None and faint.share is not None:
            wound = ndimage.binary_fill_holes(wound | faint.band)
            share = np.maximum(share, faint.share)
        undecided = faint is not None and faint.share is None
    inside = ndimage.binary_erosion(wound, iterations=reach_d)
    return wound, np.maximum(share, inside.astype(np.float64)), undecided


def _draw_outline(
    depth: FloatArray,
    coverage: BoolArray,
    ring_cells: BoolArray,
    skin: HeightField,
    colour_field: FloatArray | None,
    depth_sigma: float,
    colour_sigma: float,
    grid: Grid,
    opts: MeasureOptions,
) -> tuple[FloatArray, str, FloatArray | None, bool]:
    """The wound's outline on the grid from colour and depth, which of them drew it, a
    depression's share-of-wound field (None for a flat wound or without colour) and
    whether a faint band at a depression's rim was left undecided (`_faint_margin`).

    Cells clearly below the skin, and cells whose colour is clearly not skin and at
    least half-way to a tissue's, are the wound's core; the core's region nearest the
    grid's centre is the wound. A wound with a clearly deep part is a depression: its
    edge is where the surface leaves the skin or its colour leaves the skin's, and
    colour outside the depression (a red patch of intact skin beside it) is not wound
    (`_depression_field`). A wound with no depth at all (an abrasion, an epithelialising
    wound) is drawn by colour alone, where it is half-way to a tissue's (``colour``).
    Without usable colour the floor's depth draws the edge (``depth``).
    """
    depth_noise = (
        _MAD_TO_SIGMA * float(np.median(np.abs(depth[ring_cells])))
        if np.any(ring_cells)
        else skin.residual_std
    )
    depth_core = coverage & (
        depth > max(opts.depth_threshold_mm / 1000.0, opts.boundary_depth_sigmas * depth_noise)
    )
    depression = coverage & (depth > opts.depression_sigmas * depth_noise)
    core = depth_core.copy()
    alpha = np.zeros_like(depth)
    contrast: FloatArray | None = None
    source = "depth"
    if colour_field is not None:
        skin_cells = ring_cells & (np.abs(depth) < opts.skin_band_sigmas * depth_noise + 1e-4)
        split = colour_split(colour_field, skin_cells, coverage, grid, opts)
        if split is not None:
            alpha, contrast = split
            colour_core = (contrast > opts.colour_threshold) & (alpha >= opts.edge_level)
            if np.count_nonzero(colour_core) * grid.cell**2 > opts.min_wound_area_m2:
                source = "colour"
                core |= colour_core
            else:
                contrast = None
    labels, count = components(core)
    if count == 0:
        raise MeasurementRefused(
            "no_wound_found", "no wound found near the centre of the scan; aim at the wound"
        )
    sizes = ndimage.sum_labels(np.ones_like(depth), labels, index=np.arange(1, count + 1))
    centres_lab = ndimage.center_of_mass(np.ones_like(depth), labels, index=np.arange(1, count + 1))
    mid = grid.n / 2.0
    scores = [
        s
        / (1.0 + (np.hypot(c[0] - mid, c[1] - mid) * grid.cell / opts.boundary_aim_falloff_m) ** 2)
        for s, c in zip(sizes, centres_lab, strict=True)
    ]
    chosen = labels == (int(np.argmax(scores)) + 1)
    dipped = np.count_nonzero(chosen & depression) * grid.cell**2 > opts.min_wound_area_m2
    if source == "colour" and dipped:
        main, dip_field, undecided = _depression_field(
            chosen,
            depth,
            depression,
            contrast,
            alpha,
            depth_sigma,
            colour_sigma,
            ring_cells,
            depth_noise,
            opts,
        )
        wound_field: FloatArray = dip_field
    elif source == "colour":
        dip_field, undecided = None, False
        # A flat wound: inside the chosen region's outline everything is wound (islands
        # of skin colour included); around it the colour decides, half-way to a tissue.
        main = ndimage.binary_fill_holes(chosen)
        reach = max(round(opts.colour_edge_reach * colour_sigma), 2)
        near = ndimage.binary_dilation(main, iterations=reach)
        wound_field = np.where(main & ~chosen, 1.0, np.where(near, alpha, 0.0))
    else:
        dip_field, undecided = None, False
        # Without colour the floor's depth draws the edge: where it is clearly below
        # the skin, down to `depth_edge_m` (a bowl's sloping rim is lost below it).
        shallow = coverage & (
            depth > max(opts.depth_edge_m, opts.boundary_depth_sigmas * depth_noise)
        )
        main = ndimage.binary_fill_holes(_touching(shallow, chosen) | chosen)
        wound_field = ndimage.gaussian_filter(main.astype(np.float64), 1.0)
    com = ndimage.center_of_mass(main)
    cx, cy = (
        float(grid.centres[0] + com[0] * grid.cell),
        float(grid.centres[0] + com[1] * grid.cell),
    )
    contour = main_contour(wound_field, grid, opts.edge_level, (cx, cy))
    if contour is None:
        raise MeasurementRefused(
            "no_wound_found", "no closed wound boundary found; aim at the wound"
        )
    return contour, source, dip_field, undecided


def raster(region: Region) -> WoundRaster:
    """The region as the measurement reports it (and the wound model reads it)."""
    return WoundRaster(
        frame=region.frame,
        centres=region.grid.centres,
        colour=region.colour,
        depth=np.where(region.coverage, region.depth, 0.0),
        surface=_surface_z(region),
        valid=region.coverage,
        wound=region.mask,
    )


def _surface_z(region: Region) -> FloatArray:
    gx, gy = np.meshgrid(region.grid.centres, region.grid.centres, indexing="ij")
    depth = np.where(region.coverage, region.depth, 0.0)
    return np.asarray(region.skin(gx, gy) - depth, dtype=np.float64)
