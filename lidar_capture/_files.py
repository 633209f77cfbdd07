"""File capture sources: point-cloud files and RGB-D folders in the Stray Scanner layout.

Point clouds (``.ply .pcd .xyz .xyzrgb .xyzn .pts``) are read and written through Open3D
and hold metres. Open3D reports a bad file by printing a warning and returning an empty
(or, for a truncated PLY, a partly uninitialised) cloud, so every read is checked here
and turned into a `ScanFileError` that names the file and the problem.

An RGB-D sequence is a folder in the layout the iPhone/iPad app Stray Scanner exports
(other LiDAR capture apps use the same open layout)::

    scan/
        camera_matrix.csv       3 rows of 3 comma-separated floats: K of the colour frames
        odometry.csv            timestamp, frame, x, y, z, qx, qy, qz, qw  (one row per frame)
        depth/000000.png ...    uint16 millimetres, 0 = no reading (256x192 on a device)
        confidence/000000.png   uint8 0 low, 1 medium, 2 high (optional)
        rgb.mp4                 colour video (H.264 on a device), or
        rgb/000000.png|jpg ...  colour frames (used when there is no rgb.mp4)
        coherency.json          optional sidecar, a Coherency extension (below)

Odometry rows are ARKit camera-to-world poses (position and unit quaternion, camera axes
x right, y up, z backward); they are converted to the OpenCV camera axes of `Frame.pose`.
Frame i pairs ``depth/i``, ``confidence/i``, colour frame i and the odometry row whose
``frame`` column is i. Without colour frames ``camera_matrix.csv`` is taken to describe
the depth grid itself (that is how `write_strayscanner` stores colourless scans).

The ``coherency.json`` sidecar is a JSON object; ``"body_axis": [x, y, z]`` (world
coordinates, head-ward) becomes `Scan.body_axis` and the whole object `Scan.metadata`.
A point-cloud file may have one too, named after it: ``wound.ply`` ->
``wound.coherency.json``.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lidar_capture._errors import ScanFileError
from lidar_capture._types import ARKIT_TO_OPENCV, Frame, Intrinsics, PointCloud, Scan

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "POINT_CLOUD_SUFFIXES",
    "FileSource",
    "open_scan",
    "point_cloud_from_ply_bytes",
    "point_cloud_to_ply_bytes",
    "read_point_cloud",
    "read_strayscanner",
    "write_point_cloud",
    "write_strayscanner",
]

FloatArray = npt.NDArray[np.float64]

POINT_CLOUD_SUFFIXES = (".ply", ".pcd", ".xyz", ".xyzrgb", ".xyzn", ".pts")

#: A wound scan spans centimetres; a cloud wider than this was almost surely saved in mm.
_MAX_EXTENT_M = 5.0
#: ARKit writes quaternions as 32-bit floats; anything further from unit is not a rotation.
_QUATERNION_TOLERANCE = 1e-3
_SIDECAR = "coherency.json"
_ODOMETRY_COLUMNS = ("timestamp", "frame", "x", "y", "z", "qx", "qy", "qz", "qw")
_NUMBERED = re.compile(r"^(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_VIDEO_RATE = 60  # Stray Scanner records at 60 frames per second


# --------------------------------------------------------------------------- Open3D / PyAV


def _o3d() -> ModuleType:
    # Imported on first use: Open3D takes about half a second to import, which every
    # `coherency` command would otherwise pay.
    import open3d

    return open3d


@contextmanager
def _quiet() -> Iterator[None]:
    """Keep Open3D's warnings off stdout/stderr; failures are detected and raised instead."""
    o3d = _o3d()
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        yield


def _read_image(path: Path) -> npt.NDArray[Any]:
    """An image file's pixels (uint8 or uint16, (H, W) or (H, W, C)); never empty."""
    if not path.is_file():
        raise ScanFileError(path, "missing")
    try:
        _check_image_bytes(path, path.read_bytes())
        with _quiet():
            image = _o3d().io.read_image(str(path))
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
    with _quiet():
        ok = _o3d().io.write_image(str(path), _o3d().geometry.Image(np.ascontiguousarray(pixels)))
    if not ok:
        raise ScanFileError(path, "could not be written")


# --------------------------------------------------------------------------- point clouds


