"""ARKitSource against a fake iOS: ARKit objects, CoreVideo pixel buffers, simd getters.

`FakeARKit` is an `ARKitPlatform` that behaves like an iPhone with LiDAR as far as
`ARKitSource` can tell:

- Objective-C objects answer the same selectors and properties as ARKit's
  (``ARSession.alloc().init()``, ``runWithConfiguration_``, ``currentFrame``,
  ``ARWorldTrackingConfiguration.supportsFrameSemantics_`` ...). ARKit classes exist
  only once ARKit.framework is loaded, and the simd properties ``intrinsics`` and
  ``transform`` cannot be read as pyobjus attributes, only through the simd getters.
- Pixel buffers are real memory (ctypes arrays) in ARKit's formats: ``fdep`` float32
  depth, ``L008`` confidence, and bi-planar ``420f`` YCbCr with an interleaved CbCr
  plane. Rows are padded past the pixels with junk bytes, as CoreVideo pads them. Base
  addresses are NULL unless the buffer is locked, and unlock flags must match.
- simd matrices are stored column-major with padded columns (48 and 64 bytes).
- The session delivers one new frame every second poll, so the source sees every frame
  twice, as it does when polling faster than ARKit's 60 Hz.

The scene is rendered straight into those buffers: a slightly tilted plane 0.3 m away,
a confidence pattern, colour bands and a colour gradient, a known camera.
"""

from __future__ import annotations

import ctypes
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from lidar_capture._arkit import (
    AR_FRAME_SEMANTIC_SCENE_DEPTH,
    AR_FRAME_SEMANTIC_SMOOTHED_SCENE_DEPTH,
    AR_TRACKING_STATE_NORMAL,
    ARKIT_FRAMEWORK,
    CV_PIXEL_BUFFER_LOCK_READ_ONLY,
    CV_RETURN_SUCCESS,
    PIXEL_FORMAT_420_FULL_RANGE,
    PIXEL_FORMAT_DEPTH_FLOAT32,
    PIXEL_FORMAT_ONE_COMPONENT8,
    ARKitPlatform,
    ARKitSource,
    SimdFloat3x3,
    SimdFloat4x4,
    _low_lanes_match,
    fourcc,
)
from lidar_capture._errors import CaptureError, SensorUnavailableError
from lidar_capture._types import CaptureSource, Intrinsics

CV_RETURN_INVALID_ARGUMENT = -6661

DEPTH_W, DEPTH_H = 256, 192
IMAGE_W, IMAGE_H = 1920, 1440
DEPTH_ROW_BYTES = DEPTH_W * 4 + 64  # CoreVideo pads rows; the padding holds junk
CONFIDENCE_ROW_BYTES = DEPTH_W + 48
LUMA_ROW_BYTES = IMAGE_W + 64
CHROMA_ROW_BYTES = IMAGE_W + 128

IMAGE_K = Intrinsics(fx=1452.5, fy=1451.0, cx=961.25, cy=718.75, width=IMAGE_W, height=IMAGE_H)

BANDS = [(200, 30, 40), (20, 180, 60), (30, 60, 220), (128, 128, 128)]


# --- CoreVideo ------------------------------------------------------------------------


class FakePixelBuffer:
    """A CVPixelBuffer: each plane's rows in real memory, `bytes_per_row` apart."""

    def __init__(
        self,
        pixel_format: int,
        planes: list[tuple[npt.NDArray[np.uint8], int, int]],
        *,
        planar: bool,
    ) -> None:
        # planes: (pixel bytes (h, row_bytes), width in pixels, bytes_per_row)
        self.pixel_format = pixel_format
        self.planar = planar
        self.memory: list[Any] = []
        self.widths: list[int] = []
        self.heights: list[int] = []
        self.bytes_per_row: list[int] = []
        for data, width, bytes_per_row in planes:
            height, row_bytes = data.shape
            assert bytes_per_row >= row_bytes
            memory = (ctypes.c_uint8 * (bytes_per_row * height))()
            rows = np.frombuffer(memory, dtype=np.uint8).reshape(height, bytes_per_row)
            rows[:] = 0xFF  # junk in the padding: as float32 it reads as NaN
            rows[:, :row_bytes] = data
            self.memory.append(memory)
            self.widths.append(width)
            self.heights.append(height)
            self.bytes_per_row.append(bytes_per_row)
        # A planar buffer's base address points at a CVPlanarPixelBufferInfo header,
        # not at pixels.
        self.header = (ctypes.c_uint8 * 16)(*([0x7F] * 16))
        self.lock_count = 0
        self.lock_flags: list[int] = []
        self.unlocks = 0

    def address(self, plane: int) -> int:
        return ctypes.addressof(self.memory[plane])


