"""The wound's edge from depth and colour together, with no inward bias (issue 22).

The scenes are coloured point clouds of analytic wounds on flat skin (or a limb),
sampled like a fused scan (0.4 mm spacing, 0.7 mm depth noise, colour noise): the true
edge is a circle of 10 mm radius, so the drawn outline's distance from it is the edge's
error. They are where the boundary's thresholds are set. The suite at the end measures
the independent phantoms (`tests.phantoms`), which no threshold was set on.
"""

from __future__ import annotations

import statistics
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from lidar_capture import (
    MODEL_CHANNELS,
    MODEL_INPUT_SIZE,
    MeasureOptions,
    PointCloud,
    Scan,
    WoundMeasurement,
    generate,
    measure,
    random_spec,
)
from lidar_capture import _ndimage as ndimage

F64 = npt.NDArray[np.float64]

RADIUS = 0.010
DEPTH = 0.004
CELL = 0.0005  # the measurement grid's default cell
LIGHT = np.array([0.80, 0.62, 0.52])
DARK = np.array([0.30, 0.20, 0.15])
BED = np.array([0.62, 0.12, 0.12])


def scene(
    profile: str = "cliff",
    margin_m: float = 0.0,
    patch_gap_m: float | None = None,
    skin: F64 = LIGHT,
    seed: int = 0,
    erythema_m: float = 0.0,
    depth_m: float = DEPTH,
    margin_bed: float = 0.4,
    limb_radius_m: float | None = None,
    fade_m: float = 0.0,
    fade_bed: float = 0.3,
    mottle: float = 0.0,
) -> Scan:
    """A round wound of `RADIUS`, `depth_m` deep (``cliff``, ``bowl`` or ``flat``, an
    abrasion), on flat skin or on a limb of `limb_radius_m` (a cylinder along y);
    `margin_m` of pale pink (`margin_bed` of the bed's colour, the rest skin's) inside
    its rim; a flat red patch of 5 mm radius `patch_gap_m` beside it; `erythema_m` of
    faintly reddened intact skin (92 % skin, 8 % bed) around it; or `fade_m` of redness
    fading out from the rim (`fade_bed` of the bed's colour there, none at `fade_m`).
    `mottle` is the standard deviation of the skin's redness, varying over about 12 mm
    as real skin's does (its red channel up by that share where green and blue are
    down by half of it)."""
    rng = np.random.default_rng(seed)
    spacing, half = 0.0004, 0.04
    g = (np.arange(int(2 * half / spacing)) + 0.5) * spacing - half
    x, y = (a.ravel() + rng.uniform(-spacing / 2, spacing / 2, a.size) for a in np.meshgrid(g, g))
    r = np.hypot(x, y)
    inside = r < RADIUS
    shape = {"cliff": 1.0, "bowl": 1.0 - (r / RADIUS) ** 2, "flat": 0.0}[profile]
    skin_z = 0.0 if limb_radius_m is None else limb_radius_m - np.sqrt(limb_radius_m**2 - x**2)
    z = 0.3 + skin_z - np.where(inside, depth_m * shape, 0.0) + rng.normal(0.0, 0.0007, x.size)
    redness = mottle * _field(x, y, seed)[:, None] * np.array([1.0, -0.5, -0.5])
    colour = np.tile(skin, (x.size, 1)) * (1.0 + redness)
    colour[~inside & (r < RADIUS + erythema_m)] = 0.92 * skin + 0.08 * BED
    fading = ~inside & (r < RADIUS + fade_m)
    red = fade_bed * (1.0 - (r[fading] - RADIUS) / max(fade_m, 1e-9))
    colour[fading] = (1.0 - red)[:, None] * skin + red[:, None] * BED
    colour[inside] = BED
    colour[inside & (r > RADIUS - margin_m)] = (1.0 - margin_bed) * skin + margin_bed * BED
    if patch_gap_m is not None:
        colour[np.hypot(x - (RADIUS + patch_gap_m + 0.005), y) < 0.005] = BED
    colour = np.clip(colour + rng.normal(0.0, 0.012, colour.shape), 0.0, 1.0)
    return Scan("pointcloud", "edge scene", cloud=PointCloud(np.column_stack([x, y, z]), colour))


