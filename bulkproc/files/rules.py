"""Turn an uploaded file of hospitals into validated rows, or into a list of problems.

Every format (text with any delimiter, workbooks) reaches the same path here as records of
cells: the header is recognised, the columns matched, and every check made, once for all.
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from . import headers, reading
from .headers import REQUIRED, Layout
from .problems import INVISIBLE as _INVISIBLE
from .problems import (
    MAX_LISTED_PROBLEMS,
    QUOTED_PREFIX,
    Problem,
    listed,
    quoted,
    shortened,
)
from .problems import Problems as _Problems
from .reading import ReadOptions, Record, Source
from .seen import SeenPairs

__all__ = ["MAX_LISTED_PROBLEMS", "QUOTED_PREFIX", "Accepted", "CsvRejected", "HospitalRow", "Inspection",
           "Problem", "ReadOptions", "accept", "inspect", "inspect_table", "parse", "phone_problem"]

COLUMNS = ("name", "address", "phone")
MAX_LENGTH = 200
PHONE_MAX_LENGTH = 40
PHONE_MIN_DIGITS = 7
PHONE_MAX_DIGITS = 20
PHONE_MAX_EXTENSION_DIGITS = 6
# Unicode's stream-safe limit (UAX #15): longer runs of combining marks are no text anyone types,
# and CPython's normalisation is quadratic in the length of such a run.
MAX_COMBINING_RUN = 30
# NFC merges at most four code points into one, so a cell longer than this is too long however it
# normalises; it is refused without normalising it.
_MOST_NFC_MERGES = 4
FORMULA_STARTS = ("=", "+", "-", "@")

_ASCII_DIGITS = "0123456789"
_PHONE_CHARACTERS = frozenset(_ASCII_DIGITS + " ().-")
# An extension ends the number: "x123", "ext 123", "ext. 123", "extension 123" or "#123".
_EXTENSION_MARKERS = ("extension", "ext.", "ext", "x", "#")
_DELIMITER_NAMES = {",": "a comma", ";": "a semicolon", "\t": "a tab", "|": "a |"}


@dataclass(frozen=True)
class HospitalRow:
    """One hospital read from the CSV, its cells trimmed and normalised to NFC."""

    row: int
    name: str
    address: str
    phone: str | None


class CsvRejected(Exception):
    """The file's content was refused; `problems` lists the reasons (at most 100, then a line counting the rest)."""

    def __init__(self, problems: list[Problem], count: int | None = None) -> None:
        self.problems = list(problems)
        count = len(self.problems) if count is None else count
        noun = "problem" if count == 1 else "problems"
        self.message = f"The CSV has {count} {noun}; nothing was created."
        super().__init__(self.message)

    @property
    def details(self) -> list[dict[str, int | str | None]]:
        """Return the problems in the shape of error details."""
        return [problem.as_dict() for problem in self.problems]


@dataclass(frozen=True)
class Inspection:
    """What a file holds: its rows (none when over the row limit), its problems, its data row count,
    and how it was read (the validate answer's `file`)."""

    rows: list[HospitalRow]
    problems: list[Problem]
    total: int
    # Every problem found, including those beyond the listed ones.
    problem_count: int = 0
    file: dict[str, object] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        """Return whether the file can be accepted as it is."""
        return not self.problems


@dataclass(frozen=True)
class Accepted:
    """An upload that passed every check, holding none of its rows: `rows()` reads them again."""

    total: int
    source: Source
    columns: dict[str, str] | None = None

    def rows(self) -> Iterator[HospitalRow]:
        """The file's hospitals in file order, read again from it as the check read them."""
        layout, _, records = _layout(self.source.records, headers.overrides(self.columns))
        # Every record of a file that passed is a row (the check refuses any it cannot make one of).
        for number, (_, cells) in enumerate(records, 1):
            yield _checked_row(number, cells, layout.index)[0]


def parse(data: bytes, max_rows: int = 20, options: ReadOptions | None = None) -> list[HospitalRow]:
    """Return the hospitals of an upload; raise CsvRejected listing its problems otherwise."""
    inspection = inspect(data, max_rows, options)
    if not inspection.valid:
        raise CsvRejected(inspection.problems, inspection.problem_count)
    return inspection.rows


