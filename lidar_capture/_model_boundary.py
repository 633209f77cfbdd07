"""The wound model's boundary: its mask, in place of the colour/depth outline.

The geometric boundary still frames the model's canonical input (centre and scale,
`lidar_capture._model_input`); the model's outline is where its wound probability
crosses one half, and its labels give the tissue mix inside that outline.

At the rim, where the model and the geometry disagree, the rule is: a clear depression
is wound. When the geometry found the wound to be a depression (the surface below the
skin past the noise floor), the model's edge cannot lie inside the depression's edge
(the union of the two: where the model stops short, inside a pale margin or a dusky
bed, the depression's edge wins); beyond the depression, where the surface is on the
skin, the model's edge stands (it sees epithelium and flat wound the depth cannot). For
a flat wound (no depression) the model's edge stands everywhere.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from lidar_capture import _ndimage as ndimage
from lidar_capture._boundary import Region
from lidar_capture._grid import main_contour, polygon_mask
from lidar_capture._measurement import ModelResult, WoundModel, WoundRaster
from lidar_capture._model_input import (
    MODEL_CHANNELS,
    MODEL_INPUT_SIZE,
    MODEL_INPUT_VERSION,
    model_input,
    raster_mask,
)
from lidar_capture._options import MeasureOptions
from lidar_capture._surface import to_world

__all__ = ["model_boundary"]


def _incompatible(model: WoundModel) -> str | None:
    """Why the model cannot read the canonical input, or None when it can."""
    manifest = model.manifest
    size = MODEL_INPUT_SIZE
    if tuple(manifest.input.shape)[1:] != (len(MODEL_CHANNELS), size, size):
        return f"input shape {tuple(manifest.input.shape)}"
    if tuple(manifest.output.shape)[2:] != (size, size):
        return f"output shape {tuple(manifest.output.shape)}"
    channels = manifest.preprocessing.get("channels")
    if channels is not None and tuple(channels) != MODEL_CHANNELS:
        return f"channels {channels}"
    version = manifest.preprocessing.get("version")
    if version is not None and version != MODEL_INPUT_VERSION:
        return f"input version {version}"
    return None


def model_boundary(
    region: Region,
    raster: WoundRaster,
    model: WoundModel,
    opts: MeasureOptions,
    flags: list[str],
) -> tuple[Region, ModelResult | None]:
    """The wound model's outline and tissue mix, in place of the colour/depth boundary.

    The geometric boundary still frames the model's input (centre and scale). When the
    model sees no wound there, the geometric boundary stands and the result says so.
    """
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
    if np.count_nonzero(on_grid) * grid.cell**2 < opts.min_wound_area_m2:
        flags.append("model_found_no_wound")
        return region, None
    # The edge where the model's wound probability crosses one half, interpolated
    # between its pixels (sharper than its labels), within the chosen wound.
    probability = 1.0 - np.asarray(seg.probabilities)[0]
    gx, gy = np.meshgrid(grid.centres, grid.centres, indexing="ij")
    step = float(inp.centres_x[1] - inp.centres_x[0])
    coords = [(gx - inp.centres_x[0]) / step, (gy - inp.centres_y[0]) / step]
    field_ = ndimage.map_coordinates(probability, coords)
    reach = max(round(opts.model_edge_reach * step / grid.cell), 2)
    near = ndimage.binary_dilation(on_grid, iterations=reach)
    field_ = np.where(near, field_, 0.0)
    if region.depression is not None:  # the rim rule: a clear depression is wound
        field_ = np.maximum(field_, region.depression)
    com = ndimage.center_of_mass(on_grid)
    inside = (
        float(grid.centres[0] + com[0] * grid.cell),
        float(grid.centres[0] + com[1] * grid.cell),
    )
    polygon = main_contour(field_, grid, opts.edge_level, inside)
    if polygon is None:
        flags.append("model_found_no_wound")
        return region, None
    mask = polygon_mask(polygon, grid)
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