def _field(x: F64, y: F64, seed: int) -> F64:
    """A smooth random field of zero mean and unit variance varying over about 12 mm."""
    rng = np.random.default_rng([seed, 7])
    field = np.zeros_like(x)
    waves = 8
    for _ in range(waves):
        angle = rng.uniform(0.0, 2.0 * np.pi)
        k = 2.0 * np.pi / (0.012 * rng.uniform(0.6, 1.6))
        field += np.cos(k * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0.0, 2 * np.pi))
    return np.asarray(field / np.sqrt(waves / 2), dtype=np.float64)


def area_error(m: WoundMeasurement) -> float:
    """Signed area error, % of the true circle's."""
    truth = np.pi * RADIUS**2 * 1e4
    return (m.area_cm2 - truth) / truth * 100.0


def edge_offsets(m: WoundMeasurement) -> F64:
    """The outline's distance outside the true edge, metres (negative inside)."""
    return np.asarray(np.hypot(m.outline_world[:, 0], m.outline_world[:, 1]) - RADIUS)


def test_a_cliff_without_margin_has_its_edge_on_the_wall() -> None:
    m = measure(scene("cliff"))
    offsets = edge_offsets(m)
    assert abs(float(np.median(offsets))) < 0.2 * CELL
    assert float(np.quantile(np.abs(offsets), 0.9)) < 0.5 * CELL
    assert abs(area_error(m)) <= 1.5


BOWL_MARGIN = (
    "measured {:+.1f} %: the margin's outer part lies on the bowl's rim where the floor is "
    "within the noise of the skin, and a 2 mm margin is read against the bed's contrast "
    "(its plateau is read three blur sigmas in), so half of it is not half-way"
)


@pytest.mark.parametrize(
    ("profile", "skin"),
    [
        pytest.param("cliff", LIGHT, id="cliff-light"),
        pytest.param("cliff", DARK, id="cliff-dark"),
        pytest.param(
            "bowl",
            LIGHT,
            id="bowl-light",
            marks=pytest.mark.xfail(strict=True, reason=BOWL_MARGIN.format(-3.2)),
        ),
        pytest.param("bowl", DARK, id="bowl-dark"),
    ],
)
def test_a_pale_margin_inside_the_depression_is_wound(profile: str, skin: F64) -> None:
    m = measure(scene(profile, margin_m=0.002, skin=skin))
    # Without the margin the area would be the bed's: (8/10)^2, 36 % low.
    assert abs(area_error(m)) <= 1.5
    assert abs(float(np.median(edge_offsets(m)))) < 0.5 * CELL


SHALLOW = 0.0012  # a shallow wound: its rim within the depth noise of the skin
FAINT = 0.12  # a faint pale margin: 12 % of the bed's colour, the rest skin's


@pytest.mark.parametrize(
    ("depth_m", "skin", "limb_radius_m", "margin_m"),
    [
        pytest.param(SHALLOW, LIGHT, None, 0.002, id="shallow-flat-light"),
        pytest.param(SHALLOW, DARK, None, 0.002, id="shallow-flat-dark"),
        pytest.param(SHALLOW, LIGHT, 0.06, 0.002, id="shallow-limb-light"),
        pytest.param(SHALLOW, DARK, 0.06, 0.002, id="shallow-limb-dark"),
        pytest.param(SHALLOW, LIGHT, None, 0.003, id="shallow-wide-light"),
        pytest.param(DEPTH, LIGHT, None, 0.002, id="bowl-flat-light"),
    ],
)
def test_a_faint_margin_past_a_shallow_rim_is_wound(
    depth_m: float, skin: F64, limb_radius_m: float | None, margin_m: float
) -> None:
    # Without the margin the area would be the bed's, a third low or more.
    scan = scene(
        "bowl",
        margin_m=margin_m,
        margin_bed=FAINT,
        skin=skin,
        depth_m=depth_m,
        limb_radius_m=limb_radius_m,
    )
    assert abs(area_error(measure(scan))) <= 4.0


