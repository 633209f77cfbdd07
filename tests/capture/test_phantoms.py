"""The independent phantom generator (tests/phantoms): its ground truth against closed
forms, its rendering against its own geometry, its colours, and its determinism.

No accuracy goals of the pipeline here: these check the generator, which the benchmark
and the pipeline's own tests measure against.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import replace
from itertools import product
from pathlib import Path

import numpy as np
import pytest

from tests.phantoms import (
    PROFILES,
    SHAPES,
    SITES,
    SKIN_GROUPS,
    Phantom,
    phantom_spec,
    render,
    render_frames,
    truth,
)
from tests.phantoms._colour import ita, lab_to_linear, linear_to_lab, srgb8_to_linear
from tests.phantoms._geometry import (
    depth_below_skin,
    normalised_radius,
    outline_radius,
    skin_height,
    surface_height,
)
from tests.phantoms._render import LABELS
from tests.phantoms._spec import ITA_RANGES

special = pytest.importorskip("scipy.special")

R_CIRCLE = 0.015
DEPTH = 0.006
WALL = 0.0003


def circle(site: str, profile: str = "cliff", *, seed: int = 0) -> Phantom:
    """A circular wound of radius R_CIRCLE (a superellipse of exponent 2)."""
    spec = phantom_spec(seed, site=site, shape="superellipse", profile=profile)
    return replace(
        spec,
        exponent=2.0,
        aspect=1.0,
        size=R_CIRCLE,
        centre_x=0.0,
        centre_y=0.0,
        depth=DEPTH,
        wall=WALL,
        bowl_power=2.0,
    )


def close(value: float, expected: float, rel: float = 1e-6) -> bool:
    return abs(value - expected) <= rel * abs(expected)


# ----------------------------------------------------------------- ground truth


def test_a_circle_on_flat_skin_matches_closed_forms() -> None:
    t = truth(circle("flat"))
    r_cm = R_CIRCLE * 100
    assert close(t.area_cm2, math.pi * r_cm**2)
    assert close(t.projected_area_cm2, math.pi * r_cm**2)
    assert close(t.perimeter_cm, 2 * math.pi * r_cm)
    assert close(t.length_cm, 2 * r_cm) and close(t.width_cm, 2 * r_cm)
    assert close(t.max_depth_mm, DEPTH * 1000)


def test_a_cliff_wound_holds_a_cylinder_of_water_less_its_wall() -> None:
    r, w = R_CIRCLE, WALL
    expected = DEPTH * math.pi * ((r - w) ** 2 + r * w - 2 * w * w / 3) * 1e6
    assert close(truth(circle("flat", "cliff")).volume_cm3, expected)
    # The wall is thin: the volume is nearly pi r**2 d, and well below it is wrong.
    assert abs(expected / (math.pi * r * r * DEPTH * 1e6) - 1) < 0.05


def test_a_bowl_holds_half_its_cylinder() -> None:
    t = truth(circle("flat", "bowl"))
    assert close(t.volume_cm3, math.pi * R_CIRCLE**2 * DEPTH / 2 * 1e6)
    assert close(t.mean_depth_mm, DEPTH / 2 * 1000)


def test_a_circle_on_a_limb_matches_the_elliptic_integral() -> None:
    spec = circle("limb")
    big_r, r = spec.body_radius, R_CIRCLE
    m = (r / big_r) ** 2
    # Surface of the cylinder over the disc: 4 R**2 (E(k) - (1 - k**2) K(k)).
    area = 4 * big_r**2 * (special.ellipe(m) - (1 - m) * special.ellipk(m))
    t = truth(spec)
    assert close(t.area_cm2, area * 1e4)
    assert t.area_cm2 > t.projected_area_cm2 * 1.005  # the lid is curved, not flat
    assert close(t.length_cm, 2 * r * 100)  # along the limb: straight
    assert close(t.width_cm, 2 * big_r * math.asin(r / big_r) * 100)  # around it: an arc
    assert close(t.volume_cm3, truth(circle("flat")).volume_cm3)


def test_a_circle_on_a_heel_is_a_spherical_cap() -> None:
    spec = circle("heel")
    big_r, r = spec.body_radius, R_CIRCLE
    t = truth(spec)
    assert close(t.area_cm2, 2 * math.pi * big_r * (big_r - math.sqrt(big_r**2 - r**2)) * 1e4)
    assert close(t.perimeter_cm, 2 * math.pi * r * 100)
    arc = 2 * big_r * math.asin(r / big_r) * 100
    assert close(t.length_cm, arc) and close(t.width_cm, arc)


def test_outlines_are_scaled_exactly_to_their_size() -> None:
    # A superellipse |x|**n + |y|**n = 1 encloses 4 Gamma(1 + 1/n)**2 / Gamma(1 + 2/n).
    n = 4.0
    spec = replace(circle("flat"), exponent=n, angle=0.0)
    unit_area = 4 * math.gamma(1 + 1 / n) ** 2 / math.gamma(1 + 2 / n)
    scale = R_CIRCLE * math.sqrt(math.pi / unit_area)
    assert close(float(outline_radius(spec, np.array(0.0))), scale, 1e-9)
    assert close(truth(spec).area_cm2, math.pi * (R_CIRCLE * 100) ** 2)


@pytest.mark.parametrize("seed", range(8))
def test_every_shape_is_centred_and_its_truth_converged(seed: int) -> None:
    spec = phantom_spec(seed, shape=SHAPES[seed % len(SHAPES)], profile=PROFILES[seed // 2 % 4])
    theta = np.linspace(0, 2 * math.pi, 20000, endpoint=False)
    r = outline_radius(spec, theta)
    x, y = spec.centre_x + r * np.cos(theta), spec.centre_y + r * np.sin(theta)
    area = 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)
    cx = np.sum((x + np.roll(x, -1)) * (x * np.roll(y, -1) - np.roll(x, -1) * y)) / (6 * area)
    assert abs(cx) < 1e-6  # the centroid is the frame's origin
    t = truth(spec)
    assert close(t.projected_area_cm2, area * 1e4, 1e-5)
    # A coarser integration of the same volume agrees far below 0.1 %.
    xs = np.linspace(-0.05, 0.05, 2001)
    gx, gy = np.meshgrid(xs, xs, indexing="ij")
    coarse = float(np.sum(depth_below_skin(spec, gx, gy))) * (xs[1] - xs[0]) ** 2 * 1e6
    assert close(t.volume_cm3, coarse, 2e-3)


def test_specs_stay_in_their_documented_ranges() -> None:
    for seed in range(60):
        spec = phantom_spec(seed)
        assert 0.001 <= spec.depth <= 0.015
        assert spec.profile != "shallow" or spec.depth <= 0.0015
        assert spec.margin == 0.0 or 0.001 <= spec.margin <= 0.003
        assert 0.20 <= spec.distance <= 0.35
        lo, hi = {"flat": (0, 0), "limb": (0.05, 0.08), "heel": (0.04, 0.06)}[spec.site]
        assert lo <= spec.body_radius <= hi
        lo, hi = ITA_RANGES[spec.skin_group]
        assert lo < spec.skin_ita < hi
        assert lo < float(ita(np.asarray(spec.skin_lab))) < hi


def test_the_first_nine_seeds_cover_every_site_and_skin_group() -> None:
    pairs = {(phantom_spec(s).site, phantom_spec(s).skin_group) for s in range(9)}
    assert pairs == set(product(SITES, SKIN_GROUPS))


def test_the_benchmark_suite_covers_skin_groups_evenly_on_every_site(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # From the repository root: another distribution (pymerkle) installs a top-level
    # `benchmarks` package too (tests/test_benchmarks.py imports it the same way).
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    bench = importlib.import_module("benchmarks._bench_phantoms")
    suite, wound_count = bench.suite, bench.wound_count
    wounds = suite(wound_count(10_000))
    assert len(wounds) == 60 and len({seed for seed, _, _ in wounds}) == 60
    groups = [group for _, _, group in wounds]
    assert all(groups.count(group) == 20 for group in SKIN_GROUPS)
    assert {(site, group) for _, site, group in wounds} == set(product(SITES, SKIN_GROUPS))
    assert {group for _, _, group in suite(wound_count(300))} == set(SKIN_GROUPS)


# ----------------------------------------------------------------- rendering


def quiet(spec: Phantom) -> Phantom:
    """No depth noise, no flying pixels, one frame."""
    return replace(spec, noise_mm=0.0, flying_pixels=0.0, frames=1)


def wound_frame_points(spec: Phantom, seed_frame: int = 0) -> np.ndarray:
    frame = render_frames(spec)[seed_frame].frame
    k = frame.intrinsics
    rows, cols = np.nonzero(frame.depth > 0)
    z = frame.depth[rows, cols].astype(np.float64)
    cam = np.stack([(cols - k.cx) / k.fx * z, (rows - k.cy) / k.fy * z, z], axis=1)
    world = cam @ frame.pose[:3, :3].T + frame.pose[:3, 3]
    to_world = spec.wound_to_world
    return (world - to_world[:3, 3]) @ to_world[:3, :3]


def distance_to_surface(spec: Phantom, p: np.ndarray) -> np.ndarray:
    """Distance of wound-frame points to the phantom's analytic surface (skin, wound, bed)."""
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    if spec.site == "flat":
        skin = np.abs(z)
    else:
        centre = np.array([0.0, 0.0, -spec.body_radius])
        rel = p - centre
        if spec.site == "limb":
            rel[:, 1] = 0.0
        skin = np.abs(np.linalg.norm(rel, axis=1) - spec.body_radius)
        bed = np.abs(z + 2 * spec.body_radius + 0.03)
        skin = np.minimum(skin, bed)
    inside = normalised_radius(spec, x, y) < 1.0
    # Inside the wound: height above the floor over the floor's slope (first order).
    eps = 1e-7
    xi, yi = x[inside], y[inside]
    fx = (surface_height(spec, xi + eps, yi) - surface_height(spec, xi - eps, yi)) / (2 * eps)
    fy = (surface_height(spec, xi, yi + eps) - surface_height(spec, xi, yi - eps)) / (2 * eps)
    gap = np.abs(z[inside] - surface_height(spec, xi, yi)) / np.sqrt(1 + fx**2 + fy**2)
    out = skin.copy()
    out[inside] = np.minimum(gap, out[inside])
    return out


