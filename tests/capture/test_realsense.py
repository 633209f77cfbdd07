"""RealSenseSource against a fake ``open3d.t.io`` sensor API, and real Open3D odometry.

`FakeSensorAPI` stands in for ``open3d.t.io`` the way a machine with RealSense cameras
would look through it:

- ``RealSenseSensor.enumerate_devices()`` lists the connected cameras (name, serial,
  valid configs); ``init_sensor(config, index, filename)`` returns False for a config
  the camera cannot stream and raises RuntimeError for an index past the last camera
  (Open3D's LogError); ``capture_frame`` before ``start_capture`` raises RuntimeError,
  and returns an empty ``RGBDImage`` once the camera stops delivering.
- ``RSBagReader().open(path)`` returns False for anything but a known recording;
  ``next_frame`` returns an empty ``RGBDImage`` at the end, ``is_eof`` says so.
- Frames are real ``open3d.t.geometry.RGBDImage`` objects built from uint8 colour and
  uint16 depth tensors, and the metadata is a real ``open3d.t.io.RGBDVideoMetadata``
  (colour intrinsics, depth scale in units per metre, device name, formats).

The scene is rendered with numpy: a textured plane 0.5 m in front of the first camera,
seen from three slightly shifted positions (the last also turned by 1.5 degrees), with
enough texture for odometry to lock onto.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from lidar_capture._errors import CaptureError, ScanFileError, SensorUnavailableError
from lidar_capture._realsense import _WARMUP_FRAMES, DEFAULT_SENSOR_CONFIG, RealSenseSource
from lidar_capture._types import CaptureSource, Intrinsics

o3d = pytest.importorskip(
    "open3d", reason="RealSense cameras are read through Open3D (the capture-accel extra)"
)

W, H = 320, 240
K = Intrinsics(fx=300.0, fy=300.0, cx=159.5, cy=119.5, width=W, height=H)
PLANE_Z = 0.5


def camera_pose(
    translation: tuple[float, float, float], turn_deg: float = 0.0
) -> npt.NDArray[np.float64]:
    """Camera-to-world (world = the first camera), turned about the y axis."""
    a = math.radians(turn_deg)
    pose = np.eye(4)
    c, s = math.cos(a), math.sin(a)
    pose[:3, :3] = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    pose[:3, 3] = translation
    return pose


POSES = [
    camera_pose((0.0, 0.0, 0.0)),
    camera_pose((0.006, -0.004, 0.0)),
    camera_pose((0.012, 0.003, -0.008), turn_deg=1.5),
]

# Texture: smoothed noise over the plane, fine (3 mm) and coarse (15 mm) blobs, so every
# pyramid level of the odometry has detail and no two offsets look alike.
_TEXTURE_ORIGIN = (-0.4, -0.35)  # world x, y of texel (0, 0), metres; texels are 1 mm


def _blurred_noise(shape: tuple[int, int], sigmas: tuple[float, ...]) -> npt.NDArray[np.float64]:
    noise = np.random.default_rng(7).normal(size=(*shape, 3))
    fy = np.fft.fftfreq(shape[0])[:, None, None]
    fx = np.fft.fftfreq(shape[1])[None, :, None]
    spectrum = np.fft.fft2(noise, axes=(0, 1))
    total = np.zeros_like(noise)
    for weight, sigma in zip((1.0, 4.0), sigmas, strict=True):
        gaussian = np.exp(-2 * math.pi**2 * sigma**2 * (fx**2 + fy**2))
        total += weight * np.fft.ifft2(spectrum * gaussian, axes=(0, 1)).real
    result: npt.NDArray[np.float64] = 128 + 100 * total / np.abs(total).max()
    return result


_TEXTURE = _blurred_noise((700, 1100), (3.0, 15.0))


def texture(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    """Colour of the plane at world (x, y), sampled bilinearly."""
    col = np.clip((x - _TEXTURE_ORIGIN[0]) * 1000, 0, _TEXTURE.shape[1] - 1.001)
    row = np.clip((y - _TEXTURE_ORIGIN[1]) * 1000, 0, _TEXTURE.shape[0] - 1.001)
    r0, c0 = row.astype(int), col.astype(int)
    fr, fc = (row - r0)[..., None], (col - c0)[..., None]
    rgb = (
        _TEXTURE[r0, c0] * (1 - fr) * (1 - fc)
        + _TEXTURE[r0 + 1, c0] * fr * (1 - fc)
        + _TEXTURE[r0, c0 + 1] * (1 - fr) * fc
        + _TEXTURE[r0 + 1, c0 + 1] * fr * fc
    )
    colour: npt.NDArray[np.uint8] = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return colour


def render(
    pose: npt.NDArray[np.float64], depth_scale: float = 1000.0
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint16]]:
    """Colour and raw depth of the textured plane z = PLANE_Z seen from `pose`."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    rays = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u)], axis=-1)
    world_rays = rays @ pose[:3, :3].T
    # Distance along the optical axis, as the ray's camera z component is 1.
    z = (PLANE_Z - pose[2, 3]) / world_rays[..., 2]
    hit = pose[:3, 3] + z[..., None] * world_rays
    color = texture(hit[..., 0], hit[..., 1])
    depth = np.rint(z * depth_scale).astype(np.uint16)
    return color, depth


