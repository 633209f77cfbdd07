"""A clinic's report as a PDF (fpdf2): a title, bar charts drawn with the PDF's own
rectangles (no image library), and the figures' tables.

The built-in Helvetica font covers Latin-1: other characters (in a clinic's name,
say) print as ``?``.
"""

from __future__ import annotations

from collections.abc import Sequence

from fpdf import FPDF

from crdt import format_money
from sync_server.reports.figures import ClinicReport

__all__ = ["render_pdf"]

_BAR = (46, 110, 158)


def _text(value: object) -> str:
    return str(value).encode("latin-1", "replace").decode("latin-1")


def _number(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(3)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(0, 7, _text(text), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)


def _table(pdf: FPDF, rows: Sequence[tuple[str, str]]) -> None:
    pdf.set_font("Helvetica", "", 10)
    for label, value in rows:
        pdf.cell(95, 6, _text(label), border="B")
        pdf.cell(60, 6, _text(value), border="B", align="R", new_x="LMARGIN", new_y="NEXT")


def _bar_chart(pdf: FPDF, title: str, bars: Sequence[tuple[str, float]]) -> None:
    """A horizontal bar chart: one labelled bar per item, scaled to the largest."""
    _heading(pdf, title)
    if not bars:
        pdf.cell(0, 6, "nothing to show", new_x="LMARGIN", new_y="NEXT")
        return
    top = max(value for _, value in bars) or 1.0
    x0, width, height = pdf.l_margin + 45, 110.0, 5.0
    for label, value in bars:
        y = pdf.get_y()
        pdf.set_xy(pdf.l_margin, y)
        pdf.cell(43, height, _text(label), align="R")
        pdf.set_fill_color(*_BAR)
        pdf.rect(x0, y + 0.5, max(width * value / top, 0.3), height - 1, style="F")
        pdf.set_xy(x0 + width * value / top + 2, y)
        pdf.cell(20, height, _number(value, 0))
        pdf.set_xy(pdf.l_margin, y + height + 1)
    pdf.set_draw_color(0, 0, 0)


def render_pdf(report: ClinicReport) -> bytes:
    """The report as PDF bytes."""
    pdf = FPDF(format="A4")
    pdf.set_title(_text(f"Clinic report: {report.clinic_name}"))
    pdf.set_author("Coherency")
    pdf.set_creation_date(report.generated_at)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 10, _text(f"Clinic report: {report.clinic_name}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    period = f"{report.start:%Y-%m-%d %H:%M} to {report.end:%Y-%m-%d %H:%M} UTC"
    pdf.cell(0, 6, _text(f"Period: {period}"), new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 6, _text(f"Clinic id: {report.clinic_id}"), new_x="LMARGIN", new_y="NEXT")

    w, h, a = report.wounds, report.healing, report.appointments
    _bar_chart(
        pdf,
        "Wounds",
        [
            ("seen", w.seen),
            ("healed", w.healed),
            ("on track", h.on_track),
            ("not on track", len(h.not_on_track)),
        ],
    )
    _bar_chart(pdf, "Appointments by state", sorted(a.by_state.items()))

    _heading(pdf, "Wounds and healing")
    _table(
        pdf,
        [
            ("Wounds seen", str(w.seen)),
            ("Wounds healed", str(w.healed)),
            ("Median days to heal", _number(w.median_days_to_heal)),
            (f"Reduction known at {h.weeks} weeks", str(h.known)),
            (f">= {h.threshold_percent:g} % area reduction", str(h.on_track)),
            ("Share on track", _percent(h.share_on_track)),
        ],
    )
    if h.not_on_track:
        _heading(pdf, f"Not on track at {h.weeks} weeks")
        _table(
            pdf,
            [
                (f"wound {x.wound_id[:13]}", f"{x.reduction_percent:.1f} %")
                for x in h.not_on_track[:40]
            ],
        )
        if len(h.not_on_track) > 40:
            pdf.cell(
                0, 6, f"... and {len(h.not_on_track) - 40} more", new_x="LMARGIN", new_y="NEXT"
            )
    _heading(pdf, "Assessments per wound per month")
    _table(
        pdf,
        [
            (m.month, f"{m.assessments} on {m.wounds} wounds: {m.per_wound:.2f}")
            for m in report.assessments_by_month
        ]
        or [("none", "")],
    )
    _heading(pdf, "Appointments")
    _table(
        pdf,
        [
            ("Appointments", str(a.total)),
            ("Booked minutes", str(a.booked_minutes)),
            ("Offered minutes", str(a.offered_minutes)),
            ("Utilisation", _percent(a.utilisation)),
            ("No-shows", str(a.no_shows)),
            ("Cancelled", str(a.cancelled)),
            ("Late cancellations (< 24 h)", str(a.late_cancellations)),
        ],
    )
    v = report.visits
    _heading(pdf, "Caregiver visits")
    _table(
        pdf,
        [
            ("Visits", str(v.total)),
            ("Completed", str(v.completed)),
            ("Missed", str(v.missed)),
            ("Cancelled", str(v.cancelled)),
            ("Rated", str(v.rated)),
            ("Mean rating", _number(v.mean_rating, 2)),
        ],
    )
    s = report.supplies
    _heading(pdf, "Supplies")
    _table(
        pdf,
        [(f"Orders {state}", str(n)) for state, n in sorted(s.orders_by_state.items())]
        + [(f"Ordered ({c})", format_money(t, c)) for c, t in sorted(s.order_totals.items())]
        + [
            ("Units picked", str(s.units_picked)),
            ("Units on hand", str(s.units_on_hand)),
            ("Stock turns", _number(s.stock_turns, 2)),
            ("Expired lots (units)", f"{s.expired_lots} ({s.expired_units})"),
        ],
    )
    _heading(pdf, "Money")
    money_rows: list[tuple[str, str]] = []
    for m in report.money:
        money_rows += [
            (f"Revenue ({m.currency})", format_money(m.revenue, m.currency)),
            (f"Refunds ({m.currency})", format_money(m.refunds, m.currency)),
            (f"Collected ({m.currency})", format_money(m.collected, m.currency)),
            (
                f"Outstanding ({m.currency}, {m.outstanding_invoices} invoices)",
                format_money(m.outstanding, m.currency),
            ),
        ]
    _table(pdf, money_rows or [("no money moved", "")])
    _heading(pdf, "Not available from the records")
    pdf.set_font("Helvetica", "", 8)
    for note in report.unavailable:
        pdf.multi_cell(0, 4, _text(f"- {note}"), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
