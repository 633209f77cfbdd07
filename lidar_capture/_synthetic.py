"""Procedural LiDAR scans of a wound on skin, with exact ground truth.

`generate(spec)` renders a handheld RGB-D capture (iPad-Pro-like LiDAR depth, colour,
confidence, poses) of one procedural wound and returns it with its ground truth and
per-frame tissue label images. `random_spec(seed)` draws a varied wound; `SyntheticSource`
is the `CaptureSource` the rest of the package and the tests use.

Contract (the measurement pipeline and the benchmark use the SAME definitions)
------------------------------------------------------------------------------
Wound frame W: origin on the skin at the wound centre, z = outward skin normal there,
y = body axis (head-ward) in the tangent plane, x = y x z. The skin is a height field
z = s(x, y) with s(0, 0) = 0 and grad s(0, 0) = 0:

- ``plane``:  s = 0; the skin fills the view.
- ``calf``:   cylinder along y of radius r = limb_radius_m: s = -(r - sqrt(r^2 - x^2)).
  Rays that miss the limb hit a background plane (a bed) at z = -h, h >= 2r.
- ``heel``:   ellipsoid cap s = -c (1 - sqrt(1 - x^2/a^2 - y^2/b^2)), a = r, b = 1.25 r,
  c = 0.85 r with r = limb_radius_m (0.035-0.048 from `random_spec`); bed as for calf.
- ``sacrum``: s = -x^2/(2 * 0.25) - y^2/(2 * 0.40); the skin fills the view.
  limb_radius_m is ignored for plane and sacrum.

Outline: a star-shaped closed curve in the (x, y) plane, rho = R(theta).
``ellipse``: semi-axes a >= b with a * b = radius_m^2 (aspect 1-2.2) at a random
orientation. ``irregular``: R0 (1 + sum_{k=2..6} a_k cos(k theta + phi_k)), R0 = radius_m
(the mean of R), sum |a_k| <= 0.5 so R >= 0.5 R0.

Wound floor: z = s(x, y) - d(x, y); d > 0 inside the outline, 0 on and outside it, with
u = rho / R(theta) and D = max_depth_m. Depth is VERTICAL in W (along z, not along the
local normal); the floor is a graph, so there is no undermining.

- ``bowl``:    d = D (1 - u^2)
- ``punched``: d = D smoothstep((1 - u) / 0.2), smoothstep(t) = 3t^2 - 2t^3 on [0, 1]
- ``sloped``:  d = D (1 - u^2)(1 + 0.6 (e . (x, y)) / R0) / M, e a random unit vector and M
  the maximum of the unscaled product, so max d = D
- ``shallow``: d = D (1 - u^4) with D clipped to 0.001-0.002 m

Ground truth, integrated numerically (relative error far below 0.1 %) over the wound
region Omega = {rho < R(theta)} of the x-y plane:

- area = integral over Omega of sqrt(1 + s_x^2 + s_y^2) dx dy (on the skin, the lid);
  perimeter = length of the 3-D curve (x(theta), y(theta), s(x(theta), y(theta))).
- length: c = the projected-area centroid of Omega, a = (0, 1) (the body axis);
  t_min, t_max = min, max of (p - c) . a over the outline; length = integral from t_min to
  t_max of |d/dt (c + t a, s(c + t a))| dt. width: the same with a = (1, 0).
  major_length, minor_width: the same with a = the principal eigenvector (largest
  eigenvalue) of the projected second-moment matrix of Omega, and its perpendicular.
- volume = integral over Omega of d dx dy; mean_depth = volume / projected area of
  Omega; max_depth = max d; ruler_area = length * width.
- tissue_composition: percent of the area (same element as area) per tissue label; the
  label is a function of the projected point (x, y), so a pixel of the wound bed takes the
  label of the (x, y) of its hit point.

The world frame is a random rigid transform of W (`GroundTruth.wound_to_world`);
`outline_world` samples the outline at 1024 equally spaced theta on the skin.

Sensor model: depth 256x192 (`DEPTH_INTRINSICS`) along the optical axis, float32 metres;
confidence 0/1/2 (ARKit); colour (256 c)x(192 c), c = color_scale, same field of view.
Noise std is noise_mm / 1000 * (z / 0.30)^2 at confidence 2, twice that at confidence 1
(incidence cos < 0.5 or within 1 px of a depth jump > 1 cm). Pixels whose footprint
straddles a jump are flying pixels: depth interpolated between foreground and background,
70 % confidence 0, 30 % confidence 1. Dropouts: 1 % of pixels (5 % on necrosis) read 0
with confidence 0. Colour is Lambertian with a light at the camera
(0.35 + 0.65 max(0, n . l)), area-averaged over 2x2 sub-pixels. Camera: at distance_m from
the wound centre, tilted tilt_deg from the normal, looking at the centre; hand motion is a
smooth random walk; reported poses carry ~0.3 mm / ~0.03 degree tracking error; frames
are 1/30 s apart.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lidar_capture._types import Frame, Intrinsics, Scan

__all__ = [
    "DEPTH_INTRINSICS",
    "OUTLINES",
    "PROFILES",
    "SURFACES",
    "TISSUES",
    "GroundTruth",
    "SyntheticScan",
    "SyntheticSource",
    "WoundSpec",
    "generate",
    "random_spec",
]

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

SURFACES = ("plane", "calf", "heel", "sacrum")
OUTLINES = ("ellipse", "irregular")
PROFILES = ("bowl", "punched", "sloped", "shallow")
#: Label ids 0..4 in this order; 0 is skin, background and anything that is not wound.
TISSUES = ("background", "granulation", "slough", "necrosis", "epithelium")
#: The depth grid of an iPad Pro / iPhone Pro LiDAR (256x192).
DEPTH_INTRINSICS = Intrinsics(fx=212.0, fy=212.0, cx=127.5, cy=95.5, width=256, height=192)

_SACRUM_RX, _SACRUM_RY = 0.25, 0.40
_HEEL_B, _HEEL_C = 1.25, 0.85
_MAX_RANGE_M = 5.0
_JUMP_M = 0.01
_SUPERSAMPLE = 2
_OUTLINE_POINTS = 1024

# Fitzpatrick-like skin albedos (sRGB, 0-1), light to very dark.
_SKIN = np.array(
    [
        [0.94, 0.80, 0.72],
        [0.88, 0.70, 0.59],
        [0.79, 0.59, 0.46],
        [0.64, 0.46, 0.33],
        [0.46, 0.31, 0.22],
        [0.29, 0.20, 0.15],
    ]
)
_TISSUE_ALBEDO = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.72, 0.16, 0.16],  # granulation: beefy red
        [0.86, 0.76, 0.42],  # slough: yellow
        [0.16, 0.11, 0.08],  # necrosis: near-black brown
        [0.92, 0.62, 0.62],  # epithelium: pink
    ]
)
_BEDS = np.array([[0.92, 0.92, 0.90], [0.70, 0.80, 0.90], [0.72, 0.86, 0.78], [0.80, 0.80, 0.82]])


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class WoundSpec:
    """Every knob of one synthetic scan; the defaults give a typical calf wound."""

    seed: int = 0
    surface: str = "calf"
    limb_radius_m: float = 0.06
    """calf: cylinder radius (0.04-0.12); heel: ellipsoid scale; ignored for plane/sacrum."""
    outline: str = "irregular"
    profile: str = "bowl"
    radius_m: float = 0.015
    """Mean outline radius (projected); keep <= 0.4 * limb_radius_m on curved limbs."""
    max_depth_m: float = 0.006
    skin_tone: int = 3
    """1..6, Fitzpatrick-like, light to very dark."""
    noise_mm: float = 1.0
    """Depth noise std (mm) of high-confidence pixels at 0.30 m."""
    frames: int = 10
    distance_m: float = 0.30
    """Nominal camera distance to the wound centre."""
    tilt_deg: float | None = None
    """Camera tilt from the wound normal; None draws it from the seed (0-20)."""
    motion: float = 1.0
    """Scale of hand motion between frames (0 = tripod)."""
    color_scale: int = 2
    """Colour image size = depth grid size x this."""


def random_spec(seed: int, **overrides: Any) -> WoundSpec:
    """A varied wound drawn from `seed`; keyword overrides fix any `WoundSpec` field.

    Raises:
        TypeError: an override names no `WoundSpec` field.
    """
    names = {f.name for f in dataclasses.fields(WoundSpec)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"random_spec() got unknown WoundSpec fields: {', '.join(unknown)}")
    rng = np.random.default_rng([seed, 0x5EC])

    def pick(name: str, draw: Any) -> Any:
        return overrides[name] if name in overrides else draw()

    surface = pick("surface", lambda: SURFACES[rng.choice(4, p=[0.2, 0.4, 0.15, 0.25])])
    limb_draw = {
        "calf": lambda: rng.uniform(0.045, 0.11),
        "heel": lambda: rng.uniform(0.035, 0.048),
    }.get(surface, lambda: 0.25)
    limb = pick("limb_radius_m", limb_draw)
    outline = pick("outline", lambda: OUTLINES[rng.integers(2)])
    profile = pick("profile", lambda: PROFILES[rng.choice(4, p=[0.35, 0.2, 0.25, 0.2])])
    r_hi = 0.03 if surface in ("plane", "sacrum") else min(0.03, 0.4 * limb)
    radius = pick("radius_m", lambda: math.exp(rng.uniform(math.log(0.005), math.log(r_hi))))
    if profile == "shallow":
        depth = pick("max_depth_m", lambda: rng.uniform(0.001, 0.002))
    else:
        depth = pick(
            "max_depth_m", lambda: rng.uniform(0.002, max(0.0025, min(0.015, 0.6 * radius)))
        )
    spec = WoundSpec(
        seed=seed,
        surface=surface,
        limb_radius_m=float(limb),
        outline=outline,
        profile=profile,
        radius_m=float(radius),
        max_depth_m=float(depth),
        skin_tone=int(pick("skin_tone", lambda: rng.integers(1, 7))),
        noise_mm=float(pick("noise_mm", lambda: rng.uniform(0.6, 1.6))),
        distance_m=float(pick("distance_m", lambda: rng.uniform(0.22, 0.38))),
        motion=float(pick("motion", lambda: rng.uniform(0.3, 1.5))),
    )
    rest = {k: v for k, v in overrides.items() if k not in _DRAWN}
    return dataclasses.replace(spec, **rest)


_DRAWN = frozenset(
    {
        "surface",
        "limb_radius_m",
        "outline",
        "profile",
        "radius_m",
        "max_depth_m",
        "skin_tone",
        "noise_mm",
        "distance_m",
        "motion",
    }
)


def _check_spec(spec: WoundSpec) -> None:
    problems = []
    if spec.surface not in SURFACES:
        problems.append(f"surface must be one of {SURFACES}, not {spec.surface!r}")
    if spec.outline not in OUTLINES:
        problems.append(f"outline must be one of {OUTLINES}, not {spec.outline!r}")
    if spec.profile not in PROFILES:
        problems.append(f"profile must be one of {PROFILES}, not {spec.profile!r}")
    if not spec.radius_m > 0 or not spec.max_depth_m > 0 or not spec.limb_radius_m > 0:
        problems.append("radius_m, max_depth_m and limb_radius_m must be positive")
    if not 1 <= spec.skin_tone <= 6:
        problems.append("skin_tone must be 1..6")
    if spec.noise_mm < 0 or spec.motion < 0:
        problems.append("noise_mm and motion must be >= 0")
    if spec.frames < 1 or spec.color_scale < 1:
        problems.append("frames and color_scale must be >= 1")
    if not 0.05 <= spec.distance_m <= 3.0:
        problems.append("distance_m must be within 0.05-3.0 m")
    if spec.tilt_deg is not None and not 0 <= spec.tilt_deg <= 70:
        problems.append("tilt_deg must be within 0-70 degrees")
    if problems:
        raise ValueError("invalid WoundSpec: " + "; ".join(problems))


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Fourier:
    """A smooth random field: a sum of cosines with unit standard deviation."""

    k: F64  # (n, dim) angular wave vectors
    phase: F64
    amp: F64

    @staticmethod
    def draw(rng: np.random.Generator, n: int, dim: int, lam_lo: float, lam_hi: float) -> _Fourier:
        direction = rng.normal(size=(n, dim))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        lam = np.exp(rng.uniform(math.log(lam_lo), math.log(lam_hi), n))
        amp = rng.uniform(0.5, 1.0, n)
        amp *= math.sqrt(2.0 / float(np.sum(amp**2)))
        return _Fourier(
            direction * (2 * math.pi / lam)[:, None], rng.uniform(0, 2 * math.pi, n), amp
        )

    def __call__(self, *coords: F64) -> F64:
        out = np.zeros(np.shape(coords[0]))
        for k, ph, a in zip(self.k, self.phase, self.amp, strict=True):
            arg = k[0] * coords[0] + ph
            for i in range(1, len(coords)):
                arg += k[i] * coords[i]
            out += a * np.cos(arg)
        return out


@dataclass(frozen=True)
class _Surface:
    kind: str
    r: float
    bed: float  # the background plane is z = -bed (inf: none, the skin fills the view)

    @property
    def abc(self) -> tuple[float, float, float]:
        return self.r, _HEEL_B * self.r, _HEEL_C * self.r

    def height(self, x: F64, y: F64) -> F64:
        if self.kind == "calf":
            return np.sqrt(np.maximum(self.r**2 - x**2, 0.0)) - self.r
        if self.kind == "heel":
            a, b, c = self.abc
            return c * (np.sqrt(np.maximum(1 - (x / a) ** 2 - (y / b) ** 2, 0.0)) - 1)
        if self.kind == "sacrum":
            return -(x**2) / (2 * _SACRUM_RX) - y**2 / (2 * _SACRUM_RY)
        return np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)))

    def grad(self, x: F64, y: F64) -> tuple[F64, F64]:
        zero = np.zeros(np.broadcast_shapes(np.shape(x), np.shape(y)))
        if self.kind == "calf":
            return -x / np.sqrt(np.maximum(self.r**2 - x**2, 1e-12)), zero
        if self.kind == "heel":
            a, b, c = self.abc
            root = np.sqrt(np.maximum(1 - (x / a) ** 2 - (y / b) ** 2, 1e-12))
            return -c * x / (a * a * root), -c * y / (b * b * root)
        if self.kind == "sacrum":
            return -x / _SACRUM_RX + zero, -y / _SACRUM_RY + zero
        return zero, zero

    def intersect(self, o: F64, d: F64) -> F64:
        """Ray parameter of the first skin hit of rays o + t d (d: (3, N)); inf on a miss."""
        dx, dy, dz = d
        ox, oy, oz = o
        if self.kind == "plane":
            with np.errstate(divide="ignore"):
                t = np.where(dz < 0, -oz / np.where(dz < 0, dz, -1.0), np.inf)
            return t
        if self.kind == "calf":
            zc = oz + self.r
            qa = dx * dx + dz * dz
            qb = 2 * (ox * dx + zc * dz)
            qc = ox * ox + zc * zc - self.r**2
        elif self.kind == "heel":
            a, b, c = self.abc
            sx, sy, sz = dx / a, dy / b, dz / c
            px, py, pz = ox / a, oy / b, (oz + c) / c
            qa = sx * sx + sy * sy + sz * sz
            qb = 2 * (px * sx + py * sy + pz * sz)
            qc = px * px + py * py + pz * pz - 1.0
        else:  # sacrum: z + x^2/(2 rx) + y^2/(2 ry) = 0
            ax, ay = 1 / (2 * _SACRUM_RX), 1 / (2 * _SACRUM_RY)
            qa = ax * dx * dx + ay * dy * dy
            qb = dz + 2 * (ax * ox * dx + ay * oy * dy)
            qc = oz + ax * ox * ox + ay * oy * oy
        disc = qb * qb - 4 * qa * qc
        # The camera is outside the body (qc > 0): the nearer root, in the stable form.
        ok = (disc >= 0) & (qb < 0)
        den = np.where(ok, -qb + np.sqrt(np.where(ok, disc, 0.0)), 1.0)
        return np.where(ok, 2 * qc / den, np.inf)

    def normal(self, x: F64, y: F64, z: F64) -> tuple[F64, F64, F64]:
        """Outward (unnormalised) normal of the smooth skin at points on it."""
        if self.kind == "calf":
            return x, np.zeros_like(x), z + self.r
        if self.kind == "heel":
            a, b, c = self.abc
            return x / (a * a), y / (b * b), (z + c) / (c * c)
        if self.kind == "sacrum":
            return x / _SACRUM_RX, y / _SACRUM_RY, np.ones_like(x)
        return np.zeros_like(x), np.zeros_like(x), np.ones_like(x)


@dataclass(frozen=True)
class _Outline:
    kind: str
    r0: float
    aspect: float
    psi: float
    amps: F64  # a_k for k = 2..6
    phases: F64

    @property
    def semi_axes(self) -> tuple[float, float]:
        return self.r0 * math.sqrt(self.aspect), self.r0 / math.sqrt(self.aspect)

    def radius(self, theta: F64) -> F64:
        if self.kind == "ellipse":
            a, b = self.semi_axes
            phi = theta - self.psi
            return a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)
        out = np.ones_like(theta)
        for k, (ak, ph) in enumerate(zip(self.amps, self.phases, strict=True), start=2):
            out = out + ak * np.cos(k * theta + ph)
        return self.r0 * out

    def dradius(self, theta: F64) -> F64:
        if self.kind == "ellipse":
            a, b = self.semi_axes
            phi = theta - self.psi
            q = (b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2
            return -a * b * (a * a - b * b) * np.sin(phi) * np.cos(phi) / q**1.5
        out = np.zeros_like(theta)
        for k, (ak, ph) in enumerate(zip(self.amps, self.phases, strict=True), start=2):
            out = out - k * ak * np.sin(k * theta + ph)
        return self.r0 * out

    def u(self, x: F64, y: F64) -> F64:
        """rho / R(theta) at points (x, y), without trigonometric calls (the hot path)."""
        if self.kind == "ellipse":
            a, b = self.semi_axes
            c, s = math.cos(self.psi), math.sin(self.psi)
            return np.sqrt(((x * c + y * s) / a) ** 2 + ((y * c - x * s) / b) ** 2)
        rho = np.hypot(x, y)
        safe = np.where(rho > 0, rho, 1.0)
        c1, s1 = np.where(rho > 0, x / safe, 1.0), y / safe
        # cos(k theta), sin(k theta) by the Chebyshev recurrence.
        ck, sk, cprev, sprev = c1, s1, np.ones_like(c1), np.zeros_like(c1)
        total = np.ones_like(c1)
        for ak, ph in zip(self.amps, self.phases, strict=True):
            ck, sk, cprev, sprev = 2 * c1 * ck - cprev, 2 * c1 * sk - sprev, ck, sk
            total += ak * (ck * math.cos(ph) - sk * math.sin(ph))
        return rho / (self.r0 * total)

    @functools.cached_property
    def r_max(self) -> float:
        theta = _angles(4096)
        return float(np.max(self.radius(theta)))


@dataclass(frozen=True)
class _Profile:
    kind: str
    depth: float
    slope_dir: F64
    r0: float
    slope_norm: float  # M of the sloped profile

    def gap(self, u: F64, x: F64, y: F64) -> F64:
        """d(x, y) given u = rho / R(theta); zero for u >= 1."""
        inside = u < 1
        uc = np.minimum(u, 1.0)
        if self.kind == "bowl":
            d = 1 - uc**2
        elif self.kind == "punched":
            t = np.clip((1 - uc) / 0.2, 0.0, 1.0)
            d = t * t * (3 - 2 * t)
        elif self.kind == "sloped":
            ramp = 1 + 0.6 * (self.slope_dir[0] * x + self.slope_dir[1] * y) / self.r0
            d = (1 - uc**2) * ramp / self.slope_norm
        else:
            d = 1 - uc**4
        return np.where(inside, self.depth * d, 0.0)


@dataclass(frozen=True)
class _Tissue:
    slough: _Fourier
    necrosis: _Fourier
    gate: _Fourier
    slough_cut: float
    necrosis_cut: float
    gate_cut: float
    band: float

    def label(self, x: F64, y: F64, u: F64, theta: F64) -> U8:
        lab = np.ones(np.shape(x), dtype=np.uint8)
        if math.isfinite(self.slough_cut):
            lab[self.slough(x, y) > self.slough_cut] = 2
        if math.isfinite(self.necrosis_cut):
            lab[self.necrosis(x, y) > self.necrosis_cut] = 3
        if math.isfinite(self.gate_cut):
            lab[(u > 1 - self.band) & (self.gate(theta) > self.gate_cut)] = 4
        return lab


@dataclass(frozen=True)
class _Wound:
    surface: _Surface
    outline: _Outline
    profile: _Profile
    tissue: _Tissue

    def u_theta(self, x: F64, y: F64) -> tuple[F64, F64]:
        return self.outline.u(x, y), np.arctan2(y, x)

    def gap(self, x: F64, y: F64) -> F64:
        return self.profile.gap(self.outline.u(x, y), x, y)

    def above_floor(self, x: F64, y: F64, z: F64) -> F64:
        """z minus the wound floor height (positive above the floor)."""
        return z - self.surface.height(x, y) + self.gap(x, y)


def _angles(n: int, midpoints: bool = False) -> F64:
    """n equally spaced angles over [0, 2 pi), at cell midpoints when asked."""
    step = 2 * math.pi / n
    start = 0.5 * step if midpoints else 0.0
    return np.linspace(start, start + (n - 1) * step, n)


def _weighted_quantile(values: F64, weights: F64, q: float) -> float:
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    i = int(np.searchsorted(cum, q * cum[-1]))
    return float(values[order][min(i, len(values) - 1)])


def _polar_grid(outline: _Outline, n_u: int, n_theta: int) -> tuple[F64, F64, F64, F64, F64]:
    """Midpoint grid over Omega: x, y, u, theta and projected-area weights."""
    u = np.linspace(0.5 / n_u, 1 - 0.5 / n_u, n_u)
    theta = _angles(n_theta, midpoints=True)
    rad = outline.radius(theta)
    uu, tt = np.meshgrid(u, theta, indexing="ij")
    rr = np.broadcast_to(rad, uu.shape)
    w = uu * rr**2 * (1.0 / n_u) * (2 * math.pi / n_theta)
    return uu * rr * np.cos(tt), uu * rr * np.sin(tt), uu, tt, w


def _build_wound(spec: WoundSpec, rng: np.random.Generator) -> _Wound:
    r0 = spec.radius_m
    if spec.outline == "ellipse":
        outline = _Outline(
            "ellipse", r0, rng.uniform(1.0, 2.2), rng.uniform(0, math.pi), np.zeros(5), np.zeros(5)
        )
    else:
        ks = np.arange(2, 7)
        amps = rng.uniform(0.2, 1.0, 5) / ks**0.8
        amps *= rng.uniform(0.25, 0.5) / amps.sum()
        outline = _Outline("irregular", r0, 1.0, 0.0, amps, rng.uniform(0, 2 * math.pi, 5))

    lim = spec.limb_radius_m
    if spec.surface == "calf":
        if outline.r_max > 0.7 * lim:
            raise ValueError("wound too large for the calf: keep radius_m <= 0.4 * limb_radius_m")
        bed = max(rng.uniform(0.10, 0.20), 2 * lim + rng.uniform(0.0, 0.02))
    elif spec.surface == "heel":
        theta = _angles(2048)
        rad = outline.radius(theta)
        reach = (rad * np.cos(theta) / lim) ** 2 + (rad * np.sin(theta) / (_HEEL_B * lim)) ** 2
        if float(reach.max()) > 0.75:
            raise ValueError("wound too large for the heel: keep radius_m <= 0.4 * limb_radius_m")
        bed = max(rng.uniform(0.10, 0.20), 2 * _HEEL_C * lim + rng.uniform(0.0, 0.02))
    else:
        if outline.r_max > 0.15:
            raise ValueError("wound too large: keep radius_m <= 0.1 m")
        bed = math.inf
    surface = _Surface(spec.surface, lim, bed)

    depth = spec.max_depth_m
    if spec.profile == "shallow":
        depth = min(max(depth, 0.001), 0.002)
    angle = rng.uniform(0, 2 * math.pi)
    slope_dir = np.array([math.cos(angle), math.sin(angle)])
    profile = _Profile(spec.profile, depth, slope_dir, r0, 1.0)
    if spec.profile == "sloped":
        profile = dataclasses.replace(profile, slope_norm=_sloped_max(outline, profile))

    # Tissue fields: slough/necrosis patches a fraction of the wound wide, an epithelium band.
    slough = _Fourier.draw(rng, 8, 2, 0.7 * r0, 2.2 * r0)
    necrosis = _Fourier.draw(rng, 8, 2, 0.7 * r0, 2.2 * r0)
    gate = _Fourier(
        np.arange(1.0, 4.0)[:, None], rng.uniform(0, 2 * math.pi, 3), rng.uniform(0.5, 1.0, 3)
    )
    x, y, u, theta, w = _polar_grid(outline, 48, 256)
    x, y, u, theta, w = (v.ravel() for v in (x, y, u, theta, w))
    f_slough = rng.uniform(0.0, 0.4)
    f_necrosis = 0.0 if rng.uniform() < 0.4 else rng.uniform(0.03, 0.25)
    f_gate = 0.0 if rng.uniform() < 0.3 else rng.uniform(0.2, 0.6)
    band = rng.uniform(0.08, 0.18)

    def cut(field: F64, frac: float) -> float:
        return _weighted_quantile(field, w, 1 - frac) if frac > 0.005 else math.inf

    gate_theta = _angles(720)
    tissue = _Tissue(
        slough,
        necrosis,
        gate,
        cut(slough(x, y), f_slough),
        cut(necrosis(x, y), f_necrosis),
        float(np.quantile(gate(gate_theta), 1 - f_gate)) if f_gate > 0 else math.inf,
        band,
    )
    return _Wound(surface, outline, profile, tissue)


def _sloped_max(outline: _Outline, profile: _Profile) -> float:
    """M: the maximum of (1 - u^2)(1 + 0.6 e.p / R0) over Omega, refined to ~1e-9."""
    unit = dataclasses.replace(profile, depth=1.0, slope_norm=1.0)
    x, y, u, _, _ = _polar_grid(outline, 200, 720)
    vals = unit.gap(u, x, y)
    i = int(np.argmax(vals))
    cx, cy, half = float(x.flat[i]), float(y.flat[i]), outline.r0 * 0.05
    best = float(vals.flat[i])
    for _ in range(6):
        gx, gy = np.meshgrid(
            np.linspace(cx - half, cx + half, 41), np.linspace(cy - half, cy + half, 41)
        )
        theta = np.arctan2(gy, gx)
        gu = np.hypot(gx, gy) / outline.radius(theta)
        vals = unit.gap(gu, gx, gy)
        j = int(np.argmax(vals))
        cx, cy, best = float(gx.flat[j]), float(gy.flat[j]), float(vals.flat[j])
        half *= 0.1
    return best


# --------------------------------------------------------------------------- ground truth


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """The exact measurements of one synthetic wound (see the module docstring)."""

    area_cm2: float
    perimeter_cm: float
    length_cm: float
    width_cm: float
    major_length_cm: float
    minor_width_cm: float
    max_depth_mm: float
    mean_depth_mm: float
    volume_cm3: float
    ruler_area_cm2: float
    tissue_composition: dict[str, float]
    """Percent of the wound area per tissue (granulation, slough, necrosis, epithelium)."""
    wound_to_world: F64
    """(4, 4) wound frame W to world."""
    body_axis: F64
    """Unit head-ward vector in world coordinates."""
    outline_world: F64
    """(N, 3) the outline on the skin, world metres."""

    def to_json(self) -> dict[str, object]:
        """Plain JSON-able values (floats, lists, dicts)."""
        out: dict[str, object] = {
            f.name: float(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name.endswith(("_cm2", "_cm", "_mm", "_cm3"))
        }
        out["tissue_composition"] = {k: float(v) for k, v in self.tissue_composition.items()}
        out["wound_to_world"] = self.wound_to_world.tolist()
        out["body_axis"] = self.body_axis.tolist()
        out["outline_world"] = self.outline_world.tolist()
        return out


def _surface_length(wound: _Wound, c: F64, a: F64, t0: float, t1: float) -> float:
    nodes, weights = np.polynomial.legendre.leggauss(64)
    t = 0.5 * (t1 - t0) * nodes + 0.5 * (t1 + t0)
    sx, sy = wound.surface.grad(c[0] + t * a[0], c[1] + t * a[1])
    slope = sx * a[0] + sy * a[1]
    return float(0.5 * (t1 - t0) * np.sum(weights * np.sqrt(1 + slope**2)))


def _extent(outline: _Outline, c: F64, a: F64) -> tuple[float, float]:
    """min and max of (p - c) . a over the outline, parabola-refined from a dense sampling."""
    n = 8192
    theta = _angles(n)
    rad = outline.radius(theta)
    f = (rad * np.cos(theta) - c[0]) * a[0] + (rad * np.sin(theta) - c[1]) * a[1]

    def peak(g: F64) -> float:
        i = int(np.argmax(g))
        y0, y1, y2 = g[i - 1], g[i], g[(i + 1) % n]
        den = y0 - 2 * y1 + y2
        return float(y1 - 0.125 * (y2 - y0) ** 2 / den) if den < 0 else float(y1)

    return -peak(-f), peak(f)


def _ground_truth(wound: _Wound) -> dict[str, Any]:
    """The contract's measurements in the wound frame (metres), see the module docstring."""
    outline, surface = wound.outline, wound.surface
    n_theta = 2048
    theta = _angles(n_theta)
    rad = outline.radius(theta)
    # Gauss-Legendre in u, split at 0.8 where the punched profile's walls start.
    g_nodes, g_w = np.polynomial.legendre.leggauss(48)
    u = np.concatenate([0.4 * (g_nodes + 1), 0.8 + 0.1 * (g_nodes + 1)])
    wu = np.concatenate([0.4 * g_w, 0.1 * g_w])
    uu, tt = np.meshgrid(u, theta, indexing="ij")
    rr = np.broadcast_to(rad, uu.shape)
    x, y = uu * rr * np.cos(tt), uu * rr * np.sin(tt)
    dA = wu[:, None] * uu * rr**2 * (2 * math.pi / n_theta)
    sx, sy = surface.grad(x, y)
    lid = np.sqrt(1 + sx**2 + sy**2)
    d = wound.profile.gap(uu, x, y)

    proj_area = float(dA.sum())
    area = float((dA * lid).sum())
    volume = float((dA * d).sum())
    c = np.array([(dA * x).sum(), (dA * y).sum()]) / proj_area
    px, py = x - c[0], y - c[1]
    moment = np.array(
        [[(dA * px * px).sum(), (dA * px * py).sum()], [(dA * px * py).sum(), (dA * py * py).sum()]]
    )
    major = np.linalg.eigh(moment)[1][:, -1]
    minor = np.array([-major[1], major[0]])

    dr = outline.dradius(theta)
    cos, sin = np.cos(theta), np.sin(theta)
    ox, oy = rad * cos, rad * sin
    dx, dy = dr * cos - rad * sin, dr * sin + rad * cos
    gx, gy = surface.grad(ox, oy)
    dz = gx * dx + gy * dy
    perimeter = float(np.sum(np.sqrt(dx * dx + dy * dy + dz * dz)) * (2 * math.pi / n_theta))

    def length(axis: F64) -> float:
        return _surface_length(wound, c, axis, *_extent(outline, c, axis))

    # Tissue: a finer midpoint grid, since the labels are discontinuous.
    tx, ty, tu, tth, tw = _polar_grid(outline, 256, 2048)
    gsx, gsy = surface.grad(tx, ty)
    weight = tw * np.sqrt(1 + gsx**2 + gsy**2)
    labels = wound.tissue.label(tx, ty, tu, tth)
    total = float(weight.sum())
    composition = {
        name: 100.0 * float(weight[labels == i].sum()) / total
        for i, name in enumerate(TISSUES)
        if i > 0
    }
    tt_out = _angles(_OUTLINE_POINTS)
    r_out = outline.radius(tt_out)
    x_out, y_out = r_out * np.cos(tt_out), r_out * np.sin(tt_out)
    outline_w = np.stack([x_out, y_out, surface.height(x_out, y_out)], axis=1)
    return {
        "area": area,
        "perimeter": perimeter,
        "length": length(np.array([0.0, 1.0])),
        "width": length(np.array([1.0, 0.0])),
        "major": length(major),
        "minor": length(minor),
        "max_depth": wound.profile.depth,
        "volume": volume,
        "mean_depth": volume / proj_area,
        "composition": composition,
        "outline": outline_w,
    }


