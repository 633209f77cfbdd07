"""Point-cloud files: ``.ply .pcd .xyz .xyzrgb .xyzn .pts``, in metres, and PLY bytes.

PLY (binary little/big-endian or ASCII; float, double and integer properties) is read
and written here with NumPy, so scans stored with an assessment and PLY files need no
Open3D (iOS has none). The other formats go through Open3D, which must then be
installed (``capture-accel``). Open3D reports a bad file by printing a warning and
returning an empty cloud, so those reads are checked here first (text formats counted)
and turned into a `ScanFileError` that names the file and the problem.

PLY is written binary little-endian with float32 coordinates in metres (micrometre
resolution within metres of the origin, the precision scanning apps export) and uchar
colours, with ``comment`` lines stating the units, the frame when the writer knows it,
and the SDK version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from lidar_capture._errors import ScanFileError
from lidar_capture._open3d import o3d, quiet
from lidar_capture._types import PointCloud

__all__ = [
    "POINT_CLOUD_SUFFIXES",
    "WRITABLE_POINT_CLOUD_SUFFIXES",
    "point_cloud_from_ply_bytes",
    "point_cloud_to_ply_bytes",
    "read_point_cloud",
    "write_point_cloud",
]

FloatArray = npt.NDArray[np.float64]

POINT_CLOUD_SUFFIXES = (".ply", ".pcd", ".xyz", ".xyzrgb", ".xyzn", ".pts")
#: What `write_point_cloud` writes: ``.xyzn`` needs normals, which a `PointCloud` lacks.
WRITABLE_POINT_CLOUD_SUFFIXES = tuple(s for s in POINT_CLOUD_SUFFIXES if s != ".xyzn")

#: A wound scan spans centimetres; a cloud wider than this was almost surely saved in mm.
_MAX_EXTENT_M = 5.0


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
    if suffix == ".ply":
        parsed = _parse_ply(data, path)
        return _checked_cloud(parsed.points, parsed.colors, path)
    # Open3D skips or half-reads what it cannot parse, so the text formats are checked
    # first: the count they must yield is known before Open3D runs.
    expected = _expected_points(path, suffix, data)
    open3d = _open3d_for(path, suffix)
    try:
        with quiet():
            o3d_cloud = open3d.io.read_point_cloud(str(path), format=suffix[1:])
    except (RuntimeError, ValueError, OSError) as exc:
        raise ScanFileError(path, f"cannot be read: {exc}") from exc
    points = np.asarray(o3d_cloud.points)
    if len(points) == 0:
        raise ScanFileError(path, "no points could be read: the file is corrupt or truncated")
    if expected is not None and len(points) != expected:
        raise ScanFileError(path, f"declares {expected} points but {len(points)} were read")
    colors = np.asarray(o3d_cloud.colors) if o3d_cloud.has_colors() else None
    return _checked_cloud(points, colors, path)


def _open3d_for(path: Path, suffix: str) -> Any:
    """Open3D, which reads and writes the formats other than PLY; a clear error without it."""
    try:
        return o3d()
    except ImportError:
        raise ScanFileError(
            path,
            f"{suffix} files need Open3D (pip install 'coherency[capture-accel]'); "
            "PLY needs only NumPy",
        ) from None


def _expected_points(path: Path, suffix: str, data: bytes) -> int | None:
    """How many points a file must yield, after checking what Open3D would not."""
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
    """Write a point cloud, format from the suffix: PLY with NumPy (as
    `point_cloud_to_ply_bytes`), the others through Open3D (binary where possible).

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
    if suffix == ".ply":
        try:
            path.write_bytes(point_cloud_to_ply_bytes(cloud))
        except OSError as exc:
            raise ScanFileError(path, f"could not be written: {exc.strerror or exc}") from exc
        return
    open3d = _open3d_for(path, suffix)
    out = open3d.geometry.PointCloud(open3d.utility.Vector3dVector(_points_of(cloud)))
    if cloud.colors is not None:
        out.colors = open3d.utility.Vector3dVector(np.asarray(cloud.colors, dtype=np.float64))
    with quiet():
        ok = open3d.io.write_point_cloud(str(path), out, format=suffix[1:])
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


def point_cloud_to_ply_bytes(cloud: PointCloud, *, comments: Sequence[str] = ()) -> bytes:
    """Encode a cloud as a binary little-endian PLY: float32 x, y, z in metres, uchar RGB
    if coloured; the header states the units in a comment, then `comments` (one line
    each: the frame and the writer's version, for a stored scan).

    Used to store a scan as a blob; `point_cloud_from_ply_bytes` reads it back
    (coordinates rounded to float32, colours quantised to 1/255).
    """
    points = _points_of(cloud)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if cloud.colors is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rows = np.empty(len(points), dtype=fields)
    rows["x"], rows["y"], rows["z"] = points.T
    if cloud.colors is not None:
        rgb = np.rint(np.clip(np.asarray(cloud.colors, dtype=np.float64), 0, 1) * 255)
        rows["red"], rows["green"], rows["blue"] = rgb.astype(np.uint8).T
    header = ["ply", "format binary_little_endian 1.0", "comment units: metres"]
    for comment in comments:
        if "\n" in comment or "\r" in comment or not comment.isascii():
            raise ValueError(f"a PLY comment is one ASCII line, not {comment!r}")
        header.append(f"comment {comment}")
    header.append(f"element vertex {len(points)}")
    header += [f"property {'float' if code == '<f4' else 'uchar'} {n}" for n, code in fields]
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
