"""Skin-surface fitting: robust polynomial height fields in a local frame.

The skin around a wound is fitted as ``z = s(x, y)``, a bivariate polynomial of degree
1 to 4 in a frame whose z axis is the skin normal. A plane is not enough on a limb: on a
5 cm radius calf the skin 3 cm from the wound centre has dropped by about 1 cm, and a
quadratic still misses the quartic term by ~0.8 mm there, which is why the degree goes
to 4 and is chosen per scan by the Bayesian information criterion (flat skin keeps a
low degree, so noise is not fitted into the lid of the wound).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

__all__ = [
    "MIN_AXIS_TANGENT",
    "HeightField",
    "fit_height_field",
    "local_frame",
    "to_local",
    "to_world",
]

#: An axis (the body's) orients a frame only when its part along the skin is at least
#: this share of its length; closer to the normal its direction on the skin is noise.
MIN_AXIS_TANGENT = 0.2


def _exponents(degree: int) -> list[tuple[int, int]]:
    return [(i, total - i) for total in range(degree + 1) for i in range(total, -1, -1)]


@dataclass(frozen=True)
class HeightField:
    """A fitted polynomial height field ``z = s(x, y)`` in a local frame (metres)."""

    degree: int
    coefficients: FloatArray
    scale: float
    """Coordinates are divided by this before the monomials, for conditioning."""
    residual_std: float
    """Robust (MAD) standard deviation of the inlier residuals, metres."""
    inliers: int

    def __call__(self, x: FloatArray, y: FloatArray) -> FloatArray:
        u, v = np.asarray(x) / self.scale, np.asarray(y) / self.scale
        out = np.zeros(np.broadcast(u, v).shape)
        for c, (i, j) in zip(self.coefficients, _exponents(self.degree), strict=True):
            out = out + c * u**i * v**j
        return out

    def gradient(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Partial derivatives (s_x, s_y) at the given points."""
        u, v = np.asarray(x) / self.scale, np.asarray(y) / self.scale
        shape = np.broadcast(u, v).shape
        gx, gy = np.zeros(shape), np.zeros(shape)
        for c, (i, j) in zip(self.coefficients, _exponents(self.degree), strict=True):
            if i:
                gx = gx + c * i * u ** (i - 1) * v**j
            if j:
                gy = gy + c * j * u**i * v ** (j - 1)
        return gx / self.scale, gy / self.scale


def _design(u: FloatArray, v: FloatArray, degree: int) -> FloatArray:
    return np.stack([u**i * v**j for i, j in _exponents(degree)], axis=1)


def _robust_fit(
    u: FloatArray, v: FloatArray, z: FloatArray, degree: int, iterations: int
) -> tuple[FloatArray, FloatArray, float]:
    """IRLS with Tukey's biweight; returns coefficients, final weights, robust sigma."""
    a = _design(u, v, degree)
    w = np.ones_like(z)
    coef = np.zeros(a.shape[1])
    sigma = float("inf")
    for _ in range(iterations):
        sw = np.sqrt(w)
        coef = np.asarray(np.linalg.lstsq(a * sw[:, None], z * sw, rcond=None)[0], dtype=np.float64)
        r = z - a @ coef
        sigma = max(1.4826 * float(np.median(np.abs(r[w > 0]))), 1e-6)
        t = r / (4.685 * sigma)
        w = np.where(np.abs(t) < 1.0, (1.0 - t**2) ** 2, 0.0)
    return coef, w, sigma


def fit_height_field(
    x: FloatArray,
    y: FloatArray,
    z: FloatArray,
    *,
    max_degree: int = 4,
    min_degree: int = 1,
    iterations: int = 6,
) -> HeightField:
    """Fit a robust polynomial height field, choosing the degree by BIC.

    Args:
        x, y, z: sample points in the local frame, metres.
        max_degree: highest degree tried (4 holds on 4 cm radius limbs).
        min_degree: lowest degree tried.
        iterations: reweighting rounds of the robust fit.
    """
    if x.size < 10:
        raise ValueError("too few points to fit the skin surface")
    scale = float(max(np.max(np.hypot(x, y)), 1e-3))
    u, v = x / scale, y / scale
    best: tuple[float, HeightField] | None = None
    for degree in range(min_degree, max_degree + 1):
        terms = (degree + 1) * (degree + 2) // 2
        if x.size < 4 * terms:
            break
        coef, w, sigma = _robust_fit(u, v, z, degree, iterations)
        inliers = w > 0
        n = int(np.count_nonzero(inliers))
        r = (z - _design(u, v, degree) @ coef)[inliers]
        rss = float(np.sum(r**2)) + 1e-18
        bic = n * np.log(rss / max(n, 1)) + terms * np.log(max(n, 2))
        field = HeightField(degree, coef, scale, sigma, n)
        if best is None or bic < best[0]:
            best = (bic, field)
    if best is None:
        raise ValueError("too few points to fit the skin surface")
    return best[1]


def local_frame(origin: FloatArray, normal: FloatArray, axis: FloatArray | None) -> FloatArray:
    """A 4x4 local-to-world transform: z along `normal`, y along `axis` in the tangent plane.

    Without an axis (or one nearly parallel to the normal) y is any tangent direction.
    """
    z = normal / np.linalg.norm(normal)
    y: FloatArray | None = None
    if axis is not None:
        a = axis - np.dot(axis, z) * z
        if np.linalg.norm(a) > MIN_AXIS_TANGENT * np.linalg.norm(axis):
            y = a / np.linalg.norm(a)
    if y is None:
        helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
        y = np.cross(z, helper)
        y /= np.linalg.norm(y)
    x = np.cross(y, z)
    frame = np.eye(4)
    frame[:3, 0], frame[:3, 1], frame[:3, 2], frame[:3, 3] = x, y, z, origin
    return frame


def to_local(frame: FloatArray, points: FloatArray) -> FloatArray:
    """World points (N, 3) into the frame's coordinates."""
    return (points - frame[:3, 3]) @ frame[:3, :3]


def to_world(frame: FloatArray, points: FloatArray) -> FloatArray:
    """Frame coordinates (N, 3) into world points."""
    return points @ frame[:3, :3].T + frame[:3, 3]
