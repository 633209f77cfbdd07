"""Procedural LiDAR scans of a wound on skin, with exact ground truth.

`generate(spec)` renders a handheld RGB-D capture (iPad-Pro-like LiDAR depth, colour,
confidence, poses) of one procedural wound and returns it with its ground truth and
per-frame tissue label images. `random_spec(seed)` draws a varied wound; `SyntheticSource`
is the `CaptureSource` the rest of the package and the tests use. The wound, its
geometry and the definitions of its ground truth are in `lidar_capture._synthetic_wound`;
this module is the camera and the sensor.

The world frame is a random rigid transform of the wound frame W
(`GroundTruth.wound_to_world`).

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
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lidar_capture._synthetic_spec import TISSUES, WoundSpec, check_spec
from lidar_capture._synthetic_wound import Fourier, GroundTruth, Wound, build_wound, ground_truth
from lidar_capture._types import Frame, Intrinsics, Scan

__all__ = ["DEPTH_INTRINSICS", "SyntheticScan", "SyntheticSource", "generate"]

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

#: The depth grid of an iPad Pro / iPhone Pro LiDAR (256x192).
DEPTH_INTRINSICS = Intrinsics(fx=212.0, fy=212.0, cx=127.5, cy=95.5, width=256, height=192)

_MAX_RANGE_M = 5.0
_JUMP_M = 0.01
_SUPERSAMPLE = 2

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
    mottle: Fourier
    redness: Fourier
    grain: tuple[Fourier, ...]  # per tissue label 1..4
    tint: F64


def _draw_look(spec: WoundSpec, rng: np.random.Generator) -> _Look:
    skin = _SKIN[spec.skin_tone - 1] * rng.uniform(0.96, 1.04, 3)
    # Many waves of mixed orientation so no texture reads as stripes.
    grains = (
        Fourier.draw(rng, 16, 3, 0.0012, 0.0035),  # granulation: granular
        Fourier.draw(rng, 10, 3, 0.002, 0.008),
        Fourier.draw(rng, 10, 3, 0.0015, 0.006),
        Fourier.draw(rng, 8, 3, 0.003, 0.010),
    )
    return _Look(
        skin=skin,
        bed=_BEDS[rng.integers(len(_BEDS))] * rng.uniform(0.95, 1.02),
        mottle=Fourier.draw(rng, 10, 3, 0.03, 0.12),
        redness=Fourier.draw(rng, 8, 3, 0.02, 0.06),
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


def _march(wound: Wound, o: F64, d: F64, t0: F64, steps: int = 16) -> F64:
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
    wound: Wound,
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
    wound: Wound,
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
    def coarse(field: Fourier) -> F64:
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
    check_spec(spec)
    seeds = np.random.SeedSequence(spec.seed).spawn(5)
    g_wound, g_world, g_camera, g_look = (np.random.default_rng(s) for s in seeds[:4])
    wound = build_wound(spec, g_wound)

    rot_world = _rotvec(g_world.normal(size=3) * math.pi)
    wound_to_world = _rigid(rot_world, g_world.uniform(-1.0, 1.0, 3))
    gt = ground_truth(wound)
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
