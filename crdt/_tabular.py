"""Records as CSV lines for spreadsheets: one writer for the server's staff exports and
the device's ``--csv`` listings, so both quote and escape alike.

Pure: a line is built in memory and returned as text; the caller writes it.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["csv_line", "spreadsheet_safe"]

# A spreadsheet reads a cell starting with one of these as a formula (CSV injection:
# "=HYPERLINK(...)" in a patient's name). Tab and carriage return start formulas in
# some spreadsheets too (OWASP's list).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """`text` as a spreadsheet shows it, never runs it: a cell starting with ``=``,
    ``+``, ``-``, ``@``, a tab or a carriage return gets a leading ``'``.

    Numbers are not text: pass them to `csv_line` as numbers (``-3.5`` stays a number).
    """
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return spreadsheet_safe(value)
    # Nested values (contacts, blobs, quality flags) as compact JSON in one cell.
    return spreadsheet_safe(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def csv_line(values: Iterable[Any]) -> str:
    """One CSV line (RFC 4180: comma-separated, quoted where needed, CRLF-terminated).

    None is an empty cell, booleans ``true``/``false``, numbers as Python writes them,
    text made `spreadsheet_safe`, anything else (lists, mappings) compact JSON text.
    """
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([_cell(v) for v in values])
    return out.getvalue()
