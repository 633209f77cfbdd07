"""What a measurement takes and gives: a drawn outline, the wound model's interface and
its result, the wound raster and the measurement itself."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from lidar_capture._errors import CaptureError, ScanFileError
from lidar_capture._types import PointCloud

__all__ = ["ModelResult", "Outline", "WoundMeasurement", "WoundModel", "WoundRaster"]

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class Outline:
    """A user-drawn wound outline that overrides the detected boundary.

    Either world points (N, 3) in metres, on or near the skin, or pixel coordinates
    (N, 2) in the colour image of frame `frame` (the pipeline casts them onto the
    fitted skin surface).
    """

    points: FloatArray
    frame: int | None = None

    def __post_init__(self) -> None:
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[0] < 3 or pts.shape[1] not in (2, 3):
            raise CaptureError(
                "an outline needs at least 3 points of 2 (pixels) or 3 (metres) values"
            )
        if not np.all(np.isfinite(pts)):
            raise CaptureError("an outline has non-finite coordinates")
        if pts.shape[1] == 2 and self.frame is None:
            raise CaptureError("a pixel outline needs the frame it was drawn on")
        object.__setattr__(self, "points", pts)

    @classmethod
    def read(cls, path: str | Path) -> Outline:
        """An outline from a JSON file, in either shape `from_json` reads.

        Raises:
            ScanFileError: the file cannot be read or is not JSON.
            CaptureError: the JSON is not an outline.
        """
        try:
            content = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ScanFileError(path, f"not a readable JSON outline: {exc}") from exc
        return cls.from_json(content)

    @classmethod
    def from_json(cls, obj: object) -> Outline:
        """``[[x, y, z], ...]`` in metres, or ``{"frame": i, "pixels": [[u, v], ...]}``.

        Pixels are in the colour image of that frame as the `Scan` holds it.
        """
        shape = 'an outline is [[x, y, z], ...] in metres or {"frame": i, "pixels": [[u, v], ...]}'
        try:
            if isinstance(obj, dict) and "pixels" in obj:
                frame = obj.get("frame", 0)
                if isinstance(frame, bool) or not isinstance(frame, int):
                    raise CaptureError(f"{shape}; the frame must be a whole number")
                return cls(np.asarray(obj["pixels"], dtype=np.float64), frame=frame)
            if isinstance(obj, dict) and "points" in obj:
                return cls(np.asarray(obj["points"], dtype=np.float64))
            if isinstance(obj, list):
                return cls(np.asarray(obj, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise CaptureError(f"{shape}; the coordinates must be numbers") from exc
        raise CaptureError(shape)


@dataclass(frozen=True)
class ModelResult:
    """What the wound model said about a scan (stored as the assessment's model output)."""

    model_id: str
    model_version: str
    tissue_composition: dict[str, float]
    """% of the wound's cells per tissue class."""
    confidence: float
    """The model's mean top-class probability over the wound, 0 to 1."""

    def to_json(self) -> dict[str, Any]:
        """As a JSON-able object."""
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "tissue_composition": dict(self.tissue_composition),
            "confidence": round(self.confidence, 4),
        }


class WoundModel(Protocol):
    """What `measure` needs of a wound model; `edge_sdk.ModelRunner` is one.

    ``manifest`` names the model (``model_id``, ``version``, ``classes``, class 0 the
    background); ``segment(image, valid)`` takes one canonical input (see
    `lidar_capture.model_input`) and returns an object with ``labels`` (H x W class
    ids) and ``confidence``.
    """

    @property
    def manifest(self) -> Any: ...

    def segment(
        self, image: npt.NDArray[np.float32], valid: npt.NDArray[np.bool_] | None = None
    ) -> Any: ...


@dataclass(frozen=True, eq=False)
class WoundRaster:
    """The wound and the skin around it, resampled on a square grid in the wound frame.

    Cell (i, j) is at x = ``centres[i]``, y = ``centres[j]`` of `frame` (metres; z is the
    skin normal at the wound centre). Every source ends up here, which is why the wound
    model reads its input from it.
    """

    frame: FloatArray
    """4x4 local-to-world of the wound frame."""
    centres: FloatArray
    """(n,) cell centres along x and along y, metres."""
    colour: FloatArray | None
    """(n, n, 3) RGB in [0, 1], or None for a scan without colour."""
    depth: FloatArray
    """(n, n) depth below the fitted skin, metres (negative above it)."""
    surface: FloatArray
    """(n, n) z of the scanned surface in the wound frame (the skin, or the wound floor)."""
    valid: BoolArray
    """(n, n) cells the scan covered."""
    wound: BoolArray
    """(n, n) cells inside the measured outline."""

    @property
    def cell(self) -> float:
        """Cell size, metres."""
        return float(self.centres[1] - self.centres[0])


@dataclass(frozen=True, eq=False)
class WoundMeasurement:
    """A wound's dimensions and how they were obtained."""

    area_cm2: float
    perimeter_cm: float
    length_cm: float
    width_cm: float
    max_depth_mm: float
    mean_depth_mm: float
    volume_cm3: float
    ruler_area_cm2: float
    point_count: int
    """Points of the fused, cleaned cloud around the wound."""
    wound_point_count: int
    frame_count: int
    quality: tuple[str, ...]
    boundary_source: str
    """``colour``, ``depth`` or ``outline`` (``model`` once a model gives the mask)."""
    length_axis: str
    """``body`` when the body axis was known, else ``major``."""
    skin_fit_degree: int
    noise_mm: float
    timings_ms: dict[str, float]
    outline_world: FloatArray
    """(N, 3) the wound outline on the fitted skin, world metres."""
    wound_frame: FloatArray
    """4x4 local-to-world: origin at the wound centre, z the skin normal."""
    cloud: PointCloud = field(repr=False)
    """The fused, cleaned point cloud around the wound (what is stored as the scan)."""
    raster: WoundRaster = field(repr=False)
    """The skin around the wound on the measurement grid (the model's input comes from it)."""
    model_output: ModelResult | None = None
    """What the wound model said, when one drew the boundary."""

    def to_json(self) -> dict[str, Any]:
        """The figures as one JSON-able object (no arrays but the outline)."""
        return {
            "area_cm2": round(self.area_cm2, 3),
            "perimeter_cm": round(self.perimeter_cm, 3),
            "length_cm": round(self.length_cm, 3),
            "width_cm": round(self.width_cm, 3),
            "max_depth_mm": round(self.max_depth_mm, 2),
            "mean_depth_mm": round(self.mean_depth_mm, 2),
            "volume_cm3": round(self.volume_cm3, 4),
            "ruler_area_cm2": round(self.ruler_area_cm2, 3),
            "point_count": self.point_count,
            "wound_point_count": self.wound_point_count,
            "frame_count": self.frame_count,
            "quality": list(self.quality),
            "boundary_source": self.boundary_source,
            "length_axis": self.length_axis,
            "skin_fit_degree": self.skin_fit_degree,
            "noise_mm": round(self.noise_mm, 3),
            "timings_ms": {k: round(v, 1) for k, v in self.timings_ms.items()},
            "model_output": None if self.model_output is None else self.model_output.to_json(),
        }