def depth_buffer(depth: npt.NDArray[np.float32], bytes_per_row: int = DEPTH_ROW_BYTES) -> Any:
    raw = np.ascontiguousarray(depth, dtype="<f4").view(np.uint8).reshape(depth.shape[0], -1)
    return FakePixelBuffer(
        PIXEL_FORMAT_DEPTH_FLOAT32, [(raw, depth.shape[1], bytes_per_row)], planar=False
    )


def confidence_buffer(confidence: npt.NDArray[np.uint8], pixel_format: int = 0) -> Any:
    return FakePixelBuffer(
        pixel_format or PIXEL_FORMAT_ONE_COMPONENT8,
        [(confidence, confidence.shape[1], CONFIDENCE_ROW_BYTES)],
        planar=False,
    )


def image_buffer(rgb_half: npt.NDArray[np.uint8]) -> Any:
    """A '420f' buffer whose every 2x2 luma block and its CbCr pair encode `rgb_half`."""
    rgb = rgb_half.astype(np.float64)
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    cb = 128.0 + (rgb[..., 2] - y) / 1.772
    cr = 128.0 + (rgb[..., 0] - y) / 1.402

    def to_u8(a: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
        return np.clip(np.rint(a), 0, 255).astype(np.uint8)

    luma = np.repeat(np.repeat(to_u8(y), 2, axis=0), 2, axis=1)
    chroma = np.stack([to_u8(cb), to_u8(cr)], axis=-1).reshape(rgb.shape[0], -1)
    return FakePixelBuffer(
        PIXEL_FORMAT_420_FULL_RANGE,
        [
            (luma, luma.shape[1], LUMA_ROW_BYTES),
            (chroma, rgb.shape[1], CHROMA_ROW_BYTES),
        ],
        planar=True,
    )


# --- ARKit objects ----------------------------------------------------------------------


@dataclass
class FakeARDepthData:
    depthMap: Any
    confidenceMap: Any


class FakeARCamera:
    """ARCamera: trackingState as a property; intrinsics/transform only via simd getters."""

    def __init__(self, intrinsics: SimdFloat3x3, transform: SimdFloat4x4, tracking: int) -> None:
        self.trackingState = tracking
        self._simd: dict[str, ctypes.Structure] = {
            "intrinsics": intrinsics,
            "transform": transform,
        }

    def __getattr__(self, name: str) -> Any:
        if name in ("intrinsics", "transform", "projectionMatrix"):
            # What pyobjus does with a property whose type encoding is {?=[4]}.
            raise TypeError(f"pyobjus cannot convert the simd property {name}")
        raise AttributeError(name)


@dataclass
class FakeARFrame:
    timestamp: float
    camera: FakeARCamera
    capturedImage: Any
    sceneDepth: FakeARDepthData | None
    smoothedSceneDepth: FakeARDepthData | None = None


@dataclass
class DeviceState:
    frames: list[FakeARFrame]
    semantics: set[int]
    polls_per_frame: int = 2
    running: bool = False
    runs: list[int] = field(default_factory=list)
    pauses: int = 0
    polls: int = 0


class FakeARSession:
    device: DeviceState

    @classmethod
    def alloc(cls) -> FakeARSession:
        return cls()

    def init(self) -> FakeARSession:
        return self

    def runWithConfiguration_(self, config: FakeARWorldTrackingConfiguration) -> None:
        self.device.running = True
        self.device.runs.append(config.frameSemantics)

    def pause(self) -> None:
        self.device.running = False
        self.device.pauses += 1

    @property
    def currentFrame(self) -> FakeARFrame | None:
        device = self.device
        if not device.running or not device.frames:
            return None
        index = min(device.polls // device.polls_per_frame, len(device.frames) - 1)
        return device.frames[index]


class FakeARWorldTrackingConfiguration:
    device: DeviceState

    def __init__(self) -> None:
        self.frameSemantics = 0

    @classmethod
    def alloc(cls) -> FakeARWorldTrackingConfiguration:
        return cls()

    def init(self) -> FakeARWorldTrackingConfiguration:
        return self

    @classmethod
    def supportsFrameSemantics_(cls, semantics: int) -> bool:
        return all(semantics & bit == 0 or bit in cls.device.semantics for bit in (8, 16))

    def setFrameSemantics_(self, semantics: int) -> None:
        self.frameSemantics = semantics


class FakeARKit:
    """An `ARKitPlatform` for an iPhone with (or without) LiDAR."""

    def __init__(self, frames: list[FakeARFrame], *, lidar: bool = True) -> None:
        semantics = (
            {AR_FRAME_SEMANTIC_SCENE_DEPTH, AR_FRAME_SEMANTIC_SMOOTHED_SCENE_DEPTH}
            if lidar
            else set()
        )
        self.device = DeviceState(frames=frames, semantics=semantics)
        self.loaded: set[str] = set()
        self.classes = {
            "ARSession": type("ARSession", (FakeARSession,), {"device": self.device}),
            "ARWorldTrackingConfiguration": type(
                "ARWorldTrackingConfiguration",
                (FakeARWorldTrackingConfiguration,),
                {"device": self.device},
            ),
        }
        self.buffers_seen: set[int] = set()

    # --- pyobjus ------------------------------------------------------------------

    def load_framework(self, path: str) -> None:
        self.loaded.add(path)

    def autoclass(self, name: str) -> Any:
        if ARKIT_FRAMEWORK not in self.loaded or name not in self.classes:
            raise SensorUnavailableError(f"ARKit class {name} is not available")
        return self.classes[name]

    def simd_float3x3(self, obj: Any, selector: str) -> SimdFloat3x3:
        return SimdFloat3x3.from_buffer_copy(obj._simd[selector])

    def simd_float4x4(self, obj: Any, selector: str) -> SimdFloat4x4:
        return SimdFloat4x4.from_buffer_copy(obj._simd[selector])

    # --- CoreVideo ----------------------------------------------------------------

    def _buffer(self, buffer: Any) -> FakePixelBuffer:
        assert isinstance(buffer, FakePixelBuffer), f"not a CVPixelBufferRef: {buffer!r}"
        self.buffers_seen.add(id(buffer))
        return buffer

    def cv_pixel_buffer_lock_base_address(self, buffer: Any, flags: int) -> int:
        b = self._buffer(buffer)
        b.lock_count += 1
        b.lock_flags.append(flags)
        return CV_RETURN_SUCCESS

    def cv_pixel_buffer_unlock_base_address(self, buffer: Any, flags: int) -> int:
        b = self._buffer(buffer)
        if b.lock_count == 0 or flags != b.lock_flags[-1]:
            return CV_RETURN_INVALID_ARGUMENT
        b.lock_count -= 1
        b.unlocks += 1
        return CV_RETURN_SUCCESS

    def cv_pixel_buffer_get_pixel_format_type(self, buffer: Any) -> int:
        return self._buffer(buffer).pixel_format

    def cv_pixel_buffer_get_width(self, buffer: Any) -> int:
        return self._buffer(buffer).widths[0]

    def cv_pixel_buffer_get_height(self, buffer: Any) -> int:
        return self._buffer(buffer).heights[0]

    def cv_pixel_buffer_get_bytes_per_row(self, buffer: Any) -> int:
        b = self._buffer(buffer)
        return 0 if b.planar else b.bytes_per_row[0]

    def cv_pixel_buffer_get_base_address(self, buffer: Any) -> int | None:
        b = self._buffer(buffer)
        if not b.lock_count:
            return None
        return ctypes.addressof(b.header) if b.planar else b.address(0)

    def _plane(self, buffer: Any, plane: int) -> FakePixelBuffer | None:
        b = self._buffer(buffer)
        return b if b.planar and 0 <= plane < len(b.memory) else None

    def cv_pixel_buffer_get_width_of_plane(self, buffer: Any, plane: int) -> int:
        b = self._plane(buffer, plane)
        return b.widths[plane] if b else 0

    def cv_pixel_buffer_get_height_of_plane(self, buffer: Any, plane: int) -> int:
        b = self._plane(buffer, plane)
        return b.heights[plane] if b else 0

    def cv_pixel_buffer_get_bytes_per_row_of_plane(self, buffer: Any, plane: int) -> int:
        b = self._plane(buffer, plane)
        return b.bytes_per_row[plane] if b else 0

    def cv_pixel_buffer_get_base_address_of_plane(self, buffer: Any, plane: int) -> int | None:
        b = self._plane(buffer, plane)
        return b.address(plane) if b and b.lock_count else None

    # --- the rest -----------------------------------------------------------------

    def wait(self, seconds: float) -> None:
        self.device.polls += 1
        time.sleep(seconds)

    def device_model(self) -> str | None:
        return "iPhone13,4"


# --- the scene --------------------------------------------------------------------------


def plane_depth() -> npt.NDArray[np.float32]:
    v, u = np.mgrid[0:DEPTH_H, 0:DEPTH_W]
    depth: npt.NDArray[np.float32] = (
        0.3 + 0.0004 * (v - DEPTH_H / 2) + 0.0002 * (u - DEPTH_W / 2)
    ).astype(np.float32)
    return depth


def confidence_pattern() -> npt.NDArray[np.uint8]:
    v, u = np.mgrid[0:DEPTH_H, 0:DEPTH_W]
    confidence: npt.NDArray[np.uint8] = ((u // 16 + v // 16) % 3).astype(np.uint8)
    return confidence


def colour_half() -> npt.NDArray[np.uint8]:
    """960x720 RGB: four solid bands on top, a red/green gradient below."""
    h, w = IMAGE_H // 2, IMAGE_W // 2
    rgb = np.zeros((h, w, 3), dtype=np.uint8)
    for i, colour in enumerate(BANDS):
        rgb[: h // 2, i * w // 4 : (i + 1) * w // 4] = colour
    v, u = np.mgrid[h // 2 : h, 0:w]
    rgb[h // 2 :, :, 0] = (u * 255 // (w - 1)).astype(np.uint8)
    rgb[h // 2 :, :, 1] = ((v - h // 2) * 255 // (h - h // 2 - 1)).astype(np.uint8)
    rgb[h // 2 :, :, 2] = 90
    return rgb


def simd3x3(m: npt.NDArray[np.float64]) -> SimdFloat3x3:
    s = SimdFloat3x3()
    for c in range(3):
        for r in range(3):
            s.columns[c][r] = m[r, c]
    return s


def simd4x4(m: npt.NDArray[np.float64]) -> SimdFloat4x4:
    s = SimdFloat4x4()
    for c in range(4):
        for r in range(4):
            s.columns[c][r] = m[r, c]
    return s


def rotation(axis_angle: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    w = np.asarray(axis_angle, dtype=np.float64)
    theta = float(np.linalg.norm(w))
    k = w / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    r: npt.NDArray[np.float64] = np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx
    return r


def arkit_transform(index: int) -> npt.NDArray[np.float64]:
    """Camera-to-world in ARKit axes (x right, y up, z backward), a little different per frame."""
    t = np.eye(4)
    t[:3, :3] = rotation((0.3 + 0.01 * index, -0.2, 0.1))
    t[:3, 3] = (0.1 + 0.002 * index, 1.2, -0.4)
    return t


@dataclass
class Scene:
    depth: npt.NDArray[np.float32] = field(default_factory=plane_depth)
    confidence: npt.NDArray[np.uint8] = field(default_factory=confidence_pattern)
    colour: npt.NDArray[np.uint8] = field(default_factory=colour_half)

    def __post_init__(self) -> None:
        # The buffers are shared between frames: building a 1920x1440 image per frame
        # would only slow the tests down.
        self.depth_map = depth_buffer(self.depth)
        self.confidence_map = confidence_buffer(self.confidence)
        self.image = image_buffer(self.colour)

    def frame(
        self,
        index: int,
        *,
        timestamp: float | None = None,
        tracking: int = AR_TRACKING_STATE_NORMAL,
        depth: bool = True,
    ) -> FakeARFrame:
        depth_data = FakeARDepthData(self.depth_map, self.confidence_map) if depth else None
        return FakeARFrame(
            timestamp=100.0 + index / 60 if timestamp is None else timestamp,
            camera=FakeARCamera(
                simd3x3(IMAGE_K.matrix()), simd4x4(arkit_transform(index)), tracking
            ),
            capturedImage=self.image,
            sceneDepth=depth_data,
            smoothedSceneDepth=depth_data,
        )

    def buffers(self) -> list[FakePixelBuffer]:
        return [self.depth_map, self.confidence_map, self.image]


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene()


@pytest.fixture(autouse=True)
def _reset_locks(scene: Scene) -> None:
    for b in scene.buffers():
        b.lock_count, b.unlocks = 0, 0
        b.lock_flags.clear()


def capture(fake: FakeARKit, n: int, **kwargs: Any) -> Any:
    with ARKitSource(frames=n, platform=fake, **kwargs) as source:
        return source.capture()


# --- what comes out ---------------------------------------------------------------------


def test_capture_returns_the_frames_with_metadata(scene: Scene) -> None:
    fake = FakeARKit([scene.frame(i) for i in range(3)])
    source = ARKitSource(frames=3, platform=fake)
    assert isinstance(source, CaptureSource)
    assert source.name == "arkit"
    scan = source.capture()
    assert scan.source == "arkit"
    assert scan.origin == "iPhone13,4"
    assert len(scan.frames) == 3
    assert [f.timestamp for f in scan.frames] == [100.0, 100.0 + 1 / 60, 100.0 + 2 / 60]
    assert scan.metadata["frame_semantics"] == "sceneDepth"
    assert fake.device.runs == [AR_FRAME_SEMANTIC_SCENE_DEPTH]


def test_depth_and_confidence_come_out_exactly_despite_row_padding(scene: Scene) -> None:
    frame = capture(FakeARKit([scene.frame(0)]), 1).frames[0]
    assert frame.depth.dtype == np.float32
    assert frame.depth.shape == (DEPTH_H, DEPTH_W)
    # The padding bytes read as NaN: any of them leaking in would show here.
    np.testing.assert_array_equal(frame.depth, scene.depth)
    assert abs(float(frame.depth[0, 0]) - (0.3 - 0.0004 * 96 - 0.0002 * 128)) < 1e-6
    assert frame.confidence is not None
    assert frame.confidence.dtype == np.uint8
    np.testing.assert_array_equal(frame.confidence, scene.confidence)


def test_ycbcr_converts_to_the_known_colours(scene: Scene) -> None:
    frame = capture(FakeARKit([scene.frame(0)]), 1).frames[0]
    assert frame.color is not None
    assert frame.color.shape == (IMAGE_H // 2, IMAGE_W // 2, 3)
    assert frame.color.dtype == np.uint8
    h, w = IMAGE_H // 2, IMAGE_W // 2
    for i, colour in enumerate(BANDS):
        centre = frame.color[h // 4, i * w // 4 + w // 8]
        np.testing.assert_allclose(centre.astype(int), colour, atol=2)
    # The gradient, everywhere: red grows to the right, green downwards.
    error = np.abs(frame.color.astype(int) - scene.colour.astype(int))
    assert error.max() <= 2


def test_video_range_is_expanded() -> None:
    from lidar_capture._arkit import ycbcr420_to_rgb_half

    # '420v' white is Y=235, black Y=16, with neutral chroma.
    luma = np.array([[235, 235, 16, 16], [235, 235, 16, 16]], dtype=np.uint8)
    chroma = np.array([[128, 128, 128, 128]], dtype=np.uint8)
    rgb = ycbcr420_to_rgb_half(luma, chroma, full_range=False)
    np.testing.assert_array_equal(rgb, [[[255, 255, 255], [0, 0, 0]]])


def test_intrinsics_are_scaled_from_the_image_to_the_depth_grid(scene: Scene) -> None:
    k = capture(FakeARKit([scene.frame(0)]), 1).frames[0].intrinsics
    assert (k.width, k.height) == (DEPTH_W, DEPTH_H)
    s = DEPTH_W / IMAGE_W
    assert k.fx == pytest.approx(1452.5 * s)
    assert k.fy == pytest.approx(1451.0 * s)
    assert k.cx == pytest.approx((961.25 + 0.5) * s - 0.5)
    assert k.cy == pytest.approx((718.75 + 0.5) * s - 0.5)
    back = k.scaled(IMAGE_W, IMAGE_H)
    assert (back.fx, back.cx, back.cy) == pytest.approx((1452.5, 961.25, 718.75))


def test_pose_projects_a_known_world_point_where_arkit_sees_it(scene: Scene) -> None:
    frames = capture(FakeARKit([scene.frame(i) for i in range(2)]), 2).frames
    for index, frame in enumerate(frames):
        transform = arkit_transform(index)
        # A point 0.3 m in front of the camera (ARKit looks down -z), up and to the right.
        in_arkit_camera = np.array([0.02, 0.01, -0.3, 1.0])
        world = transform @ in_arkit_camera
        # Where ARKit's own convention puts it in the captured image: y up, so v shrinks.
        expected_u = IMAGE_K.cx + IMAGE_K.fx * 0.02 / 0.3
        expected_v = IMAGE_K.cy - IMAGE_K.fy * 0.01 / 0.3

        camera = np.linalg.inv(frame.pose) @ world  # OpenCV axes: x right, y down, z fwd
        assert camera[2] == pytest.approx(0.3, abs=1e-5)
        k = frame.intrinsics.scaled(IMAGE_W, IMAGE_H)
        u = k.fx * camera[0] / camera[2] + k.cx
        v = k.fy * camera[1] / camera[2] + k.cy
        assert u == pytest.approx(expected_u, abs=1e-2)
        assert v == pytest.approx(expected_v, abs=1e-2)
        np.testing.assert_allclose(frame.pose[3], [0, 0, 0, 1])
        np.testing.assert_allclose(frame.pose[:3, :3].T @ frame.pose[:3, :3], np.eye(3), atol=1e-6)


def test_smoothed_depth_uses_the_smoothed_semantic(scene: Scene) -> None:
    frame = scene.frame(0)
    frame.sceneDepth = None  # only the smoothed depth is there
    fake = FakeARKit([frame])
    scan = capture(fake, 1, smoothed=True)
    assert fake.device.runs == [AR_FRAME_SEMANTIC_SMOOTHED_SCENE_DEPTH]
    assert scan.metadata["frame_semantics"] == "smoothedSceneDepth"
    np.testing.assert_array_equal(scan.frames[0].depth, scene.depth)


# --- buffers and session are always released --------------------------------------------


def test_buffers_are_locked_read_only_and_unlocked(scene: Scene) -> None:
    capture(FakeARKit([scene.frame(i) for i in range(3)]), 3)
    for b in scene.buffers():
        assert b.lock_flags == [CV_PIXEL_BUFFER_LOCK_READ_ONLY] * 3
        assert b.lock_count == 0
        assert b.unlocks == 3


def test_buffer_is_unlocked_and_session_paused_when_conversion_fails(scene: Scene) -> None:
    wrong = confidence_buffer(scene.confidence, pixel_format=fourcc("L016"))
    frame = scene.frame(0)
    frame.sceneDepth = FakeARDepthData(scene.depth_map, wrong)
    fake = FakeARKit([frame])
    with pytest.raises(CaptureError, match="confidence map has pixel format 'L016'"):
        capture(fake, 1)
    assert wrong.lock_flags == [CV_PIXEL_BUFFER_LOCK_READ_ONLY]
    assert wrong.lock_count == 0
    assert scene.depth_map.lock_count == 0
    assert fake.device.pauses >= 1
    assert not fake.device.running


def test_session_is_paused_after_capture_and_can_run_again(scene: Scene) -> None:
    fake = FakeARKit([scene.frame(i) for i in range(4)])
    source = ARKitSource(frames=2, platform=fake)
    source.capture()
    assert not fake.device.running
    assert fake.device.pauses == 1
    second = source.capture()
    assert fake.device.pauses == 2
    assert len(second.frames) == 2
    source.close()
    with pytest.raises(CaptureError, match="closed"):
        source.capture()


# --- which frames count -----------------------------------------------------------------


def test_repeated_frames_are_read_once(scene: Scene) -> None:
    same = scene.frame(0, timestamp=7.0)
    fake = FakeARKit([same, same, same, scene.frame(1, timestamp=7.5)])
    scan = capture(fake, 2)
    assert [f.timestamp for f in scan.frames] == [7.0, 7.5]
    # Each frame converted once: one lock per buffer per distinct frame.
    assert scene.depth_map.lock_flags == [CV_PIXEL_BUFFER_LOCK_READ_ONLY] * 2


def test_frames_with_limited_tracking_or_no_depth_are_skipped(scene: Scene) -> None:
    fake = FakeARKit(
        [
            scene.frame(0, depth=False),
            scene.frame(1, tracking=1),
            scene.frame(2),
            scene.frame(3),
        ]
    )
    scan = capture(fake, 2)
    assert [f.timestamp for f in scan.frames] == [100.0 + 2 / 60, 100.0 + 3 / 60]
    assert scan.metadata["skipped_limited_tracking"] == 1
    assert scan.metadata["skipped_without_depth"] == 1


def test_no_depth_within_the_timeout_is_sensor_unavailable(scene: Scene) -> None:
    fake = FakeARKit([scene.frame(i, depth=False) for i in range(3)])
    started = time.monotonic()
    with pytest.raises(SensorUnavailableError, match=r"no depth frame within 0\.1 s"):
        capture(fake, 2, timeout_s=0.1)
    assert time.monotonic() - started < 2.0
    assert not fake.device.running


def test_too_few_frames_within_the_timeout_is_a_capture_error(scene: Scene) -> None:
    fake = FakeARKit([scene.frame(0), scene.frame(1)])  # then the camera stalls
    with pytest.raises(CaptureError, match=r"delivered 2 of 5 depth frames within 0\.1 s"):
        capture(fake, 5, timeout_s=0.1)
    assert not fake.device.running


def test_device_without_lidar_is_sensor_unavailable(scene: Scene) -> None:
    fake = FakeARKit([scene.frame(0)], lidar=False)
    with pytest.raises(SensorUnavailableError, match="no LiDAR scene depth"):
        capture(fake, 1)
    assert fake.device.runs == []


def test_max_frames_overrides_the_default(scene: Scene) -> None:
    fake = FakeARKit([scene.frame(i) for i in range(5)])
    scan = ARKitSource(frames=5, platform=fake).capture(max_frames=2)
    assert len(scan.frames) == 2


# --- the real platform ------------------------------------------------------------------


@pytest.mark.skipif(sys.platform in ("darwin", "ios"), reason="tests the non-Apple refusal")
def test_without_ios_and_pyobjus_it_is_sensor_unavailable() -> None:
    with pytest.raises(SensorUnavailableError, match="ARKit needs iOS with pyobjus"):
        ARKitSource()


def test_fake_satisfies_the_platform_protocol(scene: Scene) -> None:
    fake: ARKitPlatform = FakeARKit([scene.frame(0)])
    assert fake.device_model() == "iPhone13,4"


def test_simd_layouts_match_apple() -> None:
    assert ctypes.sizeof(SimdFloat3x3) == 48
    assert ctypes.sizeof(SimdFloat4x4) == 64


def test_getter_low_lanes_must_match_the_backing_variable() -> None:
    matrix = simd4x4(arkit_transform(0))
    raw = bytes(matrix)
    # What an arm64 getter returning a struct of four doubles hands back: the low
    # 8 bytes of each column's vector register, i.e. rows 0 and 1 of each column.
    low_lanes = b"".join(raw[16 * c : 16 * c + 8] for c in range(4))
    assert _low_lanes_match(matrix, low_lanes)
    tampered = bytearray(low_lanes)
    tampered[12] ^= 0x01  # row 1 of column 1
    assert not _low_lanes_match(matrix, bytes(tampered))
    assert not _low_lanes_match(simd3x3(np.eye(3)), low_lanes)