# --- the fake open3d.t.io ---------------------------------------------------------------


@dataclass
class Recorded:
    color: npt.NDArray[np.uint8]
    depth: npt.NDArray[np.uint16]
    timestamp_us: int

    def rgbd(self) -> o3d.t.geometry.RGBDImage:
        return o3d.t.geometry.RGBDImage(
            o3d.t.geometry.Image(o3d.core.Tensor.from_numpy(self.color)),
            o3d.t.geometry.Image(o3d.core.Tensor.from_numpy(self.depth)),
        )


@dataclass
class Camera:
    name: str
    serial: str
    frames: list[Recorded]
    depth_scale: float = 1000.0
    color_format: str = "RGB8"
    valid_configs: dict[str, set[str]] = field(
        default_factory=lambda: {
            "color_format": {"RS2_FORMAT_RGB8", "RS2_FORMAT_BGR8", "RS2_FORMAT_YUYV"},
            "color_resolution": {f"{W},{H}", "0,0"},
            "depth_format": {"RS2_FORMAT_Z16"},
            "depth_resolution": {f"{W},{H}", "0,0"},
            "fps": {"30", "0"},
        }
    )

    def metadata(self) -> o3d.t.io.RGBDVideoMetadata:
        m = o3d.t.io.RGBDVideoMetadata()
        m.intrinsics = o3d.camera.PinholeCameraIntrinsic(W, H, K.fx, K.fy, K.cx, K.cy)
        m.width, m.height = W, H
        m.depth_scale = self.depth_scale
        m.device_name = self.name
        m.serial_number = self.serial
        m.color_format = self.color_format
        m.depth_format = "Z16"
        m.color_channels = 3
        m.color_dt = o3d.core.uint8
        m.depth_dt = o3d.core.uint16
        m.fps = 30.0
        return m


_STANDARD_CONFIG = {
    "serial": "",
    "color_format": "RS2_FORMAT_ANY",
    "color_resolution": "0,0",
    "depth_format": "RS2_FORMAT_ANY",
    "depth_resolution": "0,0",
    "fps": "0",
    "visual_preset": "VISUAL_PRESET_DEFAULT",
}


