"""Live capture from Intel RealSense depth cameras, and their .bag recordings, via Open3D.

Open3D's tensor IO wraps librealsense: ``open3d.t.io.RealSenseSensor`` streams a
connected camera and ``open3d.t.io.RSBagReader`` plays a recording. Both hand out
``open3d.t.geometry.RGBDImage`` frames whose depth (uint16) is aligned to the colour
camera, with an ``RGBDVideoMetadata`` giving the colour intrinsics and the depth scale
(units per metre). `RealSenseSource` turns those into `Frame` values: depth in metres,
RGB colour, the shared intrinsics.

RealSense cameras do not track their own pose. By default each frame's pose is
estimated relative to the first with Open3D's RGB-D odometry (hybrid photometric and
geometric term), chained frame to frame; a frame whose odometry fails is left out and
listed in ``Scan.metadata["dropped_frames"]``. With ``estimate_poses=False`` every pose
is the identity, which is right for a camera on a tripod.

`sensor_api` is the seam for tests: any object with ``RealSenseSensor``,
``RealSenseSensorConfig`` and ``RSBagReader`` behaving like ``open3d.t.io``'s.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from lidar_capture._errors import CaptureError, ScanFileError, SensorUnavailableError
from lidar_capture._types import Frame, Intrinsics, Scan

__all__ = ["DEFAULT_SENSOR_CONFIG", "RealSenseSource"]

#: Streams requested unless `config` says otherwise: RGB colour, 16-bit depth. Other
#: keys (``color_resolution``, ``depth_resolution``, ``fps``, ``visual_preset``,
#: ``serial``) follow ``open3d.t.io.RealSenseSensorConfig``.
DEFAULT_SENSOR_CONFIG: Mapping[str, str] = {
    "color_format": "RS2_FORMAT_RGB8",
    "depth_format": "RS2_FORMAT_Z16",
}

# Auto-exposure needs a few frames to settle after the stream starts; their colour
# would mislead odometry.
_WARMUP_FRAMES = 5
# capture_frame(wait=True) returns an empty image when librealsense times out; this
# many in a row means the camera has stopped.
_MAX_EMPTY_FRAMES = 3
# Odometry runs on depth up to this range (metres); wounds are scanned well within it.
_ODOMETRY_DEPTH_MAX = 3.0
# A hand-held camera at 30 fps moves far less than this between frames: a larger step
# means odometry converged on a wrong answer, so the frame is dropped.
_MAX_STEP_TRANSLATION_M = 0.10
_MAX_STEP_ROTATION_DEG = 20.0
# Open3D reports success even when nothing matched (a frame without depth): a
# registration also needs this many depth correspondences, and this share of the
# frame's pixels with depth.
_MIN_CORRESPONDENCES = 1000
_MIN_OVERLAP = 0.3

_COLOR_CHANNELS = {"RGB8": (0, 1, 2), "BGR8": (2, 1, 0), "RGBA8": (0, 1, 2), "BGRA8": (2, 1, 0)}


class RealSenseSource:
    """A `CaptureSource` for Intel RealSense depth cameras (D400, L500, SR300 ...).

    Args:
        frames: Frames per capture when `capture` is given no count (also the most
            read from a recording).
        device: The camera: its index among connected cameras (``"0"``) or its serial
            number.
        config: Stream settings for ``RealSenseSensorConfig``, over
            `DEFAULT_SENSOR_CONFIG`.
        bag: Read this RealSense ``.bag`` recording instead of a live camera.
        estimate_poses: Estimate poses with RGB-D odometry; otherwise all poses are the
            identity (camera on a tripod).
        sensor_api: Stand-in for ``open3d.t.io`` (tests); by default Open3D's.

    Raises:
        SensorUnavailableError: Open3D is missing or built without RealSense support.
        ScanFileError: `bag` does not exist.
    """

    name = "realsense"

    def __init__(
        self,
        *,
        frames: int = 10,
        device: str = "0",
        config: dict[str, str] | None = None,
        bag: str | Path | None = None,
        estimate_poses: bool = True,
        sensor_api: object | None = None,
    ) -> None:
        if frames < 1:
            raise ValueError("frames must be at least 1")
        self._frames = frames
        self._device = str(device)
        self._config = {**DEFAULT_SENSOR_CONFIG, **(config or {})}
        self._bag = Path(bag) if bag is not None else None
        self._estimate_poses = estimate_poses
        api: Any = sensor_api if sensor_api is not None else _open3d().t.io
        needed = "RSBagReader" if self._bag is not None else "RealSenseSensor"
        if not hasattr(api, needed):
            raise SensorUnavailableError(
                "this Open3D build has no RealSense support (open3d.t.io has no "
                f"{needed}); install an Open3D wheel built with librealsense"
            )
        self._api = api
        if self._bag is not None and not self._bag.is_file():
            problem = "not a file" if self._bag.exists() else "no such file"
            raise ScanFileError(self._bag, problem)

    def capture(self, max_frames: int | None = None) -> Scan:
        """Record `max_frames` frames (the constructor's `frames` when None).

        From a recording, returns its first frames, at most that many.

        Raises:
            SensorUnavailableError: No camera, or the camera cannot be configured.
            ScanFileError: The recording is missing, unreadable or empty.
            CaptureError: The camera stops delivering frames, or delivers a colour
                format or image size this source cannot use.
        """
        wanted = self._frames if max_frames is None else max_frames
        if wanted < 1:
            raise ValueError("max_frames must be at least 1")
        if self._bag is not None:
            raw, metadata, origin = self._read_bag(self._bag, wanted)
        else:
            raw, metadata, origin = self._read_live(wanted)

        intrinsics, depth_scale = _stream_geometry(metadata)
        color_format = str(metadata.color_format)
        depths: list[npt.NDArray[np.float32]] = []
        colors: list[npt.NDArray[np.uint8]] = []
        for depth_raw, color_raw, _ in raw:
            depth = _depth_metres(depth_raw, depth_scale)
            color = _rgb(color_raw, color_format)
            grid = (intrinsics.height, intrinsics.width)
            if depth.shape != grid or color.shape[:2] != grid:
                raise CaptureError(
                    f"RealSense frame is {color.shape[1]}x{color.shape[0]} colour and "
                    f"{depth.shape[1]}x{depth.shape[0]} depth, but the aligned stream is "
                    f"{intrinsics.width}x{intrinsics.height}"
                )
            depths.append(depth)
            colors.append(color)

        dropped: list[int] = []
        if self._estimate_poses:
            poses = _odometry_poses(depths, colors, intrinsics)
            dropped = [i for i, pose in enumerate(poses) if pose is None]
        else:
            poses = [np.eye(4) for _ in depths]
        frames = tuple(
            Frame(
                depth=depth,
                intrinsics=intrinsics,
                pose=pose,
                confidence=None,
                color=color,
                timestamp=timestamp,
            )
            for depth, color, (_, _, timestamp), pose in zip(
                depths, colors, raw, poses, strict=True
            )
            if pose is not None
        )
        return Scan(
            source="realsense",
            origin=origin,
            frames=frames,
            metadata={
                "device_name": str(metadata.device_name),
                "serial_number": str(metadata.serial_number),
                "depth_scale": depth_scale,
                "fps": float(metadata.fps),
                "pose_source": "rgbd_odometry" if self._estimate_poses else "identity",
                "dropped_frames": dropped,
                "recording": str(self._bag) if self._bag is not None else None,
            },
        )

    # --- live camera --------------------------------------------------------------

    def _read_live(self, wanted: int) -> tuple[list[_RawFrame], Any, str]:
        api = self._api
        sensor_class = api.RealSenseSensor
        try:
            devices = list(sensor_class.enumerate_devices())
        except RuntimeError as exc:
            raise SensorUnavailableError(f"cannot list RealSense cameras: {exc}") from exc
        if not devices:
            raise SensorUnavailableError("no RealSense camera is connected")
        index, device_info, by_serial = self._choose(devices)
        label = f"{device_info.name} (serial {device_info.serial})"
        config = dict(self._config)
        if by_serial:
            config["serial"] = self._device

        sensor = sensor_class()
        raw: list[_RawFrame] = []
        try:
            if not sensor.init_sensor(api.RealSenseSensorConfig(config), index, ""):
                raise SensorUnavailableError(
                    f"cannot configure RealSense camera {label} with {config}: check the "
                    "resolutions, formats and fps against the camera's valid configs"
                )
            if not sensor.start_capture(False):
                raise SensorUnavailableError(f"cannot start RealSense camera {label}")
            try:
                metadata = sensor.get_metadata()
                empty_in_a_row = 0
                skip = _WARMUP_FRAMES
                while len(raw) < wanted:
                    # Depth aligned to colour: one pixel grid, the colour intrinsics.
                    rgbd = sensor.capture_frame(True, True)
                    if rgbd.is_empty():
                        empty_in_a_row += 1
                        if empty_in_a_row >= _MAX_EMPTY_FRAMES:
                            raise CaptureError(
                                f"RealSense camera {label} stopped delivering frames "
                                f"after {len(raw)} of {wanted}"
                            )
                        continue
                    empty_in_a_row = 0
                    if skip:
                        skip -= 1
                        continue
                    raw.append(_raw_frame(rgbd, sensor.get_timestamp()))
            finally:
                sensor.stop_capture()
        except RuntimeError as exc:  # Open3D turns librealsense errors into RuntimeError
            raise CaptureError(f"RealSense camera {label}: {exc}") from exc
        return raw, metadata, str(metadata.device_name) or str(device_info.name)

    def _choose(self, devices: list[Any]) -> tuple[int, Any, bool]:
        """(index, device, chosen by serial): a serial match first, as serials are digits."""
        for index, device in enumerate(devices):
            if str(device.serial) == self._device:
                return index, device, True
        listing = ", ".join(f"[{i}] {d.name} (serial {d.serial})" for i, d in enumerate(devices))
        if self._device.isdigit() and int(self._device) < len(devices):
            return int(self._device), devices[int(self._device)], False
        what = "at index" if self._device.isdigit() else "with serial"
        raise SensorUnavailableError(
            f"no RealSense camera {what} {self._device}; connected: {listing}"
        )

    # --- recording ----------------------------------------------------------------

    def _read_bag(self, path: Path, wanted: int) -> tuple[list[_RawFrame], Any, str]:
        if not path.is_file():
            raise ScanFileError(path, "no such file")
        reader = self._api.RSBagReader()
        try:
            with _quiet():  # "Unable to open file": reported below with the path
                opened = reader.open(str(path))
        except RuntimeError as exc:
            raise ScanFileError(path, f"cannot play the recording: {exc}") from exc
        if not opened:
            with contextlib.suppress(RuntimeError):  # Open3D refuses to close what never opened
                reader.close()
            raise ScanFileError(
                path, "not a RealSense recording Open3D can play (it needs colour and depth)"
            )
        raw: list[_RawFrame] = []
        try:
            metadata = reader.metadata
            while len(raw) < wanted and not reader.is_eof():
                rgbd = reader.next_frame()
                if rgbd.is_empty():
                    break
                raw.append(_raw_frame(rgbd, reader.get_timestamp()))
        except RuntimeError as exc:
            raise ScanFileError(path, f"cannot read the recording: {exc}") from exc
        finally:
            reader.close()
        if not raw:
            raise ScanFileError(path, "the recording holds no frames")
        return raw, metadata, str(path)


# --- conversions ------------------------------------------------------------------------

_RawFrame = tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint8], float]
"""(depth in sensor units, colour as delivered, timestamp in seconds)."""


def _open3d() -> ModuleType:
    # Imported on first use: Open3D takes about half a second to import.
    try:
        import open3d
    except ImportError as exc:
        raise SensorUnavailableError(
            "RealSense capture needs Open3D (pip install 'coherency[capture]')"
        ) from exc
    return open3d


@contextmanager
def _quiet() -> Iterator[None]:
    """Keep Open3D's warnings off the console; failures are detected and reported."""
    o3d = _open3d()
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        yield


def _raw_frame(rgbd: Any, timestamp_us: int) -> _RawFrame:
    depth = np.asarray(rgbd.depth.as_tensor().numpy())
    color = np.asarray(rgbd.color.as_tensor().numpy())
    if depth.ndim == 3:
        depth = depth[..., 0]
    if depth.dtype != np.uint16 or color.dtype != np.uint8:
        raise CaptureError(
            f"RealSense frame has {depth.dtype} depth and {color.dtype} colour; "
            "expected 16-bit depth and 8-bit colour"
        )
    return depth.copy(), color.copy(), float(timestamp_us) / 1e6


def _stream_geometry(metadata: Any) -> tuple[Intrinsics, float]:
    """The aligned stream's intrinsics and depth scale (sensor units per metre)."""
    pinhole = metadata.intrinsics
    k = np.asarray(pinhole.intrinsic_matrix, dtype=np.float64)
    width, height = int(pinhole.width), int(pinhole.height)
    if width <= 0 or height <= 0 or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise CaptureError("RealSense metadata has no valid colour intrinsics")
    depth_scale = float(metadata.depth_scale)
    if not math.isfinite(depth_scale) or depth_scale <= 0:
        raise CaptureError(f"RealSense metadata has an invalid depth scale {depth_scale}")
    intrinsics = Intrinsics.from_matrix(k, width, height)
    return intrinsics, depth_scale


def _depth_metres(raw: npt.NDArray[np.uint16], depth_scale: float) -> npt.NDArray[np.float32]:
    """Sensor units to metres; 0 (no reading) stays 0."""
    return (raw.astype(np.float64) / depth_scale).astype(np.float32)


def _rgb(color: npt.NDArray[np.uint8], color_format: str) -> npt.NDArray[np.uint8]:
    if color_format == "Y8" or (color.ndim == 2 or color.shape[-1] == 1):
        gray = color.reshape(color.shape[0], color.shape[1])
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    channels = _COLOR_CHANNELS.get(color_format)
    if channels is None or color.ndim != 3 or color.shape[2] < 3:
        raise CaptureError(
            f"RealSense colour format {color_format or 'unknown'} is not supported; "
            "configure color_format RS2_FORMAT_RGB8"
        )
    return np.ascontiguousarray(color[..., list(channels)])


def _odometry_poses(
    depths: list[npt.NDArray[np.float32]],
    colors: list[npt.NDArray[np.uint8]],
    intrinsics: Intrinsics,
) -> list[npt.NDArray[np.float64] | None]:
    """Camera-to-world poses with the first frame as the world; None where odometry fails.

    Each frame is registered to the last frame that was kept, so one failure does not
    break the chain.
    """
    o3d = _open3d()
    odometry = o3d.pipelines.odometry
    pinhole = o3d.camera.PinholeCameraIntrinsic(
        intrinsics.width, intrinsics.height, intrinsics.fx, intrinsics.fy,
        intrinsics.cx, intrinsics.cy,
    )  # fmt: skip
    option = odometry.OdometryOption(depth_max=_ODOMETRY_DEPTH_MAX)
    jacobian = odometry.RGBDOdometryJacobianFromHybridTerm()

    def rgbd(index: int) -> Any:
        return o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(colors[index]),
            o3d.geometry.Image(depths[index]),
            depth_scale=1.0,
            depth_trunc=_ODOMETRY_DEPTH_MAX,
            convert_rgb_to_intensity=True,
        )

    poses: list[npt.NDArray[np.float64] | None] = [np.eye(4)]
    last = 0
    last_image = rgbd(0)
    with _quiet():
        for index in range(1, len(depths)):
            image = rgbd(index)
            try:
                success, step, information = odometry.compute_rgbd_odometry(
                    image, last_image, pinhole, np.eye(4), jacobian, option
                )
            except RuntimeError:
                success = False
            # The translation block of the information matrix counts correspondences.
            matched = float(np.asarray(information)[5, 5]) if success else 0.0
            with_depth = int(np.count_nonzero(depths[index] > 0))
            enough = matched >= max(_MIN_CORRESPONDENCES, _MIN_OVERLAP * with_depth)
            # `step` maps points from this camera into the last kept one: this camera's
            # pose in the last one's frame.
            if success and enough and _plausible_step(np.asarray(step)):
                last_pose = poses[last]
                assert last_pose is not None
                poses.append(last_pose @ np.asarray(step, dtype=np.float64))
                last, last_image = index, image
            else:
                poses.append(None)
    return poses


def _plausible_step(step: npt.NDArray[np.float64]) -> bool:
    if step.shape != (4, 4) or not np.all(np.isfinite(step)):
        return False
    cos_angle = (float(np.trace(step[:3, :3])) - 1.0) / 2.0
    angle = math.degrees(math.acos(max(-1.0, min(1.0, cos_angle))))
    return bool(
        np.linalg.norm(step[:3, 3]) <= _MAX_STEP_TRANSLATION_M and angle <= _MAX_STEP_ROTATION_DEG
    )
