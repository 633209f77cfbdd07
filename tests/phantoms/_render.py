"""The sensor model: a hand-held LiDAR capture of the phantom, like a fused ARKit scan.

Depth at 256x192 with iPad-like intrinsics (fx = fy = 212), ray-cast exactly against the
analytic surface: the skin (plane, cylinder or sphere) in closed form, the wound floor
by marching each ray that enters the wound's region and bisecting the first sign change
of height above the floor. Limbs and heels lie on a bed 3 cm below them, so their
silhouettes are depth discontinuities. Then Gaussian depth noise (std `noise_mm` at
27.5 cm, growing with distance), flying pixels at discontinuities (a depth between the
two sides), and a confidence map lower at grazing angles and at discontinuities.

Colour at 640x480 from the same geometry: albedo from the wound frame position (skin
with mottling, a pale epithelial margin inside the edge, granulation with slough and
necrosis patches, a few saturated specular spots), Lambert shading by a light at the
camera, sensor noise and a slight optical blur.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from lidar_capture import Frame, Intrinsics, Scan
from tests.phantoms._colour import lab_to_linear, linear_to_srgb8
from tests.phantoms._geometry import (
    normalised_radius,
    outline_radius,
    polar,
    surface_height,
)
from tests.phantoms._spec import Phantom
from tests.phantoms._truth import Truth, truth

__all__ = ["COLOUR_INTRINSICS", "DEPTH_INTRINSICS", "LABELS", "Rendered", "render", "render_frames"]

FloatArray = npt.NDArray[np.float64]

DEPTH_INTRINSICS = Intrinsics(fx=212.0, fy=212.0, cx=127.5, cy=95.5, width=256, height=192)
COLOUR_INTRINSICS = DEPTH_INTRINSICS.scaled(640, 480)
LABELS = {
    "skin": 0,
    "epithelium": 1,
    "granulation": 2,
    "slough": 3,
    "necrosis": 4,
    "specular": 5,
    "bed": 6,
    "none": 255,
}

# Ray marching inside the wound: samples per block, then regula falsi steps.
_MARCH = 16
_REFINE = 14
# Depth noise grows with distance from this reference (the middle of 20-35 cm).
_NOISE_REF_M = 0.275
# A depth step larger than this between neighbours is a discontinuity (flying pixels,
# low confidence).
_JUMP_M = 0.01
# The bed under a limb or heel, this far below it.
_BED_GAP_M = 0.03
# Hand-held motion between frames (random walk steps) and frame interval.
_STEP_M = 0.0007
_STEP_RAD = math.radians(0.15)
_FRAME_S = 1 / 30
_AMBIENT = 0.3
# Random waves summed in a texture field; levels of the linear-to-sRGB lookup table.
_WAVES = 4
_LEVELS = 1 << 14
_BED_LAB = (78.0, -2.0, -8.0)


@dataclass(frozen=True, eq=False)
class Rendered:
    """One frame and what the tests check it against (colour grid, wound frame)."""

    frame: Frame
    labels: npt.NDArray[np.uint8]
    """(480, 640) what each colour pixel shows (`LABELS`)."""
    points: FloatArray
    """(480, 640, 3) wound-frame point each colour pixel sees (NaN for none)."""
    incidence: FloatArray
    """(480, 640) cosine between the colour ray and the surface normal."""


def _rotation(axis: FloatArray, angle: float) -> FloatArray:
    """Rodrigues' rotation about a unit axis."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def camera_poses(spec: Phantom) -> list[FloatArray]:
    """Camera-to-wound-frame 4x4 poses (OpenCV axes) of the frames, hand-held."""
    rng = np.random.default_rng([spec.seed, 3])
    view = np.array(
        [
            math.sin(spec.tilt) * math.cos(spec.azimuth),
            math.sin(spec.tilt) * math.sin(spec.azimuth),
            math.cos(spec.tilt),
        ]
    )
    target = np.array([spec.aim[0], spec.aim[1], 0.0])
    forward = -view
    ref = np.array([1.0, 0.0, 0.0]) if abs(forward[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(forward, ref)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(forward, e1)
    right = math.cos(spec.roll) * e1 + math.sin(spec.roll) * e2
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward], axis=1)
    pos = target + spec.distance * view
    poses = []
    for _ in range(spec.frames):
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = rot, pos
        poses.append(pose)
        axis = rng.normal(size=3)
        rot = _rotation(axis / np.linalg.norm(axis), rng.normal() * _STEP_RAD) @ rot
        pos = pos + rng.normal(size=3) * _STEP_M
    return poses


