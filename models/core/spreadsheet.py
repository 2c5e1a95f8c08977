"""CSV files a spreadsheet opens as data, never as formulas (OWASP's CSV-injection rule).

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read by Excel,
LibreOffice and Google Sheets as a formula (``=HYPERLINK(...)``, ``-2+3``, ``@SUM(...)``); a text the
app writes (an entity tagged in a stranger's document) must not run. Such text cells get a leading
``'`` (shown by spreadsheets as the text itself); numbers stay numbers.
Source: https://owasp.org/www-community/attacks/CSV_Injection
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path

from models.core import settings

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """``value`` unchanged unless it is text a spreadsheet would read as a formula; then ``'`` + value."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_text(header: list[str], rows: Iterable[Iterable[object]]) -> str:
    """The rows as CSV text (RFC 4180 quoting by the csv module), every cell passed through ``safe_cell``."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([safe_cell(h) for h in header])
    writer.writerows([safe_cell(v) for v in row] for row in rows)
    return buf.getvalue()


def write_csv(path: Path, header: list[str], rows: Iterable[Iterable[object]]) -> Path:
    """Write ``csv_text(header, rows)`` to ``path`` atomically; the one way the app writes a CSV file."""
    settings.atomic_write_text(path, csv_text(header, rows))
    return path
