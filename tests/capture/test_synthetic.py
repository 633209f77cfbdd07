"""The synthetic wound-scan generator: ground truth, determinism, sensor model, conventions."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from lidar_capture import (
    TISSUES,
    SyntheticScan,
    SyntheticSource,
    WoundSpec,
    generate,
    random_spec,
)
from lidar_capture._synthetic import DEPTH_INTRINSICS
from lidar_capture._types import CaptureSource, Frame


def to_wound(scan: SyntheticScan, points: np.ndarray) -> np.ndarray:
    """World points (N, 3) in the wound frame W."""
    t = scan.truth.wound_to_world
    return (points - t[:3, 3]) @ t[:3, :3]


def outline_w(scan: SyntheticScan) -> np.ndarray:
    return to_wound(scan, scan.truth.outline_world)


def back_project(frame: Frame) -> tuple[np.ndarray, np.ndarray]:
    """World points of the valid depth pixels and their (row, col) indices."""
    k = frame.intrinsics
    rows, cols = np.nonzero(frame.depth > 0)
    z = frame.depth[rows, cols].astype(np.float64)
    cam = np.stack([(cols - k.cx) / k.fx * z, (rows - k.cy) / k.fy * z, z], axis=1)
    return cam @ frame.pose[:3, :3].T + frame.pose[:3, 3], np.stack([rows, cols], axis=1)


def outline_radius(scan: SyntheticScan, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R(theta) interpolated from the outline samples (the outline is star-shaped)."""
    o = outline_w(scan)
    th = np.arctan2(o[:, 1], o[:, 0])
    order = np.argsort(th)
    radius: np.ndarray = np.interp(
        np.arctan2(y, x), th[order], np.hypot(o[:, 0], o[:, 1])[order], period=2 * math.pi
    )
    return radius


def depth_pixel_labels(scan: SyntheticScan, i: int) -> np.ndarray:
    """Per depth pixel: the label if its whole colour block agrees, else 255."""
    lab = scan.labels[i]
    c = lab.shape[0] // DEPTH_INTRINSICS.height
    blocks = lab.reshape(DEPTH_INTRINSICS.height, c, DEPTH_INTRINSICS.width, c)
    lo, hi = blocks.min(axis=(1, 3)), blocks.max(axis=(1, 3))
    return np.where(lo == hi, lo, 255).astype(np.uint8)


def shoelace(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)))


def ramanujan(a: float, b: float) -> float:
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


# ----------------------------------------------------------------- ground truth


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ellipse_on_a_plane_matches_closed_forms(seed: int) -> None:
    spec = WoundSpec(seed=seed, surface="plane", outline="ellipse", profile="bowl", frames=1)
    truth = generate(spec).truth
    a, b = truth.major_length_cm / 2, truth.minor_width_cm / 2
    r_cm, d_cm = spec.radius_m * 100, spec.max_depth_m * 100
    assert a * b == pytest.approx(r_cm**2, rel=1e-6)
    assert a >= b
    assert truth.area_cm2 == pytest.approx(math.pi * a * b, rel=1e-6)
    assert truth.perimeter_cm == pytest.approx(ramanujan(a, b), rel=1e-5)
    assert truth.volume_cm3 == pytest.approx(math.pi * a * b * d_cm / 2, rel=1e-6)
    assert truth.mean_depth_mm == pytest.approx(spec.max_depth_m * 1000 / 2, rel=1e-6)
    assert truth.max_depth_mm == pytest.approx(spec.max_depth_m * 1000)
    assert truth.ruler_area_cm2 == pytest.approx(truth.length_cm * truth.width_cm)
    o = outline_w(generate(spec))
    assert np.abs(o[:, 2]).max() < 1e-12
    assert truth.length_cm == pytest.approx(np.ptp(o[:, 1]) * 100, rel=1e-4)
    assert truth.width_cm == pytest.approx(np.ptp(o[:, 0]) * 100, rel=1e-4)
    assert sum(truth.tissue_composition.values()) == pytest.approx(100.0)
    assert truth.tissue_composition["granulation"] > 0


def test_punched_and_shallow_volumes() -> None:
    base = WoundSpec(seed=4, surface="plane", outline="ellipse", frames=1, max_depth_m=0.008)
    punched = generate(dataclasses.replace(base, profile="punched")).truth
    # Integral of smoothstep((1 - u) / 0.2) u du over [0, 1] is 0.406; area = pi a b.
    assert punched.volume_cm3 == pytest.approx(2 * 0.406 * punched.area_cm2 * 0.8, rel=1e-6)
    shallow = generate(dataclasses.replace(base, profile="shallow")).truth
    assert shallow.max_depth_mm == pytest.approx(2.0)  # D is clipped to 1-2 mm
    assert shallow.volume_cm3 == pytest.approx(2 / 3 * shallow.area_cm2 * 0.2, rel=1e-6)
    sloped = generate(dataclasses.replace(base, profile="sloped")).truth
    assert sloped.max_depth_mm == pytest.approx(8.0)
    assert 0.2 * 8.0 < sloped.mean_depth_mm < 0.5 * 8.0


