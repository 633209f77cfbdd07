"""The phantom's geometry in the wound frame: skin (the lid), outline and depth profile.

The skin is a height field z = h(x, y): a plane, a cylinder along y (a limb) or a sphere
(a heel), each touching z = 0 at the origin with z the outward normal. The wound is
the region inside a star-shaped outline r(theta) about the spec's polar centre; its
floor is z = h(x, y) - d(x, y) with d >= 0 the depth below the skin along z (the skin
normal at the wound centre), d = 0 outside the outline and continuous at it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

from tests.phantoms._spec import Phantom

__all__ = [
    "centroid_offset",
    "depth_below_skin",
    "normalised_radius",
    "outline_radius",
    "profile_breaks",
    "skin_gradient",
    "skin_height",
    "surface_height",
]

FloatArray = npt.NDArray[np.float64]

# Pit wall of a terraced wound is this many cliff walls wide (a sloped inner step).
_PIT_WALL = 5.0
# Samples of the outline used to normalise its size and find its centroid.
_NORM_SAMPLES = 8192
# Samples of the renderer's outline table.
_TABLE = 1 << 17


def _base_radius(spec: Phantom, phi: FloatArray) -> FloatArray:
    """The unstretched, unscaled outline family of `spec` at polar angle `phi`."""
    n = spec.exponent
    if spec.shape == "superellipse":
        r: FloatArray = (np.abs(np.cos(phi)) ** n + np.abs(np.sin(phi)) ** n) ** (-1.0 / n)
        return r
    if spec.shape == "rounded_polygon":
        # The gauge of a regular polygon (max over its facets) softened by a p-norm of
        # the facets' positive parts: a convex polygon with round corners.
        k = spec.corners
        normals = 2 * math.pi * np.arange(k) / k
        facing = np.maximum(np.cos(phi[..., None] - normals), 0.0)
        gauge = np.sum(facing**n, axis=-1) ** (1.0 / n) / math.cos(math.pi / k)
        return 1.0 / gauge
    if spec.shape == "kidney":
        dent = np.angle(np.exp(1j * (phi - math.pi / 2)))
        return 1.0 - n * np.exp(-((dent / 0.55) ** 2))
    if spec.shape == "bilobe":
        # Cassini oval with foci at +-1 and product b**2 (one loop while b > 1).
        c2 = np.cos(2 * phi)
        return np.sqrt(c2 + np.sqrt(c2**2 + n**4 - 1.0))
    raise ValueError(f"unknown shape {spec.shape!r}")


def _stretched(spec: Phantom, phi: FloatArray) -> FloatArray:
    """The outline stretched by `aspect` along its own x axis."""
    cx, sy = np.cos(phi) / spec.aspect, np.sin(phi)
    return _base_radius(spec, np.arctan2(sy, cx)) / np.hypot(cx, sy)


@functools.lru_cache(maxsize=256)
def _scale(spec_key: Phantom) -> float:
    """Factor making the stretched outline enclose pi * size**2 (on the plane)."""
    phi = np.linspace(0.0, 2 * math.pi, _NORM_SAMPLES, endpoint=False)
    area = 0.5 * float(np.mean(_stretched(spec_key, phi) ** 2)) * 2 * math.pi
    return spec_key.size * math.sqrt(math.pi / area)


@functools.lru_cache(maxsize=64)
def _table(spec: Phantom) -> FloatArray:
    """r at theta = -pi + 2 pi i / _TABLE, i = 0.._TABLE."""
    theta = np.linspace(-math.pi, math.pi, _TABLE + 1)
    r: FloatArray = _scale(spec) * _stretched(spec, theta - spec.angle)
    return r


def outline_radius(spec: Phantom, theta: FloatArray, *, table: bool = False) -> FloatArray:
    """r(theta) of the outline about its polar centre, metres (theta in the wound frame).

    ``table=True`` interpolates a table of 2**17 samples instead (theta in [-pi, pi],
    within 1e-9 m of the exact outline; the renderer evaluates it millions of times per frame).
    """
    if table:
        radius = _table(spec)
        pos = (np.asarray(theta) + math.pi) * (_TABLE / (2 * math.pi))
        i = np.clip(pos.astype(np.int64), 0, _TABLE - 1)
        frac = pos - i
        out: FloatArray = radius[i] * (1.0 - frac) + radius[i + 1] * frac
        return out
    r: FloatArray = _scale(spec) * _stretched(spec, np.asarray(theta) - spec.angle)
    return r


def centroid_offset(spec: Phantom) -> tuple[float, float]:
    """The polar centre that puts the region's projected centroid at the origin."""
    theta = np.linspace(0.0, 2 * math.pi, _NORM_SAMPLES, endpoint=False)
    r = outline_radius(spec, theta)
    area = 0.5 * float(np.mean(r**2))
    mx = float(np.mean(r**3 * np.cos(theta))) / 3.0
    my = float(np.mean(r**3 * np.sin(theta))) / 3.0
    return -mx / area, -my / area


