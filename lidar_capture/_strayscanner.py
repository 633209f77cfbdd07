"""RGB-D sequences: folders in the Stray Scanner layout, read and written.

The layout the iPhone/iPad app Stray Scanner exports (other LiDAR capture apps use the
same open layout)::

    scan/
        camera_matrix.csv       3 rows of 3 comma-separated floats: K of the colour frames
        odometry.csv            timestamp, frame, x, y, z, qx, qy, qz, qw  (one row per frame)
        depth/000000.png ...    uint16 millimetres, 0 = no reading (256x192 on a device)
        confidence/000000.png   uint8 0 low, 1 medium, 2 high (optional)
        rgb.mp4                 colour video (H.264 on a device), or
        rgb/000000.png|jpg ...  colour frames (used when there is no rgb.mp4)
        coherency.json          optional sidecar, a Coherency extension (`lidar_capture._sidecar`)

Odometry rows are ARKit camera-to-world poses (position and unit quaternion, camera axes
x right, y up, z backward); they are converted to the OpenCV camera axes of `Frame.pose`.
Frame i pairs ``depth/i``, ``confidence/i``, colour frame i and the odometry row whose
``frame`` column is i. Without colour frames ``camera_matrix.csv`` is taken to describe
the depth grid itself (that is how `write_strayscanner` stores colourless scans).

Images are read through Open3D after their containers are checked here (libpng and
libjpeg return a partly decoded image for a truncated file); ``rgb.mp4`` through PyAV.
Every problem is a `ScanFileError` naming the file.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lidar_capture._errors import ScanFileError
from lidar_capture._open3d import o3d, quiet
from lidar_capture._sidecar import SIDECAR, read_sidecar, read_text
from lidar_capture._types import ARKIT_TO_OPENCV, Frame, Intrinsics, Scan

__all__ = ["SCAN_FOLDER_MARKS", "read_strayscanner", "write_strayscanner"]

FloatArray = npt.NDArray[np.float64]

#: What every folder `write_strayscanner` writes holds (and a Stray Scanner export too).
SCAN_FOLDER_MARKS = ("odometry.csv", "camera_matrix.csv", "depth")

#: ARKit writes quaternions as 32-bit floats; anything further from unit is not a rotation.
_QUATERNION_TOLERANCE = 1e-3
_ODOMETRY_COLUMNS = ("timestamp", "frame", "x", "y", "z", "qx", "qy", "qz", "qw")
_NUMBERED = re.compile(r"^(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_VIDEO_RATE = 60  # Stray Scanner records at 60 frames per second


def read_strayscanner(path: str | Path, max_frames: int | None = None) -> Scan:
    """Read an RGB-D folder in the Stray Scanner layout (see the module docstring).

    Args:
        path: the scan folder.
        max_frames: read only the first N frames.

    Returns:
        A Scan with ``source="strayscanner"``: depth in metres, intrinsics of the depth
        grid, OpenCV camera-to-world poses, confidence (or None) and colour (or None).

    Raises:
        ScanFileError: naming the file and the problem: a missing folder or file, no depth
            frames, a corrupt or truncated PNG, a PNG of the wrong kind (depth not 16-bit
            single channel, confidence outside 0-2), mismatched sizes, a malformed
            ``camera_matrix.csv`` or ``odometry.csv``, a zero or non-unit quaternion,
            frame counts that differ between depth, odometry and colour, an undecodable
            ``rgb.mp4``, or a bad ``coherency.json``.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    folder = Path(path)
    if not folder.exists():
        raise ScanFileError(folder, "no such folder")
    if not folder.is_dir():
        raise ScanFileError(folder, "not a folder (a Stray Scanner scan is a folder)")

    camera = _read_camera_matrix(folder / "camera_matrix.csv")
    odometry = _read_odometry(folder / "odometry.csv")
    depth_files = _numbered_files(folder / "depth", "depth frames")
    n = len(depth_files)
    if len(odometry) != n:
        raise ScanFileError(
            folder / "odometry.csv", f"has {len(odometry)} rows but depth/ holds {n} frames"
        )
    missing = next((i for i in range(n) if i not in odometry), None)
    if missing is not None:
        raise ScanFileError(folder / "odometry.csv", f"has no row for frame {missing}")
    confidence_files: list[Path] | None = None
    if (folder / "confidence").is_dir():
        confidence_files = _numbered_files(folder / "confidence", "confidence frames")
        if len(confidence_files) != n:
            raise ScanFileError(
                folder / "confidence",
                f"holds {len(confidence_files)} frames but depth/ holds {n}",
            )
    take = n if max_frames is None else min(n, max_frames)
    colors, color_file = _read_colors(folder, n, take)

    depth_size: tuple[int, int] | None = None
    raw: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8] | None]] = []
    for i in range(take):
        depth = _read_depth(depth_files[i])
        if depth_size is None:
            depth_size = (depth.shape[1], depth.shape[0])
        elif (depth.shape[1], depth.shape[0]) != depth_size:
            raise ScanFileError(
                depth_files[i],
                f"is {_size(depth)} but {depth_files[0].name} is {depth_size[0]}x{depth_size[1]}",
            )
        confidence = None
        if confidence_files is not None:
            confidence = _read_confidence(confidence_files[i])
            if confidence.shape != depth.shape:
                raise ScanFileError(
                    confidence_files[i],
                    f"is {_size(confidence)} but {depth_files[i].name} is {_size(depth)}",
                )
        raw.append((depth, confidence))
    assert depth_size is not None  # take >= 1 since depth/ holds at least one frame

    intrinsics = _depth_intrinsics(camera, folder, depth_size, colors, color_file)
    frames = []
    for i, (depth, confidence) in enumerate(raw):
        timestamp, pose = odometry[i]
        frames.append(
            Frame(
                depth=depth,
                intrinsics=intrinsics,
                pose=pose,
                confidence=confidence,
                color=colors[i] if colors is not None else None,
                timestamp=timestamp,
            )
        )
    body_axis, metadata = read_sidecar(folder / SIDECAR)
    return Scan(
        source="strayscanner",
        origin=str(folder),
        frames=tuple(frames),
        body_axis=body_axis,
        metadata=metadata,
    )