# --------------------------------------------------------------------------- camera


def _rotvec(v: F64) -> F64:
    """Rodrigues: the rotation matrix of rotation vector v (radians)."""
    angle = float(np.linalg.norm(v))
    if angle < 1e-15:
        return np.eye(3)
    k = v / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    out: F64 = np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * (kx @ kx)
    return out


def _rigid(rot: F64, trans: F64) -> F64:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, trans
    return out


def _camera_path(spec: WoundSpec, rng: np.random.Generator) -> tuple[list[F64], list[F64]]:
    """True and reported camera-to-W poses (OpenCV axes) of every frame."""
    tilt = math.radians(rng.uniform(0, 20) if spec.tilt_deg is None else spec.tilt_deg)
    azimuth, roll = rng.uniform(0, 2 * math.pi, 2)
    view = np.array(
        [math.sin(tilt) * math.cos(azimuth), math.sin(tilt) * math.sin(azimuth), math.cos(tilt)]
    )
    position = spec.distance_m * view
    fwd = -view
    ref = np.array([0.0, 1.0, 0.0]) if abs(fwd[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    x0 = np.cross(fwd, ref)
    x0 /= np.linalg.norm(x0)
    y0 = np.cross(fwd, x0)
    cx, sx = math.cos(roll), math.sin(roll)
    rot0 = np.stack([cx * x0 + sx * y0, -sx * x0 + cx * y0, fwd], axis=1)

    # Hand motion: AR(1) velocities, so the path is a smooth random walk.
    step_t, step_r, keep = 0.0015 * spec.motion, math.radians(0.3) * spec.motion, 0.6
    fresh = math.sqrt(1 - keep**2) / math.sqrt(3)
    vel_t, vel_r = np.zeros(3), np.zeros(3)
    pos, rvec = position.copy(), np.zeros(3)
    true, reported = [], []
    for i in range(spec.frames):
        if i > 0:
            vel_t = keep * vel_t + fresh * step_t * rng.normal(size=3)
            vel_r = keep * vel_r + fresh * step_r * rng.normal(size=3)
            pos, rvec = pos + vel_t, rvec + vel_r
        pose = _rigid(rot0 @ _rotvec(rvec), pos)
        err_t = rng.normal(scale=0.0003 / math.sqrt(3), size=3)
        err_r = rng.normal(scale=math.radians(0.03) / math.sqrt(3), size=3)
        true.append(pose)
        reported.append(_rigid(pose[:3, :3] @ _rotvec(err_r), pose[:3, 3] + err_t))
    return true, reported


# --------------------------------------------------------------------------- rendering


_SKIN_KIND, _BED_KIND, _NONE_KIND, _WOUND_KIND = 0, 1, 2, 3


@dataclass(frozen=True)
class _Look:
    """Everything about appearance drawn once per scan."""

    skin: F64
    bed: F64
    mottle: _Fourier
    redness: _Fourier
    grain: tuple[_Fourier, ...]  # per tissue label 1..4
    tint: F64


def _draw_look(spec: WoundSpec, rng: np.random.Generator) -> _Look:
    skin = _SKIN[spec.skin_tone - 1] * rng.uniform(0.96, 1.04, 3)
    # Many waves of mixed orientation so no texture reads as stripes.
    grains = (
        _Fourier.draw(rng, 16, 3, 0.0012, 0.0035),  # granulation: granular
        _Fourier.draw(rng, 10, 3, 0.002, 0.008),
        _Fourier.draw(rng, 10, 3, 0.0015, 0.006),
        _Fourier.draw(rng, 8, 3, 0.003, 0.010),
    )
    return _Look(
        skin=skin,
        bed=_BEDS[rng.integers(len(_BEDS))] * rng.uniform(0.95, 1.02),
        mottle=_Fourier.draw(rng, 10, 3, 0.03, 0.12),
        redness=_Fourier.draw(rng, 8, 3, 0.02, 0.06),
        grain=grains,
        tint=1 + rng.uniform(-0.05, 0.05, 3),
    )


def _ray_grid(spec: WoundSpec) -> tuple[F64, int]:
    """Camera-axis directions (z = 1) of the sub-pixel rays, and their size per depth pixel."""
    k = spec.color_scale * _SUPERSAMPLE
    grid = DEPTH_INTRINSICS.scaled(DEPTH_INTRINSICS.width * k, DEPTH_INTRINSICS.height * k)
    u = (np.arange(grid.width) - grid.cx) / grid.fx
    v = (np.arange(grid.height) - grid.cy) / grid.fy
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)]), k