def accept(data: bytes, max_rows: int = 20, options: ReadOptions | None = None) -> Accepted:
    """Check an upload in one pass that keeps none of its rows (only a short key a row, to find
    duplicates); raise CsvRejected listing its problems, as parse does."""
    options = options or ReadOptions()
    source = _source(data, max_rows, options)
    inspection = _inspected(source, max_rows, options.columns, keep_rows=False)
    if not inspection.valid:
        raise CsvRejected(inspection.problems, inspection.problem_count)
    return Accepted(inspection.total, source, options.columns)


def inspect(data: bytes, max_rows: int = 20, options: ReadOptions | None = None) -> Inspection:
    """Read and check an upload of any supported format, collecting its problems instead of raising."""
    options = options or ReadOptions()
    return _inspected(_source(data, max_rows, options), max_rows, options.columns)


def _source(data: bytes, max_rows: int, options: ReadOptions) -> Source:
    # A header and one row past the limit are enough to refuse a workbook: it is not read further.
    return reading.read(data, options, max_records=max_rows + 2)


def inspect_table(rows: list[list[str]], max_rows: int) -> Inspection:
    """Check rows of cells already in memory (a row being fixed) by the same rules as a file."""
    return _inspected(Source([(None, cells) for cells in rows], {}), max_rows, None)


def _inspected(source: Source, max_rows: int, columns: dict[str, str] | None,
               keep_rows: bool = True) -> Inspection:
    layout, header_problems, records = _layout(source.records, headers.overrides(columns))
    reading_rows = _RowReader(layout, max_rows, source.info.get("delimiter"), keep_rows)
    try:
        for line, cells in records:
            reading_rows.add(line, cells)
    finally:
        reading_rows.close()
    reading_rows.count_unread(source.more)
    for problem in headers.unnamed_problems(layout, reading_rows.unnamed):
        header_problems.add(problem)
    unreadable = _Problems(kept=list(source.problems))
    # After unreadable quoting the count is only a lower bound, so "no data rows" would mislead.
    counted = _count_problems(reading_rows.total, max_rows) if reading_rows.total or not source.problems else []
    groups = [unreadable, header_problems, _Problems(kept=counted), reading_rows.problems]
    count = sum(group.count for group in groups)
    return Inspection(rows=reading_rows.rows, problems=listed(groups), total=reading_rows.total,
                      problem_count=count, file=_file_document(source.info, layout))


def _layout(records: Iterable[Record], mapped: dict[str, str]) -> tuple[Layout, _Problems, Iterator[Record]]:
    """Where the fields are (by the header, or by position when the first record is none), the
    header's problems, and the data records after it, trimmed, the blank ones left out."""
    records = _non_blank(records)
    first = next(records, None)
    problems = _Problems()
    if first is not None and (mapped or headers.is_header(first[1], mapped)):
        return headers.read_header(first[1], first[0], mapped, problems), problems, records
    if first is not None:
        records = itertools.chain([first], records)
    return headers.POSITIONAL, problems, records


def _non_blank(records: Iterable[Record]) -> Iterator[Record]:
    """Yield the records with their cells trimmed, skipping the blank ones."""
    for line, cells in records:
        trimmed = [cell.strip() for cell in cells]
        if any(trimmed):
            yield line, trimmed


def _file_document(info: dict[str, object], layout: Layout) -> dict[str, object]:
    return {**{key: value for key, value in info.items() if value is not None or key == "format"},
            "header": layout.header, "columns": dict(layout.columns), "ignored_columns": list(layout.ignored)}


def _count_problems(count: int, max_rows: int) -> list[Problem]:
    if count == 0:
        return [Problem(None, None, "The file has no data rows; add at least one hospital as name,address,phone.")]
    if count > max_rows:
        message = f"The file has {count} data rows, but at most {max_rows} are allowed; split it into smaller files."
        return [Problem(None, None, message)]
    return []