def _size(image: npt.NDArray[Any]) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def _read_camera_matrix(path: Path) -> FloatArray:
    lines = [line for line in read_text(path).splitlines() if line.strip()]
    try:
        k = np.array([[float(v) for v in line.split(",")] for line in lines], dtype=np.float64)
    except ValueError:
        raise ScanFileError(path, "not a 3x3 matrix of comma-separated numbers") from None
    if k.shape != (3, 3) or not np.isfinite(k).all():
        raise ScanFileError(path, "not a 3x3 matrix of comma-separated numbers")
    if k[0, 0] <= 0 or k[1, 1] <= 0 or not np.allclose(k[2], [0, 0, 1]) or k[1, 0] != 0:
        raise ScanFileError(path, "not a pinhole camera matrix [[fx,0,cx],[0,fy,cy],[0,0,1]]")
    return k


def _read_odometry(path: Path) -> dict[int, tuple[float, FloatArray]]:
    """Frame number -> (timestamp, OpenCV camera-to-world pose)."""
    lines = read_text(path).splitlines()
    header = tuple(c.strip() for c in lines[0].split(",")) if lines else ()
    if header != _ODOMETRY_COLUMNS:
        raise ScanFileError(
            path, f"header must be '{', '.join(_ODOMETRY_COLUMNS)}', got {lines[:1] or ['']}"
        )
    rows: dict[int, tuple[float, FloatArray]] = {}
    line_of: dict[int, int] = {}
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split(",")]
        except ValueError:
            values = []
        if len(values) != 9 or not all(math.isfinite(v) for v in values):
            raise ScanFileError(
                path, f"line {number}: expected 9 comma-separated numbers, got {line[:80]!r}"
            )
        timestamp, frame_value, x, y, z, qx, qy, qz, qw = values
        frame = int(frame_value)
        if frame != frame_value or frame < 0:
            raise ScanFileError(path, f"line {number}: frame {frame_value} is not a frame number")
        if frame in rows:
            raise ScanFileError(
                path, f"line {number}: frame {frame} already given on line {line_of[frame]}"
            )
        norm = math.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
        if norm < 1e-9:
            raise ScanFileError(path, f"line {number}: zero quaternion")
        if abs(norm - 1.0) > _QUATERNION_TOLERANCE:
            raise ScanFileError(path, f"line {number}: non-unit quaternion (norm {norm:.6g})")
        pose_arkit = np.eye(4)
        pose_arkit[:3, :3] = _quaternion_to_matrix(np.array([qx, qy, qz, qw]) / norm)
        pose_arkit[:3, 3] = (x, y, z)
        rows[frame] = (timestamp, pose_arkit @ ARKIT_TO_OPENCV)
        line_of[frame] = number
    return rows