class FakeSensorAPI:
    """``open3d.t.io`` on a machine with the given cameras and recordings."""

    def __init__(
        self, cameras: list[Camera], recordings: Mapping[str, Camera] | None = None
    ) -> None:
        self.cameras = cameras
        self.recordings = dict(recordings or {})
        self.sensors: list[Any] = []
        self.readers: list[Any] = []
        api = self

        class RealSenseSensorConfig:
            def __init__(self, config: Mapping[str, str] | None = None) -> None:
                self.config = {**_STANDARD_CONFIG, **(config or {})}

        class RealSenseSensor:
            @staticmethod
            def list_devices() -> bool:
                return bool(api.cameras)

            @staticmethod
            def enumerate_devices() -> list[SimpleNamespace]:
                return [
                    SimpleNamespace(name=c.name, serial=c.serial, valid_configs=c.valid_configs)
                    for c in api.cameras
                ]

            def __init__(self) -> None:
                self.camera: Camera | None = None
                self.config: dict[str, str] = {}
                self.capturing = False
                self.stopped = 0
                self.next = 0
                self.aligned: list[bool] = []
                api.sensors.append(self)

            def init_sensor(
                self,
                sensor_config: RealSenseSensorConfig | None = None,
                sensor_index: int = 0,
                filename: str = "",
            ) -> bool:
                config = (sensor_config or RealSenseSensorConfig()).config
                if config["serial"]:
                    matches = [c for c in api.cameras if c.serial == config["serial"]]
                    if not matches:
                        return False  # librealsense: no such device to resolve
                    camera = matches[0]
                elif sensor_index >= len(api.cameras):
                    raise RuntimeError(
                        f"[Open3D Error] No device for sensor_index {sensor_index}. "
                        f"Only {len(api.cameras)} devices detected."
                    )
                else:
                    camera = api.cameras[sensor_index]
                for key in ("color_format", "color_resolution", "depth_format", "fps"):
                    valid = camera.valid_configs[key] | {"RS2_FORMAT_ANY"}
                    if config[key] not in valid:
                        return False  # "Invalid RealSense camera configuration"
                self.camera, self.config = camera, config
                return True

            def start_capture(self, start_record: bool = False) -> bool:
                if self.camera is None:
                    self.camera = api.cameras[0]  # default device and settings
                self.capturing = True
                return True

            def capture_frame(
                self, wait: bool = True, align_depth_to_color: bool = True
            ) -> o3d.t.geometry.RGBDImage:
                if not self.capturing or self.camera is None:
                    raise RuntimeError("[Open3D Error] Please StartCapture() first.")
                self.aligned.append(align_depth_to_color)
                if self.next >= len(self.camera.frames):
                    return o3d.t.geometry.RGBDImage()  # wait timed out
                self.next += 1
                return self.camera.frames[self.next - 1].rgbd()

            def get_timestamp(self) -> int:
                assert self.camera is not None
                return self.camera.frames[self.next - 1].timestamp_us if self.next else 0

            def get_metadata(self) -> o3d.t.io.RGBDVideoMetadata:
                assert self.camera is not None
                return self.camera.metadata()

            def stop_capture(self) -> None:
                if self.capturing:
                    self.capturing = False
                    self.stopped += 1

        class RSBagReader:
            def __init__(self, buffer_size: int = 32) -> None:
                self.camera: Camera | None = None
                self.next = 0
                self.closed = False
                api.readers.append(self)

            def open(self, filename: str) -> bool:
                if filename not in api.recordings or not Path(filename).is_file():
                    return False  # "Unable to open file"
                self.camera, self.next = api.recordings[filename], 0
                return True

            def is_opened(self) -> bool:
                return self.camera is not None

            @property
            def metadata(self) -> o3d.t.io.RGBDVideoMetadata:
                return self.camera.metadata() if self.camera else o3d.t.io.RGBDVideoMetadata()

            def is_eof(self) -> bool:
                return self.camera is None or self.next >= len(self.camera.frames)

            def next_frame(self) -> o3d.t.geometry.RGBDImage:
                if self.camera is None:
                    raise RuntimeError("[Open3D Error] Null file handler. Please call Open().")
                if self.next >= len(self.camera.frames):
                    return o3d.t.geometry.RGBDImage()
                self.next += 1
                return self.camera.frames[self.next - 1].rgbd()

            def get_timestamp(self) -> int:
                if self.camera is None:
                    return 2**64 - 1  # UINT64_MAX, with a warning, when not opened
                return self.camera.frames[self.next - 1].timestamp_us if self.next else 0

            def close(self) -> None:
                self.camera = None
                self.closed = True

        self.RealSenseSensor = RealSenseSensor
        self.RealSenseSensorConfig = RealSenseSensorConfig
        self.RSBagReader = RSBagReader


