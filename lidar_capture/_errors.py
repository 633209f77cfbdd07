"""The capture package's exception tree.

    CaptureError                     anything this package raises on purpose
    ├── ScanFileError                a file is missing, corrupt or unsupported (says which, why)
    ├── ScanExistsError              a scan would be written over something not asked to replace
    ├── SensorUnavailableError       the platform or device a live source needs is not here
    └── MeasurementRefused           a quality gate refused the scan; `.reason` is a stable code

Open3D, PyAV and pyobjus errors are translated into these at the boundary. Plain
Python, so these (and `REFUSAL_REASONS`) load without the ``[capture]`` extra.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "REFUSAL_REASONS",
    "CaptureError",
    "MeasurementRefused",
    "ScanExistsError",
    "ScanFileError",
    "SensorUnavailableError",
]

#: Stable codes of `MeasurementRefused.reason`.
REFUSAL_REASONS = (
    "too_close",
    "too_far",
    "too_few_points",
    "too_much_motion",
    "noise_too_high",
    "no_wound_found",
)


class CaptureError(Exception):
    """Base class of every error `lidar_capture` raises on purpose."""


class ScanFileError(CaptureError):
    """A scan file or sequence could not be read: the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ScanExistsError(CaptureError):
    """Writing a scan would replace something: a file or scan folder the caller did not
    ask to replace, or (even when asked) a folder that is not a scan. `path` says which."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path} {problem}")


class SensorUnavailableError(CaptureError):
    """A live capture source cannot run here (no ARKit, no depth camera, no driver)."""


class MeasurementRefused(CaptureError):
    """A quality gate refused the scan; nothing was measured.

    `reason` is one of `REFUSAL_REASONS` (for example
    ``too_far``, ``too_few_points``, ``too_much_motion``, ``noise_too_high``,
    ``no_wound_found``); the message says what to do about it.
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)
