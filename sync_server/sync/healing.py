"""The healing rule: a wound's percentage area reduction some weeks after its first
measured assessment, and whether it is on track (the evidence uses 40 % at 4 weeks to
predict non-healing). One rule for every reader: the staff dashboard's wound page and
the notification sweep that tells a clinic's staff about a wound not on track.

The area reduction (`area_reduction`) is a pure function: the baseline is the first
assessment with an area; the area at the target day (``7 * weeks`` days after the
baseline) is interpolated linearly between the assessments bracketing it, or, with no
assessment after it yet, read from the nearest one within `NEAR_DAYS` days; otherwise
it is not yet known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["NEAR_DAYS", "AreaReduction", "Sample", "area_reduction"]

_DAY = 86400.0

NEAR_DAYS = 7.0
"""With no assessment after the target day, the nearest one this close still counts."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One assessment's point on the healing curve: when, and its area (None: not
    measured)."""

    captured_at: datetime
    area_cm2: float | None


@dataclass(frozen=True, slots=True)
class AreaReduction:
    """The percentage area reduction at the target day, and whether the wound is on
    track. `reduction_percent` is negative when the wound grew; None (with
    `on_track` None) when it is not yet known."""

    weeks: int
    threshold_percent: float
    baseline_cm2: float | None
    baseline_at: datetime | None
    area_cm2: float | None
    """The area at the target day (interpolated, or the nearest assessment's)."""
    method: Literal["interpolated", "exact", "nearest"] | None
    reduction_percent: float | None
    on_track: bool | None

    @property
    def target_days(self) -> float:
        """The target day, in days after the baseline."""
        return self.weeks * 7.0

    @property
    def threshold_area_cm2(self) -> float | None:
        """The area at which the reduction would be exactly the threshold."""
        if self.baseline_cm2 is None:
            return None
        return self.baseline_cm2 * (1.0 - self.threshold_percent / 100.0)


def area_reduction(
    samples: Sequence[Sample], *, weeks: int, threshold_percent: float
) -> AreaReduction:
    """The percentage area reduction `weeks` weeks after the first sample with an area,
    flagged (``on_track`` False) when it is less than `threshold_percent`.

    The area at the target day is the linear interpolation between the samples
    bracketing it (a sample exactly on it is read as is); with no sample after it, the
    nearest sample within `NEAR_DAYS` days before; otherwise not yet known. Samples
    without an area are skipped; the order of `samples` does not matter.
    """
    measured = sorted(
        ((s.captured_at, s.area_cm2) for s in samples if s.area_cm2 is not None),
        key=lambda pair: pair[0],
    )

    def unknown(baseline: float | None = None, at: datetime | None = None) -> AreaReduction:
        return AreaReduction(weeks, threshold_percent, baseline, at, None, None, None, None)

    if not measured:
        return unknown()
    baseline_at, baseline = measured[0]
    target = weeks * 7.0
    days = [((at - baseline_at).total_seconds() / _DAY, area) for at, area in measured]
    method: Literal["interpolated", "exact", "nearest"]
    before = [(d, a) for d, a in days if d < target]
    on = [(d, a) for d, a in days if d == target]
    after = [(d, a) for d, a in days if d > target]
    if on:
        area, method = on[0][1], "exact"
    elif before and after:
        (d0, a0), (d1, a1) = before[-1], after[0]
        area = a0 + (a1 - a0) * (target - d0) / (d1 - d0)
        method = "interpolated"
    elif before and target - before[-1][0] <= NEAR_DAYS and before[-1][0] > 0:
        area, method = before[-1][1], "nearest"
    else:
        return unknown(baseline, baseline_at)
    if baseline <= 0:
        return AreaReduction(
            weeks, threshold_percent, baseline, baseline_at, area, method, None, None
        )
    reduction = 100.0 * (baseline - area) / baseline
    # A reduction exactly at the threshold is on track (the flag is "less than").
    on_track = reduction >= threshold_percent - 1e-9
    return AreaReduction(
        weeks, threshold_percent, baseline, baseline_at, area, method, reduction, on_track
    )