@pytest.mark.parametrize(("site", "profile"), [("flat", "cliff"), ("limb", "terraced"),
                                               ("heel", "bowl")])  # fmt: skip
def test_a_noiseless_frame_lies_on_the_analytic_surface(site: str, profile: str) -> None:
    spec = quiet(phantom_spec(11, site=site, profile=profile))
    p = wound_frame_points(spec)
    d = distance_to_surface(spec, p)
    assert len(p) > 40_000
    assert float(np.max(d)) < 1e-6
    inside = normalised_radius(spec, p[:, 0], p[:, 1]) < 1.0
    floor = depth_below_skin(spec, p[inside, 0], p[inside, 1])
    assert inside.sum() > 100 and float(floor.max()) > 0.9 * spec.depth  # the wound is seen
    # With noise the same frame is off the surface by about the noise.
    noisy = wound_frame_points(replace(spec, noise_mm=1.0))
    assert 0.0004 < float(np.median(distance_to_surface(spec, noisy))) < 0.002


def test_depth_discontinuities_get_flying_pixels_and_low_confidence() -> None:
    spec = replace(phantom_spec(4, site="limb"), frames=1)
    frame = render_frames(spec)[0].frame
    p = wound_frame_points(spec)
    d = distance_to_surface(spec, p)
    flying = d > 0.01  # between the limb and the bed under it
    assert flying.sum() > 10
    assert np.mean(frame.confidence[frame.depth > 0] == 2) > 0.8
    assert set(np.unique(frame.confidence)) == {0, 1, 2}