def recorded(poses: list[npt.NDArray[np.float64]], depth_scale: float = 1000.0) -> list[Recorded]:
    frames = []
    for i, pose in enumerate(poses):
        color, depth = render(pose, depth_scale)
        frames.append(Recorded(color, depth, timestamp_us=1_000_000 + i * 33_333))
    return frames


def live_camera(poses: list[npt.NDArray[np.float64]], depth_scale: float = 1000.0) -> Camera:
    # The first frames after start are skipped while auto-exposure settles.
    warmup = [POSES[0]] * _WARMUP_FRAMES
    return Camera(
        "Intel RealSense D435",
        "843112071234",
        recorded(warmup + poses, depth_scale),
        depth_scale=depth_scale,
    )


@pytest.fixture(scope="module")
def scene_camera() -> Camera:
    return live_camera(POSES)


def assert_pose_close(pose: npt.NDArray[np.float64], expected: npt.NDArray[np.float64]) -> None:
    """Within 2 mm and 0.2 degrees."""
    assert float(np.linalg.norm(pose[:3, 3] - expected[:3, 3])) < 0.002
    relative = pose[:3, :3].T @ expected[:3, :3]
    angle = math.degrees(math.acos(min(1.0, (float(np.trace(relative)) - 1) / 2)))
    assert angle < 0.2
    np.testing.assert_allclose(pose[3], [0, 0, 0, 1])


# --- live camera ------------------------------------------------------------------------


def test_live_capture_estimates_the_known_shifts(scene_camera: Camera) -> None:
    api = FakeSensorAPI([scene_camera])
    source = RealSenseSource(frames=3, sensor_api=api)
    assert isinstance(source, CaptureSource)
    assert source.name == "realsense"
    scan = source.capture()
    assert scan.source == "realsense"
    assert scan.origin == "Intel RealSense D435"
    assert len(scan.frames) == 3
    assert scan.metadata["pose_source"] == "rgbd_odometry"
    assert scan.metadata["dropped_frames"] == []
    np.testing.assert_array_equal(scan.frames[0].pose, np.eye(4))
    for frame, expected in zip(scan.frames, POSES, strict=True):
        assert_pose_close(frame.pose, expected)
    (sensor,) = api.sensors
    assert sensor.stopped == 1
    assert all(sensor.aligned)  # depth aligned to colour, one grid


def test_poses_are_chained_frame_to_frame_over_a_long_sweep() -> None:
    # Turn 9 degrees, then slide 12.5 cm: far beyond what one registration to the
    # first frame could bridge, and the order of composition shows in the translation.
    poses = [camera_pose((0.0, 0.0, 0.0), 3.0 * k) for k in range(4)] + [
        camera_pose((0.025 * k, 0.002 * k, 0.0), 9.0) for k in range(1, 6)
    ]
    scan = RealSenseSource(
        frames=len(poses), sensor_api=FakeSensorAPI([live_camera(poses)])
    ).capture()
    assert scan.metadata["dropped_frames"] == []
    for frame, expected in zip(scan.frames, poses, strict=True):
        assert_pose_close(frame.pose, expected)


def test_frames_carry_depth_in_metres_colour_and_intrinsics(scene_camera: Camera) -> None:
    scan = RealSenseSource(frames=3, sensor_api=FakeSensorAPI([scene_camera])).capture()
    for frame, raw in zip(scan.frames, scene_camera.frames[_WARMUP_FRAMES:], strict=True):
        assert frame.depth.dtype == np.float32
        assert frame.depth.shape == (H, W)
        np.testing.assert_allclose(frame.depth, raw.depth / 1000.0, rtol=1e-6)
        assert frame.color is not None
        np.testing.assert_array_equal(frame.color, raw.color)
        assert frame.confidence is None
        assert frame.intrinsics == K
        assert frame.timestamp == pytest.approx(raw.timestamp_us / 1e6)
    np.testing.assert_allclose(scan.frames[0].depth, PLANE_Z)
    assert scan.metadata["depth_scale"] == 1000.0
    assert scan.metadata["serial_number"] == "843112071234"