def _quaternion_to_matrix(q: FloatArray) -> FloatArray:
    x, y, z, w = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _matrix_to_quaternion(r: FloatArray) -> FloatArray:
    """(qx, qy, qz, qw) of a rotation matrix, computed from its largest component."""
    trace = float(np.trace(r))
    if trace > 0:
        s = 2.0 * math.sqrt(trace + 1.0)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, s / 4]
    elif r[0, 0] >= r[1, 1] and r[0, 0] >= r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [s / 4, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s, (r[2, 1] - r[1, 2]) / s]
    elif r[1, 1] >= r[2, 2]:
        s = 2.0 * math.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 1] + r[1, 0]) / s, s / 4, (r[1, 2] + r[2, 1]) / s, (r[0, 2] - r[2, 0]) / s]
    else:
        s = 2.0 * math.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, s / 4, (r[1, 0] - r[0, 1]) / s]
    quaternion = np.array(q, dtype=np.float64)
    return quaternion / np.linalg.norm(quaternion)


def _numbered_files(folder: Path, what: str) -> list[Path]:
    """``000000.png``, ``000001.png``, ... in a folder, in order, without gaps."""
    if not folder.is_dir():
        raise ScanFileError(folder, "missing folder")
    found: dict[int, Path] = {}
    for entry in sorted(folder.iterdir()):
        match = _NUMBERED.match(entry.name)
        if match is None:
            continue  # .DS_Store and other strays
        index = int(match.group(1))
        if index in found:
            raise ScanFileError(entry, f"frame {index} is also given as {found[index].name}")
        found[index] = entry
    if not found:
        raise ScanFileError(folder, f"no {what} (expected 000000.png, 000001.png, ...)")
    for i in range(len(found)):
        if i not in found:
            raise ScanFileError(
                folder / f"{i:06d}.png", f"missing: {what} must be numbered from 0 without gaps"
            )
    return [found[i] for i in range(len(found))]


def _read_depth(path: Path) -> npt.NDArray[np.float32]:
    pixels = _read_image(path)
    if pixels.dtype != np.uint16 or pixels.ndim != 2:
        raise ScanFileError(
            path, f"depth must be a 16-bit single-channel PNG (millimetres), got {_kind(pixels)}"
        )
    return (pixels.astype(np.float32) / np.float32(1000.0)).astype(np.float32)


def _read_confidence(path: Path) -> npt.NDArray[np.uint8]:
    pixels = _read_image(path)
    if pixels.dtype != np.uint8 or pixels.ndim != 2:
        raise ScanFileError(
            path, f"confidence must be an 8-bit single-channel PNG, got {_kind(pixels)}"
        )
    if int(pixels.max()) > 2:
        raise ScanFileError(path, f"confidence values must be 0, 1 or 2, found {pixels.max()}")
    return np.ascontiguousarray(pixels)


def _kind(pixels: npt.NDArray[Any]) -> str:
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return f"{pixels.dtype.itemsize * 8}-bit {channels}-channel"


