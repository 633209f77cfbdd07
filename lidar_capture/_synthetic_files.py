"""Writing a synthetic scan to disk with its ground truth, replacing an old one safely.

Two layouts: ``dir``, a Stray Scanner folder (`write_strayscanner`) holding
``ground_truth.json``; ``ply``, one point cloud (the frames merged at 1 mm,
`merge_frames`) beside ``<stem>.truth.json`` and its ``<stem>.coherency.json`` sidecar.
Either sidecar names the truth file and records the `WoundSpec`. Everything is written
beside the target first and moved into place only once it all succeeded, so a failed
write (an unsupported format, PyAV missing for video) leaves an old scan untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lidar_capture._errors import ScanExistsError
from lidar_capture._point_files import WRITABLE_POINT_CLOUD_SUFFIXES, write_point_cloud
from lidar_capture._points import merge_frames
from lidar_capture._strayscanner import SCAN_FOLDER_MARKS, write_strayscanner
from lidar_capture._synthetic import SyntheticScan, generate
from lidar_capture._synthetic_spec import SYNTHETIC_SCAN_FORMATS, WoundSpec

__all__ = ["WrittenScan", "write_synthetic_scan"]


@dataclass(frozen=True, eq=False)
class WrittenScan:
    """What `write_synthetic_scan` wrote."""

    path: Path
    format: str
    """``dir`` or ``ply``."""
    truth_path: Path
    """The ground truth's JSON file."""
    count: int
    """Frames in the folder (``dir``), or points in the cloud (``ply``)."""
    synthetic: SyntheticScan
    """The rendered scan, its spec and its ground truth."""


def write_synthetic_scan(
    path: str | Path,
    spec: WoundSpec,
    *,
    format: str = "dir",
    video: bool = False,
    replace: bool = False,
) -> WrittenScan:
    """Render `spec` and write it to `path` with its exact ground truth.

    Args:
        path: the folder (``dir``) or point-cloud file (``ply``: a suffix
            `write_point_cloud` writes) to create.
        spec: the wound to render (`random_spec` draws one).
        format: ``dir`` or ``ply`` (`SYNTHETIC_SCAN_FORMATS`).
        video: store colour as ``rgb.mp4`` (H.264) in a ``dir`` scan.
        replace: replace what is there: a file, or a folder holding a Stray Scanner scan
            (never any other folder). The old scan is removed only once the new one is
            written in full.

    Raises:
        ScanExistsError: something is at a target path and `replace` is not set, or it
            is a folder that is not a scan.
        ValueError: an unknown format, ``video`` without ``dir``, a ``ply`` path with a
            suffix no point cloud is written as, or a `spec` that cannot be rendered.
        ScanFileError: a file could not be written.
    """
    out = Path(path)
    if format not in SYNTHETIC_SCAN_FORMATS:
        raise ValueError(f"format must be one of {SYNTHETIC_SCAN_FORMATS}, not {format!r}")
    if video and format != "dir":
        raise ValueError("video=True needs format 'dir'")
    folder = format == "dir"
    if not folder and out.suffix.lower() not in WRITABLE_POINT_CLOUD_SUFFIXES:
        raise ValueError(
            f"{out}: a point cloud is written as one of {', '.join(WRITABLE_POINT_CLOUD_SUFFIXES)}"
        )
    targets = (
        [out]
        if folder
        else [out, out.with_suffix(".truth.json"), out.with_name(f"{out.stem}.coherency.json")]
    )
    replaced = _check_room(targets, replace=replace, folder=folder)
    made = generate(spec)
    truth = made.truth.to_json()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged = [staging / target.name for target in targets]
        if folder:
            truth_path = out / "ground_truth.json"
            extra: dict[str, object] = {
                "ground_truth": truth_path.name,
                "synthetic_spec": spec.to_json(),
            }
            write_strayscanner(staged[0], made.scan, video=video, extra=extra)
            _write_json(staged[0] / truth_path.name, truth)
            count = len(made.scan.frames)
        else:
            truth_path = targets[1]
            cloud = merge_frames(made.scan)
            write_point_cloud(staged[0], cloud)
            sidecar = {
                "body_axis": truth["body_axis"],
                "ground_truth": truth_path.name,
                "synthetic_spec": spec.to_json(),
            }
            _write_json(staged[1], truth)
            _write_json(staged[2], sidecar)
            count = len(cloud)
        _clear(replaced)  # only once the new scan exists in full
        for source, target in zip(staged, targets, strict=True):
            os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return WrittenScan(out, format, truth_path, count, made)


def _write_json(path: Path, content: Any) -> None:
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _check_room(targets: list[Path], *, replace: bool, folder: bool) -> list[Path]:
    """What will be replaced; refuses an existing target unless `replace`.

    Only files and scan folders are replaced, never another folder.
    """
    present = [p for p in targets if p.exists() or p.is_symlink()]
    if present and not replace:
        raise ScanExistsError(present[0], "already exists")
    for path in present:
        is_folder = path.is_dir() and not path.is_symlink()
        if is_folder and not (folder and all((path / m).exists() for m in SCAN_FOLDER_MARKS)):
            # Never delete a folder that is not a scan: it may be anything.
            raise ScanExistsError(
                path, "is a folder but not a Stray Scanner scan; not replacing it"
            )
    return present


def _clear(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