# The same faint margin with other noise, or on skin whose redness varies by 2 % over
# about 12 mm (as real skin's does): its outer millimetre lies within 0.05 mm of the
# skin, inside the skin fit's own residual over millimetres, so the floor test cannot
# tell it from reddened skin; on mottled skin the colour past its step is 2-4 % of the
# step off the skin's, so the step test cannot either. Each is flagged, but the deeper
# bowl's: there the band left past the drawn wound is 1 mm wide, as a rim's blur is.
UNSEEN = (
    ("noise-2", 2, 0.0, SHALLOW, "-31.6 %"),
    ("noise-3", 3, 0.0, SHALLOW, "-31.3 %"),
    ("mottled-skin", 0, 0.02, SHALLOW, "-31.6 %"),
    ("mottled-skin-bowl", 0, 0.02, DEPTH, "-19.5 %"),
)


@pytest.mark.parametrize(
    ("seed", "mottle", "depth_m"),
    [
        pytest.param(seed, mottle, depth_m, id=case)
        for case, seed, mottle, depth_m, _ in UNSEEN
        if depth_m == SHALLOW
    ],
)
def test_a_faint_margin_the_rules_cannot_see_is_flagged(
    seed: int, mottle: float, depth_m: float
) -> None:
    m = measure(
        scene("bowl", margin_m=0.002, margin_bed=FAINT, depth_m=depth_m, seed=seed, mottle=mottle)
    )
    assert "edge_undecided" in m.quality


@pytest.mark.parametrize(
    ("seed", "mottle", "depth_m"),
    [
        pytest.param(
            seed,
            mottle,
            depth_m,
            id=case,
            marks=pytest.mark.xfail(
                strict=True,
                reason=f"measured {measured}: the margin is left out, "
                + (
                    "flagged edge_undecided"
                    if depth_m == SHALLOW
                    else "unflagged (1 mm of it is left, as wide as a rim's blur)"
                ),
            ),
        )
        for case, seed, mottle, depth_m, measured in UNSEEN
    ],
)
def test_a_faint_margin_is_wound_whatever_the_noise_and_the_skin(
    seed: int, mottle: float, depth_m: float
) -> None:
    m = measure(
        scene("bowl", margin_m=0.002, margin_bed=FAINT, depth_m=depth_m, seed=seed, mottle=mottle)
    )
    assert abs(area_error(m)) <= 4.0


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({"profile": "cliff"}, id="cliff"),
        pytest.param({"profile": "bowl", "mottle": 0.02}, id="bowl-mottled-skin"),
        pytest.param({"profile": "cliff", "margin_m": 0.002, "skin": DARK}, id="pale-margin"),
        pytest.param(
            {"profile": "bowl", "margin_m": 0.002, "margin_bed": FAINT, "depth_m": SHALLOW},
            id="faint-margin-taken",
        ),
        pytest.param({"profile": "cliff", "patch_gap_m": 0.003}, id="red-patch-beside"),
    ],
)
def test_a_decided_edge_is_not_flagged(kwargs: dict[str, Any]) -> None:
    assert "edge_undecided" not in measure(scene(**kwargs)).quality


@pytest.mark.parametrize("seed", [10010, 10039, 10098, 10102, 20037, 20064])
def test_redness_fading_from_a_training_wound_is_not_a_faint_margin(seed: int) -> None:
    # The training generator draws periwound redness fading out from the rim. Beside a
    # deep or blurred rim (one to three noisy frames) its floor reads below the skin,
    # so only the colour's profile tells it from a margin: it is still well off the
    # skin's colour past its half-way point. With the step test's threshold at 10 %
    # instead of 2 % (`_TAIL_SHARE`), these six read +15 % to +47 %.
    synthetic = generate(random_spec(seed, frames=(1, 3)[seed % 2]))
    without = measure(synthetic.scan, options=MeasureOptions(faint_margin_reach_m=0.0))
    assert measure(synthetic.scan).area_cm2 == pytest.approx(without.area_cm2, rel=0.005)


@pytest.mark.parametrize("margin_m", [0.0, 0.002])
def test_reddened_skin_around_a_shallow_wound_is_not_wound(
    margin_m: float,
) -> None:
    # 3 mm of faintly reddened skin around a shallow rim (with or without a faint
    # margin inside it) is not wound: a guard for any rule that reads faint colour past
    # a shallow rim (with the margin the area reads -31 %, the margin missed).
    m = measure(
        scene("bowl", margin_m=margin_m, margin_bed=FAINT, depth_m=SHALLOW, erythema_m=0.003)
    )
    assert area_error(m) <= 2.5


