"""What a synthetic wound scan can be: `WoundSpec`, its choices, and `random_spec`.

Plain Python (NumPy only inside `random_spec`), so the command line lists the choices
(and the formats a synthetic scan is written in) without loading the generator. The
generator is `lidar_capture._synthetic`; what each choice means is drawn in
`lidar_capture._synthetic_wound`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

__all__ = [
    "OUTLINES",
    "PROFILES",
    "SURFACES",
    "SYNTHETIC_SCAN_FORMATS",
    "TISSUES",
    "WoundSpec",
    "check_spec",
    "random_spec",
]

SURFACES = ("plane", "calf", "heel", "sacrum")
OUTLINES = ("ellipse", "irregular")
PROFILES = ("bowl", "punched", "sloped", "shallow")
#: Label ids 0..4 in this order; 0 is skin, background and anything that is not wound.
TISSUES = ("background", "granulation", "slough", "necrosis", "epithelium")
#: How `write_synthetic_scan` writes a scan: ``dir``, a Stray Scanner folder of frames;
#: ``ply``, one fused, coloured point cloud.
SYNTHETIC_SCAN_FORMATS = ("dir", "ply")


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

    def to_json(self) -> dict[str, Any]:
        """Every field, as JSON-able values (what a scan's sidecar records)."""
        return dataclasses.asdict(self)


def random_spec(seed: int, **overrides: Any) -> WoundSpec:
    """A varied wound drawn from `seed`; keyword overrides fix any `WoundSpec` field.

    Raises:
        TypeError: an override names no `WoundSpec` field.
    """
    import numpy as np

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


def check_spec(spec: WoundSpec) -> None:
    """Raise ValueError naming every field of `spec` out of its range."""
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
