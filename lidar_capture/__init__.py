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

Importing the package is cheap and needs no extra: the errors, `MeasureOptions`, the
flag and choice lists and `WoundSpec` are plain Python and load with it; every other
name loads its module (and NumPy, SciPy, Open3D as it needs them) on first use.
"""

import importlib
import typing

from lidar_capture._errors import (
    REFUSAL_REASONS,
    CaptureError,
    MeasurementRefused,
    ScanExistsError,
    ScanFileError,
    SensorUnavailableError,
)
from lidar_capture._options import FUSION_METHODS, QUALITY_FLAGS, MeasureOptions
from lidar_capture._synthetic_spec import (
    OUTLINES,
    PROFILES,
    SURFACES,
    SYNTHETIC_SCAN_FORMATS,
    TISSUES,
    WoundSpec,
    random_spec,
)

if typing.TYPE_CHECKING:
    from lidar_capture._arkit import ARKitPlatform, ARKitSource
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
        MODEL_INPUT_VERSION,
        MODEL_MIN_SPAN_M,
        MODEL_SPAN_PER_RADIUS,
        ModelInput,
        model_input,
        raster_mask,
        synthetic_labels,
    )
    from lidar_capture._pipeline import measure
    from lidar_capture._point_files import (
        WRITABLE_POINT_CLOUD_SUFFIXES,
        point_cloud_from_ply_bytes,
        point_cloud_to_ply_bytes,
        read_point_cloud,
        write_point_cloud,
    )
    from lidar_capture._realsense import RealSenseSource
    from lidar_capture._record import record_assessment
    from lidar_capture._strayscanner import read_strayscanner, write_strayscanner
    from lidar_capture._synthetic import SyntheticScan, SyntheticSource, generate
    from lidar_capture._synthetic_files import WrittenScan, write_synthetic_scan
    from lidar_capture._synthetic_wound import GroundTruth
    from lidar_capture._types import CaptureSource, Frame, Intrinsics, PointCloud, Scan

# Where each name that needs NumPy (or more) lives; loaded by `__getattr__` on first use.
_LAZY = {
    "ARKitPlatform": "_arkit",
    "ARKitSource": "_arkit",
    "FileSource": "_files",
    "open_scan": "_files",
    "ModelResult": "_measurement",
    "Outline": "_measurement",
    "WoundMeasurement": "_measurement",
    "WoundModel": "_measurement",
    "WoundRaster": "_measurement",
    "MODEL_CHANNELS": "_model_input",
    "MODEL_INPUT_SIZE": "_model_input",
    "MODEL_INPUT_VERSION": "_model_input",
    "MODEL_MIN_SPAN_M": "_model_input",
    "MODEL_SPAN_PER_RADIUS": "_model_input",
    "ModelInput": "_model_input",
    "model_input": "_model_input",
    "raster_mask": "_model_input",
    "synthetic_labels": "_model_input",
    "measure": "_pipeline",
    "WRITABLE_POINT_CLOUD_SUFFIXES": "_point_files",
    "point_cloud_from_ply_bytes": "_point_files",
    "point_cloud_to_ply_bytes": "_point_files",
    "read_point_cloud": "_point_files",
    "write_point_cloud": "_point_files",
    "RealSenseSource": "_realsense",
    "record_assessment": "_record",
    "read_strayscanner": "_strayscanner",
    "write_strayscanner": "_strayscanner",
    "SyntheticScan": "_synthetic",
    "SyntheticSource": "_synthetic",
    "generate": "_synthetic",
    "WrittenScan": "_synthetic_files",
    "write_synthetic_scan": "_synthetic_files",
    "GroundTruth": "_synthetic_wound",
    "CaptureSource": "_types",
    "Frame": "_types",
    "Intrinsics": "_types",
    "PointCloud": "_types",
    "Scan": "_types",
}


def __getattr__(name: str) -> typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lidar_capture' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lidar_capture.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "FUSION_METHODS",
    "MODEL_CHANNELS",
    "MODEL_INPUT_SIZE",
    "MODEL_INPUT_VERSION",
    "MODEL_MIN_SPAN_M",
    "MODEL_SPAN_PER_RADIUS",
    "OUTLINES",
    "PROFILES",
    "QUALITY_FLAGS",
    "REFUSAL_REASONS",
    "SURFACES",
    "SYNTHETIC_SCAN_FORMATS",
    "TISSUES",
    "WRITABLE_POINT_CLOUD_SUFFIXES",
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
    "ScanExistsError",
    "ScanFileError",
    "SensorUnavailableError",
    "SyntheticScan",
    "SyntheticSource",
    "WoundMeasurement",
    "WoundModel",
    "WoundRaster",
    "WoundSpec",
    "WrittenScan",
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
    "write_synthetic_scan",
]
