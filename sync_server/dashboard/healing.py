"""What the dashboard's wound page shows, read from the assessments projection: the
timeline of assessments, the percentage area reduction at `dashboard_healing_weeks`
(the wound flagged when it is not on track), and the geometry of its two charts (the
healing curve and the tissue composition over time), drawn by the template as SVG.

The area reduction (`area_reduction`) is a pure function: the baseline is the first
assessment with an area; the area at the target day (``7 * weeks`` days after the
baseline) is interpolated linearly between the assessments bracketing it, or, with no
assessment after it yet, read from the nearest one within `NEAR_DAYS` days; otherwise
it is not yet known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from sync_server.dashboard.scans import SCAN_KIND
from sync_server.settings import Settings
from sync_server.sync.exports import TISSUE_CLASSES
from sync_server.sync.healing import NEAR_DAYS, AreaReduction, Sample, area_reduction
from sync_server.sync.records import wound_assessments
from sync_server.sync.tables import AssessmentRow, WoundRow

__all__ = [
    "NEAR_DAYS",
    "AreaReduction",
    "AssessmentItem",
    "CurveChart",
    "Sample",
    "TissueChart",
    "WoundView",
    "area_reduction",
    "curve_chart",
    "tissue_chart",
    "wound_view",
]

_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class AssessmentItem:
    """One assessment as the timeline shows it."""

    id: str
    captured_at: datetime
    day: float
    """Days since the wound's first assessment."""
    clinician: str | None
    area_cm2: float | None
    perimeter_cm: float | None
    length_cm: float | None
    width_cm: float | None
    max_depth_mm: float | None
    mean_depth_mm: float | None
    volume_cm3: float | None
    area_method: str | None
    model_id: str | None
    model_version: str | None
    confidence: float | None
    tissue: tuple[tuple[str, float], ...]
    """The model's tissue composition (class, percent), largest first."""
    quality_flags: tuple[str, ...]
    has_scan: bool
    """The assessment has a point cloud (``scan-pointcloud`` blob) to view in 3D."""


@dataclass(frozen=True, slots=True)
class Tick:
    """An axis tick: where (in the chart's pixels) and its label."""

    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a chart: its SVG path, its points (x, y in pixels) and a name."""

    name: str
    path: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class CurveChart:
    """The healing curve's geometry (SVG user units): area and volume against days
    since the first assessment, with the target day and the threshold area marked."""

    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    area: Series
    volume: Series
    x_ticks: tuple[Tick, ...]
    area_ticks: tuple[Tick, ...]
    volume_ticks: tuple[Tick, ...]
    target_x: float | None
    """The target day's x (None when it lies beyond the drawn days)."""
    threshold_y: float | None
    """The threshold area's y (None without a baseline)."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One tissue class's part of a bar: its box, class index (colour and pattern)
    and a label drawn inside when it fits."""

    tissue: str
    index: int
    percent: float
    x: float
    y: float
    width: float
    height: float
    label: str


@dataclass(frozen=True, slots=True)
class Bar:
    """One assessment's stacked bar."""

    label: str
    x: float
    segments: tuple[Segment, ...]


@dataclass(frozen=True, slots=True)
class TissueChart:
    """The tissue composition chart's geometry: one stacked bar per assessment with
    model output, classes in a fixed order (most common first)."""

    width: int
    height: int
    left: float
    top: float
    bottom: float
    classes: tuple[str, ...]
    bars: tuple[Bar, ...]
    y_ticks: tuple[Tick, ...]


@dataclass(frozen=True, slots=True)
class WoundView:
    """Everything the wound page shows."""

    wound: WoundRow
    assessments: list[AssessmentItem]
    reduction: AreaReduction
    curve: CurveChart | None
    tissue: TissueChart | None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _moment(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _item(row: AssessmentRow, first: datetime) -> AssessmentItem:
    try:
        record = json.loads(row.record)
    except ValueError:
        record = {}
    record = record if isinstance(record, dict) else {}
    measurements = record.get("measurements") or {}
    model = record.get("model_output") or {}
    measurements = measurements if isinstance(measurements, dict) else {}
    model = model if isinstance(model, dict) else {}
    composition = model.get("tissue_composition") or {}
    tissue = sorted(
        (
            (str(name), float(value))
            for name, value in (composition.items() if isinstance(composition, dict) else ())
            if _number(value) is not None
        ),
        key=lambda pair: (-pair[1], pair[0]),
    )
    blobs = record.get("blobs") or []
    flags = record.get("quality_flags") or []
    captured = _moment(row.captured_at)
    return AssessmentItem(
        id=row.id,
        captured_at=captured,
        day=(captured - first).total_seconds() / _DAY,
        clinician=row.clinician,
        area_cm2=row.area_cm2,
        perimeter_cm=row.perimeter_cm,
        length_cm=row.length_cm,
        width_cm=row.width_cm,
        max_depth_mm=row.max_depth_mm,
        mean_depth_mm=row.mean_depth_mm,
        volume_cm3=row.volume_cm3,
        area_method=measurements.get("area_method"),
        model_id=model.get("model_id") or row.model_id,
        model_version=model.get("model_version"),
        confidence=_number(model.get("confidence")),
        tissue=tuple(tissue),
        quality_flags=tuple(str(f) for f in flags if isinstance(f, str)),
        has_scan=any(isinstance(b, dict) and b.get("kind") == SCAN_KIND for b in blobs),
    )


def wound_view(*, session: Session, wound: WoundRow, settings: Settings) -> WoundView:
    """The wound page's content for `wound` (one the caller may see): its assessments
    (not deleted, oldest first, read in one query), the area reduction at
    `Settings.dashboard_healing_weeks` and the charts."""
    rows = list(session.scalars(wound_assessments(wound=wound, include_deleted=False)))
    first = _moment(rows[0].captured_at) if rows else datetime.min
    items = [_item(row, first) for row in rows]
    reduction = area_reduction(
        [Sample(item.captured_at, item.area_cm2) for item in items],
        weeks=settings.dashboard_healing_weeks,
        threshold_percent=settings.dashboard_healing_threshold_percent,
    )
    return WoundView(
        wound=wound,
        assessments=items,
        reduction=reduction,
        curve=curve_chart(items, reduction),
        tissue=tissue_chart(items),
    )


# ------------------------------------------------------------------ chart geometry


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    if raw <= 0:
        return 1.0
    magnitude = 10.0 ** _floor_log10(raw)
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _floor_log10(value: float) -> int:
    exponent = 0
    while value >= 10:
        value /= 10
        exponent += 1
    while value < 1:
        value *= 10
        exponent -= 1
    return exponent


def _ticks(top: float, count: int) -> tuple[float, list[float]]:
    """A rounded axis maximum ≥ `top` and evenly spaced tick values from 0."""
    step = _nice_step(top if top > 0 else 1.0, count)
    values = [0.0]
    while values[-1] < top - 1e-12:
        values.append(round(values[-1] + step, 10))
    if len(values) == 1:
        values.append(step)
    return values[-1], values


def _label(value: float) -> str:
    return f"{value:g}"


def _path(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points))


