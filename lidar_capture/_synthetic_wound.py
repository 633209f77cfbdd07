"""The procedural wound on skin, and its exact ground truth.

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
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lidar_capture._synthetic_spec import TISSUES, WoundSpec

__all__ = ["Fourier", "GroundTruth", "Wound", "build_wound", "ground_truth"]

F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

_SACRUM_RX, _SACRUM_RY = 0.25, 0.40
_HEEL_B, _HEEL_C = 1.25, 0.85
_OUTLINE_POINTS = 1024


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Fourier:
    """A smooth random field: a sum of cosines with unit standard deviation."""

    k: F64  # (n, dim) angular wave vectors
    phase: F64
    amp: F64

    @staticmethod
    def draw(rng: np.random.Generator, n: int, dim: int, lam_lo: float, lam_hi: float) -> Fourier:
        direction = rng.normal(size=(n, dim))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        lam = np.exp(rng.uniform(math.log(lam_lo), math.log(lam_hi), n))
        amp = rng.uniform(0.5, 1.0, n)
        amp *= math.sqrt(2.0 / float(np.sum(amp**2)))
        return Fourier(
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
    slough: Fourier
    necrosis: Fourier
    gate: Fourier
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
class Wound:
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


def build_wound(spec: WoundSpec, rng: np.random.Generator) -> Wound:
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
    slough = Fourier.draw(rng, 8, 2, 0.7 * r0, 2.2 * r0)
    necrosis = Fourier.draw(rng, 8, 2, 0.7 * r0, 2.2 * r0)
    gate = Fourier(
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
    return Wound(surface, outline, profile, tissue)


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


def _surface_length(wound: Wound, c: F64, a: F64, t0: float, t1: float) -> float:
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


def ground_truth(wound: Wound) -> dict[str, Any]:
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