def test_sloped_floor_reaches_max_depth_off_centre() -> None:
    spec = WoundSpec(
        seed=4,
        surface="plane",
        outline="ellipse",
        profile="sloped",
        radius_m=0.02,
        max_depth_m=0.015,
        noise_mm=0.0,
        tilt_deg=0.0,
        motion=0.0,
        frames=2,
        color_scale=1,
    )
    synth = generate(spec)
    pts = np.concatenate([to_wound(synth, back_project(f)[0]) for f in synth.scan.frames])
    deepest = pts[np.argmin(pts[:, 2])]
    # The deepest rendered point is the floor's maximum d = D (to the tracking error).
    assert -deepest[2] == pytest.approx(spec.max_depth_m, abs=4e-4)
    assert 0.1 * spec.radius_m < math.hypot(deepest[0], deepest[1]) < 0.6 * spec.radius_m


@pytest.mark.parametrize("outline", ["ellipse", "irregular"])
def test_calf_patch_measures_equal_its_development(outline: str) -> None:
    spec = WoundSpec(
        seed=7, surface="calf", limb_radius_m=0.05, radius_m=0.018, outline=outline, frames=1
    )
    scan = generate(spec)
    truth, r = scan.truth, spec.limb_radius_m
    o = outline_w(scan)
    np.testing.assert_allclose(o[:, 2], np.sqrt(r * r - o[:, 0] ** 2) - r, atol=1e-12)
    # The cylinder is developable: unroll x to arc length and measure in the plane.
    sigma = r * np.arcsin(o[:, 0] / r)
    dev = np.stack([sigma, o[:, 1]], axis=1)
    assert truth.area_cm2 == pytest.approx(shoelace(dev) * 1e4, rel=2e-4)
    assert truth.area_cm2 > 1.01 * shoelace(o[:, :2]) * 1e4  # more than the projected area
    polygon = np.sum(np.linalg.norm(dev - np.roll(dev, -1, axis=0), axis=1))
    assert truth.perimeter_cm == pytest.approx(polygon * 100, rel=2e-4)
    assert truth.length_cm == pytest.approx(np.ptp(o[:, 1]) * 100, rel=1e-4)
    assert truth.width_cm == pytest.approx(np.ptp(sigma) * 100, rel=1e-4)


@pytest.mark.parametrize("surface", ["heel", "sacrum"])
def test_curved_area_matches_a_brute_force_surface_integral(surface: str) -> None:
    spec = WoundSpec(seed=3, surface=surface, limb_radius_m=0.045, radius_m=0.016, frames=1)
    scan = generate(spec)
    o = outline_w(scan)
    n = 1600
    xs = np.linspace(o[:, 0].min(), o[:, 0].max(), n)
    ys = np.linspace(o[:, 1].min(), o[:, 1].max(), n)
    h = (xs[1] - xs[0]) * (ys[1] - ys[0])
    x, y = np.meshgrid(xs, ys)
    inside = np.hypot(x, y) < outline_radius(scan, x, y)
    if surface == "heel":
        a, b, c = 0.045, 1.25 * 0.045, 0.85 * 0.045
        root = np.sqrt(1 - (x / a) ** 2 - (y / b) ** 2)
        sx, sy = -c * x / (a * a * root), -c * y / (b * b * root)
    else:
        sx, sy = -x / 0.25, -y / 0.40
    brute = float(np.sum(np.sqrt(1 + sx**2 + sy**2)[inside]) * h)
    assert scan.truth.area_cm2 == pytest.approx(brute * 1e4, rel=3e-3)
    assert scan.truth.area_cm2 > float(np.sum(inside) * h) * 1e4


# ----------------------------------------------------------------- determinism and API