def _read_colors(
    folder: Path, n: int, take: int
) -> tuple[list[npt.NDArray[np.uint8]] | None, Path | None]:
    """The first `take` colour frames (from rgb.mp4, else rgb/) and the file they came from."""
    video = folder / "rgb.mp4"
    if video.exists():
        return _read_video(video, n, take), video
    if not (folder / "rgb").is_dir():
        return None, None
    files = _numbered_files(folder / "rgb", "colour frames")
    if len(files) != n:
        raise ScanFileError(folder / "rgb", f"holds {len(files)} frames but depth/ holds {n}")
    colors: list[npt.NDArray[np.uint8]] = []
    for file in files[:take]:
        pixels = _read_image(file)
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
            raise ScanFileError(file, f"colour must be an 8-bit RGB image, got {_kind(pixels)}")
        if colors and pixels.shape[:2] != colors[0].shape[:2]:
            raise ScanFileError(
                file, f"is {_size(pixels)} but {files[0].name} is {_size(colors[0])}"
            )
        colors.append(np.ascontiguousarray(pixels[:, :, :3]))
    return colors, folder / "rgb"


def _read_video(path: Path, n: int, take: int) -> list[npt.NDArray[np.uint8]]:
    import av

    frames: list[npt.NDArray[np.uint8]] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ScanFileError(path, "holds no video stream (not a video, or truncated)")
            stream = container.streams.video[0]
            # The container's frame count (the mp4 sample table) lets a partial read
            # still check the total without decoding every frame.
            if stream.frames and stream.frames != n:
                raise ScanFileError(path, f"has {stream.frames} frames but depth/ holds {n}")
            for frame in container.decode(stream):
                if len(frames) == take:
                    if take < n:
                        break
                    raise ScanFileError(path, f"has more frames than the {n} in depth/")
                frames.append(np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8))
    except av.FFmpegError as exc:
        raise ScanFileError(path, f"cannot be decoded as video: {exc}") from exc
    if len(frames) < take:
        raise ScanFileError(path, f"has {len(frames)} frames but depth/ holds {n}")
    return frames


def _depth_intrinsics(
    k: FloatArray,
    folder: Path,
    depth_size: tuple[int, int],
    colors: list[npt.NDArray[np.uint8]] | None,
    color_file: Path | None,
) -> Intrinsics:
    width, height = depth_size
    camera_file = folder / "camera_matrix.csv"
    if colors is None:
        # Without colour the matrix must describe the depth grid; a device export that
        # lost its rgb.mp4 has a 1920x1440 matrix whose principal point lies far outside.
        size = (width, height)
    else:
        size = (colors[0].shape[1], colors[0].shape[0])
        if abs(size[0] * height - size[1] * width) > 0.01 * size[0] * height:
            raise ScanFileError(
                color_file or folder,
                f"colour frames are {size[0]}x{size[1]} but depth frames are {width}x{height} "
                "(they must cover the same field of view)",
            )
    if not (0 <= k[0, 2] <= size[0] and 0 <= k[1, 2] <= size[1]):
        where = "the colour frames" if colors is not None else "the depth frames (no rgb.mp4)"
        raise ScanFileError(
            camera_file,
            f"principal point ({k[0, 2]:g}, {k[1, 2]:g}) lies outside {where}, "
            f"which are {size[0]}x{size[1]}",
        )
    camera = Intrinsics.from_matrix(k, size[0], size[1])
    return camera if size == (width, height) else camera.scaled(width, height)