def _march(wound: _Wound, o: F64, d: F64, t0: F64, steps: int = 16) -> F64:
    """First crossing of the wound floor for rays entering the wound through the lid at t0."""
    x0, y0 = o[0] + t0 * d[0], o[1] + t0 * d[1]
    sx, sy = wound.surface.grad(x0, y0)
    # Descent rate below the skin per unit t; grazing rays get a bounded march length.
    rate = np.maximum(-(d[2] - sx * d[0] - sy * d[1]), 0.08 * np.linalg.norm(d, axis=0))
    span = 1.3 * wound.profile.depth / rate
    frac = np.arange(1, steps + 1) / steps

    def above(t: F64) -> F64:
        return wound.above_floor(o[0] + t * d[0], o[1] + t * d[1], o[2] + t * d[2])

    # March to the first sign change; rays still above the floor march on, twice as far.
    start, lo, hi = t0.copy(), t0.copy(), t0.copy()
    todo = np.arange(len(t0))
    for _ in range(4):
        ts = start[todo, None] + span[todo, None] * frac[None, :]
        dd = d[:, todo]
        h = wound.above_floor(
            o[0] + ts * dd[0][:, None], o[1] + ts * dd[1][:, None], o[2] + ts * dd[2][:, None]
        )
        below = h < 0
        first = np.argmax(below, axis=1)
        rows = np.arange(len(todo))
        found = below[rows, first]
        done = todo[found]
        hi[done] = ts[rows[found], first[found]]
        prev = np.maximum(first[found] - 1, 0)
        lo[done] = np.where(first[found] > 0, ts[rows[found], prev], start[done])
        todo = todo[~found]
        if not todo.size:
            break
        start[todo] = ts[~found, -1]
        span[todo] *= 2
    lo[todo] = hi[todo] = start[todo]  # never reached the floor (not seen in practice)
    # Bisect to 1/64 of a step, then regula falsi: the floor is smooth within the bracket.
    for _ in range(6):
        mid = 0.5 * (lo + hi)
        up = above(mid) >= 0
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    h_lo, h_hi = above(lo), above(hi)
    for _ in range(3):
        den = h_lo - h_hi
        mid = np.where(
            den > 0, lo + (hi - lo) * h_lo / np.where(den > 0, den, 1.0), 0.5 * (lo + hi)
        )
        h_mid = above(mid)
        up = h_mid >= 0
        lo, h_lo = np.where(up, mid, lo), np.where(up, h_mid, h_lo)
        hi, h_hi = np.where(up, hi, mid), np.where(up, h_hi, h_mid)
    return np.where(np.abs(h_lo) < np.abs(h_hi), lo, hi)