def _lid_hit(spec: Phantom, o: FloatArray, d: FloatArray) -> FloatArray:
    """Ray parameter of the first hit on the skin (closed form), NaN for none."""
    if spec.site == "flat":
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -o[2] / d[..., 2]
        return np.where((d[..., 2] < 0) & (t > 0), t, np.nan)
    c = np.array([0.0, 0.0, -spec.body_radius])
    mask = np.array([1.0, 0.0, 1.0]) if spec.site == "limb" else np.ones(3)
    oc, dm = (o - c) * mask, d * mask
    a = np.sum(dm * dm, axis=-1)
    b = 2 * np.sum(oc * dm, axis=-1)
    cc = float(oc @ oc) - spec.body_radius**2
    disc = b * b - 4 * a * cc
    with np.errstate(invalid="ignore", divide="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    return np.where((disc > 0) & (t > 0), t, np.nan)


def _skin_normal(spec: Phantom, p: FloatArray) -> FloatArray:
    if spec.site == "flat":
        return np.broadcast_to(np.array([0.0, 0.0, 1.0]), p.shape).copy()
    n = p - np.array([0.0, 0.0, -spec.body_radius])
    if spec.site == "limb":
        n[..., 1] = 0.0
    out: FloatArray = n / np.linalg.norm(n, axis=-1, keepdims=True)
    return out


def _gap(spec: Phantom, o: FloatArray, d: FloatArray, t: FloatArray) -> FloatArray:
    """Height of the ray points above the wound floor (NaN off the skin counts as below)."""
    p = o + t[..., None] * d
    g = p[..., 2] - surface_height(spec, p[..., 0], p[..., 1], table=True)
    out: FloatArray = np.nan_to_num(g, nan=-1.0)
    return out


def _first_crossing(spec: Phantom, o: FloatArray, d: FloatArray, t0: FloatArray) -> FloatArray:
    """For rays entering the wound at t0: the parameter of their first floor hit."""
    span = (spec.depth + 0.003) / np.maximum(-d[:, 2], 0.1)
    lo, hi = t0.copy(), np.full_like(t0, np.nan)
    found = np.zeros(t0.shape, dtype=bool)
    for start, stop in ((0.0, 1.0), (1.0, 4.0)):
        todo = ~found
        if not np.any(todo):
            break
        k = np.linspace(start, stop, _MARCH + 1)[1:]
        ts = t0[todo, None] + span[todo, None] * k[None, :]
        g = _gap(spec, o, d[todo, None, :], ts)
        below = g <= 0
        hit = np.any(below, axis=1)
        first = np.argmax(below, axis=1)
        prev = np.where(
            first > 0,
            ts[np.arange(len(first)), np.maximum(first - 1, 0)],
            t0[todo] + span[todo] * start,
        )
        idx = np.nonzero(todo)[0][hit]
        lo[idx] = prev[hit]
        hi[idx] = ts[np.arange(len(first)), first][hit]
        found[idx] = True
    sel = np.nonzero(found)[0]
    a, b, dd = lo[sel], hi[sel], d[sel]
    ga, gb = _gap(spec, o, dd, a), _gap(spec, o, dd, b)
    for _ in range(_REFINE):
        # Illinois regula falsi: keeps the bracket, converges superlinearly.
        width = ga - gb
        c = b + gb * (b - a) / np.where(width > 0, width, 1.0)
        gc = _gap(spec, o, dd, c)
        above = gc > 0
        a, ga, gb = np.where(above, c, a), np.where(above, gc, ga), np.where(above, gb / 2, gb)
        b, gb, ga = np.where(above, b, c), np.where(above, gb, gc), np.where(above, ga, ga / 2)
    out = np.full_like(t0, np.nan)
    out[sel] = b
    return out


def _floor_normal(spec: Phantom, p: FloatArray) -> FloatArray:
    """Normal of the scanned surface z = f(x, y) by central differences."""
    eps = 1e-6
    x, y = p[:, 0], p[:, 1]
    fx = (
        surface_height(spec, x + eps, y, table=True) - surface_height(spec, x - eps, y, table=True)
    ) / (2 * eps)
    fy = (
        surface_height(spec, x, y + eps, table=True) - surface_height(spec, x, y - eps, table=True)
    ) / (2 * eps)
    n = np.stack([-fx, -fy, np.ones_like(fx)], axis=1)
    out: FloatArray = n / np.linalg.norm(n, axis=1, keepdims=True)
    return out


@functools.lru_cache(maxsize=4)
def _rays(k: Intrinsics) -> FloatArray:
    """Camera-axes ray directions of an image grid, scaled to camera z = 1."""
    v, u = np.mgrid[0 : k.height, 0 : k.width].astype(np.float64)
    return np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)