@pytest.mark.parametrize(("group", "site"), list(product(SKIN_GROUPS, SITES)))
def test_skin_pixels_have_the_ita_of_their_group(group: str, site: str) -> None:
    spec = quiet(phantom_spec(5, skin_group=group, site=site))
    rendered = render_frames(spec)[0]
    skin = (rendered.labels == LABELS["skin"]) & (rendered.incidence > 0.3)
    skin &= normalised_radius(spec, rendered.points[..., 0], rendered.points[..., 1]) > 1.5
    assert skin.sum() > 10_000
    linear = srgb8_to_linear(rendered.frame.color[skin])
    shade = 0.3 + 0.7 * rendered.incidence[skin]
    albedo = np.mean(linear / shade[:, None], axis=0)
    angle = float(ita(linear_to_lab(albedo)))
    lo, hi = ITA_RANGES[group]
    assert lo < angle < hi
    assert abs(angle - spec.skin_ita) < 1.5


def test_the_margin_is_inside_the_depression_and_paler_than_the_bed() -> None:
    spec = quiet(replace(phantom_spec(3, profile="bowl"), margin=0.0025))
    rendered = render_frames(spec)[0]
    margin = rendered.labels == LABELS["epithelium"]
    assert margin.sum() > 200
    p = rendered.points[margin]
    assert np.all(normalised_radius(spec, p[:, 0], p[:, 1]) < 1.0)
    assert np.all(depth_below_skin(spec, p[:, 0], p[:, 1]) > 0.0)
    assert np.all(p[:, 2] < skin_height(spec, p[:, 0], p[:, 1]))
    # Its pixels are the epithelium's colour, not the skin's or the granulation's.
    lab = linear_to_lab(
        srgb8_to_linear(rendered.frame.color[margin])
        / (0.3 + 0.7 * rendered.incidence[margin])[:, None]
    )
    epithelium = np.asarray(spec.tissues[3])
    granulation = np.asarray(spec.tissues[0])
    to_epi = np.linalg.norm(lab - epithelium, axis=1)
    assert np.median(to_epi) < np.median(np.linalg.norm(lab - spec.skin_lab, axis=1))
    assert np.median(to_epi) < np.median(np.linalg.norm(lab - granulation, axis=1))
    assert np.median(to_epi) < 6.0