@dataclass(frozen=True)
class _Render:
    depth: F32
    confidence: U8
    color: U8
    labels: U8


def _render_frame(
    spec: WoundSpec,
    wound: _Wound,
    look: _Look,
    pose: F64,
    rays: F64,
    ray_norm: F64,
    k: int,
    rng: np.random.Generator,
) -> _Render:
    surface = wound.surface
    rot, o = pose[:3, :3], pose[:3, 3]
    d = rot @ rays
    n_rays = d.shape[1]
    t = surface.intersect(o, d)
    kind = np.where(np.isfinite(t), _SKIN_KIND, _NONE_KIND).astype(np.int8)
    if math.isfinite(surface.bed):
        with np.errstate(divide="ignore", invalid="ignore"):
            t_bed = np.where(d[2] < 0, (-surface.bed - o[2]) / d[2], np.inf)
        use_bed = ~np.isfinite(t) & np.isfinite(t_bed)
        t = np.where(use_bed, t_bed, t)
        kind[use_bed] = _BED_KIND
    t[t > _MAX_RANGE_M] = np.inf
    kind[~np.isfinite(t)] = _NONE_KIND
    tf = np.where(np.isfinite(t), t, 0.0)
    px, py, pz = o[0] + tf * d[0], o[1] + tf * d[1], o[2] + tf * d[2]

    # Rays whose skin hit lies inside the outline enter the wound: march to the floor.
    r_max = wound.outline.r_max
    cand = np.flatnonzero(
        (kind == _SKIN_KIND) & (px * px + py * py < r_max * r_max) & (pz > -0.5 * r_max - 0.01)
    )
    enter = cand[wound.outline.u(px[cand], py[cand]) < 1]
    labels = np.zeros(n_rays, dtype=np.uint8)
    nx, ny, nz = surface.normal(px, py, pz)
    if math.isfinite(surface.bed):
        bed = kind == _BED_KIND
        nx, ny, nz = np.where(bed, 0.0, nx), np.where(bed, 0.0, ny), np.where(bed, 1.0, nz)
    if enter.size:
        tw = _march(wound, o, d[:, enter], t[enter])
        t[enter] = tw
        kind[enter] = _WOUND_KIND
        wx, wy, wz = o[0] + tw * d[0, enter], o[1] + tw * d[1, enter], o[2] + tw * d[2, enter]
        px[enter], py[enter], pz[enter] = wx, wy, wz
        wu, wth = wound.u_theta(wx, wy)
        labels[enter] = wound.tissue.label(wx, wy, wu, wth)
        eps = 1e-6
        gsx, gsy = surface.grad(wx, wy)
        gdx = (wound.gap(wx + eps, wy) - wound.gap(wx - eps, wy)) / (2 * eps)
        gdy = (wound.gap(wx, wy + eps) - wound.gap(wx, wy - eps)) / (2 * eps)
        nx[enter], ny[enter], nz[enter] = -(gsx - gdx), -(gsy - gdy), np.ones(enter.size)
    cos = -(nx * d[0] + ny * d[1] + nz * d[2]) / (np.sqrt(nx * nx + ny * ny + nz * nz) * ray_norm)
    cos = np.where(kind == _NONE_KIND, 0.0, np.clip(cos, 0.0, 1.0))

    grid_h, grid_w = DEPTH_INTRINSICS.height * k, DEPTH_INTRINSICS.width * k
    color = _shade(wound, look, kind, labels, px, py, pz, cos, grid_h, grid_w, k)
    depth, conf = _sense(
        spec,
        t.reshape(grid_h, grid_w),
        cos.reshape(grid_h, grid_w),
        labels.reshape(grid_h, grid_w),
        k,
        rng,
    )

    ss = _SUPERSAMPLE
    h_c, w_c = grid_h // ss, grid_w // ss
    img = _block_mean(color.reshape(grid_h, grid_w, 3), ss)
    img *= (look.tint * 255).astype(np.float32)
    img += rng.normal(scale=3.0, size=img.shape).astype(np.float32)
    rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    # A colour pixel takes the majority label of its sub-pixels (ties: the lower id).
    label_grid = labels.reshape(grid_h, grid_w)
    label_img = np.zeros((h_c, w_c), dtype=np.uint8)
    if enter.size:
        rows, cols = np.nonzero(_block_mean(label_grid.astype(np.float32), ss) > 0)
        blocks = label_grid.reshape(h_c, ss, w_c, ss)[rows, :, cols, :].reshape(len(rows), -1)
        counts = np.stack([(blocks == i).sum(axis=1) for i in range(len(TISSUES))], axis=1)
        label_img[rows, cols] = np.argmax(counts, axis=1)
    return _Render(depth, conf, rgb, label_img)


