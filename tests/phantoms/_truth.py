"""Ground truth of a phantom by numerical integration over its exact geometry.

Definitions follow `WoundMeasurement` and docs/capture.md: area on the skin (the lid)
over the wound's projected region, perimeter of the outline lifted onto the skin,
length along the body axis (y) and width across it (x), both along the skin through
the region's centroid between the outline's extremes, max depth along the skin normal
at the wound centre (z), volume between the lid and the floor.

Integrals are in polar coordinates about the outline's centre: the trapezoid rule in
theta (spectrally accurate for a smooth periodic integrand) and Gauss-Legendre in the
radius, split at the profile's kinks, so the error is far below 0.1 % (the tests hold
it to closed forms at 1e-6).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tests.phantoms._geometry import (
    outline_radius,
    profile,
    profile_breaks,
    skin_gradient,
    skin_height,
)
from tests.phantoms._spec import Phantom

__all__ = ["Truth", "truth"]

FloatArray = npt.NDArray[np.float64]

_THETA = 8192
_RADIAL = 48
_LINE = 64


@dataclass(frozen=True)
class Truth:
    """What a perfect measurement of the phantom gives (the pipeline's names and units)."""

    area_cm2: float
    perimeter_cm: float
    length_cm: float
    width_cm: float
    max_depth_mm: float
    mean_depth_mm: float
    volume_cm3: float
    projected_area_cm2: float
    site: str
    shape: str
    profile: str
    skin_group: str
    skin_ita: float


def _gauss(n: int) -> tuple[FloatArray, FloatArray]:
    """Gauss-Legendre nodes and weights on [0, 1]."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0


def _radial_integral(spec: Phantom, theta: FloatArray, integrand: str) -> FloatArray:
    """Per theta, the integral over rho in [0, r(theta)] of f * rho (area element).

    `integrand` is ``lid`` (the skin's surface element), ``flat`` (1) or ``depth``.
    """
    rb = outline_radius(spec, theta)
    edges = [np.zeros_like(rb), *profile_breaks(spec, rb), np.ones_like(rb)]
    nodes, weights = _gauss(_RADIAL)
    total = np.zeros_like(rb)
    for lo, hi in itertools.pairwise(edges):
        s = lo[:, None] + (hi - lo)[:, None] * nodes[None, :]
        rho = s * rb[:, None]
        if integrand == "depth":
            f = profile(spec, s, rb[:, None])
        elif integrand == "lid":
            x = spec.centre_x + rho * np.cos(theta)[:, None]
            y = spec.centre_y + rho * np.sin(theta)[:, None]
            gx, gy = skin_gradient(spec, x, y)
            f = np.sqrt(1.0 + gx**2 + gy**2)
        else:
            f = np.ones_like(rho)
        total += np.sum(f * rho * weights[None, :], axis=1) * (hi - lo) * rb
    return total


def _outline_points(spec: Phantom, n: int) -> FloatArray:
    theta = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    r = outline_radius(spec, theta)
    x = spec.centre_x + r * np.cos(theta)
    y = spec.centre_y + r * np.sin(theta)
    return np.stack([x, y, skin_height(spec, x, y)], axis=1)


def _skin_line(spec: Phantom, along_y: bool, t0: float, t1: float) -> float:
    """Length on the skin of the line x = 0 (along y) or y = 0 (along x) from t0 to t1."""
    nodes, weights = _gauss(_LINE)
    t = t0 + (t1 - t0) * nodes
    zero = np.zeros_like(t)
    x, y = (zero, t) if along_y else (t, zero)
    gx, gy = skin_gradient(spec, x, y)
    slope = gy if along_y else gx
    return float(np.sum(np.sqrt(1.0 + slope**2) * weights) * (t1 - t0))


def truth(spec: Phantom) -> Truth:
    """The ground truth of `spec`."""
    theta = np.linspace(0.0, 2 * math.pi, _THETA, endpoint=False)
    dtheta = 2 * math.pi / _THETA
    area = float(np.sum(_radial_integral(spec, theta, "lid")) * dtheta)
    projected = float(np.sum(_radial_integral(spec, theta, "flat")) * dtheta)
    volume = float(np.sum(_radial_integral(spec, theta, "depth")) * dtheta)
    outline = _outline_points(spec, 1 << 16)
    closed = np.vstack([outline, outline[:1]])
    perimeter = float(np.sum(np.linalg.norm(np.diff(closed, axis=0), axis=1)))
    length = _skin_line(spec, True, float(outline[:, 1].min()), float(outline[:, 1].max()))
    width = _skin_line(spec, False, float(outline[:, 0].min()), float(outline[:, 0].max()))
    return Truth(
        area_cm2=area * 1e4,
        perimeter_cm=perimeter * 100.0,
        length_cm=length * 100.0,
        width_cm=width * 100.0,
        max_depth_mm=spec.depth * 1000.0,
        mean_depth_mm=volume / projected * 1000.0,
        volume_cm3=volume * 1e6,
        projected_area_cm2=projected * 1e4,
        site=spec.site,
        shape=spec.shape,
        profile=spec.profile,
        skin_group=spec.skin_group,
        skin_ita=spec.skin_ita,
    )
