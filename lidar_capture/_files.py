"""File capture sources: a scan on disk, whichever kind it is.

A folder is an RGB-D sequence in the Stray Scanner layout (`lidar_capture._strayscanner`),
a file a point cloud (`lidar_capture._point_files`); either may carry a
``coherency.json`` sidecar (`lidar_capture._sidecar`).
"""

from __future__ import annotations

from pathlib import Path

from lidar_capture._errors import ScanFileError
from lidar_capture._point_files import read_point_cloud
from lidar_capture._sidecar import read_sidecar, sidecar_path
from lidar_capture._strayscanner import read_strayscanner
from lidar_capture._types import Scan

__all__ = ["FileSource", "open_scan"]


def open_scan(path: str | Path, max_frames: int | None = None) -> Scan:
    """Open a scan from disk: a folder is a Stray Scanner sequence, a file a point cloud.

    A point-cloud file's sidecar is ``<stem>.coherency.json`` beside it (body axis and
    metadata, as for folders). `max_frames` applies to sequences only.

    Raises:
        ScanFileError: as `read_strayscanner` or `read_point_cloud`.
    """
    path = Path(path)
    if path.is_dir():
        return read_strayscanner(path, max_frames)
    if not path.exists():
        raise ScanFileError(path, "no such file or folder")
    cloud = read_point_cloud(path)
    body_axis, metadata = read_sidecar(sidecar_path(path))
    return Scan(
        source="pointcloud", origin=str(path), cloud=cloud, body_axis=body_axis, metadata=metadata
    )


class FileSource:
    """A `CaptureSource` over a file or folder on disk (see `open_scan`)."""

    name = "file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def capture(self, max_frames: int | None = None) -> Scan:
        """Read the scan; at most `max_frames` frames of a sequence when given."""
        return open_scan(self.path, max_frames)