def test_depth_scale_converts_sensor_units_to_metres() -> None:
    # A D405 counts depth in 0.1 mm: 10,000 units per metre.
    camera = live_camera([POSES[0]], depth_scale=10_000.0)
    camera.frames[-1].depth[:10, :10] = 0  # no reading stays no reading
    frame = (
        RealSenseSource(frames=1, estimate_poses=False, sensor_api=FakeSensorAPI([camera]))
        .capture()
        .frames[0]
    )
    assert int(camera.frames[-1].depth[50, 50]) == 5000
    assert float(frame.depth[50, 50]) == pytest.approx(0.5, abs=1e-7)
    assert (frame.depth[:10, :10] == 0).all()


def test_without_pose_estimation_every_pose_is_the_identity(scene_camera: Camera) -> None:
    scan = RealSenseSource(
        frames=3, estimate_poses=False, sensor_api=FakeSensorAPI([scene_camera])
    ).capture()
    assert scan.metadata["pose_source"] == "identity"
    for frame in scan.frames:
        np.testing.assert_array_equal(frame.pose, np.eye(4))


def test_frames_where_odometry_fails_are_dropped_and_noted() -> None:
    camera = live_camera([POSES[0], POSES[1], POSES[1], POSES[2]])
    camera.frames[_WARMUP_FRAMES + 2].depth[:] = 0  # a frame with no depth at all
    scan = RealSenseSource(frames=4, sensor_api=FakeSensorAPI([camera])).capture()
    assert scan.metadata["dropped_frames"] == [2]
    assert len(scan.frames) == 3
    # The chain continues past the dropped frame.
    assert_pose_close(scan.frames[2].pose, POSES[2])


def test_bgr_colour_is_returned_as_rgb() -> None:
    camera = live_camera([POSES[0]])
    camera.color_format = "BGR8"
    frame = (
        RealSenseSource(frames=1, estimate_poses=False, sensor_api=FakeSensorAPI([camera]))
        .capture()
        .frames[0]
    )
    assert frame.color is not None
    np.testing.assert_array_equal(frame.color, camera.frames[-1].color[..., ::-1])


def test_config_is_passed_over_the_defaults(scene_camera: Camera) -> None:
    api = FakeSensorAPI([scene_camera])
    RealSenseSource(
        frames=1,
        estimate_poses=False,
        config={"color_resolution": f"{W},{H}", "fps": "30"},
        sensor_api=api,
    ).capture()
    config = api.sensors[0].config
    assert config["color_format"] == DEFAULT_SENSOR_CONFIG["color_format"]
    assert config["depth_format"] == "RS2_FORMAT_Z16"
    assert config["color_resolution"] == f"{W},{H}"
    assert config["fps"] == "30"


def test_a_config_the_camera_cannot_stream_is_sensor_unavailable(scene_camera: Camera) -> None:
    api = FakeSensorAPI([scene_camera])
    source = RealSenseSource(frames=1, config={"fps": "90"}, sensor_api=api)
    with pytest.raises(SensorUnavailableError, match="cannot configure RealSense camera"):
        source.capture()


def test_camera_chosen_by_serial_or_index(scene_camera: Camera) -> None:
    other = Camera("Intel RealSense L515", "f0000001", scene_camera.frames)
    api = FakeSensorAPI([other, scene_camera])
    by_serial = RealSenseSource(
        frames=1, device="843112071234", estimate_poses=False, sensor_api=api
    ).capture()
    assert by_serial.origin == "Intel RealSense D435"
    assert api.sensors[-1].config["serial"] == "843112071234"
    by_index = RealSenseSource(frames=1, device="0", estimate_poses=False, sensor_api=api)
    assert by_index.capture().origin == "Intel RealSense L515"
    with pytest.raises(SensorUnavailableError, match=r"no RealSense camera at index 2.*\[1\]"):
        RealSenseSource(device="2", sensor_api=api).capture()
    with pytest.raises(SensorUnavailableError, match="no RealSense camera with serial f999"):
        RealSenseSource(device="f999", sensor_api=api).capture()