def test_same_spec_gives_identical_arrays_and_seeds_differ() -> None:
    spec = WoundSpec(seed=11, frames=2, color_scale=1)
    one, two = generate(spec), generate(spec)
    for f1, f2, l1, l2 in zip(
        one.scan.frames, two.scan.frames, one.labels, two.labels, strict=True
    ):
        np.testing.assert_array_equal(f1.depth, f2.depth)
        np.testing.assert_array_equal(f1.confidence, f2.confidence)
        np.testing.assert_array_equal(f1.color, f2.color)
        np.testing.assert_array_equal(f1.pose, f2.pose)
        np.testing.assert_array_equal(l1, l2)
    assert one.truth.to_json() == two.truth.to_json()
    other = generate(dataclasses.replace(spec, seed=12))
    assert not np.array_equal(other.scan.frames[0].depth, one.scan.frames[0].depth)
    assert other.truth.area_cm2 != one.truth.area_cm2
    # More frames extend the same capture: the first frames do not change.
    longer = generate(dataclasses.replace(spec, frames=3))
    np.testing.assert_array_equal(longer.scan.frames[1].depth, one.scan.frames[1].depth)
    assert longer.truth.to_json() == one.truth.to_json()


def test_frame_layout_and_types() -> None:
    spec = WoundSpec(seed=5, frames=3, color_scale=2)
    synth = generate(spec)
    scan = synth.scan
    assert scan.source == "synthetic" and scan.origin == "seed=5"
    assert scan.metadata["spec"] == dataclasses.asdict(spec)
    assert len(scan.frames) == 3 and len(synth.labels) == 3
    for i, frame in enumerate(scan.frames):
        assert frame.depth.dtype == np.float32 and frame.depth.shape == (192, 256)
        assert frame.confidence is not None and frame.confidence.dtype == np.uint8
        assert set(np.unique(frame.confidence)) <= {0, 1, 2}
        assert frame.color is not None and frame.color.shape == (384, 512, 3)
        assert frame.color.dtype == np.uint8
        assert synth.labels[i].shape == (384, 512) and synth.labels[i].dtype == np.uint8
        assert int(synth.labels[i].max()) < len(TISSUES)
        assert frame.intrinsics == DEPTH_INTRINSICS
        assert frame.timestamp == pytest.approx(i / 30)
        np.testing.assert_allclose(frame.pose[:3, :3] @ frame.pose[:3, :3].T, np.eye(3), atol=1e-12)
        assert np.all((frame.confidence == 0) | (frame.depth > 0))
    rot = synth.truth.wound_to_world[:3, :3]
    np.testing.assert_allclose(synth.truth.body_axis, rot @ [0.0, 1.0, 0.0])
    assert scan.body_axis is not None
    np.testing.assert_allclose(scan.body_axis, synth.truth.body_axis)
    assert not np.allclose(rot, np.eye(3))  # the world is not the wound frame
    doc = json.loads(json.dumps(synth.truth.to_json()))
    assert doc["area_cm2"] == synth.truth.area_cm2
    assert len(doc["outline_world"]) == len(synth.truth.outline_world)


def test_synthetic_source_is_a_capture_source() -> None:
    source = SyntheticSource(seed=9, color_scale=1)
    assert isinstance(source, CaptureSource)
    assert source.name == "synthetic" and source.last is None
    scan = source.capture(max_frames=2)
    assert len(scan.frames) == 2
    assert source.last is not None and source.last.scan is scan
    assert source.last.spec.seed == 9
    again = SyntheticSource(WoundSpec(seed=9), frames=1, color_scale=1).capture()
    np.testing.assert_array_equal(again.frames[0].depth, scan.frames[0].depth)


def test_random_spec_is_seeded_varied_and_overridable() -> None:
    specs = [random_spec(i) for i in range(40)]
    assert random_spec(3) == random_spec(3)
    assert {s.surface for s in specs} == {"plane", "calf", "heel", "sacrum"}
    assert {s.profile for s in specs} == {"bowl", "punched", "sloped", "shallow"}
    assert {s.outline for s in specs} == {"ellipse", "irregular"}
    assert len({s.skin_tone for s in specs}) == 6
    fixed = random_spec(3, surface="heel", frames=2, tilt_deg=5.0)
    assert (fixed.surface, fixed.frames, fixed.tilt_deg, fixed.seed) == ("heel", 2, 5.0, 3)
    assert fixed.radius_m <= 0.4 * fixed.limb_radius_m
    with pytest.raises(TypeError, match="colour"):
        random_spec(1, colour="red")
    for i in range(6):
        synth = generate(random_spec(i, frames=1, color_scale=1))
        assert synth.truth.area_cm2 > 0 and int((synth.labels[0] > 0).sum()) > 20


def test_invalid_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="surface"):
        generate(WoundSpec(surface="torso"))
    with pytest.raises(ValueError, match="too large"):
        generate(WoundSpec(surface="calf", limb_radius_m=0.04, radius_m=0.03))


# ----------------------------------------------------------------- sensor model


