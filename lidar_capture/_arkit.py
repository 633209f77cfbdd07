"""Live capture from ARKit's LiDAR scene depth on iOS, through pyobjus.

`ARKitSource` runs an `ARSession` with world tracking and the scene-depth frame
semantic, polls `session.currentFrame` until it has the frames it wants, and converts
each `ARFrame` into a `Frame`: the 256x192 depth and confidence maps, the captured
YCbCr image as RGB at half resolution, the intrinsics scaled to the depth grid and the
camera pose in OpenCV axes.

Everything platform-specific sits behind one small seam, `ARKitPlatform`: pyobjus's
`load_framework` and `autoclass`, the two simd property getters, and the CoreVideo
pixel-buffer functions. The default seam is the real one (`_PyobjusPlatform`), built on
construction; tests pass a fake, so the conversion code runs on any machine exactly as
it does on a device.

Why pyobjus is not enough on its own:

- ``CVPixelBufferRef`` is a CoreFoundation type, not an Objective-C object, and its
  pixels are read through C functions (``CVPixelBufferLockBaseAddress`` ...), so they
  are called through ctypes, as `edge_sdk._keychain` does for the Security framework.
- ``ARCamera.intrinsics`` (``simd_float3x3``) and ``ARCamera.transform``
  (``simd_float4x4``) are structs of SIMD vectors. The Objective-C runtime records no
  type for vector members (clang encodes them as ``{?=[4]}``), so pyobjus cannot build
  a call for them. Their memory layout is fixed: each column is a 16-byte vector (a
  ``simd_float3`` is padded to 4 floats), so a 3x3 is 48 bytes and a 4x4 is 64 bytes,
  column-major; `SimdFloat3x3` and `SimdFloat4x4` mirror that layout. See
  `_PyobjusPlatform` for how the real seam reads them.
"""

from __future__ import annotations

import ctypes
import platform as _platform_module
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from lidar_capture._errors import CaptureError, SensorUnavailableError
from lidar_capture._types import ARKIT_TO_OPENCV, Frame, Intrinsics, Scan

__all__ = [
    "ARKIT_FRAMEWORK",
    "AR_FRAME_SEMANTIC_SCENE_DEPTH",
    "AR_FRAME_SEMANTIC_SMOOTHED_SCENE_DEPTH",
    "AR_TRACKING_STATE_NORMAL",
    "CV_PIXEL_BUFFER_LOCK_READ_ONLY",
    "CV_RETURN_SUCCESS",
    "PIXEL_FORMAT_420_FULL_RANGE",
    "PIXEL_FORMAT_420_VIDEO_RANGE",
    "PIXEL_FORMAT_DEPTH_FLOAT32",
    "PIXEL_FORMAT_ONE_COMPONENT8",
    "ARKitPlatform",
    "ARKitSource",
    "SimdFloat3x3",
    "SimdFloat4x4",
    "fourcc",
    "ycbcr420_to_rgb_half",
]

ARKIT_FRAMEWORK = "/System/Library/Frameworks/ARKit.framework"

# ARFrameSemantics option bits (<ARKit/ARConfiguration.h>).
AR_FRAME_SEMANTIC_SCENE_DEPTH = 1 << 3
AR_FRAME_SEMANTIC_SMOOTHED_SCENE_DEPTH = 1 << 4
# ARTrackingState: 0 not available, 1 limited, 2 normal.
AR_TRACKING_STATE_NORMAL = 2

# <CoreVideo/CVPixelBuffer.h> and <CoreVideo/CVReturn.h>.
CV_PIXEL_BUFFER_LOCK_READ_ONLY = 0x00000001
CV_RETURN_SUCCESS = 0


def fourcc(code: str) -> int:
    """The OSType of a four-character pixel format code, e.g. ``fourcc("420f")``."""
    raw = code.encode("ascii")
    if len(raw) != 4:
        raise ValueError(f"a pixel format code has four characters, not {code!r}")
    return int.from_bytes(raw, "big")


PIXEL_FORMAT_DEPTH_FLOAT32 = fourcc("fdep")  # kCVPixelFormatType_DepthFloat32
PIXEL_FORMAT_ONE_COMPONENT8 = fourcc("L008")  # kCVPixelFormatType_OneComponent8
PIXEL_FORMAT_420_FULL_RANGE = fourcc("420f")  # kCVPixelFormatType_420YpCbCr8BiPlanarFullRange
PIXEL_FORMAT_420_VIDEO_RANGE = fourcc("420v")  # ...BiPlanarVideoRange