class _RowReader:
    """Checks data rows one at a time, keeping rows (if asked to) only while their count is within the limit."""

    def __init__(self, layout: Layout, max_rows: int, delimiter: object, keep_rows: bool = True) -> None:
        self.layout = layout
        self.max_rows = max_rows
        self.delimiter = delimiter if isinstance(delimiter, str) else None
        self.keep_rows = keep_rows
        self.rows: list[HospitalRow] = []
        self.problems = _Problems()
        self.total = 0
        # Blank-headed columns holding a value: position -> the first row with one.
        self.unnamed: dict[int, int] = {}
        # Each name and address seen (see _pair_key): the first row that has it.
        self._seen = SeenPairs()

    def add(self, line: int | None, cells: list[str]) -> None:
        self.total += 1
        row = self._checked(line, cells)
        # Past the limit the file is refused as a whole, and echoing its rows would only make the answer huge.
        if self.total > self.max_rows:
            self.rows.clear()
        elif row is not None and self.keep_rows:
            self.rows.append(row)

    def close(self) -> None:
        """Let go of what finding duplicates held (all rows have been read)."""
        self._seen.close()

    def count_unread(self, more: int) -> None:
        """Count data rows a reader stopped short of (past the limit: the file is refused anyway)."""
        self.total += more
        if self.total > self.max_rows:
            self.rows.clear()

    def _checked(self, line: int | None, cells: list[str]) -> HospitalRow | None:
        if self.layout.blank:
            headers.unnamed_columns(self.layout, cells, self.unnamed, self.total)
        shape_message = _shape_message(cells, self.layout, self.delimiter)
        if shape_message:
            self.problems.add(Problem(self.total, None, shape_message, line))
            return None
        row, row_problems = _checked_row(self.total, cells, self.layout.index)
        for column, message in row_problems:
            self.problems.add(Problem(self.total, column, message, line))
        complete = all(column in self.layout.index for column in REQUIRED)
        if complete and not any(column in REQUIRED for column, _ in row_problems):
            self._check_duplicate(row, line)
        return row

    def _check_duplicate(self, row: HospitalRow, line: int | None) -> None:
        earlier = self._seen.first_row(_pair_key(row.name, row.address), row.row)
        if earlier != row.row:
            message = f"This row has the same name and address as row {earlier}; remove one of them."
            self.problems.add(Problem(row.row, None, message, line))


def _shape_message(cells: list[str], layout: Layout, delimiter: str | None) -> str | None:
    count = headers.filled_width(cells, layout.width)
    fields = f"{count} field" if count == 1 else f"{count} fields"
    quoting = (f"; an address containing {_DELIMITER_NAMES[delimiter]} must be in double quotes"
               if delimiter else "")
    if layout.header:
        if count <= layout.width:
            return None
        if delimiter is None:
            return f"This row has {count} cells, but the header has {layout.width} columns; give each column a header."
        return f"This row has {fields}, but the header has {layout.width} columns{quoting}."
    if 2 <= count <= 3:
        return None
    if count == 1 and delimiter == "," and (";" in cells[0] or "\t" in cells[0]):
        return "This row has 1 field that holds semicolons or tabs; save the file with commas between the fields."
    return f"This row has {fields}, but a row needs name,address and an optional phone{quoting}."


def _checked_row(number: int, cells: list[str], index: dict[str, int]) -> tuple[HospitalRow, list[tuple[str, str]]]:
    """Return the row as it would be stored (shortened for display when too long) and its (column, problem)s."""
    values: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    raw_values = {"name": _cell(cells, index, "name"), "address": _address(cells, index),
                  "phone": _cell(cells, index, "phone")}
    for column in COLUMNS:
        value, message = _checked_cell(column, raw_values[column])
        values[column] = value
        # A header without the column has been refused for it once; each row need not repeat it.
        if message and column in index:
            problems.append((column, message))
    row = HospitalRow(row=number, name=values["name"], address=values["address"], phone=values["phone"] or None)
    return row, problems


def _cell(cells: list[str], index: dict[str, int], column: str) -> str:
    position = index.get(column)
    return cells[position] if position is not None and position < len(cells) else ""


def _address(cells: list[str], index: dict[str, int]) -> str:
    """The address joined from its parts: `address, address2, city, state postal_code`, empty ones left out."""
    street = _cell(cells, index, "address")
    if not street:
        return ""  # the street is the address: a city alone is none
    region = " ".join(part for part in (_cell(cells, index, "state"), _cell(cells, index, "postal_code")) if part)
    parts = (street, _cell(cells, index, "address2"), _cell(cells, index, "city"), region)
    return ", ".join(part for part in parts if part)