@functools.lru_cache(maxsize=64)
def _reach(spec: Phantom) -> float:
    """The largest outline radius (with a margin): rays landing further miss the wound."""
    return float(np.max(outline_radius(spec, np.linspace(0, 2 * math.pi, 4096)))) * 1.01


def cast(
    spec: Phantom, pose: FloatArray, k: Intrinsics
) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.uint8]]:
    """Ray-cast one image grid from a camera-to-wound-frame pose.

    Returns depth along the optical axis (NaN for no hit), the wound-frame points, the
    cosine of incidence, and a coarse label (0 skin or wound, 6 bed, 255 none).
    """
    d = _rays(k) @ pose[:3, :3].T  # wound-frame directions; t is the depth
    o = pose[:3, 3]
    t = _lid_hit(spec, o, d)
    kind = np.where(np.isnan(t), 255, 0).astype(np.uint8)
    if spec.site != "flat":
        z_bed = -2 * spec.body_radius - _BED_GAP_M
        with np.errstate(divide="ignore", invalid="ignore"):
            t_bed = (z_bed - o[2]) / d[..., 2]
        bed = np.isnan(t) & (d[..., 2] < 0)
        t = np.where(bed, t_bed, t)
        kind[bed] = LABELS["bed"]
    p = o + t[..., None] * d
    normal = _skin_normal(spec, p)
    normal[kind == LABELS["bed"]] = (0.0, 0.0, 1.0)
    reach = _reach(spec)
    near = (
        (kind == 0)
        & (np.abs(p[..., 0] - spec.centre_x) < reach)
        & (np.abs(p[..., 1] - spec.centre_y) < reach)
        & (p[..., 2] > -spec.body_radius - 1e-6)
    )
    near[near] = normalised_radius(spec, p[near][:, 0], p[near][:, 1], table=True) < 1.0
    if np.any(near):
        t_in = _first_crossing(spec, o, d[near], t[near])
        t[near] = t_in
        p_in = o + t_in[:, None] * d[near]
        p[near] = p_in
        ok = ~np.isnan(t_in)
        n_in = np.full_like(p_in, np.nan)
        n_in[ok] = _floor_normal(spec, p_in[ok])
        normal[near] = n_in
        sub = kind[near]
        sub[~ok] = 255
        kind[near] = sub
    incidence = np.abs(np.sum(d * normal, axis=-1)) / np.linalg.norm(d, axis=-1)
    t[kind == 255] = np.nan
    p[kind == 255] = np.nan
    return t, p, np.nan_to_num(incidence), kind


