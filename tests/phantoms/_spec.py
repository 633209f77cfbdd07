"""The phantom's specification: every choice a wound is made of, drawn from a seed.

Written independently of `lidar_capture`'s synthetic generator (its source was not read):
other outline families (superellipses, rounded polygons by Gielis' superformula, kidney
shapes, Cassini-oval two-lobed shapes), other depth profiles (shallow, cliff-edged,
bowl, terraced) and another colour scheme (CIELAB tissue colours, skin by ITA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "PROFILES",
    "SHAPES",
    "SITES",
    "SKIN_GROUPS",
    "Phantom",
    "phantom_spec",
]

SITES = ("flat", "limb", "heel")
SHAPES = ("superellipse", "rounded_polygon", "kidney", "bilobe")
PROFILES = ("shallow", "cliff", "bowl", "terraced")
SKIN_GROUPS = ("I-II", "III-IV", "V-VI")

# Individual Typology Angle ranges of the Fitzpatrick groups (degrees). Chardon, Cretois
# and Hourseau 1991 (Int J Cosmet Sci 13:191): very light > 55, light 41-55,
# intermediate 28-41, tan 10-28, brown -30-10, dark < -30; I-II is very light and light,
# III-IV intermediate and tan, V-VI brown and dark (bounded at 65 and -55 here, the
# extremes reported in Del Bino et al. 2013).
ITA_RANGES: dict[str, tuple[float, float]] = {
    "I-II": (41.0, 65.0),
    "III-IV": (10.0, 41.0),
    "V-VI": (-55.0, 10.0),
}


@dataclass(frozen=True)
class Phantom:
    """One wound on one body site, its colours and the hand-held capture of it.

    Lengths in metres, angles in radians unless named in degrees. The wound frame has
    its origin at the wound's (projected) centroid on the skin, z the outward skin
    normal there and y the body axis (head-ward); the outline is star-shaped about
    ``(centre_x, centre_y)`` in that frame.
    """

    seed: int
    site: str
    shape: str
    profile: str
    skin_group: str
    body_radius: float
    """Limb (cylinder along y) or heel (sphere) radius; 0 for flat skin."""
    size: float
    """Scale of the outline (its equivalent radius before the centroid shift), metres."""
    aspect: float
    """Stretch of the outline along x (>= 1)."""
    angle: float
    """Rotation of the outline about the wound normal."""
    exponent: float
    """Superellipse / superformula exponent, kidney dent depth, Cassini b/c ratio."""
    corners: int
    """Rounded polygon's corner count (3-6)."""
    centre_x: float
    centre_y: float
    """The outline's polar centre, so the region's centroid is the frame origin."""
    depth: float
    """Maximum depth below the skin, metres."""
    wall: float
    """Horizontal width of a cliff's or terrace's wall, metres."""
    bowl_power: float
    """Bowl profile ``1 - s**p``."""
    terrace: tuple[float, float]
    """(shelf depth as a share of the depth, normalised radius where the pit starts)."""
    margin: float
    """Width of the pale epithelial margin inside the edge, metres (0 for none)."""
    skin_ita: float
    """Individual Typology Angle of the skin, degrees."""
    skin_lab: tuple[float, float, float]
    tissues: tuple[tuple[float, float, float], ...]
    """CIELAB of granulation, slough, necrosis, epithelium."""
    tissue_mix: tuple[float, float]
    """Thresholds of the slough and necrosis patches (share of the bed, roughly)."""
    speculars: int
    world_rotation: tuple[float, ...]
    """Row-major 3x3 wound-to-world rotation."""
    world_origin: tuple[float, float, float]
    distance: float
    """Camera to wound centre, metres."""
    tilt: float
    """Angle between the view direction and the wound normal."""
    azimuth: float
    roll: float
    aim: tuple[float, float]
    """Offset of the aim point from the wound centre in the wound's plane, metres."""
    noise_mm: float
    frames: int
    flying_pixels: float
    """Share of discontinuity pixels that become flying pixels."""

    @property
    def wound_to_world(self) -> np.ndarray:
        """4x4 wound frame to world."""
        m = np.eye(4)
        m[:3, :3] = np.asarray(self.world_rotation).reshape(3, 3)
        m[:3, 3] = self.world_origin
        return m


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def phantom_spec(
    seed: int,
    *,
    noise_mm: float = 1.0,
    frames: int = 10,
    site: str | None = None,
    skin_group: str | None = None,
    shape: str | None = None,
    profile: str | None = None,
) -> Phantom:
    """The phantom of `seed`; `site`, `skin_group`, `shape`, `profile` fix a choice.

    The suite's cycle (site, skin group) comes from the seed when not given, so seeds
    0..5 cover every site and skin group pair.
    """
    from tests.phantoms._colour import skin_lab, tissue_palette
    from tests.phantoms._geometry import centroid_offset

    rng = np.random.default_rng([seed, 22])
    site = site or SITES[seed % len(SITES)]
    skin_group = skin_group or SKIN_GROUPS[(seed // len(SITES)) % len(SKIN_GROUPS)]
    shape = shape or SHAPES[int(rng.integers(len(SHAPES)))]
    profile = profile or PROFILES[int(rng.integers(len(PROFILES)))]
    body_radius = {"flat": 0.0, "limb": rng.uniform(0.05, 0.08), "heel": rng.uniform(0.04, 0.06)}
    radius = float(body_radius[site])
    size = float(rng.uniform(0.007, 0.022 if site == "heel" else 0.028))
    exponent = {
        "superellipse": rng.uniform(2.5, 5.0),
        "rounded_polygon": rng.uniform(5.0, 10.0),
        "kidney": rng.uniform(0.2, 0.4),
        "bilobe": rng.uniform(1.05, 1.3),
    }[shape]
    aspect = float(rng.uniform(1.0, 1.6) if shape != "bilobe" else rng.uniform(1.0, 1.15))
    angle = float(rng.uniform(0.0, math.pi))
    corners = int(rng.integers(3, 7))
    if profile == "shallow":
        depth = rng.uniform(0.0008, 0.0015)
    else:
        depth = rng.uniform(0.001, min(0.015, 0.6 * size))
    ita_lo, ita_hi = ITA_RANGES[skin_group]
    ita = float(rng.uniform(ita_lo + 2.0, ita_hi - 2.0))
    skin = skin_lab(ita, b_star=float(rng.uniform(13.0, 20.0)), a_star=float(rng.uniform(7, 13)))
    tissues = tissue_palette(rng, dusky=skin_group == "V-VI")
    spec = Phantom(
        seed=seed,
        site=site,
        shape=shape,
        profile=profile,
        skin_group=skin_group,
        body_radius=radius,
        size=size,
        aspect=aspect,
        angle=angle,
        exponent=float(exponent),
        corners=corners,
        centre_x=0.0,
        centre_y=0.0,
        depth=float(depth),
        wall=float(rng.uniform(0.0002, 0.0005)),
        bowl_power=float(rng.uniform(1.5, 3.0)),
        terrace=(float(rng.uniform(0.3, 0.6)), float(rng.uniform(0.4, 0.7))),
        margin=float(rng.uniform(0.001, 0.003)) if rng.random() < 0.75 else 0.0,
        skin_ita=ita,
        skin_lab=skin,
        tissues=tissues,
        tissue_mix=(float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.75, 0.97))),
        speculars=int(rng.integers(2, 7)),
        world_rotation=tuple(float(v) for v in _random_rotation(rng).ravel()),
        world_origin=(
            float(rng.uniform(-1, 1)),
            float(rng.uniform(-1, 1)),
            float(rng.uniform(-1, 1)),
        ),
        distance=float(rng.uniform(0.20, 0.35)),
        tilt=float(np.radians(rng.uniform(0.0, 30.0))),
        azimuth=float(rng.uniform(0.0, 2 * math.pi)),
        roll=float(rng.uniform(0.0, 2 * math.pi)),
        aim=(float(rng.uniform(-0.004, 0.004)), float(rng.uniform(-0.004, 0.004))),
        noise_mm=noise_mm,
        frames=frames,
        flying_pixels=0.5,
    )
    cx, cy = centroid_offset(spec)
    return replace(spec, centre_x=cx, centre_y=cy)