def plane_residuals(noise_mm: float, distance: float) -> tuple[np.ndarray, np.ndarray]:
    """Depth minus the true depth on skin pixels of a plane seen head-on, and confidence."""
    spec = WoundSpec(
        seed=2,
        surface="plane",
        tilt_deg=0.0,
        motion=0.0,
        frames=3,
        color_scale=1,
        noise_mm=noise_mm,
        distance_m=distance,
        radius_m=0.01,
    )
    synth = generate(spec)
    res, conf = [], []
    for i, frame in enumerate(synth.scan.frames):
        skin = depth_pixel_labels(synth, i) == 0
        assert frame.confidence is not None
        ok = skin & (frame.depth > 0)
        # The true pose is nominal (no hand motion): head-on, every pixel is at `distance`.
        res.append(frame.depth[ok] - distance)
        conf.append(frame.confidence[ok])
    return np.concatenate(res), np.concatenate(conf)


@pytest.mark.parametrize(("noise_mm", "distance"), [(1.0, 0.30), (2.0, 0.30), (1.0, 0.40)])
def test_depth_noise_follows_the_model(noise_mm: float, distance: float) -> None:
    res, conf = plane_residuals(noise_mm, distance)
    assert np.all(conf == 2)  # head-on plane: no grazing, no jumps
    expected = noise_mm / 1000 * (distance / 0.30) ** 2
    assert float(np.std(res)) == pytest.approx(expected, rel=0.10)
    assert abs(float(np.mean(res))) < 0.05 * expected


def test_dropouts_are_about_one_percent_and_worse_on_necrosis() -> None:
    spec = WoundSpec(seed=0, surface="plane", tilt_deg=0.0, frames=8, color_scale=1, radius_m=0.03)
    synth = generate(spec)
    assert synth.truth.tissue_composition["necrosis"] > 10  # this seed has necrosis
    necro, other = [], []
    for i, frame in enumerate(synth.scan.frames):
        lab = depth_pixel_labels(synth, i)
        dropped = frame.depth == 0
        assert frame.confidence is not None
        assert np.all(frame.confidence[dropped] == 0)
        necro.append(dropped[lab == 3])
        other.append(dropped[lab == 0])
    rate_other = float(np.concatenate(other).mean())
    rate_necro = float(np.concatenate(necro).mean())
    assert 0.007 < rate_other < 0.013
    assert rate_necro > 0.03 and np.concatenate(necro).size > 500


def test_calf_silhouette_has_flying_pixels_with_low_confidence() -> None:
    spec = WoundSpec(
        seed=1, surface="calf", limb_radius_m=0.05, tilt_deg=0.0, frames=3, color_scale=1
    )
    synth = generate(spec)
    r = spec.limb_radius_m
    flying_conf = []
    for frame in synth.scan.frames:
        pts, idx = back_project(frame)
        rows, cols = idx.T
        w = to_wound(synth, pts)
        to_axis = np.hypot(w[:, 0], w[:, 2] + r)
        bed = float(np.median(w[np.abs(w[:, 0]) > 3 * r, 2]))
        assert frame.confidence is not None
        conf = frame.confidence[rows, cols]
        # Noise is ~1 mm on the limb (0.30 m) and ~2-5 mm on the bed (~0.45 m).
        on_limb = np.abs(to_axis - r) < 0.006
        on_bed = np.abs(w[:, 2] - bed) < 0.015
        assert np.mean(on_limb | on_bed) > 0.985
        in_air = (to_axis > r + 0.012) & (w[:, 2] > bed + 0.02)
        flying_conf.append(conf[in_air])
        steep = on_limb & (np.abs(w[:, 0]) > 0.9 * r) & (w[:, 2] > -r)
        assert np.all(conf[steep] <= 1)  # grazing incidence
    fc = np.concatenate(flying_conf)
    assert fc.size > 150
    assert np.all(fc <= 1)
    assert 0.15 < float(np.mean(fc == 1)) < 0.45  # confidence filtering alone is not enough


# ----------------------------------------------------------------- conventions