def test_a_flat_red_patch_beside_the_wound_is_not_wound() -> None:
    alone = measure(scene("cliff"))
    beside = measure(scene("cliff", patch_gap_m=0.003))
    # The patch (25 % of the wound's area) is left out; the wound's edge does not move.
    assert abs(area_error(beside)) <= 1.5
    assert beside.area_cm2 == pytest.approx(alone.area_cm2, rel=0.005)


@pytest.mark.xfail(
    strict=True,
    reason=(
        "measured: 3 mm of faintly reddened skin around the rim adds 2.1 % to a cliff's "
        "area and 4.9 % to a bowl's (with a 2 mm pale margin inside): near the "
        "depression the colour rules take the part of it within their reach"
    ),
)
@pytest.mark.parametrize("profile", ["cliff", "bowl"])
def test_reddened_skin_around_the_wound_is_not_wound(profile: str) -> None:
    alone = measure(scene(profile, margin_m=0.002))
    reddened = measure(scene(profile, margin_m=0.002, erythema_m=0.003))
    assert reddened.area_cm2 == pytest.approx(alone.area_cm2, rel=0.01)


FADING = (
    "measured {} (4 mm of redness fading out from 30 % of the bed's colour at the rim): "
    "the colour beyond the depression reads as wound. Three things take "
    "it: the wound's tissue colours are clustered from clearly-not-skin colour, the "
    "redness's inner part included, so its share towards them reads high (0.63 where "
    "its contrast is 0.27 of the bed's); that colour core is joined to the depression; "
    "and the half-way rule reads its step against the colour just inside the rim (a "
    "pale margin), which the redness matches. Each 0.5 mm cell of edge outside a 10 mm "
    "wound is +10 % of its area; see docs/capture.md"
)


@pytest.mark.parametrize(
    ("profile", "margin_m", "skin"),
    [
        pytest.param(
            profile,
            margin_m,
            skin,
            id=case,
            marks=pytest.mark.xfail(strict=True, reason=FADING.format(measured)),
        )
        for case, profile, margin_m, skin, measured in [
            ("cliff-light", "cliff", 0.0, LIGHT, "+29 %"),
            ("cliff-margin-light", "cliff", 0.002, LIGHT, "+46 %"),
            ("bowl-light", "bowl", 0.0, LIGHT, "+27 %"),
            ("bowl-margin-light", "bowl", 0.002, LIGHT, "+44 %"),
            ("cliff-dark", "cliff", 0.0, DARK, "+5 % on dark skin"),
        ]
    ],
)
def test_redness_fading_out_from_the_rim_is_not_wound(
    profile: str, margin_m: float, skin: F64
) -> None:
    # Periwound redness (inflammation, a cellulitis) is strongest at the rim and fades
    # into the skin over a few millimetres: it is intact skin, whatever its colour, so it
    # may not move the edge (a pale margin, by contrast, lies inside the depression).
    alone = measure(scene(profile, margin_m=margin_m, skin=skin))
    reddened = measure(scene(profile, margin_m=margin_m, skin=skin, fade_m=0.004))
    assert reddened.area_cm2 == pytest.approx(alone.area_cm2, rel=0.02)


def test_redness_fading_out_from_the_rim_changes_only_the_skin_around_it() -> None:
    # The scene itself: the wound and its margin keep their colours, the redness is
    # strongest at the rim and gone at 4 mm.
    plain = scene("cliff", margin_m=0.002)
    faded = scene("cliff", margin_m=0.002, fade_m=0.004)
    assert plain.cloud is not None and faded.cloud is not None
    r = np.hypot(plain.cloud.points[:, 0], plain.cloud.points[:, 1])
    same = (r < RADIUS) | (r > RADIUS + 0.004)
    np.testing.assert_array_equal(plain.cloud.colors[same], faded.cloud.colors[same])
    redder = plain.cloud.colors[:, 1] - faded.cloud.colors[:, 1]  # green falls as red rises
    assert float(np.mean(redder[(r > RADIUS) & (r < RADIUS + 0.0005)])) > 0.13
    assert abs(float(np.mean(redder[(r > RADIUS + 0.0035) & (r < RADIUS + 0.004)]))) < 0.02


# --- the rim rule between a wound model and the geometry ----------------------------

CLASSES = ("background", "granulation", "slough", "necrosis", "epithelium")
RED, GREEN = MODEL_CHANNELS.index("red"), MODEL_CHANNELS.index("green")


