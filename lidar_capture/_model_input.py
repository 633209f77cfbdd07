"""The wound model's canonical input, and its labels for synthetic scans.

Every capture source ends in a `WoundRaster` (the skin around the wound on a grid in the
wound frame), so the model reads one input whatever the source: an orthographic view
straight down the skin normal, centred on the wound and scaled to it, with five
channels — red, green, blue (0 to 1), depth below the skin (in cm, clipped to -1..2)
and coverage (1 where the scan saw the skin). A live frame, a fused 10-frame capture
and a point-cloud file of the same wound give the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lidar_capture import _ndimage as ndimage
from lidar_capture._measurement import WoundRaster
from lidar_capture._surface import to_world
from lidar_capture._synthetic import SyntheticScan
from lidar_capture._synthetic_spec import TISSUES

__all__ = [
    "MODEL_CHANNELS",
    "MODEL_INPUT_SIZE",
    "MODEL_INPUT_VERSION",
    "MODEL_MIN_SPAN_M",
    "MODEL_SPAN_PER_RADIUS",
    "ModelInput",
    "model_input",
    "raster_mask",
    "synthetic_labels",
]

FloatArray = npt.NDArray[np.float64]

MODEL_INPUT_SIZE = 96
#: The version of this input's contract (view, size, channels and their scaling). A model
#: records the version it was trained on (its manifest's ``preprocessing["version"]`` and
#: its ONNX ``metadata_props``); a runner refuses a model of another version. Bump it with
#: any change to what `model_input` builds.
MODEL_INPUT_VERSION = "wound-input/1"
MODEL_CHANNELS = ("red", "green", "blue", "depth_cm", "valid")
#: How much skin around the wound the input shows: the square's side is this times the
#: wound's largest radius (so the wound fills about 60 % of the width), at least 2 cm.
MODEL_SPAN_PER_RADIUS = 3.2
MODEL_MIN_SPAN_M = 0.02


@dataclass(frozen=True, eq=False)
class ModelInput:
    """One canonical input: (C, S, S) float32 and where its cells lie on the skin."""

    image: npt.NDArray[np.float32]
    frame: FloatArray
    """4x4 wound frame (as the raster's)."""
    centres_x: FloatArray
    """(S,) cell centres along the frame's x, metres."""
    centres_y: FloatArray
    """(S,) cell centres along the frame's y, metres."""

    @property
    def size(self) -> int:
        """Pixels per side."""
        return int(self.image.shape[-1])


def _sample(
    field: FloatArray, raster: WoundRaster, xs: FloatArray, ys: FloatArray, order: int
) -> FloatArray:
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    i = (gx - raster.centres[0]) / raster.cell
    j = (gy - raster.centres[0]) / raster.cell
    out = ndimage.map_coordinates(field, [i.ravel(), j.ravel()], order=order)
    return np.asarray(out, dtype=np.float64).reshape(gx.shape)


def model_input(
    raster: WoundRaster, *, size: int = MODEL_INPUT_SIZE, span_m: float | None = None
) -> ModelInput:
    """The canonical input around the wound the raster holds.

    Args:
        raster: a measurement's `WoundMeasurement.raster`.
        size: pixels per side.
        span_m: side of the square on the skin; default from the wound's size.
    """
    gx, gy = np.meshgrid(raster.centres, raster.centres, indexing="ij")
    if np.any(raster.wound):
        cx, cy = float(gx[raster.wound].mean()), float(gy[raster.wound].mean())
        radius = float(np.max(np.hypot(gx[raster.wound] - cx, gy[raster.wound] - cy)))
    else:
        cx = cy = 0.0
        radius = float(raster.centres[-1]) / 2
    span = span_m if span_m is not None else max(MODEL_SPAN_PER_RADIUS * radius, MODEL_MIN_SPAN_M)
    step = span / size
    offsets = (np.arange(size, dtype=np.float64) - (size - 1) / 2) * step
    xs = np.asarray(cx + offsets, dtype=np.float64)
    ys = np.asarray(cy + offsets, dtype=np.float64)
    valid = _sample(raster.valid.astype(np.float64), raster, xs, ys, order=0) > 0.5
    channels = []
    colour = raster.colour if raster.colour is not None else np.zeros((*raster.depth.shape, 3))
    for c in range(3):
        channels.append(_sample(colour[..., c], raster, xs, ys, order=1))
    depth_cm = np.clip(_sample(raster.depth, raster, xs, ys, order=1) * 100.0, -1.0, 2.0)
    channels.append(depth_cm)
    image = np.stack(channels, axis=0) * valid[None]
    image = np.concatenate([image, valid[None].astype(np.float64)], axis=0)
    return ModelInput(np.ascontiguousarray(image, dtype=np.float32), raster.frame, xs, ys)


def raster_mask(
    mask: npt.NDArray[np.bool_], inp: ModelInput, raster: WoundRaster
) -> npt.NDArray[np.bool_]:
    """A mask over the model input, resampled onto the raster's grid (nearest cell)."""
    gx, gy = np.meshgrid(raster.centres, raster.centres, indexing="ij")
    step = float(inp.centres_x[1] - inp.centres_x[0])
    i = np.round((gx - inp.centres_x[0]) / step).astype(np.intp)
    j = np.round((gy - inp.centres_y[0]) / step).astype(np.intp)
    inside = (i >= 0) & (i < inp.size) & (j >= 0) & (j < inp.size)
    out = np.zeros(gx.shape, dtype=bool)
    out[inside] = mask[i[inside], j[inside]]
    return out


def synthetic_labels(
    synthetic: SyntheticScan, inp: ModelInput, raster: WoundRaster
) -> npt.NDArray[np.uint8]:
    """The true tissue label (`TISSUES` ids) of each input cell, from the generator.

    Each cell's point on the scanned surface is projected into every frame's label
    image; the label most frames agree on wins.
    """
    z = _sample(raster.surface, raster, inp.centres_x, inp.centres_y, order=1)
    gx, gy = np.meshgrid(inp.centres_x, inp.centres_y, indexing="ij")
    world = to_world(inp.frame, np.stack([gx.ravel(), gy.ravel(), z.ravel()], axis=1))
    votes = np.zeros((world.shape[0], len(TISSUES)), dtype=np.int32)
    for frame, labels in zip(synthetic.scan.frames, synthetic.labels, strict=True):
        h, w = labels.shape
        k = frame.intrinsics.scaled(w, h)
        cam = (world - frame.pose[:3, 3]) @ frame.pose[:3, :3]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.round(k.fx * cam[:, 0] / cam[:, 2] + k.cx)
            v = np.round(k.fy * cam[:, 1] / cam[:, 2] + k.cy)
        ok = (cam[:, 2] > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        rows = np.flatnonzero(ok)
        votes[rows, labels[v[ok].astype(np.intp), u[ok].astype(np.intp)]] += 1
    return np.asarray(votes.argmax(axis=1).reshape(gx.shape), dtype=np.uint8)