def curve_chart(
    items: Sequence[AssessmentItem], reduction: AreaReduction, *, width: int = 720
) -> CurveChart | None:
    """The healing curve of `items` (None when none has an area or a volume)."""
    areas = [(i.day, i.area_cm2) for i in items if i.area_cm2 is not None]
    volumes = [(i.day, i.volume_cm3) for i in items if i.volume_cm3 is not None]
    if not areas and not volumes:
        return None
    height = 320
    left, right, top, bottom = 56.0, width - 60.0, 28.0, height - 44.0
    baseline_day = 0.0
    if reduction.baseline_at is not None and items:
        baseline_day = (reduction.baseline_at - items[0].captured_at).total_seconds() / _DAY
    target_day = baseline_day + reduction.target_days
    last_day = max(d for d, _ in areas + volumes)
    x_max, x_values = _ticks(max(last_day, target_day, 1.0), 8)
    a_max, a_values = _ticks(max((a for _, a in areas), default=1.0), 5)
    v_max, v_values = _ticks(max((v for _, v in volumes), default=1.0), 5)

    def x(day: float) -> float:
        return left + (right - left) * day / x_max

    def y(value: float, top_value: float) -> float:
        return bottom - (bottom - top) * value / top_value

    area_points = tuple((x(d), y(a, a_max)) for d, a in areas)
    volume_points = tuple((x(d), y(v, v_max)) for d, v in volumes)
    threshold = reduction.threshold_area_cm2
    return CurveChart(
        width=width,
        height=height,
        left=left,
        right=right,
        top=top,
        bottom=bottom,
        area=Series("Area (cm²)", _path(area_points), area_points),
        volume=Series("Volume (cm³)", _path(volume_points), volume_points),
        x_ticks=tuple(Tick(x(v), _label(v)) for v in x_values),
        area_ticks=tuple(Tick(y(v, a_max), _label(v)) for v in a_values),
        volume_ticks=tuple(Tick(y(v, v_max), _label(v)) for v in v_values) if volumes else (),
        target_x=x(target_day) if target_day <= x_max else None,
        threshold_y=y(threshold, a_max) if threshold is not None and areas else None,
    )


_TISSUE_ORDER = TISSUE_CLASSES  # the wound model's classes, in the exports' order


def tissue_chart(items: Sequence[AssessmentItem], *, width: int = 720) -> TissueChart | None:
    """The tissue composition over time of `items` with model output (None when none
    has any); each bar is scaled to 100 % of what the model named."""
    with_tissue = [i for i in items if i.tissue]
    if not with_tissue:
        return None
    totals: dict[str, float] = {}
    for item in with_tissue:
        for name, percent in item.tissue:
            totals[name] = totals.get(name, 0.0) + percent
    known = [name for name in _TISSUE_ORDER if name in totals]
    others = sorted((n for n in totals if n not in _TISSUE_ORDER), key=lambda n: (-totals[n], n))
    classes = tuple(known + others)
    index = {name: i for i, name in enumerate(classes)}
    height = 300
    left, right, top, bottom = 44.0, float(width - 8), 12.0, float(height - 48)
    slot = (right - left) / len(with_tissue)
    bar_width = max(min(slot * 0.7, 48.0), 2.0)
    bars = []
    for n, item in enumerate(with_tissue):
        total = sum(p for _, p in item.tissue) or 1.0
        x = left + slot * n + (slot - bar_width) / 2
        y = bottom
        segments = []
        for name, percent in sorted(item.tissue, key=lambda pair: index[pair[0]]):
            h = (bottom - top) * percent / total
            y -= h
            label = f"{percent:.0f}%" if h >= 14 and bar_width >= 26 else ""
            segments.append(Segment(name, index[name], percent, x, y, bar_width, h, label))
        bars.append(Bar(f"day {item.day:.0f}", x, tuple(segments)))
    ticks = tuple(Tick(bottom - (bottom - top) * v / 100, f"{v}%") for v in (0, 25, 50, 75, 100))
    return TissueChart(width, height, left, top, bottom, classes, tuple(bars), ticks)
