"""What the measurement pipeline may be told: its options and the flags it may raise.

Plain Python (no NumPy), so the command line can list the choices without loading the
pipeline. Every threshold, radius, count and margin a stage uses is a field of
`MeasureOptions`, grouped by stage; the defaults suit an iPad/iPhone LiDAR at 20-40 cm
and are what the accuracy figures in ``docs/capture.md`` were measured with. What stays
in the stages' code are the constants of their estimators (trimming quantiles, the MAD
factor, iteration counts) and numerical guards.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from lidar_capture._errors import CaptureError

__all__ = ["FUSION_METHODS", "QUALITY_FLAGS", "MeasureOptions"]

#: Flags a measurement may carry: it was measured, but read it with this in mind.
QUALITY_FLAGS = (
    "single_frame",  # no fusion: depth and volume carry one frame's noise
    "distance_outside_recommended",  # outside 18-45 cm: fewer or noisier points
    "motion_high",  # the device moved fast between frames
    "noise_high",  # the skin around the wound is noisier than 1.5 mm
    "boundary_from_depth",  # no usable colour: the boundary follows the floor's depth
    "boundary_from_outline",  # a user-drawn outline gave the boundary
    "edge_undecided",  # a faint band at the rim, pale margin or reddened skin: left out
    "wound_cut_off",  # part of the boundary runs along missing data
    "sparse_wound",  # fewer than 150 points on the wound bed
    "model_not_used",  # no wound model given (or none installed): colour/depth boundary
    "model_found_no_wound",  # the model saw no wound where the scan's geometry did
    "model_incompatible",  # the model does not read the canonical input: not used
)

#: How `MeasureOptions.fusion` may combine frames.
FUSION_METHODS = ("points", "tsdf")


def _within(default: Any, low: float, high: float) -> Any:
    """A field whose value must lie in [low, high] (checked by `MeasureOptions`)."""
    return field(default=default, metadata={"range": (low, high)})


@dataclass(frozen=True)
class MeasureOptions:
    """Tunables of the pipeline; the defaults suit an iPad/iPhone LiDAR at 20-40 cm.

    Lengths are metres unless the name says otherwise; "sigmas" are multiples of the
    scan's own noise. Raises `CaptureError` for a value out of its range.
    """

    # --- the first knobs, in their original order (positional arguments keep working) --
    min_confidence: int = 1
    """Drop depth pixels below this confidence (0 low, 1 medium, 2 high)."""
    fusion: str = "points"
    """``tsdf`` (Open3D TSDF volume) or ``points`` (registered points pooled)."""
    voxel_m: float = _within(0.001, 0.0002, 0.01)
    """Voxel of the TSDF volume."""
    grid_m: float = _within(0.0005, 0.0002, 0.005)
    """Cell of the measurement grid on the skin."""
    search_radius_m: float = _within(0.07, 0.01, 0.5)
    """How far from the aim point the wound is looked for (and an outline may reach)."""
    min_distance_m: float = 0.12
    """Refuse (``too_close``) a wound nearer than this to the device."""
    max_distance_m: float = 0.60
    """Refuse (``too_far``) a wound further than this from the device."""
    recommended_distance_m: tuple[float, float] = (0.18, 0.45)
    """Outside this range the result carries ``distance_outside_recommended``."""
    max_speed_m_s: float = _within(0.30, 0.0, 100.0)
    """Refuse (``too_much_motion``) a scan whose device moved faster between frames."""
    max_angular_speed_deg_s: float = _within(90.0, 0.0, 10_000.0)
    """Refuse (``too_much_motion``) a scan whose device turned faster between frames."""
    max_noise_mm: float = _within(3.0, 0.01, 1000.0)
    """Refuse (``noise_too_high``) when the skin fit's residual exceeds this."""
    min_points: int = 500
    """Fewest valid points in the first frame and around the wound."""
    colour_threshold: float = _within(6.0, 0.5, 100.0)
    """Mahalanobis distance from the skin colour that is certainly not skin."""
    depth_threshold_mm: float = _within(2.0, 0.1, 50.0)
    """Depth below the skin that is certainly wound (raised to 4 sigma of the noise)."""
    max_skin_degree: int = _within(4, 1, 4)
    """Highest polynomial degree of the skin fit; 1 fits a plane (for comparison only)."""

    # --- points and quality gates -----------------------------------------------------
    motion_flag_share: float = _within(1.0 / 3.0, 0.0, 1.0)
    """``motion_high`` above this share of either motion limit."""
    frame_interval_s: float = _within(1.0 / 30.0, 0.001, 10.0)
    """Time between frames taken where the timestamps do not say (equal or missing)."""
    noise_flag_share: float = _within(0.5, 0.0, 1.0)
    """``noise_high`` above this share of `max_noise_mm`."""
    min_wound_points: int = _within(30, 1, 1_000_000)
    """Refuse (``too_few_points``) a wound bed with fewer points than this."""
    sparse_wound_points: int = _within(150, 1, 1_000_000)
    """``sparse_wound`` below this many points on the wound bed."""

    # --- detect: where the wound is ---------------------------------------------------
    coarse_skin_degrees: tuple[int, int] = (2, 4)
    """Lowest and highest polynomial degree of the coarse skin fit around the aim point."""
    body_band_m: float = _within(0.025, 0.001, 0.5)
    """Points further than this above or below the coarse skin fit are not on the body."""
    detect_depth_sigmas: float = _within(5.0, 0.5, 50.0)
    """While detecting, depth counts as wound only below this many noise sigmas too."""
    skin_band_sigmas: float = _within(3.0, 0.5, 50.0)
    """Within this many noise sigmas of the skin fit a point or cell is skin, whose
    colour models the skin's."""
    min_skin_samples: int = _within(50, 5, 1_000_000)
    """Fewest skin points or cells to model the skin's colour from (else depth alone)."""
    detect_cell_m: float = _within(0.001, 0.0002, 0.01)
    """Cell of the coarse grid the wound candidates are gathered on."""
    detect_closing_cells: int = _within(2, 1, 50)
    """Candidate cells this close together are joined into one region."""
    min_candidate_area_mm2: float = _within(15.0, 0.0, 10_000.0)
    """Candidate regions smaller than this are not the wound."""
    detect_aim_falloff_m: float = _within(0.03, 0.001, 1.0)
    """A candidate's score (its area) halves at this distance from the aim point."""
    depth_only_grow: float = _within(0.6, 0.0, 10.0)
    """Without colour, the wound found by depth (the deep middle of a bowl, not its rim)
    is grown by this share of its radius."""

    # --- fuse -------------------------------------------------------------------------
    tsdf_truncation_sigmas: float = _within(4.0, 0.5, 50.0)
    """The TSDF's truncation distance, in noise sigmas ..."""
    tsdf_truncation_m: tuple[float, float] = (0.003, 0.010)
    """... clipped to this range."""
    tsdf_view_share: float = _within(0.2, 0.0, 1.0)
    """A TSDF surface must be seen by this share of the frames (at least once, and twice
    when there are several)."""
    roi_margin_m: float = _within(0.01, 0.0, 0.5)
    """Frames are cropped to a sphere this much larger than the measurement grid."""
    outlier_neighbours: int = _within(16, 2, 1000)
    """Neighbours Open3D's statistical outlier removal compares each point with."""
    outlier_std_ratio: float = _within(2.5, 0.1, 100.0)
    """A point further than this many standard deviations from its neighbours is dropped."""
    outlier_min_points: int = _within(50, 0, 1_000_000)
    """Clouds smaller than this are kept whole."""

    # --- surface and boundary ---------------------------------------------------------
    ring_width_m: float = _within(0.012, 0.001, 0.2)
    """Narrowest ring of skin around the wound the skin is fitted on ..."""
    ring_width_per_radius: float = _within(0.6, 0.0, 10.0)
    """... widened to this share of the wound's radius."""
    ring_gap_m: float = _within(0.003, 0.0, 0.05)
    """The ring starts this far outside the wound."""
    grid_margin_m: float = _within(0.004, 0.0, 0.05)
    """The grid's half side is the wound's radius, this margin and the ring."""
    surface_band_m: float = _within(0.04, 0.001, 0.5)
    """Points further than this above or below the wound's tangent plane are left out."""
    boundary_rounds: int = _within(3, 1, 20)
    """Rounds of fitting the skin and drawing the boundary, each recentred on the last."""
    recentre_tolerance_m: float = _within(0.0005, 0.0, 0.05)
    """The rounds stop once the wound's centre moves less than this."""
    splat_spacing_share: float = _within(0.6, 0.01, 10.0)
    """Points are splatted onto the grid with a Gaussian of this share of their spacing
    (at least one cell)."""
    coverage_share: float = _within(0.05, 0.0, 1.0)
    """A cell is covered where its splat weight reaches this share of the median."""
    boundary_depth_sigmas: float = _within(4.0, 0.5, 50.0)
    """Cells deeper than this many noise sigmas (and `depth_threshold_mm`) are wound."""
    depth_edge_m: float = _within(0.0005, 0.0, 0.05)
    """Without colour the edge is where the floor is this far below the skin (or
    `boundary_depth_sigmas`, when deeper)."""
    depression_sigmas: float = _within(3.0, 0.5, 50.0)
    """Cells deeper than this many noise sigmas below the skin are a depression (the
    one-sided 3-sigma tail: 0.13 % of skin cells by chance). A wound with a wound area
    of such cells is a depression: its edge comes from depth and colour together, and
    clearly-not-skin colour (a pale margin) around it is wound."""
    faint_margin_reach_m: float = _within(0.006, 0.0, 0.05)
    """Beside a depression, faint colour off the skin's joined to the wound (a pale
    epithelial margin on a rim too shallow to see in depth) is looked for out to this
    far; the colour must be back to the skin's by then (reddened skin running on is
    not a margin). 0 turns the faint margin off."""
    faint_margin_width_m: float = _within(0.0015, 0.0, 0.05)
    """A faint margin must reach this far past the wound (the blur of the rim does not)."""
    faint_margin_floor_sigmas: float = _within(2.0, 0.0, 50.0)
    """A faint margin's floor, taken as a whole, must lie below the skin just beyond it
    by this many standard errors (on the development scenes margins lie 4-5.5 below,
    reddened skin around a shallow wound at most 0.8)."""
    edge_plateau_sigmas: float = _within(3.0, 0.5, 50.0)
    """At a depression's rim the edge is half-way between the skin and the depth (and the
    colour) just inside it, read this many blur sigmas inside the rim (a blurred step
    reaches 99.9 % of its height 3 sigmas in)."""
    clear_contrast_factor: float = _within(2.0, 1.0, 100.0)
    """Cells this many times `colour_threshold` from the skin's colour are clearly not
    skin; the wound's tissue colours are clustered from them."""
    tissue_inset_cells: int = _within(3, 1, 100)
    """Tissue colours are sampled this many cells inside the clearly-not-skin region."""
    tissue_clusters: int = _within(4, 1, 32)
    """Tissue colours the wound is split into."""
    edge_level: float = _within(0.5, 0.01, 0.99)
    """The edge is drawn where a cell's share of wound (tissue colour, model probability,
    smoothed depth mask) crosses this."""
    colour_edge_reach: float = _within(3.0, 0.0, 100.0)
    """Around the chosen wound region the colour decides the edge out to this many colour
    pixels (at least two cells)."""
    boundary_aim_falloff_m: float = _within(0.01, 0.001, 1.0)
    """A wound region's score (its area) halves at this distance from the grid's centre."""
    min_wound_area_m2: float = _within(10e-6, 0.0, 0.01)
    """A colour or model region smaller than this is not the wound (10 mm²)."""
    model_edge_reach: float = _within(2.0, 0.0, 100.0)
    """The model's edge is looked for this many model pixels around its wound mask."""
    outline_max_off_skin_m: float = _within(0.01, 0.0001, 0.5)
    """A drawn outline (in metres) may lie at most this far off the scanned skin."""

    # --- figures ----------------------------------------------------------------------
    max_depth_smoothing_cells: float = _within(2.0, 0.0, 100.0)
    """Max depth is the deepest point of the floor smoothed over this many grid cells."""
    cut_off_share: float = _within(0.05, 0.0, 1.0)
    """``wound_cut_off`` when more of the wound than this share is missing ..."""
    cut_off_edge_share: float = _within(0.1, 0.0, 1.0)
    """... or more of its edge than this share."""
    perimeter_smoothing_m: float = _within(0.001, 0.0, 0.05)
    """The outline is smoothed along its length over this before its perimeter is taken."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if "range" in f.metadata:
                low, high = f.metadata["range"]
                value = getattr(self, f.name)
                if not low <= value <= high:
                    raise CaptureError(f"{f.name} must be between {low} and {high}, not {value}")
        if self.min_points < 10:
            raise CaptureError("min_points must be at least 10")
        near, far = self.recommended_distance_m
        if not 0 < self.min_distance_m <= near <= far <= self.max_distance_m:
            raise CaptureError(
                "distances must satisfy 0 < min_distance_m <= recommended range <= max_distance_m"
            )
        if self.fusion not in FUSION_METHODS:
            raise CaptureError(f"fusion must be 'points' or 'tsdf', not {self.fusion!r}")
        if not 0 <= self.min_confidence <= 2:
            raise CaptureError("min_confidence must be 0, 1 or 2")
        low_degree, high_degree = self.coarse_skin_degrees
        if not 1 <= low_degree <= high_degree <= 4:
            raise CaptureError("coarse_skin_degrees must be (low, high) with 1 <= low <= high <= 4")
        low_m, high_m = self.tsdf_truncation_m
        if not 0 < low_m <= high_m <= 0.1:
            raise CaptureError("tsdf_truncation_m must be (low, high) with 0 < low <= high <= 0.1")
        if self.sparse_wound_points < self.min_wound_points:
            raise CaptureError("sparse_wound_points must be at least min_wound_points")