def test_camera_that_stops_delivering_is_a_capture_error_and_is_stopped() -> None:
    camera = live_camera([POSES[0]])  # one frame after warm-up, then nothing
    api = FakeSensorAPI([camera])
    with pytest.raises(CaptureError, match="stopped delivering frames after 1 of 3"):
        RealSenseSource(frames=3, sensor_api=api).capture()
    assert api.sensors[0].stopped == 1


def test_no_camera_is_sensor_unavailable() -> None:
    with pytest.raises(SensorUnavailableError, match="no RealSense camera is connected"):
        RealSenseSource(sensor_api=FakeSensorAPI([])).capture()


def test_real_open3d_without_a_camera_is_sensor_unavailable() -> None:
    # The installed Open3D: built with librealsense, and no camera on this machine.
    if not hasattr(o3d.t.io, "RealSenseSensor"):
        pytest.skip("this Open3D build has no RealSense support")
    if o3d.t.io.RealSenseSensor.enumerate_devices():
        pytest.skip("a RealSense camera is connected")
    with pytest.raises(SensorUnavailableError, match="no RealSense camera"):
        RealSenseSource().capture()


def test_open3d_without_realsense_support_is_sensor_unavailable() -> None:
    without = SimpleNamespace(read_image=o3d.t.io.read_image)
    with pytest.raises(SensorUnavailableError, match="no RealSense support"):
        RealSenseSource(sensor_api=without)


# --- recordings -------------------------------------------------------------------------


def test_bag_recording_is_read(tmp_path: Path, scene_camera: Camera) -> None:
    bag = tmp_path / "wound.bag"
    bag.write_bytes(b"#ROSBAG V2.0\n")
    recording = Camera("Intel RealSense D415", "7", scene_camera.frames[_WARMUP_FRAMES:])
    api = FakeSensorAPI([], recordings={str(bag): recording})
    scan = RealSenseSource(bag=bag, sensor_api=api).capture()
    assert scan.origin == str(bag)
    assert scan.metadata["device_name"] == "Intel RealSense D415"
    assert scan.metadata["recording"] == str(bag)
    assert len(scan.frames) == 3  # the whole recording: fewer than `frames`
    for frame, expected in zip(scan.frames, POSES, strict=True):
        assert_pose_close(frame.pose, expected)
    assert api.readers[0].closed
    limited = RealSenseSource(bag=bag, sensor_api=api).capture(max_frames=2)
    assert len(limited.frames) == 2


def test_missing_bag_is_a_scan_file_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bag"
    with pytest.raises(ScanFileError, match=r"nope\.bag: no such file") as info:
        RealSenseSource(bag=missing, sensor_api=FakeSensorAPI([]))
    assert info.value.path == str(missing)
    with pytest.raises(ScanFileError, match="not a file"):
        RealSenseSource(bag=tmp_path, sensor_api=FakeSensorAPI([]))


def test_file_that_is_not_a_recording_is_a_scan_file_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bag"
    junk.write_bytes(b"not a bag")
    with pytest.raises(ScanFileError, match=r"junk\.bag: not a RealSense recording"):
        RealSenseSource(bag=junk, sensor_api=FakeSensorAPI([])).capture()


def test_real_open3d_refuses_a_file_that_is_not_a_recording(tmp_path: Path) -> None:
    if not hasattr(o3d.t.io, "RSBagReader"):
        pytest.skip("this Open3D build has no RealSense support")
    junk = tmp_path / "junk.bag"
    junk.write_bytes(b"not a bag")
    with pytest.raises(ScanFileError, match=r"junk\.bag: not a RealSense recording"):
        RealSenseSource(bag=junk).capture()


def test_empty_recording_is_a_scan_file_error(tmp_path: Path) -> None:
    bag = tmp_path / "empty.bag"
    bag.write_bytes(b"#ROSBAG V2.0\n")
    api = FakeSensorAPI([], recordings={str(bag): Camera("D435", "1", [])})
    with pytest.raises(ScanFileError, match="holds no frames"):
        RealSenseSource(bag=bag, sensor_api=api).capture()