@pytest.mark.parametrize("surface", ["calf", "heel"])
def test_projected_outline_lies_on_the_label_boundary(surface: str) -> None:
    spec = WoundSpec(
        seed=6, surface=surface, limb_radius_m=0.045, radius_m=0.015, tilt_deg=15.0, frames=3
    )
    synth = generate(spec)
    for i, frame in enumerate(synth.scan.frames):
        assert frame.color is not None
        h, w = frame.color.shape[:2]
        k = DEPTH_INTRINSICS.scaled(w, h)
        world_to_cam = np.linalg.inv(frame.pose)
        cam = synth.truth.outline_world @ world_to_cam[:3, :3].T + world_to_cam[:3, 3]
        uv = np.stack([k.fx * cam[:, 0] / cam[:, 2] + k.cx, k.fy * cam[:, 1] / cam[:, 2] + k.cy], 1)
        wound = synth.labels[i] > 0
        # Boundary points: midpoints between 4-neighbours on either side of the outline.
        rr, cc = np.nonzero(wound[:, 1:] != wound[:, :-1])
        edges = [np.stack([cc + 0.5, rr], 1)]
        rr, cc = np.nonzero(wound[1:, :] != wound[:-1, :])
        edges.append(np.stack([cc, rr + 0.5], 1))
        boundary = np.concatenate(edges).astype(float)
        dist = np.min(np.linalg.norm(uv[:, None, :] - boundary[None, :, :], axis=2), axis=1)
        assert float(np.median(dist)) < 0.75
        assert float(dist.max()) < 2.0


@pytest.mark.parametrize("tilt", [0.0, 15.0])
def test_wound_centre_pixel_depth_is_distance_plus_depth(tilt: float) -> None:
    spec = WoundSpec(
        seed=8,
        surface="plane",
        profile="bowl",
        tilt_deg=tilt,
        motion=0.0,
        frames=4,
        distance_m=0.27,
        max_depth_m=0.005,
        color_scale=1,
    )
    synth = generate(spec)
    centre_world = synth.truth.wound_to_world[:3, 3]
    values = []
    for frame in synth.scan.frames:
        cam = np.linalg.inv(frame.pose) @ np.append(centre_world, 1.0)
        u = DEPTH_INTRINSICS.fx * cam[0] / cam[2] + DEPTH_INTRINSICS.cx
        v = DEPTH_INTRINSICS.fy * cam[1] / cam[2] + DEPTH_INTRINSICS.cy
        assert abs(u - DEPTH_INTRINSICS.cx) < 0.5 and abs(v - DEPTH_INTRINSICS.cy) < 0.5
        patch = frame.depth[int(v) : int(v) + 2, int(u) : int(u) + 2]
        values.extend(patch[patch > 0].tolist())
    expected = spec.distance_m + spec.max_depth_m / math.cos(math.radians(tilt))
    assert float(np.mean(values)) == pytest.approx(expected, abs=0.0008)


def test_skin_and_floor_points_land_on_the_true_surfaces() -> None:
    spec = WoundSpec(
        seed=10,
        surface="plane",
        outline="irregular",
        profile="bowl",
        radius_m=0.025,
        max_depth_m=0.01,
        tilt_deg=10.0,
        frames=3,
        color_scale=1,
    )
    synth = generate(spec)
    floor_res, skin_res = [], []
    for i, frame in enumerate(synth.scan.frames):
        pts, idx = back_project(frame)
        assert frame.confidence is not None
        lab = depth_pixel_labels(synth, i)[idx[:, 0], idx[:, 1]]
        good = frame.confidence[idx[:, 0], idx[:, 1]] == 2
        w = to_wound(synth, pts)
        skin_res.append(w[good & (lab == 0), 2])
        inner = good & (lab > 0) & (lab < 255)
        u = np.hypot(w[:, 0], w[:, 1]) / outline_radius(synth, w[:, 0], w[:, 1])
        floor = -spec.max_depth_m * (1 - np.minimum(u, 1) ** 2)
        floor_res.append((w[:, 2] - floor)[inner & (u < 0.9)])
    skin, floor = np.concatenate(skin_res), np.concatenate(floor_res)
    # Tracking error (~0.3 mm, ~0.03 deg) offsets whole frames by a fraction of a millimetre.
    assert abs(float(np.mean(skin))) < 4e-4 and float(np.std(skin)) < 0.0013
    assert floor.size > 1000
    assert abs(float(np.median(floor))) < 3e-4 and float(np.std(floor)) < 0.0015


def test_label_composition_matches_truth() -> None:
    spec = WoundSpec(seed=4, surface="plane", radius_m=0.025, tilt_deg=0.0, frames=2)
    synth = generate(spec)
    truth = synth.truth.tissue_composition
    assert sum(v > 3 for v in truth.values()) >= 3  # a mixed wound
    labels = np.concatenate([lab[lab > 0] for lab in synth.labels])
    counts = np.bincount(labels, minlength=len(TISSUES))[1:]
    seen = 100 * counts / counts.sum()
    for name, pct in zip(TISSUES[1:], seen, strict=True):
        assert pct == pytest.approx(truth[name], abs=3.0), name