def write_strayscanner(
    path: str | Path, scan: Scan, *, video: bool = False, extra: dict[str, object] | None = None
) -> None:
    """Write a scan's frames as a Stray Scanner folder that `read_strayscanner` reads back.

    Depth is stored in whole millimetres; colour as PNG frames, or with ``video=True`` as
    ``rgb.mp4`` (H.264, lossless settings; decoded colour is within a few levels).

    Args:
        path: the folder to create; it must not exist or be empty.
        scan: a scan with frames that share one depth size, intrinsics and colour size,
            all with or all without confidence and colour.
        video: colour as ``rgb.mp4`` instead of ``rgb/000000.png``.
        extra: keys written into the ``coherency.json`` sidecar (JSON values), beside the
            scan's ``body_axis``; an ``extra["body_axis"]`` replaces the scan's.

    Raises:
        ScanFileError: the folder exists and is not empty, or a file could not be written.
        ValueError: the scan cannot be stored in this layout (no frames, mixed sizes...).
    """
    frames = scan.frames
    if not frames:
        raise ValueError("a Stray Scanner folder holds frames; write clouds with write_point_cloud")
    _check_writable(frames, video)
    sidecar: dict[str, object] = {}
    if scan.body_axis is not None:
        sidecar["body_axis"] = [float(v) for v in np.asarray(scan.body_axis).reshape(3)]
    sidecar.update(extra or {})
    try:
        sidecar_text = json.dumps(sidecar, indent=2) + "\n"
    except (TypeError, ValueError) as exc:
        raise ValueError(f"extra must hold JSON values: {exc}") from exc

    folder = Path(path)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ScanFileError(folder, "already exists and is not an empty folder")
    first = frames[0]
    intrinsics = first.intrinsics
    if first.color is not None:
        intrinsics = intrinsics.scaled(first.color.shape[1], first.color.shape[0])
    k = intrinsics.matrix()
    rows = []
    for i, frame in enumerate(frames):
        pose_arkit = np.asarray(frame.pose, dtype=np.float64) @ ARKIT_TO_OPENCV
        q = _matrix_to_quaternion(pose_arkit[:3, :3])
        values = [float(frame.timestamp), i, *map(float, pose_arkit[:3, 3]), *map(float, q)]
        rows.append(", ".join(repr(v) for v in values))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "camera_matrix.csv").write_text(
            "\n".join(",".join(repr(float(v)) for v in row) for row in k) + "\n"
        )
        (folder / "odometry.csv").write_text(
            "\n".join([", ".join(_ODOMETRY_COLUMNS), *rows]) + "\n"
        )
        (folder / "depth").mkdir()
        if first.confidence is not None:
            (folder / "confidence").mkdir()
        if first.color is not None and not video:
            (folder / "rgb").mkdir()
        if sidecar:
            (folder / SIDECAR).write_text(sidecar_text)
    except OSError as exc:
        raise ScanFileError(folder, f"cannot be written: {exc.strerror or exc}") from exc
    for i, frame in enumerate(frames):
        depth = np.nan_to_num(np.asarray(frame.depth, dtype=np.float64), nan=0.0)
        millimetres = np.clip(np.rint(depth * 1000.0), 0, np.iinfo(np.uint16).max)
        _write_image(folder / "depth" / f"{i:06d}.png", millimetres.astype(np.uint16))
        if frame.confidence is not None:
            _write_image(folder / "confidence" / f"{i:06d}.png", frame.confidence.astype(np.uint8))
        if frame.color is not None and not video:
            _write_image(folder / "rgb" / f"{i:06d}.png", frame.color.astype(np.uint8))
    if video:
        _write_video(folder / "rgb.mp4", frames)


def _check_writable(frames: tuple[Frame, ...], video: bool) -> None:
    first = frames[0]
    for i, frame in enumerate(frames):
        if np.shape(frame.depth) != np.shape(first.depth) or np.ndim(frame.depth) != 2:
            raise ValueError(f"frame {i}: depth {np.shape(frame.depth)} differs from frame 0")
        a, b = frame.intrinsics, first.intrinsics
        same = (a.width, a.height) == (b.width, b.height) and np.allclose(
            [a.fx, a.fy, a.cx, a.cy], [b.fx, b.fy, b.cx, b.cy], rtol=1e-9, atol=1e-9
        )
        if not same:
            raise ValueError(f"frame {i}: intrinsics differ from frame 0 (the layout has one)")
        if (a.width, a.height) != (np.shape(frame.depth)[1], np.shape(frame.depth)[0]):
            raise ValueError(f"frame {i}: intrinsics are not of the depth grid")
        if (frame.confidence is None) != (first.confidence is None):
            raise ValueError(f"frame {i}: confidence given for some frames only")
        if frame.confidence is not None and np.shape(frame.confidence) != np.shape(frame.depth):
            raise ValueError(f"frame {i}: confidence and depth differ in size")
        if (frame.color is None) != (first.color is None):
            raise ValueError(f"frame {i}: colour given for some frames only")
        if frame.color is not None and (
            first.color is None
            or np.shape(frame.color) != np.shape(first.color)
            or np.shape(frame.color)[2:] != (3,)
        ):
            raise ValueError(f"frame {i}: colour must be (h, w, 3) like frame 0")
        pose = np.asarray(frame.pose, dtype=np.float64)
        rotation = pose[:3, :3] if pose.shape == (4, 4) else np.zeros((3, 3))
        if (
            not np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-6)
            or np.linalg.det(rotation) < 0
        ):
            raise ValueError(f"frame {i}: pose is not a rigid 4x4 transform")
    if video and first.color is None:
        raise ValueError("video=True needs colour frames")