_POLL_INTERVAL_S = 1.0 / 120.0  # ARKit delivers 60 frames a second
_COLOR_DECIMATION = 2  # 1920x1440 -> 960x720: ample for colouring 256x192 depth


class SimdFloat3x3(ctypes.Structure):
    """``simd_float3x3``: 3 columns of ``simd_float3``, each padded to 4 floats (48 bytes).

    ``columns[c][r]`` is row r of column c; the fourth float of each column is padding.
    """

    _fields_ = [("columns", (ctypes.c_float * 4) * 3)]


class SimdFloat4x4(ctypes.Structure):
    """``simd_float4x4``: 4 columns of ``simd_float4`` (64 bytes), ``columns[c][r]``."""

    _fields_ = [("columns", (ctypes.c_float * 4) * 4)]


class ARKitPlatform(Protocol):
    """The calls `ARKitSource` makes into iOS.

    Objective-C objects are whatever `autoclass` hands out (pyobjus objects on a
    device); their properties are read as attributes (``session.currentFrame``) and
    their methods called with pyobjus names (``runWithConfiguration_``). Pixel buffers
    are the values of ``CVPixelBufferRef`` properties, passed back unchanged to the
    ``cv_pixel_buffer_*`` methods, which mirror the CoreVideo C functions of the same
    name. Failures to reach the platform raise `SensorUnavailableError`.
    """

    def load_framework(self, path: str) -> None:
        """Load an Apple framework so its classes can be autoclassed."""
        ...

    def autoclass(self, name: str) -> Any:
        """The Objective-C class `name` (pyobjus ``autoclass``)."""
        ...

    def simd_float3x3(self, obj: Any, selector: str) -> SimdFloat3x3:
        """The ``simd_float3x3`` property `selector` of `obj`."""
        ...

    def simd_float4x4(self, obj: Any, selector: str) -> SimdFloat4x4:
        """The ``simd_float4x4`` property `selector` of `obj`."""
        ...

    def cv_pixel_buffer_lock_base_address(self, buffer: Any, flags: int) -> int:
        """CVPixelBufferLockBaseAddress; returns a CVReturn."""
        ...

    def cv_pixel_buffer_unlock_base_address(self, buffer: Any, flags: int) -> int:
        """CVPixelBufferUnlockBaseAddress; returns a CVReturn."""
        ...

    def cv_pixel_buffer_get_pixel_format_type(self, buffer: Any) -> int:
        """CVPixelBufferGetPixelFormatType (an OSType such as ``fourcc("fdep")``)."""
        ...

    def cv_pixel_buffer_get_width(self, buffer: Any) -> int:
        """CVPixelBufferGetWidth."""
        ...

    def cv_pixel_buffer_get_height(self, buffer: Any) -> int:
        """CVPixelBufferGetHeight."""
        ...

    def cv_pixel_buffer_get_bytes_per_row(self, buffer: Any) -> int:
        """CVPixelBufferGetBytesPerRow."""
        ...

    def cv_pixel_buffer_get_base_address(self, buffer: Any) -> int | None:
        """CVPixelBufferGetBaseAddress (None for NULL)."""
        ...

    def cv_pixel_buffer_get_width_of_plane(self, buffer: Any, plane: int) -> int:
        """CVPixelBufferGetWidthOfPlane."""
        ...

    def cv_pixel_buffer_get_height_of_plane(self, buffer: Any, plane: int) -> int:
        """CVPixelBufferGetHeightOfPlane."""
        ...

    def cv_pixel_buffer_get_bytes_per_row_of_plane(self, buffer: Any, plane: int) -> int:
        """CVPixelBufferGetBytesPerRowOfPlane."""
        ...

    def cv_pixel_buffer_get_base_address_of_plane(self, buffer: Any, plane: int) -> int | None:
        """CVPixelBufferGetBaseAddressOfPlane (None for NULL)."""
        ...

    def wait(self, seconds: float) -> None:
        """Let the session deliver frames for about `seconds` before the next poll."""
        ...

    def device_model(self) -> str | None:
        """The hardware model, e.g. ``iPhone13,4``, or None when unknown."""
        ...


