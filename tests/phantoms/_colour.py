"""Colours of the phantom: CIELAB tissue and skin colours, and their sRGB rendering.

Tissue colours (CIELAB, D65): the red-yellow-black wound colour model (Arnqvist,
Hellgren and Vincent 1988; Mekkes and Westerhof 1995) with CIELAB figures in the ranges
reported for wound photographs under clinical lighting (e.g. Wannous, Lucas and
Treuillet 2011; Veredas et al. 2010). Those papers give ranges rather than one table, so
the means below are our reading of them, approximate, each drawn with a uniform spread:

| tissue | L* | a* | b* | spread |
| --- | --- | --- | --- | --- |
| granulation (red) | 42 | 38 | 24 | 5, 5, 5 |
| granulation, dusky (dark skin, poor perfusion) | 32 | 27 | 14 | 4, 4, 4 |
| slough (yellow) | 68 | 8 | 38 | 6, 4, 6 |
| necrosis (dark brown/black) | 22 | 6 | 8 | 5, 3, 3 |
| epithelium (pale pink) | 68 | 18 | 14 | 4, 4, 3 |

Skin: the Individual Typology Angle ITA = atan((L* - 50) / b*) (Chardon et al. 1991),
with b* 13-20 and a* 7-13 (the ranges of Del Bino et al. 2013's 1,000-subject
survey), L* = 50 + b* tan(ITA).

The conversion to sRGB is our own (IEC 61966-2-1 primaries and transfer curve, D65).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = [
    "TISSUE_NAMES",
    "ita",
    "lab_to_linear",
    "linear_to_lab",
    "linear_to_srgb8",
    "skin_lab",
    "srgb8_to_linear",
    "tissue_palette",
]

FloatArray = npt.NDArray[np.float64]

TISSUE_NAMES = ("granulation", "slough", "necrosis", "epithelium")

_GRANULATION = ((42.0, 38.0, 24.0), (5.0, 5.0, 5.0))
_DUSKY = ((32.0, 27.0, 14.0), (4.0, 4.0, 4.0))
_SLOUGH = ((68.0, 8.0, 38.0), (6.0, 4.0, 6.0))
_NECROSIS = ((22.0, 6.0, 8.0), (5.0, 3.0, 3.0))
_EPITHELIUM = ((68.0, 18.0, 14.0), (4.0, 4.0, 3.0))

# D65 white and the sRGB primaries (IEC 61966-2-1).
_WHITE = np.array([0.95047, 1.0, 1.08883])
_RGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_EPS = (6.0 / 29.0) ** 3


def lab_to_linear(lab: npt.ArrayLike) -> FloatArray:
    """CIELAB (..., 3) to linear sRGB (..., 3), unclipped."""
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > 6.0 / 29.0, f**3, 3 * (6.0 / 29.0) ** 2 * (f - 4.0 / 29.0)) * _WHITE
    rgb: FloatArray = xyz @ _XYZ_TO_RGB.T
    return rgb


def linear_to_lab(rgb: npt.ArrayLike) -> FloatArray:
    """Linear sRGB (..., 3) to CIELAB (..., 3)."""
    xyz = np.asarray(rgb, dtype=np.float64) @ _RGB_TO_XYZ.T / _WHITE
    f = np.where(xyz > _EPS, np.cbrt(xyz), xyz / (3 * (6.0 / 29.0) ** 2) + 4.0 / 29.0)
    return np.stack(
        [
            116.0 * f[..., 1] - 16.0,
            500.0 * (f[..., 0] - f[..., 1]),
            200.0 * (f[..., 1] - f[..., 2]),
        ],
        axis=-1,
    )


def linear_to_srgb8(rgb: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Linear sRGB to 8-bit sRGB (the standard transfer curve), clipped."""
    c = np.clip(np.asarray(rgb, dtype=np.float64), 0.0, 1.0)
    v = np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)
    return np.round(v * 255.0).astype(np.uint8)


def srgb8_to_linear(rgb: npt.ArrayLike) -> FloatArray:
    """8-bit sRGB to linear sRGB."""
    v = np.asarray(rgb, dtype=np.float64) / 255.0
    out: FloatArray = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return out


def ita(lab: npt.ArrayLike) -> FloatArray:
    """Individual Typology Angle, degrees, of CIELAB colours (..., 3)."""
    lab = np.asarray(lab, dtype=np.float64)
    out: FloatArray = np.degrees(np.arctan2(lab[..., 0] - 50.0, lab[..., 2]))
    return out


def skin_lab(ita_deg: float, *, b_star: float, a_star: float) -> tuple[float, float, float]:
    """The skin colour of a given ITA (b* and a* chosen by the caller)."""
    return (50.0 + b_star * math.tan(math.radians(ita_deg)), a_star, b_star)


def tissue_palette(
    rng: np.random.Generator, *, dusky: bool
) -> tuple[tuple[float, float, float], ...]:
    """CIELAB of granulation, slough, necrosis and epithelium for one wound."""
    out = []
    for mean, spread in (_DUSKY if dusky else _GRANULATION, _SLOUGH, _NECROSIS, _EPITHELIUM):
        lab = np.asarray(mean) + rng.uniform(-1.0, 1.0, 3) * np.asarray(spread)
        out.append((float(lab[0]), float(lab[1]), float(lab[2])))
    return tuple(out)
