"""Capture sources and the point-cloud pipeline that measures a wound.

Needs the ``[capture]`` extra (Open3D, SciPy, PyAV). A source yields a `Scan` — depth
frames with poses, or a fused point cloud — and `measure` turns it into a
`WoundMeasurement`; `record_assessment` stores it through an `EdgeClient`::

    from lidar_capture import SyntheticSource, measure

    scan = SyntheticSource(seed=3, frames=10).capture()
    result = measure(scan)
    print(result.area_cm2, result.volume_cm3, result.quality)

Sources: `SyntheticSource` (exact ground truth; the test double), `FileSource` /
`open_scan` (PLY, PCD, XYZ point clouds and Stray Scanner RGB-D folders),
`ARKitSource` (iOS through pyobjus) and `RealSenseSource` (Open3D's RealSense
support). Only the names in `__all__` are public.
"""

from lidar_capture._arkit import ARKitPlatform, ARKitSource
from lidar_capture._errors import (
    REFUSAL_REASONS,
    CaptureError,
    MeasurementRefused,
    ScanFileError,
    SensorUnavailableError,
)
from lidar_capture._files import FileSource, open_scan
from lidar_capture._measurement import (
    ModelResult,
    Outline,
    WoundMeasurement,
    WoundModel,
    WoundRaster,
)
from lidar_capture._model_input import (
    MODEL_CHANNELS,
    MODEL_INPUT_SIZE,
    ModelInput,
    model_input,
    raster_mask,
    synthetic_labels,
)
from lidar_capture._options import QUALITY_FLAGS, MeasureOptions
from lidar_capture._pipeline import measure
from lidar_capture._point_files import (
    point_cloud_from_ply_bytes,
    point_cloud_to_ply_bytes,
    read_point_cloud,
    write_point_cloud,
)
from lidar_capture._realsense import RealSenseSource
from lidar_capture._record import record_assessment
from lidar_capture._strayscanner import read_strayscanner, write_strayscanner
from lidar_capture._synthetic import SyntheticScan, SyntheticSource, generate
from lidar_capture._synthetic_spec import (
    OUTLINES,
    PROFILES,
    SURFACES,
    TISSUES,
    WoundSpec,
    random_spec,
)
from lidar_capture._synthetic_wound import GroundTruth
from lidar_capture._types import CaptureSource, Frame, Intrinsics, PointCloud, Scan

__all__ = [
    "MODEL_CHANNELS",
    "MODEL_INPUT_SIZE",
    "OUTLINES",
    "PROFILES",
    "QUALITY_FLAGS",
    "REFUSAL_REASONS",
    "SURFACES",
    "TISSUES",
    "ARKitPlatform",
    "ARKitSource",
    "CaptureError",
    "CaptureSource",
    "FileSource",
    "Frame",
    "GroundTruth",
    "Intrinsics",
    "MeasureOptions",
    "MeasurementRefused",
    "ModelInput",
    "ModelResult",
    "Outline",
    "PointCloud",
    "RealSenseSource",
    "Scan",
    "ScanFileError",
    "SensorUnavailableError",
    "SyntheticScan",
    "SyntheticSource",
    "WoundMeasurement",
    "WoundModel",
    "WoundRaster",
    "WoundSpec",
    "generate",
    "measure",
    "model_input",
    "open_scan",
    "point_cloud_from_ply_bytes",
    "point_cloud_to_ply_bytes",
    "random_spec",
    "raster_mask",
    "read_point_cloud",
    "read_strayscanner",
    "record_assessment",
    "synthetic_labels",
    "write_point_cloud",
    "write_strayscanner",
]
