"""The values every capture source produces and the pipeline consumes.

Conventions (shared by every source, the synthetic generator and the pipeline):

- Units are metres for geometry, seconds for time.
- Camera axes follow OpenCV: x right, y down, z forward (the optical axis). ARKit and
  Stray Scanner use x right, y up, z backward; their readers convert with
  `ARKIT_TO_OPENCV`.
- `Frame.pose` is the 4x4 camera-to-world transform: a point ``p_cam`` in camera axes is
  ``pose[:3, :3] @ p_cam + pose[:3, 3]`` in world coordinates.
- `Frame.depth` is the distance along the optical axis (z), not along the ray; 0 or NaN
  means no reading. Its intrinsics describe the depth map's own pixel grid.
- `Frame.color` covers the same field of view as the depth map at any resolution (ARKit
  delivers 1920x1440 colour beside 256x192 depth); pixel (u, v) of the depth map maps to
  ``(u + 0.5) * cw / w - 0.5`` in colour pixels.
- Confidence follows ARKit's `ARConfidenceLevel`: 0 low, 1 medium, 2 high.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = [
    "ARKIT_TO_OPENCV",
    "CaptureSource",
    "Frame",
    "Intrinsics",
    "PointCloud",
    "Scan",
]

FloatArray = npt.NDArray[np.float64]

#: Flips camera axes between ARKit (y up, z backward) and OpenCV (y down, z forward);
#: its own inverse. ``pose_opencv = pose_arkit @ ARKIT_TO_OPENCV``.
ARKIT_TO_OPENCV: FloatArray = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of one image grid, in pixels (pixel centres at integers)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_matrix(cls, k: npt.ArrayLike, width: int, height: int) -> Intrinsics:
        """From a 3x3 camera matrix K of a `width` x `height` image."""
        m = np.asarray(k, dtype=np.float64)
        return cls(
            fx=float(m[0, 0]),
            fy=float(m[1, 1]),
            cx=float(m[0, 2]),
            cy=float(m[1, 2]),
            width=width,
            height=height,
        )

    def matrix(self) -> FloatArray:
        """The 3x3 camera matrix K."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width: int, height: int) -> Intrinsics:
        """The same camera seen through a grid of another size (same field of view)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=width,
            height=height,
        )


@dataclass(frozen=True, eq=False)
class Frame:
    """One depth frame with what came with it."""

    depth: npt.NDArray[np.float32]
    """(H, W) metres along the optical axis; 0 or NaN where the sensor has no reading."""
    intrinsics: Intrinsics
    """Of the depth map's grid (W x H)."""
    pose: FloatArray
    """(4, 4) camera-to-world, OpenCV camera axes."""
    confidence: npt.NDArray[np.uint8] | None = None
    """(H, W) 0 low, 1 medium, 2 high; None when the sensor gives none (treated as high)."""
    color: npt.NDArray[np.uint8] | None = None
    """(h, w, 3) RGB covering the depth map's field of view, any resolution."""
    timestamp: float = 0.0
    """Seconds, monotonic within one scan."""


@dataclass(frozen=True, eq=False)
class PointCloud:
    """Points in world coordinates (metres), with optional colours in [0, 1]."""

    points: FloatArray
    """(N, 3) float64."""
    colors: FloatArray | None = None
    """(N, 3) float64 RGB in [0, 1], or None."""

    def __len__(self) -> int:
        return int(self.points.shape[0])


@dataclass(frozen=True, eq=False)
class Scan:
    """What a capture source produced: depth frames, or an already fused point cloud."""

    source: str
    """Short name of the source kind: ``synthetic``, ``pointcloud``, ``strayscanner``,
    ``arkit``, ``realsense``."""
    origin: str
    """Where it came from: a file path, a device name or ``seed=N``."""
    frames: tuple[Frame, ...] = ()
    cloud: PointCloud | None = None
    body_axis: FloatArray | None = None
    """Unit 3-vector in world coordinates pointing head-ward, when known."""
    metadata: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if bool(self.frames) == (self.cloud is not None):
            raise ValueError("a Scan holds either frames or a point cloud, exactly one")


@runtime_checkable
class CaptureSource(Protocol):
    """A source of scans: synthetic, files, ARKit, a depth camera.

    ``capture(max_frames)`` returns one scan. File sources return what the file holds
    (at most `max_frames` frames when given); live sources record `max_frames` frames
    (their own default when None) while the device is held still over the wound.
    """

    name: str

    def capture(self, max_frames: int | None = None) -> Scan:
        """One scan: at most `max_frames` frames (the source's default when None)."""
        ...