class ColourModel:
    """A `WoundModel` that calls red cells granulation, its mask grown (or shrunk, when
    `grow` is negative) by `grow` of its pixels: a model whose edge is off the rim."""

    def __init__(self, grow: int) -> None:
        self.grow = grow

    @property
    def manifest(self) -> Any:
        size, channels = MODEL_INPUT_SIZE, len(MODEL_CHANNELS)
        return SimpleNamespace(
            model_id="colour-test",
            version="0.0.1",
            classes=CLASSES,
            input=SimpleNamespace(shape=(1, channels, size, size)),
            output=SimpleNamespace(shape=(1, len(CLASSES), size, size)),
            preprocessing={"channels": list(MODEL_CHANNELS)},
        )

    def segment(self, image: npt.NDArray[np.float32], valid: Any = None) -> Any:
        wound = (image[RED] - image[GREEN]) > 0.3
        if self.grow > 0:
            wound = ndimage.binary_dilation(wound, iterations=self.grow)
        elif self.grow < 0:
            wound = ndimage.binary_erosion(wound, iterations=-self.grow)
        p = ndimage.gaussian_filter(wound.astype(np.float64), 1.0)
        zero = np.zeros_like(p)
        return SimpleNamespace(
            labels=(p > 0.5).astype(np.int64),
            probabilities=np.stack([1.0 - p, p, zero, zero, zero]),
            confidence=0.9,
        )


def test_the_depression_wins_where_the_model_stops_inside_it() -> None:
    scan = scene("cliff")
    geometric = measure(scan)
    inset = measure(scan, model=ColourModel(grow=-4))  # ~1.3 mm inside the rim
    assert inset.boundary_source == "model"
    assert inset.area_cm2 == pytest.approx(geometric.area_cm2, rel=0.01)


def test_the_model_wins_beyond_the_depression() -> None:
    scan = scene("cliff")
    geometric = measure(scan)
    outset = measure(scan, model=ColourModel(grow=4))  # ~1.3 mm outside the rim
    assert outset.boundary_source == "model"
    assert outset.area_cm2 > 1.15 * geometric.area_cm2


def test_the_model_wins_everywhere_on_a_flat_wound() -> None:
    scan = scene("flat")
    geometric = measure(scan)
    inset = measure(scan, model=ColourModel(grow=-4))
    assert abs(area_error(geometric)) <= 1.5
    assert inset.boundary_source == "model"
    assert inset.area_cm2 < 0.85 * geometric.area_cm2


# --- the independent phantoms ---------------------------------------------------------

PHANTOM_SEEDS = range(18)  # every site x skin group pair three times


@pytest.fixture(scope="module")
def phantom_errors() -> list[tuple[str, float]]:
    """(skin group, signed area error %) of each phantom, 10 frames at 1 mm."""
    from tests.phantoms import phantom_spec, render

    out = []
    for seed in PHANTOM_SEEDS:
        scan, truth = render(phantom_spec(seed, noise_mm=1.0, frames=10))
        m = measure(scan)
        out.append((truth.skin_group, (m.area_cm2 - truth.area_cm2) / truth.area_cm2 * 100.0))
    return out


@pytest.mark.slow
@pytest.mark.xfail(
    strict=True,
    reason=(
        "measured on seeds 0-17 (2026-12-07): median |area error| 1.5 %, median signed "
        "+0.5 % (goals met); group medians I-II 1.8, III-IV 0.5, V-VI 2.4 (a 1.9-point "
        "gap); worst 24.0 %: a shallow phantom (<= 1.5 mm deep, 1 mm noise) on a heel "
        "with a pale margin whose colour does not end in a step (see docs/capture.md)"
    ),
)
def test_phantom_areas_have_no_bias_and_no_skin_tone_gap(
    phantom_errors: list[tuple[str, float]],
) -> None:
    signed = [e for _, e in phantom_errors]
    absolute = [abs(e) for e in signed]
    groups: dict[str, list[float]] = {}
    for group, error in phantom_errors:
        groups.setdefault(group, []).append(abs(error))
    medians = [statistics.median(v) for v in groups.values()]
    assert statistics.median(absolute) <= 2.0
    assert abs(statistics.median(signed)) <= 1.0
    assert max(absolute) <= 5.0
    assert max(medians) - min(medians) <= 1.0