def _write_video(path: Path, frames: tuple[Frame, ...]) -> None:
    import av

    times = np.array([f.timestamp for f in frames], dtype=np.float64)
    steps = np.diff(times)
    rate = _VIDEO_RATE
    if len(steps) and (steps > 0).all():
        rate = int(np.clip(round(1.0 / float(np.median(steps))), 1, 240))
    try:
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(rate))
            color = frames[0].color
            assert color is not None  # checked by _check_writable
            stream.width, stream.height = color.shape[1], color.shape[0]
            # 4:4:4 with crf 0 is lossless in YUV: decoded RGB is within ~2 levels.
            stream.pix_fmt = "yuv444p"
            stream.options = {"crf": "0"}
            for frame in frames:
                assert frame.color is not None
                image = np.ascontiguousarray(frame.color.astype(np.uint8))
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode(None))
    except (av.FFmpegError, OSError) as exc:
        raise ScanFileError(path, f"cannot be written: {exc}") from exc


# --------------------------------------------------------------------------- images


def _read_image(path: Path) -> npt.NDArray[Any]:
    """An image file's pixels (uint8 or uint16, (H, W) or (H, W, C)); never empty."""
    if not path.is_file():
        raise ScanFileError(path, "missing")
    try:
        _check_image_bytes(path, path.read_bytes())
        with quiet():
            image = o3d().io.read_image(str(path))
    except OSError as exc:
        raise ScanFileError(path, f"cannot be read: {exc.strerror or exc}") from exc
    except (RuntimeError, ValueError) as exc:
        raise ScanFileError(path, f"cannot be read as an image: {exc}") from exc
    pixels = np.asarray(image)
    if pixels.ndim < 2 or pixels.size == 0:
        raise ScanFileError(path, "truncated or corrupt image (could not be decoded)")
    return pixels


def _check_image_bytes(path: Path, data: bytes) -> None:
    """Refuse a truncated or damaged PNG or JPEG before the decoder sees it.

    libpng and libjpeg, as Open3D drives them, return a partly decoded image for a
    truncated file (libjpeg also prints to stderr), so the container is checked here: PNG
    chunks with their CRCs up to IEND, JPEG start and end markers.
    """
    if data.startswith(_PNG_SIGNATURE):
        offset = len(_PNG_SIGNATURE)
        while offset + 12 <= len(data):
            (length,) = struct.unpack(">I", data[offset : offset + 4])
            chunk = data[offset + 4 : offset + 8 + length]
            crc = data[offset + 8 + length : offset + 12 + length]
            if len(crc) < 4:
                break
            if zlib.crc32(chunk) != struct.unpack(">I", crc)[0]:
                kind = chunk[:4].decode("latin-1")
                raise ScanFileError(path, f"corrupt PNG: bad checksum in its {kind} chunk")
            if chunk[:4] == b"IEND":
                return
            offset += 12 + length
        raise ScanFileError(path, "truncated PNG (it ends before its IEND chunk)")
    if data.startswith(b"\xff\xd8"):
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise ScanFileError(path, "truncated JPEG (no end-of-image marker)")
        return
    raise ScanFileError(path, "truncated or corrupt image: not a PNG or JPEG file")


def _write_image(path: Path, pixels: npt.NDArray[Any]) -> None:
    with quiet():
        ok = o3d().io.write_image(str(path), o3d().geometry.Image(np.ascontiguousarray(pixels)))
    if not ok:
        raise ScanFileError(path, "could not be written")