def _block_mean(a: npt.NDArray[Any], k: int) -> npt.NDArray[Any]:
    """Mean over k x k blocks of the first two axes."""
    h, w = a.shape[0] // k, a.shape[1] // k
    rows = a.reshape(h, k, *a.shape[1:]).sum(axis=1)
    out: npt.NDArray[Any] = rows.reshape(h, w, k, *a.shape[2:]).sum(axis=2) / (k * k)
    return out


def _shade(
    wound: _Wound,
    look: _Look,
    kind: npt.NDArray[np.int8],
    labels: U8,
    px: F64,
    py: F64,
    pz: F64,
    cos: F64,
    grid_h: int,
    grid_w: int,
    k: int,
) -> F32:
    """Sub-pixel RGB in [0, 1]: albedo times the camera-light Lambertian shading."""

    # Low-frequency skin texture is evaluated at one sub-ray per depth pixel and repeated:
    # it changes over centimetres, and this keeps the frame within the time budget.
    def coarse(field: _Fourier) -> F64:
        sub = (slice(k // 2, None, k), slice(k // 2, None, k))
        vals = field(
            px.reshape(grid_h, grid_w)[sub],
            py.reshape(grid_h, grid_w)[sub],
            pz.reshape(grid_h, grid_w)[sub],
        )
        return np.repeat(np.repeat(vals, k, axis=0), k, axis=1).ravel()

    mottle, redness = coarse(look.mottle), coarse(look.redness)
    albedo = look.skin.astype(np.float32)[None, :] * (1 + 0.06 * mottle[:, None]).astype(np.float32)
    albedo[:, 0] *= (1 + 0.03 * redness).astype(np.float32)
    # Peri-wound erythema: redder skin just outside the outline.
    r_max = wound.outline.r_max
    near = np.flatnonzero((kind == _SKIN_KIND) & (px * px + py * py < (1.6 * r_max) ** 2))
    if near.size:
        u = wound.outline.u(px[near], py[near])
        ery = 0.18 * np.exp(-(((u - 1) / 0.25) ** 2)) * (0.6 + 0.4 * np.tanh(redness[near]))
        albedo[near, 1] *= 1 - ery
        albedo[near, 2] *= 1 - 0.8 * ery
    bed = kind == _BED_KIND
    albedo[bed] = look.bed[None, :] * (1 + 0.03 * mottle[bed, None])
    albedo[kind == _NONE_KIND] = 0.05
    wnd = np.flatnonzero(kind == _WOUND_KIND)
    for lab in range(1, len(TISSUES)):
        sel = wnd[labels[wnd] == lab]
        if sel.size:
            g = np.tanh(1.5 * look.grain[lab - 1](px[sel], py[sel], pz[sel]))
            amp = (0.22, 0.10, 0.30, 0.06)[lab - 1]
            albedo[sel] = _TISSUE_ALBEDO[lab] * (1 + amp * g[:, None])
    albedo *= (0.35 + 0.65 * cos).astype(np.float32)[:, None]
    return albedo


def _sense(
    spec: WoundSpec, t: F64, cos: F64, labels: U8, k: int, rng: np.random.Generator
) -> tuple[F32, U8]:
    """Depth and confidence at the depth grid from the sub-ray hits (see the module docstring)."""
    h, w = DEPTH_INTRINSICS.height, DEPTH_INTRINSICS.width
    sub = t.reshape(h, k, w, k).transpose(0, 2, 1, 3).reshape(h, w, k * k)
    valid = np.all(np.isfinite(sub), axis=-1)
    subf = np.where(np.isfinite(sub), sub, 0.0)
    near, far = subf.min(axis=-1), subf.max(axis=-1)
    mean = subf.mean(axis=-1)
    mixed = valid & (far - near > _JUMP_M)
    # Flying pixels: the return mixes foreground and background.
    cover = (subf < 0.5 * (near + far)[..., None]).mean(axis=-1)
    alpha = np.clip(cover + rng.uniform(-0.15, 0.15, (h, w)), 0.05, 0.95)
    clean = np.where(mixed, alpha * near + (1 - alpha) * far, mean)

    hi = np.pad(np.where(valid, mean, -np.inf), 1, mode="edge")
    lo = np.pad(np.where(valid, mean, np.inf), 1, mode="edge")
    shifts = [(i, j) for i in range(3) for j in range(3)]
    spread = np.max([hi[i : i + h, j : j + w] for i, j in shifts], axis=0) - np.min(
        [lo[i : i + h, j : j + w] for i, j in shifts], axis=0
    )
    near_jump = (spread > _JUMP_M) | mixed

    graze = _block_mean(cos, k) < 0.5
    conf = np.full((h, w), 2, dtype=np.uint8)
    conf[graze | near_jump] = 1
    conf[mixed] = np.where(rng.uniform(size=(h, w)) < 0.3, 1, 0)[mixed]
    sigma = spec.noise_mm / 1000 * (clean / 0.30) ** 2 * np.where(conf == 2, 1.0, 2.0)
    depth = clean + sigma * rng.normal(size=(h, w))

    necrotic = _block_mean((labels == 3).astype(np.float32), k) > 0.5
    drop = rng.uniform(size=(h, w)) < np.where(necrotic, 0.05, 0.01)
    drop |= ~valid
    depth[drop] = 0.0
    conf[drop] = 0
    return depth.astype(np.float32), conf


# --------------------------------------------------------------------------- public


@dataclass(frozen=True, eq=False)
class SyntheticScan:
    """A synthetic capture with its ground truth and per-frame tissue labels."""

    spec: WoundSpec
    scan: Scan
    truth: GroundTruth
    labels: tuple[U8, ...]
    """Per frame, (h, w) uint8 `TISSUES` ids aligned with `Frame.color`."""


def generate(spec: WoundSpec) -> SyntheticScan:
    """Render the scan `spec` describes; the same spec always gives identical arrays.

    Raises:
        ValueError: the spec is invalid or the wound does not fit the limb.
    """
    _check_spec(spec)
    seeds = np.random.SeedSequence(spec.seed).spawn(5)
    g_wound, g_world, g_camera, g_look = (np.random.default_rng(s) for s in seeds[:4])
    wound = _build_wound(spec, g_wound)

    rot_world = _rotvec(g_world.normal(size=3) * math.pi)
    wound_to_world = _rigid(rot_world, g_world.uniform(-1.0, 1.0, 3))
    gt = _ground_truth(wound)
    outline_world = gt["outline"] @ rot_world.T + wound_to_world[:3, 3]
    truth = GroundTruth(
        area_cm2=gt["area"] * 1e4,
        perimeter_cm=gt["perimeter"] * 100,
        length_cm=gt["length"] * 100,
        width_cm=gt["width"] * 100,
        major_length_cm=gt["major"] * 100,
        minor_width_cm=gt["minor"] * 100,
        max_depth_mm=gt["max_depth"] * 1000,
        mean_depth_mm=gt["mean_depth"] * 1000,
        volume_cm3=gt["volume"] * 1e6,
        ruler_area_cm2=gt["length"] * gt["width"] * 1e4,
        tissue_composition=gt["composition"],
        wound_to_world=wound_to_world,
        body_axis=rot_world @ np.array([0.0, 1.0, 0.0]),
        outline_world=outline_world,
    )

    look = _draw_look(spec, g_look)
    true_poses, reported = _camera_path(spec, g_camera)
    rays, k = _ray_grid(spec)
    ray_norm = np.linalg.norm(rays, axis=0)
    frame_seeds = seeds[4].spawn(spec.frames)
    frames, labels = [], []
    for i in range(spec.frames):
        out = _render_frame(
            spec,
            wound,
            look,
            true_poses[i],
            rays,
            ray_norm,
            k,
            np.random.default_rng(frame_seeds[i]),
        )
        frames.append(
            Frame(
                depth=out.depth,
                intrinsics=DEPTH_INTRINSICS,
                pose=wound_to_world @ reported[i],
                confidence=out.confidence,
                color=out.color,
                timestamp=i / 30.0,
            )
        )
        labels.append(out.labels)
    scan = Scan(
        source="synthetic",
        origin=f"seed={spec.seed}",
        frames=tuple(frames),
        body_axis=truth.body_axis,
        metadata={"spec": dataclasses.asdict(spec)},
    )
    return SyntheticScan(spec=spec, scan=scan, truth=truth, labels=tuple(labels))


class SyntheticSource:
    """A `CaptureSource` that renders synthetic wound scans; `last` keeps the truth."""

    name = "synthetic"

    def __init__(self, spec: WoundSpec | None = None, **spec_fields: Any) -> None:
        base = spec if spec is not None else WoundSpec()
        self.spec = dataclasses.replace(base, **spec_fields)
        self.last: SyntheticScan | None = None

    def capture(self, max_frames: int | None = None) -> Scan:
        """Render the scan; `max_frames` overrides the spec's frame count."""
        spec = (
            self.spec if max_frames is None else dataclasses.replace(self.spec, frames=max_frames)
        )
        self.last = generate(spec)
        return self.last.scan