def polar(spec: Phantom, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(rho, theta) of wound-frame points about the outline's polar centre."""
    dx, dy = np.asarray(x) - spec.centre_x, np.asarray(y) - spec.centre_y
    return np.hypot(dx, dy), np.arctan2(dy, dx)


def normalised_radius(
    spec: Phantom, x: FloatArray, y: FloatArray, *, table: bool = False
) -> FloatArray:
    """rho / r(theta): below 1 inside the wound, 1 on its edge."""
    rho, theta = polar(spec, x, y)
    s: FloatArray = rho / outline_radius(spec, theta, table=table)
    return s


def profile(spec: Phantom, s: FloatArray, rb: FloatArray) -> FloatArray:
    """Depth below the skin at normalised radius `s` on the ray whose edge is at `rb`."""
    s = np.asarray(s, dtype=np.float64)
    inside = s < 1.0
    edge = (1.0 - s) * rb  # distance to the edge along the ray from the centre
    d_max = spec.depth
    if spec.profile in ("shallow", "bowl"):
        d = d_max * (1.0 - np.clip(s, 0.0, 1.0) ** spec.bowl_power)
    elif spec.profile == "cliff":
        d = d_max * np.clip(edge / spec.wall, 0.0, 1.0)
    elif spec.profile == "terraced":
        shelf, pit_start = spec.terrace
        pit = np.clip((pit_start - s) * rb / (_PIT_WALL * spec.wall), 0.0, 1.0)
        d = d_max * (shelf * np.clip(edge / spec.wall, 0.0, 1.0) + (1.0 - shelf) * pit)
    else:
        raise ValueError(f"unknown profile {spec.profile!r}")
    out: FloatArray = np.where(inside, d, 0.0)
    return out


def profile_breaks(spec: Phantom, rb: FloatArray) -> list[FloatArray]:
    """Normalised radii (per ray) where the profile has a kink, for exact integration."""
    if spec.profile == "cliff":
        return [np.clip(1.0 - spec.wall / rb, 0.0, 1.0)]
    if spec.profile == "terraced":
        pit_start = spec.terrace[1]
        return [
            np.clip(pit_start - _PIT_WALL * spec.wall / rb, 0.0, 1.0),
            np.full_like(rb, pit_start),
            np.clip(1.0 - spec.wall / rb, 0.0, 1.0),
        ]
    return []


def depth_below_skin(
    spec: Phantom, x: FloatArray, y: FloatArray, *, table: bool = False
) -> FloatArray:
    """d(x, y): depth of the wound floor below the skin along z, metres (0 outside)."""
    rho, theta = polar(spec, x, y)
    rb = outline_radius(spec, theta, table=table)
    return profile(spec, rho / rb, rb)


def skin_height(spec: Phantom, x: FloatArray, y: FloatArray) -> FloatArray:
    """h(x, y) of the skin (upper half of the limb or heel; NaN beyond it)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    r = spec.body_radius
    if spec.site == "flat":
        return np.zeros(np.broadcast(x, y).shape)
    with np.errstate(invalid="ignore"):
        if spec.site == "limb":
            h: FloatArray = np.sqrt(r * r - x * x) - r + 0.0 * y
        else:
            h = np.sqrt(r * r - x * x - y * y) - r
    return h


def skin_gradient(spec: Phantom, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(dh/dx, dh/dy) of the skin."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if spec.site == "flat":
        zero = np.zeros(np.broadcast(x, y).shape)
        return zero, zero
    up = skin_height(spec, x, y) + spec.body_radius
    gy = np.zeros_like(up) if spec.site == "limb" else -y / up
    return -x / up, gy


def surface_height(
    spec: Phantom, x: FloatArray, y: FloatArray, *, table: bool = False
) -> FloatArray:
    """z of the scanned surface: the skin, lowered by the wound's depth."""
    z: FloatArray = skin_height(spec, x, y) - depth_below_skin(spec, x, y, table=table)
    return z