def _checked_cell(column: str, raw: str) -> tuple[str, str | None]:
    """Return a trimmed cell normalised to NFC, and why it is refused or None."""
    limit = PHONE_MAX_LENGTH if column == "phone" else MAX_LENGTH
    # Lengths come first, so that no later check ever sees more than a few hundred characters.
    if len(raw) > limit * _MOST_NFC_MERGES:
        return shortened(raw), _length_message(column, len(raw), limit)
    if _longest_combining_run(raw) > MAX_COMBINING_RUN:
        return shortened(raw), (
            f"The {column} has more than {MAX_COMBINING_RUN} combining marks in a row; remove the extra accents."
        )
    value = unicodedata.normalize("NFC", raw).strip()
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        # Our result files write such a cell behind a quote so that spreadsheets show it as text
        # (results.py); a failed.csv uploaded again means the value without it.
        value = value[1:]
    if len(value) > limit:
        return shortened(value), _length_message(column, len(value), limit)
    return value, _value_message(column, value)


def _value_message(column: str, value: str) -> str | None:
    if not value:
        return f"The {column} is empty; every hospital needs one." if column in REQUIRED else None
    invisible = _INVISIBLE.search(value)
    if invisible:
        return (
            f"The {column} holds the invisible character U+{ord(invisible.group()):04X} "
            f"at character {invisible.start() + 1}; delete it (it is a control or text-direction character)."
        )
    if column == "phone":
        return phone_problem(value)
    if value.startswith(FORMULA_STARTS):
        return (
            f'The {column} starts with "{value[0]}", which spreadsheets run as a formula; '
            f'remove the "{value[0]}" or start with a letter or digit.'
        )
    return None


def _length_message(column: str, length: int, limit: int) -> str:
    return f"The {column} is {length} characters long; shorten it to at most {limit}."


def _longest_combining_run(text: str) -> int:
    if text.isascii():
        return 0
    longest = run = 0
    for char in text:
        run = run + 1 if unicodedata.combining(char) else 0
        longest = max(longest, run)
    return longest


def phone_problem(phone: str) -> str | None:
    """Return why a trimmed, non-empty phone is not a plausible phone number, or None when it is."""
    if len(phone) > PHONE_MAX_LENGTH:
        return _length_message("phone", len(phone), PHONE_MAX_LENGTH)
    main = _without_extension(phone)
    body = main.removeprefix("(")
    body = body.removeprefix("+")
    if not _PHONE_CHARACTERS.issuperset(body):
        return (
            f"The phone {quoted(phone)} may hold only digits, spaces, a leading +, - ( ) . "
            'and an extension at the end such as "x123".'
        )
    digits = sum(map(main.count, _ASCII_DIGITS))
    if not PHONE_MIN_DIGITS <= digits <= PHONE_MAX_DIGITS:
        return (
            f"The phone {quoted(phone)} has {digits} digits, but a phone number needs "
            f"{PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} (not counting an extension)."
        )
    return None


def _without_extension(phone: str) -> str:
    """Return the phone without its extension (a marker, then 1 to 6 digits at the end), if it has one."""
    # String methods instead of a pattern: a run of spaces cannot make them backtrack.
    before_digits = phone.rstrip(_ASCII_DIGITS)
    if not 1 <= len(phone) - len(before_digits) <= PHONE_MAX_EXTENSION_DIGITS:
        return phone
    before_marker = before_digits.rstrip(" ")
    # Lowering only the last few characters keeps their count, which lowering the whole phone might not.
    tail = before_marker[-len(_EXTENSION_MARKERS[0]):].lower()
    for marker in _EXTENSION_MARKERS:
        if tail.endswith(marker):
            return before_marker[: -len(marker)].rstrip(" ")
    return phone


def _pair_key(name: str, address: str) -> str:
    """A name and address as rows are compared (case and runs of spaces aside), as one string: a
    pair's two strings and the tuple holding them took twice the memory."""
    first, second = _comparable(name), _comparable(address)
    return f"{len(first)}:{first}{second}"  # the first one's length tells where the second begins


def _comparable(value: str) -> str:
    return unicodedata.normalize("NFC", " ".join(value.split()).casefold())
