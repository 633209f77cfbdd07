"""The wound page's arithmetic (sync_server.dashboard.healing), no server: the area
reduction at week 4 and the charts' geometry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sync_server.dashboard.healing import (
    AreaReduction,
    AssessmentItem,
    Sample,
    area_reduction,
    curve_chart,
    tissue_chart,
)
from sync_server.settings import Settings

T0 = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def at(day: float, area: float | None) -> Sample:
    return Sample(T0 + timedelta(days=day), area)


def reduce(*samples: Sample, weeks: int = 4, threshold: float = 40.0) -> AreaReduction:
    return area_reduction(samples, weeks=weeks, threshold_percent=threshold)


def test_the_area_at_day_28_is_interpolated_between_the_bracketing_assessments() -> None:
    found = reduce(at(0, 10.0), at(14, 9.0), at(21, 8.0), at(35, 4.0), at(60, 1.0))
    # between day 21 (8.0) and day 35 (4.0): halfway, 6.0
    assert found.method == "interpolated"
    assert found.area_cm2 == pytest.approx(6.0)
    assert found.baseline_cm2 == 10.0 and found.baseline_at == T0
    assert found.reduction_percent == pytest.approx(40.0)
    assert found.on_track is True


def test_an_assessment_on_day_28_is_read_as_is() -> None:
    found = reduce(at(0, 10.0), at(28, 7.5), at(40, 1.0))
    assert found.method == "exact"
    assert found.area_cm2 == 7.5
    assert found.reduction_percent == pytest.approx(25.0)
    assert found.on_track is False


def test_without_a_bracket_the_nearest_assessment_within_a_week_counts() -> None:
    found = reduce(at(0, 10.0), at(10, 9.0), at(23, 5.0))
    assert found.method == "nearest"
    assert found.area_cm2 == 5.0
    assert found.reduction_percent == pytest.approx(50.0)
    assert found.on_track is True
    assert reduce(at(0, 10.0), at(21, 9.5)).method == "nearest"  # exactly 7 days before


def test_too_far_from_day_28_it_is_not_yet_known() -> None:
    found = reduce(at(0, 10.0), at(7, 9.0), at(20.5, 8.0))
    assert found.method is None
    assert found.area_cm2 is None and found.reduction_percent is None
    assert found.on_track is None
    assert found.baseline_cm2 == 10.0  # the baseline is known already
    only_baseline = reduce(at(0, 10.0))
    assert only_baseline.on_track is None and only_baseline.baseline_cm2 == 10.0
    nothing = reduce()
    assert nothing.baseline_cm2 is None and nothing.on_track is None
    assert nothing.threshold_area_cm2 is None


def test_assessments_without_an_area_are_skipped_and_the_baseline_is_the_first_area() -> None:
    found = reduce(
        at(0, None),  # no area: not the baseline
        at(2, 8.0),  # baseline; day 28 after it is day 30
        at(20, None),
        at(30, None),
        at(26, 6.0),
        at(34, 4.0),
    )
    # between day 26 (6.0) and day 34 (4.0) at day 30: 5.0
    assert found.baseline_cm2 == 8.0 and found.baseline_at == T0 + timedelta(days=2)
    assert found.method == "interpolated"
    assert found.area_cm2 == pytest.approx(5.0)
    assert found.reduction_percent == pytest.approx(37.5)
    assert found.on_track is False
    assert reduce(at(0, None), at(30, None)).baseline_cm2 is None


def test_the_order_of_the_samples_does_not_matter() -> None:
    samples = [at(35, 4.0), at(0, 10.0), at(21, 8.0)]
    assert area_reduction(samples, weeks=4, threshold_percent=40) == reduce(
        *sorted(samples, key=lambda s: s.captured_at)
    )


def test_a_growing_wound_has_a_negative_reduction_and_is_not_on_track() -> None:
    found = reduce(at(0, 4.0), at(28, 5.0))
    assert found.reduction_percent == pytest.approx(-25.0)
    assert found.on_track is False


def test_exactly_at_the_threshold_is_on_track_and_just_under_is_not() -> None:
    for baseline, later in ((10.0, 6.0), (3.3, 1.98), (7.1, 4.26)):
        exact = reduce(at(0, baseline), at(28, later))
        assert exact.reduction_percent == pytest.approx(40.0)
        assert exact.on_track is True, (baseline, later)
    under = reduce(at(0, 10.0), at(28, 6.001))
    assert under.reduction_percent == pytest.approx(39.99)
    assert under.on_track is False
    assert reduce(at(0, 10.0), at(28, 6.0)).threshold_area_cm2 == pytest.approx(6.0)


def test_a_zero_baseline_gives_no_reduction() -> None:
    found = reduce(at(0, 0.0), at(28, 1.0))
    assert found.area_cm2 == 1.0
    assert found.reduction_percent is None and found.on_track is None


def test_the_week_and_threshold_come_from_the_settings() -> None:
    defaults = Settings()
    assert defaults.dashboard_healing_weeks == 4
    assert defaults.dashboard_healing_threshold_percent == 40.0
    settings = Settings(dashboard_healing_weeks=2, dashboard_healing_threshold_percent=20)
    samples = [at(0, 10.0), at(14, 8.5), at(28, 6.0)]
    two_weeks = area_reduction(
        samples,
        weeks=settings.dashboard_healing_weeks,
        threshold_percent=settings.dashboard_healing_threshold_percent,
    )
    assert two_weeks.target_days == 14
    assert two_weeks.method == "exact" and two_weeks.area_cm2 == 8.5
    assert two_weeks.reduction_percent == pytest.approx(15.0)
    assert two_weeks.on_track is False  # 15 % < 20 %
    assert two_weeks.threshold_area_cm2 == pytest.approx(8.0)
    lenient = area_reduction(samples, weeks=2, threshold_percent=10)
    assert lenient.on_track is True
    four_weeks = area_reduction(samples, weeks=4, threshold_percent=40)
    assert four_weeks.on_track is True and four_weeks.reduction_percent == pytest.approx(40.0)


def _item(day: float, area: float | None, volume: float | None, **tissue: float) -> AssessmentItem:
    return AssessmentItem(
        id=f"a{day}",
        captured_at=T0 + timedelta(days=day),
        day=day,
        clinician=None,
        area_cm2=area,
        perimeter_cm=None,
        length_cm=None,
        width_cm=None,
        max_depth_mm=None,
        mean_depth_mm=None,
        volume_cm3=volume,
        area_method=None,
        model_id=None,
        model_version=None,
        confidence=None,
        tissue=tuple(sorted(tissue.items(), key=lambda pair: -pair[1])),
        quality_flags=(),
        has_scan=False,
    )


def test_the_healing_curve_places_points_marks_week_4_and_the_threshold() -> None:
    items = [_item(0, 10.0, 2.0), _item(14, 8.0, None), _item(35, 4.0, 1.0)]
    reduction = area_reduction(
        [Sample(i.captured_at, i.area_cm2) for i in items], weeks=4, threshold_percent=40
    )
    chart = curve_chart(items, reduction)
    assert chart is not None
    assert len(chart.area.points) == 3 and len(chart.volume.points) == 2
    assert chart.area.path.startswith("M") and chart.area.path.count("L") == 2
    xs = [x for x, _ in chart.area.points]
    ys = [y for _, y in chart.area.points]
    assert xs == sorted(xs) and xs[0] == chart.left
    assert ys == sorted(ys)  # a shrinking area goes down the chart (SVG y grows down)
    assert all(chart.top <= y <= chart.bottom for y in ys)
    assert chart.target_x is not None and xs[1] < chart.target_x < xs[2]
    # the threshold (6 cm²) lies between the points of 8 and 4 cm²
    assert chart.threshold_y is not None and ys[1] < chart.threshold_y < ys[2]
    assert chart.x_ticks[0].label == "0" and float(chart.x_ticks[-1].label) >= 35
    assert curve_chart([_item(0, None, None)], reduction) is None


def test_the_tissue_chart_stacks_each_bar_to_full_height_in_a_fixed_class_order() -> None:
    items = [
        _item(0, 5, None, slough=50, granulation=30, necrosis=20),
        _item(7, 5, None),  # no model output: no bar
        _item(14, 4, None, granulation=70, epithelium=20, biofilm=10),
    ]
    chart = tissue_chart(items)
    assert chart is not None
    assert chart.classes == ("granulation", "slough", "necrosis", "epithelium", "biofilm")
    assert len(chart.bars) == 2
    for bar in chart.bars:
        assert sum(s.height for s in bar.segments) == pytest.approx(chart.bottom - chart.top)
        assert [s.index for s in bar.segments] == sorted(s.index for s in bar.segments)
        assert bar.segments[-1].y == pytest.approx(chart.top)
    first = chart.bars[0]
    assert [(s.tissue, s.percent) for s in first.segments] == [
        ("granulation", 30),
        ("slough", 50),
        ("necrosis", 20),
    ]
    assert first.segments[1].label == "50%"
    assert tissue_chart([_item(0, 1, None)]) is None
