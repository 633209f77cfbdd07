"""The ``coherency.json`` sidecar a scan file or folder may carry (a Coherency extension).

It is a JSON object; ``"body_axis": [x, y, z]`` (world coordinates, head-ward) becomes
`Scan.body_axis` and the whole object `Scan.metadata`. A folder's is
``scan/coherency.json``; a point-cloud file's is named after it: ``wound.ply`` ->
``wound.coherency.json``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt

from lidar_capture._errors import ScanFileError

__all__ = ["SIDECAR", "read_sidecar", "read_text", "sidecar_path"]

FloatArray = npt.NDArray[np.float64]

SIDECAR = "coherency.json"


def sidecar_path(path: Path) -> Path:
    """Where the sidecar of a scan folder or point-cloud file is."""
    return path / SIDECAR if path.is_dir() else path.with_name(f"{path.stem}.{SIDECAR}")


def read_text(path: Path) -> str:
    """A small text file's content; `ScanFileError` when it is missing or unreadable."""
    if not path.is_file():
        raise ScanFileError(path, "missing")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScanFileError(path, f"cannot be read as text: {exc}") from exc


def read_sidecar(path: Path) -> tuple[FloatArray | None, dict[str, object]]:
    """(body axis, metadata) from a coherency.json sidecar; (None, {}) when there is none."""
    if not path.exists():
        return None, {}
    try:
        content = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ScanFileError(path, f"not valid JSON: {exc}") from exc
    if not isinstance(content, dict):
        raise ScanFileError(path, "must hold a JSON object")
    axis = content.get("body_axis")
    if axis is None:
        return None, content
    try:
        vector = np.array(axis, dtype=np.float64)
    except (TypeError, ValueError):
        vector = np.zeros(0)
    norm = float(np.linalg.norm(vector)) if vector.shape == (3,) else 0.0
    if not math.isfinite(norm) or norm < 1e-9:
        raise ScanFileError(path, f"body_axis must be 3 finite numbers, not all zero; got {axis}")
    return vector / norm, content