def test_dark_skin_gets_a_dusky_wound_bed() -> None:
    light = phantom_spec(0, skin_group="I-II")
    dark = phantom_spec(0, skin_group="V-VI")
    assert dark.tissues[0][0] < light.tissues[0][0]
    assert linear_to_lab(lab_to_linear(dark.tissues[0])) == pytest.approx(dark.tissues[0])


def test_specular_spots_are_saturated_and_on_the_bed() -> None:
    spec = quiet(replace(phantom_spec(6), speculars=6))
    rendered = render_frames(spec)[0]
    spots = rendered.labels == LABELS["specular"]
    assert spots.sum() > 3
    assert np.all(rendered.frame.color[spots].min(axis=1) >= 250)
    p = rendered.points[spots]
    assert np.all(normalised_radius(spec, p[:, 0], p[:, 1]) < 1.0)


def test_the_scan_follows_the_capture_conventions() -> None:
    spec = phantom_spec(2, frames=3)
    scan, t = render(spec)
    assert len(scan.frames) == 3 and scan.cloud is None
    assert scan.body_axis is not None
    assert np.allclose(scan.body_axis, spec.wound_to_world[:3, :3] @ [0, 1, 0])
    frame = scan.frames[0]
    assert frame.depth.dtype == np.float32 and frame.depth.shape == (192, 256)
    assert frame.color is not None and frame.color.shape == (480, 640, 3)
    assert frame.confidence is not None and frame.confidence.max() <= 2
    assert frame.intrinsics.fx == pytest.approx(212.0)
    assert [f.timestamp for f in scan.frames] == sorted({f.timestamp for f in scan.frames})
    # The camera is 20-35 cm from the wound and looks roughly at it.
    centre = spec.wound_to_world[:3, 3]
    for f in scan.frames:
        to_wound = centre - f.pose[:3, 3]
        assert 0.19 < np.linalg.norm(to_wound) < 0.36
        assert to_wound @ f.pose[:3, 2] / np.linalg.norm(to_wound) > 0.99
    assert t == truth(spec)


def test_the_same_seed_renders_the_same_scan() -> None:
    a, b, c = (render_frames(replace(phantom_spec(s), frames=2)) for s in (9, 9, 10))
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.frame.depth, y.frame.depth)
        assert np.array_equal(x.frame.color, y.frame.color)
        assert np.array_equal(x.frame.pose, y.frame.pose)
    assert not np.array_equal(a[0].frame.depth, c[0].frame.depth)
    assert phantom_spec(9) == phantom_spec(9) != phantom_spec(10)
