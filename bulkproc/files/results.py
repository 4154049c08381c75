"""Result files: rows as CSV lines, every cell made safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from ..states import RowStatus
from ..store import Row

RESULTS_HEADER = ("row", "name", "address", "phone", "status", "hospital_id", "batch_id", "error")
FAILED_HEADER = ("name", "address", "phone", "error")
# Rows that do not exist upstream and could be uploaded again (an import's cancel leaves the rows
# it stopped before they started `cancelled`).
NOT_CREATED = frozenset({RowStatus.FAILED, RowStatus.PENDING, RowStatus.CANCELLED})
# A spreadsheet reads a cell starting with one of these as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: object) -> str:
    """The cell's text, with a single quote in front when a spreadsheet would run it as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def results_lines(rows: Iterable[tuple[str, Row]]) -> Iterator[str]:
    """The lines of results.csv for (batch id, row) pairs in order, header first."""
    yield _line(RESULTS_HEADER)
    for batch_id, row in rows:
        yield _line((row.row, row.name, row.address, row.phone, row.status, row.hospital_id, batch_id, row.error))


def failed_lines(rows: Iterable[tuple[str, Row]]) -> Iterator[str]:
    """The lines of failed.csv: header first, then every row not created, as an upload reads it."""
    yield _line(FAILED_HEADER)
    for _batch_id, row in rows:
        if row.status in NOT_CREATED:
            yield _line((row.name, row.address, row.phone, row.error))


def _line(cells: Iterable[object]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow([neutralise(cell) for cell in cells])
    return buffer.getvalue()
