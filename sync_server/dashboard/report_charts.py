"""The reports page's charts: a clinic report's figures as vertical bar charts whose
geometry is computed here (the template only draws it), each with the numbers it
shows so the page can give the same data as a table.

Three charts: the wounds (seen, healed, on track, not on track), the appointments by
state, and, per currency, revenue against refunds and what was collected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from crdt import currency_exponent, format_money
from sync_server.reports.figures import ClinicReport

__all__ = ["Bar", "BarChart", "report_charts"]

_WIDTH, _HEIGHT = 560, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 24, 48


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: its label, its value (as shown), and where it is drawn."""

    label: str
    value: float
    shown: str
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True, slots=True)
class Tick:
    """A value on the vertical axis and its height in the drawing."""

    label: str
    at: float


@dataclass(frozen=True, slots=True)
class BarChart:
    """A bar chart ready to draw: an id for its title and description, the title, a
    sentence describing it (the text alternative), the unit, bars and axis ticks."""

    key: str
    title: str
    description: str
    unit: str
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]
    width: int = _WIDTH
    height: int = _HEIGHT
    left: int = _LEFT
    right: int = _WIDTH - _RIGHT
    top: int = _TOP
    bottom: int = _HEIGHT - _BOTTOM


def _step(top: float) -> float:
    """A round tick step giving at most about five ticks up to `top`."""
    raw = top / 5
    power: float = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return float(factor * power)
    return 10.0 * power  # not reached: the loop's last factor always fits


def _chart(
    key: str, title: str, unit: str, values: list[tuple[str, float, str]], what: str
) -> BarChart:
    top_value = max((v for _, v, _ in values), default=0.0)
    step = _step(top_value) if top_value > 0 else 1.0
    scale_top = max(step, math.ceil(top_value / step) * step)
    bottom, top = _HEIGHT - _BOTTOM, _TOP
    span = bottom - top
    slot = (_WIDTH - _RIGHT - _LEFT) / max(len(values), 1)
    width = min(slot * 0.6, 80.0)
    bars = []
    for i, (label, value, shown) in enumerate(values):
        height = span * value / scale_top
        x = _LEFT + slot * i + (slot - width) / 2
        bars.append(Bar(label, value, shown, x, bottom - height, width, height))
    count = round(scale_top / step)
    ticks = tuple(
        Tick(f"{step * i:g}", bottom - span * (step * i) / scale_top) for i in range(count + 1)
    )
    listed = "; ".join(f"{label}: {shown}" for label, _, shown in values) or "nothing"
    description = f"{what} {listed}. The same data is in the table below."
    return BarChart(key, title, description, unit, tuple(bars), ticks)


def report_charts(report: ClinicReport) -> tuple[BarChart, ...]:
    """The charts of `report`: wounds, appointments by state, and money per currency."""
    w, h = report.wounds, report.healing
    charts = [
        _chart(
            "wounds",
            "Wounds in the period",
            "wounds",
            [
                ("seen", w.seen, str(w.seen)),
                ("healed", w.healed, str(w.healed)),
                ("on track", h.on_track, str(h.on_track)),
                ("not on track", len(h.not_on_track), str(len(h.not_on_track))),
            ],
            f"A bar chart of the wounds seen in the period, those healed, and those on "
            f"and not on track at week {h.weeks}:",
        ),
        _chart(
            "appointments",
            "Appointments by outcome",
            "appointments",
            [
                (state.replace("_", " "), n, str(n))
                for state, n in sorted(report.appointments.by_state.items())
            ],
            "A bar chart of the appointments starting in the period, by state:",
        ),
    ]
    for m in report.money:
        unit = 10 ** currency_exponent(m.currency)  # minor units per major unit
        charts.append(
            _chart(
                f"money-{m.currency.lower()}",
                f"Revenue and refunds ({m.currency})",
                m.currency,
                [
                    (name, amount / unit, format_money(amount, m.currency))
                    for name, amount in (
                        ("revenue", m.revenue),
                        ("refunds", m.refunds),
                        ("collected", m.collected),
                    )
                ],
                f"A bar chart of the money in {m.currency} for the period:",
            )
        )
    return tuple(charts)