def _jumps(depth: FloatArray) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    """Pixels on the far side of a discontinuity and the depth of their near neighbour."""
    filled = np.nan_to_num(depth, nan=np.inf)
    near = np.full_like(filled, np.inf)
    for axis in (0, 1):
        for shift in (1, -1):
            near = np.minimum(near, np.roll(filled, shift, axis=axis))
    far = np.isfinite(filled) & np.isfinite(near) & (filled - near > _JUMP_M)
    return far, near


def _depth_frame(
    spec: Phantom, pose_local: FloatArray, rng: np.random.Generator
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    depth, _, incidence, kind = cast(spec, pose_local, DEPTH_INTRINSICS)
    confidence = np.where(incidence > 0.5, 2, np.where(incidence > 0.25, 1, 0)).astype(np.uint8)
    far, near = _jumps(depth)
    edge = far | _jumps(-np.nan_to_num(depth, nan=-np.inf))[0]
    confidence[edge] = np.minimum(confidence[edge], 1)
    flying = far & (rng.random(depth.shape) < spec.flying_pixels)
    mix = rng.uniform(0.2, 0.8, depth.shape)
    depth = np.where(flying, depth + mix * (near - depth), depth)
    confidence[flying] = np.where(rng.random(int(flying.sum())) < 0.3, 1, 0)
    sigma = spec.noise_mm / 1000.0 * np.nan_to_num(depth) / _NOISE_REF_M
    depth = depth + rng.normal(size=depth.shape) * sigma
    missing = (kind == 255) | np.isnan(depth)
    confidence[missing] = 0
    return np.where(missing, 0.0, depth).astype(np.float32), confidence


def _field(seed: int, key: int, x: FloatArray, y: FloatArray, wavelength: float) -> FloatArray:
    """A smooth random field on the wound frame, zero mean, unit std, fixed to the skin."""
    rng = np.random.default_rng([seed, 11, key])
    out = np.zeros_like(x)
    for _ in range(_WAVES):
        angle = rng.uniform(0, 2 * math.pi)
        k = 2 * math.pi / (wavelength * rng.uniform(0.6, 1.6))
        out += np.cos(k * (x * math.cos(angle) + y * math.sin(angle)) + rng.uniform(0, 6.3))
    result: FloatArray = out / math.sqrt(_WAVES / 2)
    return result


def albedo(
    spec: Phantom, p: FloatArray, kind: npt.NDArray[np.uint8]
) -> tuple[FloatArray, npt.NDArray[np.uint8]]:
    """Linear RGB reflectance and label of wound-frame points (..., 3)."""
    labels = kind.copy()
    rgb = np.zeros(p.shape)
    rgb[kind == LABELS["bed"]] = lab_to_linear(_BED_LAB)
    skin = kind == 0
    x, y = p[skin][:, 0], p[skin][:, 1]
    # Mottling: about +-1.5 L* of brightness and +-1 a* of redness.
    mottle = _field(spec.seed, 0, x, y, 0.02)
    redness = _field(spec.seed, 1, x, y, 0.012)
    skin_rgb = lab_to_linear(spec.skin_lab) * (1.0 + 0.045 * mottle)[:, None]
    skin_rgb *= 1.0 + 0.02 * redness[:, None] * np.array([1.0, -0.5, -0.5])
    rho, theta = polar(spec, x, y)
    rb = outline_radius(spec, theta, table=True)
    inside = rho < rb
    margin = (rb - rho)[inside] < spec.margin
    xw, yw = x[inside], y[inside]
    gran, slough, necrosis, epi = (np.asarray(t) for t in spec.tissues)
    is_necrosis = _field(spec.seed, 3, xw, yw, 0.6 * spec.size) > 2.5 * (spec.tissue_mix[1] - 0.5)
    is_slough = ~is_necrosis & (
        _field(spec.seed, 2, xw, yw, 0.8 * spec.size) > 2.5 * (spec.tissue_mix[0] - 0.5)
    )
    grain = _field(spec.seed, 4, xw, yw, 0.0015)
    bed = np.where(is_necrosis[:, None], necrosis, np.where(is_slough[:, None], slough, gran))
    bed += np.stack([2.5 * grain, 1.5 * grain, np.zeros_like(grain)], axis=1)
    bed[margin] = epi + np.array([1.0, 0.5, 0.0]) * mottle[inside][margin][:, None]
    wound_labels = np.full(xw.shape, LABELS["granulation"], dtype=np.uint8)
    wound_labels[is_slough] = LABELS["slough"]
    wound_labels[is_necrosis] = LABELS["necrosis"]
    wound_labels[margin] = LABELS["epithelium"]
    wound_rgb = np.clip(lab_to_linear(bed), 0.0, 1.0)
    srng = np.random.default_rng([spec.seed, 13])
    for _ in range(spec.speculars):
        r0 = spec.size * srng.uniform(0.1, 0.6)
        a0 = srng.uniform(0, 2 * math.pi)
        cx, cy = spec.centre_x + r0 * math.cos(a0), spec.centre_y + r0 * math.sin(a0)
        spot = ~margin & (np.hypot(xw - cx, yw - cy) < srng.uniform(0.0004, 0.001))
        wound_labels[spot] = LABELS["specular"]
        wound_rgb[spot] = 4.0  # saturated whatever the shading
    skin_rgb[inside] = wound_rgb
    rgb[skin] = skin_rgb
    skin_labels = labels[skin]
    skin_labels[inside] = wound_labels
    labels[skin] = skin_labels
    return rgb, labels


def _blur(img: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A [1, 2, 1] / 4 blur along both axes (the lens and demosaicing)."""
    out = img.copy()
    out[1:-1] = 0.25 * img[:-2] + 0.5 * img[1:-1] + 0.25 * img[2:]
    row = out.copy()
    out[:, 1:-1] = 0.25 * row[:, :-2] + 0.5 * row[:, 1:-1] + 0.25 * row[:, 2:]
    return out


_ENCODE = linear_to_srgb8(np.arange(_LEVELS + 1) / _LEVELS)


def _colour_frame(
    spec: Phantom, pose_local: FloatArray, rng: np.random.Generator
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], FloatArray, FloatArray]:
    _, p, incidence, kind = cast(spec, pose_local, COLOUR_INTRINSICS)
    rgb, labels = albedo(spec, p, kind)
    shade = (_AMBIENT + (1.0 - _AMBIENT) * incidence).astype(np.float32)
    lit = rgb.astype(np.float32) * shade[..., None]
    noise = rng.standard_normal(size=lit.shape, dtype=np.float32)
    lit *= 1.0 + 0.02 * noise
    lit += 0.002 * rng.standard_normal(size=lit.shape, dtype=np.float32)
    level = np.clip(_blur(lit) * _LEVELS + 0.5, 0, _LEVELS).astype(np.int32)
    return _ENCODE[level], labels, p, incidence


def render_frames(spec: Phantom) -> list[Rendered]:
    """Every frame of the capture, with its colour labels and wound-frame points."""
    to_world = spec.wound_to_world
    out = []
    for index, pose_local in enumerate(camera_poses(spec)):
        rng = np.random.default_rng([spec.seed, 5, index])
        depth, confidence = _depth_frame(spec, pose_local, rng)
        colour, labels, points, incidence = _colour_frame(spec, pose_local, rng)
        frame = Frame(
            depth=depth,
            intrinsics=DEPTH_INTRINSICS,
            pose=to_world @ pose_local,
            confidence=confidence,
            color=colour,
            timestamp=index * _FRAME_S,
        )
        out.append(Rendered(frame, labels, points, incidence))
    return out


def render(spec: Phantom) -> tuple[Scan, Truth]:
    """The phantom's scan (depth, confidence, colour, poses, body axis) and its truth."""
    frames = tuple(r.frame for r in render_frames(spec))
    scan = Scan(
        source="phantom",
        origin=f"phantom seed={spec.seed}",
        frames=frames,
        body_axis=spec.wound_to_world[:3, :3] @ np.array([0.0, 1.0, 0.0]),
        metadata={"phantom": spec.seed},
    )
    return scan, truth(spec)