def _checked_cloud(points: npt.ArrayLike, colors: npt.ArrayLike | None, name: object) -> PointCloud:
    """A PointCloud, after the checks every point-cloud reader shares."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) == 0:
        raise ScanFileError(str(name), "holds no points")
    infinite = int(np.count_nonzero(np.isinf(pts).any(axis=1)))
    if infinite:
        raise ScanFileError(str(name), f"{infinite} of {len(pts)} points have infinite coordinates")
    # Organised clouds (PCL, ROS, RealSense exports) mark pixels with no reading as NaN:
    # they are dropped, like a depth of 0.
    reading = ~np.isnan(pts).any(axis=1)
    if not reading.any():
        raise ScanFileError(str(name), f"none of its {len(pts)} points has coordinates (all NaN)")
    kept = pts[reading]
    extent = float((kept.max(axis=0) - kept.min(axis=0)).max())
    if extent > _MAX_EXTENT_M:
        raise ScanFileError(
            str(name),
            f"the points span {extent:.1f} m, which looks like millimetres; "
            "point-cloud files must be in metres",
        )
    cols: FloatArray | None = None
    if colors is not None:
        cols = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
        if len(cols) != len(pts):
            raise ScanFileError(str(name), f"{len(cols)} colours for {len(pts)} points")
        cols = cols[reading]
        if not np.isfinite(cols).all() or cols.min() < -1e-6 or cols.max() > 1 + 1e-6:
            raise ScanFileError(str(name), "colours outside [0, 1]")
        cols = np.clip(cols, 0.0, 1.0)
    return PointCloud(points=np.ascontiguousarray(kept), colors=cols)


def _checked_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in POINT_CLOUD_SUFFIXES:
        raise ScanFileError(
            path,
            f"unsupported point-cloud format {path.suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(POINT_CLOUD_SUFFIXES)}",
        )
    return suffix


def read_point_cloud(path: str | Path) -> PointCloud:
    """Read a point-cloud file (format from its suffix, coordinates in metres).

    Colours come back in [0, 1] when the file has them, else None.

    Raises:
        ScanFileError: the file is missing, a folder, of an unsupported format, corrupt or
            truncated, holds no points or non-finite ones, or spans more than 5 m (which
            means millimetres).
    """
    path = Path(path)
    if path.is_dir():
        raise ScanFileError(path, "is a folder, not a point-cloud file")
    suffix = _checked_suffix(path)
    if not path.is_file():
        raise ScanFileError(path, "no such file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScanFileError(path, f"cannot be read: {exc.strerror or exc}") from exc
    if not data.strip():
        raise ScanFileError(path, "is empty")
    # Open3D skips or half-reads what it cannot parse, so the text and PLY formats are
    # checked first: the count they must yield is known before Open3D runs.
    expected = _expected_points(path, suffix, data)
    try:
        with _quiet():
            o3d_cloud = _o3d().io.read_point_cloud(str(path), format=suffix[1:])
    except (RuntimeError, ValueError, OSError) as exc:
        raise ScanFileError(path, f"cannot be read: {exc}") from exc
    points = np.asarray(o3d_cloud.points)
    if len(points) == 0:
        raise ScanFileError(path, "no points could be read: the file is corrupt or truncated")
    if expected is not None and len(points) != expected:
        raise ScanFileError(path, f"declares {expected} points but {len(points)} were read")
    colors = np.asarray(o3d_cloud.colors) if o3d_cloud.has_colors() else None
    return _checked_cloud(points, colors, path)


def _expected_points(path: Path, suffix: str, data: bytes) -> int | None:
    """How many points a file must yield, after checking what Open3D would not."""
    if suffix == ".ply":
        return len(_parse_ply(data, path).points)
    if suffix in (".xyz", ".xyzn", ".xyzrgb"):
        width = 3 if suffix == ".xyz" else 6
        count = 0
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            if len(tokens) < width or not all(_is_number(t) for t in tokens[:width]):
                raise ScanFileError(path, f"line {number} is not {width} numbers: {line[:60]!r}")
            count += 1
        if count == 0:
            raise ScanFileError(path, "holds no points")
        return count
    if suffix == ".pts":
        first = data.split(b"\n", 1)[0].strip()
        return int(first) if first.isdigit() else None
    return None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def write_point_cloud(path: str | Path, cloud: PointCloud) -> None:
    """Write a point cloud through Open3D, format from the suffix (binary where possible).

    ``.xyz`` and ``.pts`` without colours drop them; ``.xyzn`` needs normals, which a
    `PointCloud` does not carry, so it is refused.

    Raises:
        ScanFileError: unsupported suffix, missing parent folder, or the write failed.
    """
    path = Path(path)
    suffix = _checked_suffix(path)
    if suffix == ".xyzn":
        raise ScanFileError(path, "cannot write .xyzn: it needs normals, which PointCloud lacks")
    if not path.parent.is_dir():
        raise ScanFileError(path, f"folder {path.parent} does not exist")
    o3d = _o3d()
    out = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_points_of(cloud)))
    if cloud.colors is not None:
        out.colors = o3d.utility.Vector3dVector(np.asarray(cloud.colors, dtype=np.float64))
    with _quiet():
        ok = o3d.io.write_point_cloud(str(path), out, format=suffix[1:])
    if not ok:
        raise ScanFileError(path, "could not be written")


def _points_of(cloud: PointCloud) -> FloatArray:
    points = np.asarray(cloud.points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"cloud.points must be (N, 3), got {points.shape}")
    if cloud.colors is not None and np.shape(cloud.colors) != points.shape:
        raise ValueError(f"cloud.colors must be {points.shape}, got {np.shape(cloud.colors)}")
    return points


# PLY property types and their numpy codes (the byte order is added per file).
_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_PLY_FORMATS = {"ascii": "", "binary_little_endian": "<", "binary_big_endian": ">"}


@dataclass
class _PlyElement:
    name: str
    count: int
    properties: list[tuple[str, str | None]]
    """(name, numpy code); None for a list property."""


def point_cloud_to_ply_bytes(cloud: PointCloud) -> bytes:
    """Encode a cloud as a binary little-endian PLY (float64 x, y, z; uchar RGB if coloured).

    Used to store a scan as a blob; `point_cloud_from_ply_bytes` reads it back (colours
    quantised to 1/255).
    """
    points = _points_of(cloud)
    fields = [("x", "<f8"), ("y", "<f8"), ("z", "<f8")]
    if cloud.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rows = np.empty(len(points), dtype=fields)
    rows["x"], rows["y"], rows["z"] = points.T
    if cloud.colors is not None:
        rgb = np.rint(np.clip(np.asarray(cloud.colors, dtype=np.float64), 0, 1) * 255)
        rows["red"], rows["green"], rows["blue"] = rgb.astype(np.uint8).T
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(points)}"]
    header += [f"property {'double' if code == '<f8' else 'uchar'} {n}" for n, code in fields]
    header.append("end_header")
    return ("\n".join(header) + "\n").encode("ascii") + rows.tobytes()


def point_cloud_from_ply_bytes(data: bytes, *, name: str = "PLY data") -> PointCloud:
    """Decode a PLY (binary or ASCII) held in memory, such as a stored scan blob.

    Args:
        data: the PLY file's bytes.
        name: what error messages call it (a blob id, say).

    Raises:
        ScanFileError: not a PLY, truncated, an unsupported layout, or a cloud that fails
            the checks of `read_point_cloud`.
    """
    parsed = _parse_ply(data, name)
    return _checked_cloud(parsed.points, parsed.colors, name)


def _parse_ply(data: bytes, name: object) -> PointCloud:
    """The vertices of a PLY as an unchecked PointCloud; raises on a bad or short file."""
    fmt, elements, body = _parse_ply_header(data, name)
    vertex = next((e for e in elements if e.name == "vertex"), None)
    props = dict(vertex.properties) if vertex else {}
    if vertex is None or any(props.get(axis) is None for axis in "xyz"):
        raise ScanFileError(str(name), "PLY has no vertex element with x, y and z")
    before = elements[: elements.index(vertex)]
    if vertex.count == 0:
        raise ScanFileError(str(name), "holds no points")
    if fmt == "ascii":
        table = _ply_ascii_rows(data[body:], before, vertex, name)
    else:
        table = _ply_binary_rows(data[body:], _PLY_FORMATS[fmt], before, vertex, name)
    points = np.stack([table[:, vertex.properties.index((a, props[a]))] for a in "xyz"], axis=1)
    colors = None
    if all(props.get(c) is not None for c in ("red", "green", "blue")):
        code = str(props["red"])
        scale = {"u1": 255.0, "u2": 65535.0}.get(code, 1.0)
        channels = ("red", "green", "blue")
        colors = (
            np.stack([table[:, vertex.properties.index((c, props[c]))] for c in channels], axis=1)
            / scale
        )
    return PointCloud(points=points, colors=colors)


def _parse_ply_header(data: bytes, name: object) -> tuple[str, list[_PlyElement], int]:
    if not data.startswith(b"ply"):
        raise ScanFileError(str(name), "not a PLY file (it does not start with 'ply')")
    end = data.find(b"end_header")
    if end < 0:
        raise ScanFileError(str(name), "PLY header has no end_header line (truncated?)")
    newline = data.find(b"\n", end)
    body = len(data) if newline < 0 else newline + 1
    fmt = ""
    elements: list[_PlyElement] = []
    for line in data[:end].decode("ascii", errors="replace").splitlines()[1:]:
        tokens = line.split()
        try:
            if not tokens or tokens[0] in ("comment", "obj_info"):
                continue
            if tokens[0] == "format":
                fmt = tokens[1]
            elif tokens[0] == "element":
                elements.append(_PlyElement(tokens[1], int(tokens[2]), []))
            elif tokens[0] == "property" and tokens[1] == "list":
                elements[-1].properties.append((tokens[4], None))
            elif tokens[0] == "property":
                elements[-1].properties.append((tokens[2], _PLY_TYPES[tokens[1]]))
            else:
                raise ValueError
        except (IndexError, KeyError, ValueError):
            raise ScanFileError(str(name), f"malformed PLY header line {line!r}") from None
    if fmt not in _PLY_FORMATS:
        raise ScanFileError(str(name), f"unknown PLY format {fmt or '(none)'!r}")
    return fmt, elements, body


def _ply_binary_rows(
    body: bytes, order: str, before: list[_PlyElement], vertex: _PlyElement, name: object
) -> FloatArray:
    offset = 0
    for element in before:
        if any(code is None for _, code in element.properties):
            raise ScanFileError(
                str(name), "unsupported PLY layout: list properties before vertices"
            )
        offset += element.count * sum(int(str(code)[1]) for _, code in element.properties)
    if any(code is None for _, code in vertex.properties):
        raise ScanFileError(str(name), "unsupported PLY layout: list properties in vertices")
    dtype = np.dtype([(f"p{i}", order + str(c)) for i, (_, c) in enumerate(vertex.properties)])
    needed = offset + vertex.count * dtype.itemsize
    if len(body) < needed:
        raise ScanFileError(
            str(name),
            f"truncated: the header declares {vertex.count} points ({needed} bytes) "
            f"but only {len(body)} bytes follow it",
        )
    rows = np.frombuffer(body, dtype=dtype, count=vertex.count, offset=offset)
    return np.stack([rows[f].astype(np.float64) for f in dtype.names or ()], axis=1)


def _ply_ascii_rows(
    body: bytes, before: list[_PlyElement], vertex: _PlyElement, name: object
) -> FloatArray:
    lines = [line for line in body.decode("ascii", errors="replace").splitlines() if line.strip()]
    skip = sum(e.count for e in before)
    if len(lines) < skip + vertex.count:
        raise ScanFileError(
            str(name),
            f"truncated: the header declares {vertex.count} points but the file ends "
            f"after {max(0, len(lines) - skip)}",
        )
    width = len(vertex.properties)
    if any(code is None for _, code in vertex.properties):
        raise ScanFileError(str(name), "unsupported PLY layout: list properties in vertices")
    rows = lines[skip : skip + vertex.count]
    for number, line in enumerate(rows):
        tokens = line.split()
        if len(tokens) != width or not all(_is_number(t) for t in tokens):
            raise ScanFileError(str(name), f"vertex {number} is not {width} numbers: {line[:60]!r}")
    return np.array(" ".join(rows).split(), dtype=np.float64).reshape(-1, width)


# --------------------------------------------------------------------------- Stray Scanner


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
    body_axis, metadata = _read_sidecar(folder / _SIDECAR)
    return Scan(
        source="strayscanner",
        origin=str(folder),
        frames=tuple(frames),
        body_axis=body_axis,
        metadata=metadata,
    )


def _size(image: npt.NDArray[Any]) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise ScanFileError(path, "missing")
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScanFileError(path, f"cannot be read as text: {exc}") from exc


def _read_camera_matrix(path: Path) -> FloatArray:
    lines = [line for line in _read_text(path).splitlines() if line.strip()]
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
    lines = _read_text(path).splitlines()
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


def _sidecar_path(path: Path) -> Path:
    return path / _SIDECAR if path.is_dir() else path.with_name(f"{path.stem}.{_SIDECAR}")


def _read_sidecar(path: Path) -> tuple[FloatArray | None, dict[str, object]]:
    """(body axis, metadata) from a coherency.json sidecar; (None, {}) when there is none."""
    if not path.exists():
        return None, {}
    try:
        content = json.loads(_read_text(path))
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
            (folder / _SIDECAR).write_text(sidecar_text)
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


# --------------------------------------------------------------------------- dispatch


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
    body_axis, metadata = _read_sidecar(_sidecar_path(path))
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