class ARKitSource:
    """A `CaptureSource` recording LiDAR depth frames from ARKit (iOS, LiDAR devices).

    Each `capture` runs the session, collects `frames` distinct frames (by timestamp)
    that have scene depth and normal tracking, and pauses the session again. Hold the
    device still over the wound while it records (10 frames take about 0.2 s).

    Call `capture` off the main thread where possible; on the main thread the poll
    turns the run loop so ARKit can still deliver frames.

    Args:
        frames: Frames per capture when `capture` is given no count.
        timeout_s: How long a capture may wait for its frames.
        smoothed: Use ARKit's temporally smoothed depth (``smoothedSceneDepth``)
            instead of the per-frame ``sceneDepth``.
        platform: The iOS seam; by default the real one (pyobjus + ctypes).

    Raises:
        SensorUnavailableError: Not on iOS with pyobjus (construction), or the device
            has no LiDAR scene depth or delivers no depth in time (`capture`).
    """

    name = "arkit"

    def __init__(
        self,
        *,
        frames: int = 10,
        timeout_s: float = 5.0,
        smoothed: bool = False,
        platform: ARKitPlatform | None = None,
    ) -> None:
        if frames < 1:
            raise ValueError("frames must be at least 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self._frames = frames
        self._timeout_s = timeout_s
        self._smoothed = smoothed
        self._platform: ARKitPlatform = platform if platform is not None else _PyobjusPlatform()
        self._session: Any = None
        self._config_class: Any = None
        self._closed = False

    @property
    def _semantic(self) -> int:
        if self._smoothed:
            return AR_FRAME_SEMANTIC_SMOOTHED_SCENE_DEPTH
        return AR_FRAME_SEMANTIC_SCENE_DEPTH

    def capture(self, max_frames: int | None = None) -> Scan:
        """Record `max_frames` frames (the constructor's `frames` when None).

        Raises:
            SensorUnavailableError: No LiDAR scene depth on this device, or no depth
                frame arrived within the timeout.
            CaptureError: Fewer frames than asked for arrived in time, a pixel buffer
                has an unexpected format, or the source is closed.
        """
        wanted = self._frames if max_frames is None else max_frames
        if wanted < 1:
            raise ValueError("max_frames must be at least 1")
        if self._closed:
            raise CaptureError("this ARKitSource is closed")
        session = self._ensure_session()
        config = self._config_class.alloc().init()
        config.setFrameSemantics_(self._semantic)

        frames: list[Frame] = []
        limited_tracking = 0
        without_depth = 0
        last_timestamp: float | None = None
        session.runWithConfiguration_(config)
        try:
            deadline = time.monotonic() + self._timeout_s
            while len(frames) < wanted:
                ar_frame = session.currentFrame
                if ar_frame is not None:
                    timestamp = float(ar_frame.timestamp)
                    # currentFrame stays the same object until ARKit delivers the next
                    # one; polling faster than 60 Hz sees it more than once.
                    if timestamp != last_timestamp:
                        last_timestamp = timestamp
                        depth_data = self._depth_data(ar_frame)
                        if depth_data is None:
                            without_depth += 1
                        elif int(ar_frame.camera.trackingState) != AR_TRACKING_STATE_NORMAL:
                            # Limited tracking means a guessed pose: fusing it would smear
                            # the surface, so the frame is left out.
                            limited_tracking += 1
                        else:
                            frames.append(self._read_frame(ar_frame, depth_data, timestamp))
                    # Drop the reference at once: ARKit recycles a small pool of frames
                    # and stops delivering new ones while old ones are held.
                    del ar_frame
                if len(frames) >= wanted or time.monotonic() >= deadline:
                    break
                self._platform.wait(_POLL_INTERVAL_S)
        finally:
            session.pause()

        if not frames:
            hint = (
                f"; {limited_tracking} frame(s) had limited tracking: move the device slowly "
                "over a textured area"
                if limited_tracking
                else ""
            )
            raise SensorUnavailableError(
                f"ARKit delivered no depth frame within {self._timeout_s:g} s{hint}"
            )
        if len(frames) < wanted:
            raise CaptureError(
                f"ARKit delivered {len(frames)} of {wanted} depth frames within "
                f"{self._timeout_s:g} s; hold the device still and try again"
            )
        return Scan(
            source="arkit",
            origin=self._platform.device_model() or "ARKit",
            frames=tuple(frames),
            metadata={
                "frame_semantics": "smoothedSceneDepth" if self._smoothed else "sceneDepth",
                "skipped_limited_tracking": limited_tracking,
                "skipped_without_depth": without_depth,
                "color_decimation": _COLOR_DECIMATION,
            },
        )

    def close(self) -> None:
        """Pause and release the session; later captures raise `CaptureError`."""
        if self._session is not None:
            self._session.pause()
            self._session = None
        self._closed = True

    def __enter__(self) -> ARKitSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- session ------------------------------------------------------------------

    def _ensure_session(self) -> Any:
        if self._session is not None:
            return self._session
        platform = self._platform
        platform.load_framework(ARKIT_FRAMEWORK)
        config_class = platform.autoclass("ARWorldTrackingConfiguration")
        if not config_class.supportsFrameSemantics_(self._semantic):
            raise SensorUnavailableError(
                "this device has no LiDAR scene depth (ARKit world tracking does not "
                "support the sceneDepth frame semantic)"
            )
        self._config_class = config_class
        self._session = platform.autoclass("ARSession").alloc().init()
        return self._session

    def _depth_data(self, ar_frame: Any) -> Any:
        return ar_frame.smoothedSceneDepth if self._smoothed else ar_frame.sceneDepth

    # --- one frame ----------------------------------------------------------------

    def _read_frame(self, ar_frame: Any, depth_data: Any, timestamp: float) -> Frame:
        depth = self._read_depth(depth_data.depthMap)
        confidence_buffer = depth_data.confidenceMap
        confidence = None
        if confidence_buffer is not None:
            confidence = self._read_confidence(confidence_buffer)
            if confidence.shape != depth.shape:
                raise CaptureError(
                    f"ARKit confidence map is {confidence.shape[1]}x{confidence.shape[0]}, "
                    f"its depth map {depth.shape[1]}x{depth.shape[0]}"
                )
        color, (image_width, image_height) = self._read_color(ar_frame.capturedImage)

        camera = ar_frame.camera
        k = _matrix(self._platform.simd_float3x3(camera, "intrinsics").columns, 3)
        # ARKit's intrinsics describe the captured image; the depth map covers the same
        # field of view at lower resolution.
        intrinsics = Intrinsics.from_matrix(k, image_width, image_height).scaled(
            depth.shape[1], depth.shape[0]
        )
        transform = _matrix(self._platform.simd_float4x4(camera, "transform").columns, 4)
        pose = transform @ ARKIT_TO_OPENCV
        return Frame(
            depth=depth,
            intrinsics=intrinsics,
            pose=pose,
            confidence=confidence,
            color=color,
            timestamp=timestamp,
        )

    def _read_depth(self, buffer: Any) -> npt.NDArray[np.float32]:
        with self._locked(buffer, "depth map"):
            self._check_format(buffer, PIXEL_FORMAT_DEPTH_FLOAT32, "depth map")
            p = self._platform
            width = p.cv_pixel_buffer_get_width(buffer)
            height = p.cv_pixel_buffer_get_height(buffer)
            rows = _read_rows(
                p.cv_pixel_buffer_get_base_address(buffer),
                width * 4,
                height,
                p.cv_pixel_buffer_get_bytes_per_row(buffer),
                "depth map",
            )
        depth = rows.view("<f4").astype(np.float32)
        # ARKit leaves NaN where it has no reading; the Frame contract allows either.
        return depth

    def _read_confidence(self, buffer: Any) -> npt.NDArray[np.uint8]:
        with self._locked(buffer, "confidence map"):
            self._check_format(buffer, PIXEL_FORMAT_ONE_COMPONENT8, "confidence map")
            p = self._platform
            rows = _read_rows(
                p.cv_pixel_buffer_get_base_address(buffer),
                p.cv_pixel_buffer_get_width(buffer),
                p.cv_pixel_buffer_get_height(buffer),
                p.cv_pixel_buffer_get_bytes_per_row(buffer),
                "confidence map",
            )
        return np.minimum(rows, 2).astype(np.uint8)

    def _read_color(self, buffer: Any) -> tuple[npt.NDArray[np.uint8], tuple[int, int]]:
        """RGB at half resolution, and the captured image's full (width, height)."""
        with self._locked(buffer, "captured image"):
            p = self._platform
            pixel_format = p.cv_pixel_buffer_get_pixel_format_type(buffer)
            if pixel_format not in (PIXEL_FORMAT_420_FULL_RANGE, PIXEL_FORMAT_420_VIDEO_RANGE):
                raise CaptureError(
                    "ARKit captured image has pixel format "
                    f"{_format_name(pixel_format)}, expected '420f'"
                )
            width = p.cv_pixel_buffer_get_width_of_plane(buffer, 0)
            height = p.cv_pixel_buffer_get_height_of_plane(buffer, 0)
            chroma_width = p.cv_pixel_buffer_get_width_of_plane(buffer, 1)
            chroma_height = p.cv_pixel_buffer_get_height_of_plane(buffer, 1)
            if (
                (chroma_width, chroma_height) != (width // 2, height // 2)
                or width % 2
                or height % 2
            ):
                raise CaptureError(
                    f"ARKit captured image planes are {width}x{height} and "
                    f"{chroma_width}x{chroma_height}, not 4:2:0"
                )
            luma = _read_rows(
                p.cv_pixel_buffer_get_base_address_of_plane(buffer, 0),
                width,
                height,
                p.cv_pixel_buffer_get_bytes_per_row_of_plane(buffer, 0),
                "captured image luma plane",
            )
            chroma = _read_rows(
                p.cv_pixel_buffer_get_base_address_of_plane(buffer, 1),
                chroma_width * 2,
                chroma_height,
                p.cv_pixel_buffer_get_bytes_per_row_of_plane(buffer, 1),
                "captured image chroma plane",
            )
        rgb = ycbcr420_to_rgb_half(
            luma, chroma, full_range=pixel_format == PIXEL_FORMAT_420_FULL_RANGE
        )
        return rgb, (width, height)

    def _check_format(self, buffer: Any, expected: int, what: str) -> None:
        actual = self._platform.cv_pixel_buffer_get_pixel_format_type(buffer)
        if actual != expected:
            raise CaptureError(
                f"ARKit {what} has pixel format {_format_name(actual)}, "
                f"expected {_format_name(expected)}"
            )

    @contextmanager
    def _locked(self, buffer: Any, what: str) -> Iterator[None]:
        """Hold the buffer's base address locked read-only; always unlocked on exit."""
        p = self._platform
        status = p.cv_pixel_buffer_lock_base_address(buffer, CV_PIXEL_BUFFER_LOCK_READ_ONLY)
        if status != CV_RETURN_SUCCESS:
            raise CaptureError(f"cannot lock the ARKit {what} (CVReturn {status})")
        try:
            yield
        finally:
            p.cv_pixel_buffer_unlock_base_address(buffer, CV_PIXEL_BUFFER_LOCK_READ_ONLY)


# --- conversions ----------------------------------------------------------------------


def _matrix(columns: Any, n: int) -> npt.NDArray[np.float64]:
    """An n x n row-major float64 matrix from simd columns (``columns[c][r]``)."""
    as_array = np.ctypeslib.as_array(columns).astype(np.float64)  # (n, 4): column, row
    return np.ascontiguousarray(as_array[:n, :n].T)


def _read_rows(
    base: int | None, row_bytes: int, height: int, bytes_per_row: int, what: str
) -> npt.NDArray[np.uint8]:
    """Copy `height` rows of `row_bytes` bytes, `bytes_per_row` apart, from `base`.

    CoreVideo pads rows (to 16 or 64 bytes) so bytes_per_row is often larger than the
    pixels in a row; the padding is skipped. Only bytes inside the image are read.
    """
    if not base:
        raise CaptureError(f"ARKit {what} has no pixel data")
    if height <= 0 or row_bytes <= 0:
        raise CaptureError(f"ARKit {what} is empty")
    if bytes_per_row < row_bytes:
        raise CaptureError(
            f"ARKit {what} has {bytes_per_row} bytes per row for {row_bytes} bytes of pixels"
        )
    span = (height - 1) * bytes_per_row + row_bytes
    memory = np.frombuffer(memoryview((ctypes.c_uint8 * span).from_address(base)), dtype=np.uint8)
    rows = np.lib.stride_tricks.as_strided(
        memory, shape=(height, row_bytes), strides=(bytes_per_row, 1), writeable=False
    )
    return rows.copy()


def ycbcr420_to_rgb_half(
    luma: npt.NDArray[np.uint8], chroma: npt.NDArray[np.uint8], *, full_range: bool = True
) -> npt.NDArray[np.uint8]:
    """Bi-planar 4:2:0 YCbCr (BT.601) to RGB at half resolution.

    Args:
        luma: (H, W) Y plane.
        chroma: (H/2, W) interleaved Cb, Cr plane.
        full_range: '420f' (Y and C over 0-255) rather than '420v' (Y 16-235, C 16-240).

    Returns:
        (H/2, W/2, 3) RGB: each 2x2 luma block averaged, with the Cb/Cr pair it shares.
    """
    height, width = luma.shape
    y = luma.reshape(height // 2, 2, width // 2, 2).astype(np.float32).mean(axis=(1, 3))
    cbcr = chroma.reshape(height // 2, width // 2, 2).astype(np.float32)
    cb = cbcr[..., 0] - 128.0
    cr = cbcr[..., 1] - 128.0
    if not full_range:
        y = (y - 16.0) * (255.0 / 219.0)
        cb *= 255.0 / 224.0
        cr *= 255.0 / 224.0
    rgb = np.empty((*y.shape, 3), dtype=np.float32)
    rgb[..., 0] = y + 1.402 * cr
    rgb[..., 1] = y - 0.344136 * cb - 0.714136 * cr
    rgb[..., 2] = y + 1.772 * cb
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _format_name(code: int) -> str:
    raw = int(code).to_bytes(4, "big", signed=False) if 0 <= code < 1 << 32 else b""
    if len(raw) == 4 and all(32 <= b < 127 for b in raw):
        return repr(raw.decode("ascii"))
    return hex(code)


# --- the real platform: pyobjus + ctypes ----------------------------------------------

_OBJC_PATH = "/usr/lib/libobjc.A.dylib"
_CORE_VIDEO_PATH = "/System/Library/Frameworks/CoreVideo.framework/CoreVideo"


_Matrix = TypeVar("_Matrix", SimdFloat3x3, SimdFloat4x4)


class _LowLanes3(ctypes.Structure):
    # Three doubles: an HFA, returned in d0-d2, the low 64 bits of v0-v2.
    _fields_ = [("c0", ctypes.c_double), ("c1", ctypes.c_double), ("c2", ctypes.c_double)]


class _LowLanes4(ctypes.Structure):
    _fields_ = [
        ("c0", ctypes.c_double),
        ("c1", ctypes.c_double),
        ("c2", ctypes.c_double),
        ("c3", ctypes.c_double),
    ]


def _low_lanes_match(matrix: SimdFloat3x3 | SimdFloat4x4, low_lanes: bytes) -> bool:
    """Whether rows 0 and 1 of every column of `matrix` equal `low_lanes` bit for bit.

    `low_lanes` holds, per column, the 8 bytes an arm64 getter leaves in the low half of
    that column's vector register (see `_PyobjusPlatform`).
    """
    raw = bytes(matrix)
    columns = len(raw) // 16
    return len(low_lanes) == 8 * columns and all(
        raw[16 * c : 16 * c + 8] == low_lanes[8 * c : 8 * c + 8] for c in range(columns)
    )


class _PyobjusPlatform:
    """`ARKitPlatform` on an iOS device: pyobjus for objects, ctypes for C functions.

    The simd getters cannot be called through ctypes alone. On arm64, where every LiDAR
    device runs, a struct of up to four SIMD vectors is a homogeneous short-vector
    aggregate and comes back in the vector registers v0-v3, 16 bytes each. libffi (and
    so ctypes) has no vector types: describing the matrix as a struct of floats makes
    it pass a hidden result pointer the callee never writes, which yields garbage. The
    nearest type libffi can describe, a struct of 3 or 4 doubles, is returned in d0-d3,
    the low 8 bytes of those registers: rows 0 and 1 of every column, but not rows 2
    and 3. So the full matrix is read from the property's synthesized instance variable
    (``_intrinsics``, ``_transform``) through the Objective-C runtime's
    ``class_getInstanceVariable`` and ``ivar_getOffset``, and accepted only if its rows
    0 and 1 equal, bit for bit, what the getter itself returned. If ARKit ever stops
    backing the property with that variable, capture fails with a clear error instead of
    using a wrong pose.
    """

    def __init__(self) -> None:
        # Read through a variable so type checkers running on Linux still check the rest.
        platform = sys.platform
        if platform not in ("darwin", "ios"):
            raise SensorUnavailableError(
                f"ARKit needs iOS with pyobjus; not available on {platform}"
            )
        try:
            import pyobjus
            from pyobjus import dylib_manager
        except ImportError as exc:
            raise SensorUnavailableError(
                "ARKit needs iOS with pyobjus; pyobjus is not installed"
            ) from exc
        machine = _platform_module.machine()
        if machine != "arm64":
            raise SensorUnavailableError(
                f"ARKit LiDAR capture needs an arm64 iOS device, not {machine}"
            )
        self._pyobjus: Any = pyobjus
        self._dylib_manager: Any = dylib_manager
        try:
            self._objc = ctypes.CDLL(_OBJC_PATH)
            self._cv = ctypes.CDLL(_CORE_VIDEO_PATH)
            self._libc = ctypes.CDLL(None)
        except OSError as exc:
            raise SensorUnavailableError(f"cannot load CoreVideo or libobjc: {exc}") from exc
        self._declare()

    def _declare(self) -> None:
        ref, size = ctypes.c_void_p, ctypes.c_size_t
        signatures: list[tuple[ctypes.CDLL, str, list[Any], Any]] = [
            (self._cv, "CVPixelBufferLockBaseAddress", [ref, ctypes.c_uint64], ctypes.c_int32),
            (self._cv, "CVPixelBufferUnlockBaseAddress", [ref, ctypes.c_uint64], ctypes.c_int32),
            (self._cv, "CVPixelBufferGetPixelFormatType", [ref], ctypes.c_uint32),
            (self._cv, "CVPixelBufferGetWidth", [ref], size),
            (self._cv, "CVPixelBufferGetHeight", [ref], size),
            (self._cv, "CVPixelBufferGetBytesPerRow", [ref], size),
            (self._cv, "CVPixelBufferGetBaseAddress", [ref], ctypes.c_void_p),
            (self._cv, "CVPixelBufferGetWidthOfPlane", [ref, size], size),
            (self._cv, "CVPixelBufferGetHeightOfPlane", [ref, size], size),
            (self._cv, "CVPixelBufferGetBytesPerRowOfPlane", [ref, size], size),
            (self._cv, "CVPixelBufferGetBaseAddressOfPlane", [ref, size], ctypes.c_void_p),
            (self._objc, "sel_registerName", [ctypes.c_char_p], ctypes.c_void_p),
            (self._objc, "object_getClass", [ctypes.c_void_p], ctypes.c_void_p),
            (self._objc, "class_getInstanceVariable", [ctypes.c_void_p, ctypes.c_char_p],
             ctypes.c_void_p),
            (self._objc, "ivar_getOffset", [ctypes.c_void_p], ctypes.c_ssize_t),
            (self._libc, "sysctlbyname",
             [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(size), ctypes.c_void_p, size],
             ctypes.c_int),
        ]  # fmt: skip
        for lib, name, argtypes, restype in signatures:
            function = getattr(lib, name)
            function.argtypes = argtypes
            function.restype = restype
        foundation = self._pyobjus.autoclass
        self._ns_thread = foundation("NSThread")
        self._ns_run_loop = foundation("NSRunLoop")
        self._ns_date = foundation("NSDate")

    # --- Objective-C ----------------------------------------------------------------

    def load_framework(self, path: str) -> None:
        try:
            self._dylib_manager.load_framework(path)
        except Exception as exc:  # pyobjus raises plain ObjcException/ValueError
            raise SensorUnavailableError(f"cannot load {path}: {exc}") from exc

    def autoclass(self, name: str) -> Any:
        try:
            return self._pyobjus.autoclass(name)
        except Exception as exc:  # pyobjus.ObjcException: "Unable to find class"
            raise SensorUnavailableError(f"ARKit class {name} is not available: {exc}") from exc

    def simd_float3x3(self, obj: Any, selector: str) -> SimdFloat3x3:
        return self._simd(obj, selector, SimdFloat3x3, _LowLanes3)

    def simd_float4x4(self, obj: Any, selector: str) -> SimdFloat4x4:
        return self._simd(obj, selector, SimdFloat4x4, _LowLanes4)

    def _simd(
        self,
        obj: Any,
        selector: str,
        matrix_type: type[_Matrix],
        lanes_type: type[ctypes.Structure],
    ) -> _Matrix:
        address = int(obj.get_address())
        send = ctypes.cast(
            self._objc.objc_msgSend, ctypes.CFUNCTYPE(lanes_type, ctypes.c_void_p, ctypes.c_void_p)
        )
        low_lanes = bytes(send(address, self._objc.sel_registerName(selector.encode())))
        ivar = self._objc.class_getInstanceVariable(
            self._objc.object_getClass(address), f"_{selector}".encode()
        )
        if not ivar:
            raise SensorUnavailableError(
                f"cannot read ARCamera.{selector} on this iOS version (no backing variable)"
            )
        offset = int(self._objc.ivar_getOffset(ivar))
        matrix = matrix_type.from_buffer_copy(
            ctypes.string_at(address + offset, ctypes.sizeof(matrix_type))
        )
        if not _low_lanes_match(matrix, low_lanes):
            raise SensorUnavailableError(
                f"cannot read ARCamera.{selector} on this iOS version (backing variable "
                "disagrees with the getter)"
            )
        return matrix

    # --- CoreVideo ------------------------------------------------------------------

    @staticmethod
    def _ref(buffer: Any) -> int:
        # pyobjus returns a CVPixelBufferRef property (``^{__CVBuffer=}``) as an
        # ObjcReferenceToType whose arg_ref is the pointer.
        if isinstance(buffer, int):
            return buffer
        if hasattr(buffer, "arg_ref"):
            return int(buffer.arg_ref)
        return int(buffer.get_address())

    def cv_pixel_buffer_lock_base_address(self, buffer: Any, flags: int) -> int:
        return int(self._cv.CVPixelBufferLockBaseAddress(self._ref(buffer), flags))

    def cv_pixel_buffer_unlock_base_address(self, buffer: Any, flags: int) -> int:
        return int(self._cv.CVPixelBufferUnlockBaseAddress(self._ref(buffer), flags))

    def cv_pixel_buffer_get_pixel_format_type(self, buffer: Any) -> int:
        return int(self._cv.CVPixelBufferGetPixelFormatType(self._ref(buffer)))

    def cv_pixel_buffer_get_width(self, buffer: Any) -> int:
        return int(self._cv.CVPixelBufferGetWidth(self._ref(buffer)))

    def cv_pixel_buffer_get_height(self, buffer: Any) -> int:
        return int(self._cv.CVPixelBufferGetHeight(self._ref(buffer)))

    def cv_pixel_buffer_get_bytes_per_row(self, buffer: Any) -> int:
        return int(self._cv.CVPixelBufferGetBytesPerRow(self._ref(buffer)))

    def cv_pixel_buffer_get_base_address(self, buffer: Any) -> int | None:
        address = self._cv.CVPixelBufferGetBaseAddress(self._ref(buffer))
        return int(address) if address else None

    def cv_pixel_buffer_get_width_of_plane(self, buffer: Any, plane: int) -> int:
        return int(self._cv.CVPixelBufferGetWidthOfPlane(self._ref(buffer), plane))

    def cv_pixel_buffer_get_height_of_plane(self, buffer: Any, plane: int) -> int:
        return int(self._cv.CVPixelBufferGetHeightOfPlane(self._ref(buffer), plane))

    def cv_pixel_buffer_get_bytes_per_row_of_plane(self, buffer: Any, plane: int) -> int:
        return int(self._cv.CVPixelBufferGetBytesPerRowOfPlane(self._ref(buffer), plane))

    def cv_pixel_buffer_get_base_address_of_plane(self, buffer: Any, plane: int) -> int | None:
        address = self._cv.CVPixelBufferGetBaseAddressOfPlane(self._ref(buffer), plane)
        return int(address) if address else None

    # --- the rest -------------------------------------------------------------------

    def wait(self, seconds: float) -> None:
        if self._ns_thread.isMainThread():
            # ARKit may hand frames over on the main queue: turn the run loop rather
            # than block it.
            date = self._ns_date.dateWithTimeIntervalSinceNow_(seconds)
            self._ns_run_loop.currentRunLoop().runUntilDate_(date)
        else:
            time.sleep(seconds)

    def device_model(self) -> str | None:
        size = ctypes.c_size_t(0)
        if self._libc.sysctlbyname(b"hw.machine", None, ctypes.byref(size), None, 0) != 0:
            return None
        buffer = ctypes.create_string_buffer(size.value)
        if self._libc.sysctlbyname(b"hw.machine", buffer, ctypes.byref(size), None, 0) != 0:
            return None
        return buffer.value.decode("ascii", errors="replace") or None
