"""Turn an uploaded CSV of hospitals into validated rows, or into a list of problems."""

from __future__ import annotations

import csv
import io
import itertools
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

COLUMNS = ("name", "address", "phone")
REQUIRED = ("name", "address")
# Columns a header may have that are not read: failed.csv adds `error`, and it can be uploaded again as it is.
IGNORED_COLUMNS = ("error",)
MAX_LENGTH = 200
PHONE_MAX_LENGTH = 40
PHONE_MIN_DIGITS = 7
PHONE_MAX_DIGITS = 20
PHONE_MAX_EXTENSION_DIGITS = 6
MAX_LISTED_PROBLEMS = 100
# Unicode's stream-safe limit (UAX #15): longer runs of combining marks are no text anyone types,
# and CPython's normalisation is quadratic in the length of such a run.
MAX_COMBINING_RUN = 30
# NFC merges at most four code points into one, so a cell longer than this is too long however it
# normalises; it is refused without normalising it.
_MOST_NFC_MERGES = 4
QUOTED_PREFIX = 24
FORMULA_STARTS = ("=", "+", "-", "@")
BYTE_ORDER_MARK = "\ufeff"

# C0 controls except the line breaks a quoted field may hold, DEL, C1 controls, and the bidi
# embeddings, overrides and isolates that can make text read differently than it is stored.
_INVISIBLE = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_ASCII_DIGITS = "0123456789"
_PHONE_CHARACTERS = frozenset(_ASCII_DIGITS + " ().-")
# An extension ends the number: "x123", "ext 123", "ext. 123", "extension 123" or "#123".
_EXTENSION_MARKERS = ("extension", "ext.", "ext", "x", "#")


@dataclass(frozen=True)
class HospitalRow:
    """One hospital read from the CSV, its cells trimmed and normalised to NFC."""

    row: int
    name: str
    address: str
    phone: str | None


@dataclass(frozen=True)
class Problem:
    """One reason the CSV is refused; row and column are None when they do not apply."""

    row: int | None
    column: str | None
    message: str

    def as_dict(self) -> dict[str, int | str | None]:
        """Return the problem in the shape of an error detail."""
        return {"row": self.row, "column": self.column, "message": self.message}


class CsvRejected(Exception):
    """The CSV content was refused; `problems` lists the reasons (at most 100, then a line counting the rest)."""

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
    """What a CSV holds: its rows (none when over the row limit), its problems, and its data row count."""

    rows: list[HospitalRow]
    problems: list[Problem]
    total: int
    # Every problem found, including those beyond the listed ones.
    problem_count: int = 0

    @property
    def valid(self) -> bool:
        """Return whether the CSV can be accepted as it is."""
        return not self.problems


@dataclass
class _Problems:
    """Problems in the order found, keeping the first `limit` and counting the rest."""

    limit: int = MAX_LISTED_PROBLEMS
    kept: list[Problem] = field(default_factory=list)
    hidden: int = 0

    def add(self, problem: Problem) -> None:
        if len(self.kept) < self.limit:
            self.kept.append(problem)
        else:
            self.hidden += 1


@dataclass(frozen=True)
class _Layout:
    index: dict[str, int]
    header: bool
    width: int


_POSITIONAL = _Layout(index={"name": 0, "address": 1, "phone": 2}, header=False, width=3)


def parse(data: bytes, max_rows: int = 20) -> list[HospitalRow]:
    """Return the hospitals of a CSV upload; raise CsvRejected listing its problems otherwise."""
    inspection = inspect(data, max_rows)
    if not inspection.valid:
        raise CsvRejected(inspection.problems, inspection.problem_count)
    return inspection.rows


def inspect(data: bytes, max_rows: int = 20) -> Inspection:
    """Read and check a CSV upload, collecting its problems instead of raising."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Inspection(rows=[], problems=[_not_utf8_problem(data, exc.start)], total=0, problem_count=1)
    # Tools that each add a byte-order mark can stack several; all of them go, so the header stays a header.
    text = text.lstrip(BYTE_ORDER_MARK)
    unreadable = _Problems()
    records = _records(text, unreadable)
    first = next(records, None)
    layout, header_problems = _POSITIONAL, _Problems()
    if first is not None and _is_header(first):
        layout = _read_header(first, header_problems)
    elif first is not None:
        records = itertools.chain([first], records)
    reading = _RowReader(layout, max_rows)
    for cells in records:
        reading.add(cells)
    # After unreadable quoting the count is only a lower bound, so "no data rows" would mislead.
    counted = _count_problems(reading.total, max_rows) if reading.total or not unreadable.kept else []
    groups = [unreadable, header_problems, _Problems(kept=counted), reading.problems]
    count = sum(len(group.kept) + group.hidden for group in groups)
    return Inspection(rows=reading.rows, problems=_listed(groups), total=reading.total, problem_count=count)


def _not_utf8_problem(data: bytes, offset: int) -> Problem:
    line = data.count(b"\n", 0, offset) + 1
    return Problem(
        None,
        None,
        f"The file is not UTF-8 (the first bad byte is on line {line}); "
        'save it as "CSV UTF-8" and upload it again.',
    )


def _records(text: str, unreadable: _Problems) -> Iterator[list[str]]:
    """Yield the non-blank records with trimmed cells; on broken quoting, add a problem and stop."""
    # strict=True turns an unclosed quote into an error instead of silently eating the rest of the file;
    # skipinitialspace lets a hand-typed `A, "1 Main St, Springfield"` keep its quoted comma.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    start_line = 1
    try:
        for cells in reader:
            trimmed = [cell.strip() for cell in cells]
            if any(trimmed):
                yield trimmed
            start_line = reader.line_num + 1
    except csv.Error as exc:
        unreadable.add(_unreadable_problem(start_line, str(exc)))


def _unreadable_problem(line: int, reason: str) -> Problem:
    if "field larger than field limit" in reason:
        message = (
            f"The file cannot be read from line {line} on: a field there is longer than "
            f"{csv.field_size_limit()} characters (look for a quote that is never closed)."
        )
    else:
        message = (
            f"The file cannot be read from line {line} on: a quoted field is never closed "
            'or has text after its closing quote (write a quote inside a quoted field as "").'
        )
    return Problem(None, None, message)


def _is_header(cells: list[str]) -> bool:
    folded = {cell.casefold() for cell in cells}
    return "name" in folded and "address" in folded


def _read_header(cells: list[str], problems: _Problems) -> _Layout:
    """Return the column layout a header row declares, adding its unknown, blank or repeated columns."""
    width = _filled_width(cells, 0)
    index: dict[str, int] = {}
    for position in range(width):
        cell = cells[position]
        column = cell.casefold()
        if not column:
            problems.add(Problem(None, None, _blank_header_message(position)))
        elif column not in COLUMNS + IGNORED_COLUMNS:
            problems.add(Problem(None, None, _unknown_header_message(cell)))
        elif column in index:
            shown = column if column in COLUMNS else None
            message = f"The header has the column {_quoted(cell)} more than once; keep only one."
            problems.add(Problem(None, shown, message))
        else:
            index[column] = position
    readable = {column: position for column, position in index.items() if column in COLUMNS}
    return _Layout(index=readable, header=True, width=width)


def _filled_width(cells: list[str], floor: int) -> int:
    """Return how many cells remain once empty trailing cells beyond `floor` are dropped."""
    # Spreadsheets pad rows with empty cells when any row is wider; counting down keeps this linear.
    width = len(cells)
    while width > floor and not cells[width - 1]:
        width -= 1
    return width


def _blank_header_message(position: int) -> str:
    return f"Column {position + 1} of the header has no name; name it name, address or phone, or delete it."


def _unknown_header_message(cell: str) -> str:
    return f"The header has an unknown column {_quoted(cell)}; use only the columns name, address and phone."


def _count_problems(count: int, max_rows: int) -> list[Problem]:
    if count == 0:
        return [Problem(None, None, "The file has no data rows; add at least one hospital as name,address,phone.")]
    if count > max_rows:
        message = f"The file has {count} data rows, but at most {max_rows} are allowed; split it into smaller files."
        return [Problem(None, None, message)]
    return []


class _RowReader:
    """Checks data rows one at a time, keeping rows only while their count is within the limit."""

    def __init__(self, layout: _Layout, max_rows: int) -> None:
        self.layout = layout
        self.max_rows = max_rows
        self.rows: list[HospitalRow] = []
        self.problems = _Problems()
        self.total = 0
        self._first_seen: dict[tuple[str, str], int] = {}

    def add(self, cells: list[str]) -> None:
        self.total += 1
        row = self._checked(cells)
        # Past the limit the file is refused as a whole, and echoing its rows would only make the answer huge.
        if self.total > self.max_rows:
            self.rows.clear()
        elif row is not None:
            self.rows.append(row)

    def _checked(self, cells: list[str]) -> HospitalRow | None:
        shape_message = _shape_message(cells, self.layout)
        if shape_message:
            self.problems.add(Problem(self.total, None, shape_message))
            return None
        row, row_problems = _checked_row(self.total, cells, self.layout.index)
        for problem in row_problems:
            self.problems.add(problem)
        if not any(problem.column in REQUIRED for problem in row_problems):
            self._check_duplicate(row)
        return row

    def _check_duplicate(self, row: HospitalRow) -> None:
        key = (_comparable(row.name), _comparable(row.address))
        earlier = self._first_seen.setdefault(key, row.row)
        if earlier != row.row:
            message = f"This row has the same name and address as row {earlier}; remove one of them."
            self.problems.add(Problem(row.row, None, message))


def _shape_message(cells: list[str], layout: _Layout) -> str | None:
    count = _filled_width(cells, layout.width)
    fields = f"{count} field" if count == 1 else f"{count} fields"
    if layout.header:
        if count <= layout.width:
            return None
        return (
            f"This row has {fields}, but the header has {layout.width} columns; "
            "an address containing a comma must be in double quotes."
        )
    if 2 <= count <= 3:
        return None
    if count == 1 and (";" in cells[0] or "\t" in cells[0]):
        return "This row has 1 field that holds semicolons or tabs; save the file with commas between the fields."
    return (
        f"This row has {fields}, but a row needs name,address and an optional phone; "
        "an address containing a comma must be in double quotes."
    )


def _checked_row(number: int, cells: list[str], index: dict[str, int]) -> tuple[HospitalRow, list[Problem]]:
    """Return the row as it would be stored (shortened for display when too long) and its problems."""
    values: dict[str, str] = {}
    problems: list[Problem] = []
    for column in COLUMNS:
        position = index.get(column)
        raw = cells[position] if position is not None and position < len(cells) else ""
        value, message = _checked_cell(column, raw)
        values[column] = value
        if message:
            problems.append(Problem(number, column, message))
    row = HospitalRow(row=number, name=values["name"], address=values["address"], phone=values["phone"] or None)
    return row, problems


def _checked_cell(column: str, raw: str) -> tuple[str, str | None]:
    """Return a trimmed cell normalised to NFC, and why it is refused or None."""
    limit = PHONE_MAX_LENGTH if column == "phone" else MAX_LENGTH
    # Lengths come first, so that no later check ever sees more than a few hundred characters.
    if len(raw) > limit * _MOST_NFC_MERGES:
        return _shortened(raw), _length_message(column, len(raw), limit)
    if _longest_combining_run(raw) > MAX_COMBINING_RUN:
        return _shortened(raw), (
            f"The {column} has more than {MAX_COMBINING_RUN} combining marks in a row; remove the extra accents."
        )
    value = unicodedata.normalize("NFC", raw).strip()
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        # Our result files write such a cell behind a quote so that spreadsheets show it as text
        # (results.py); a failed.csv uploaded again means the value without it.
        value = value[1:]
    if len(value) > limit:
        return _shortened(value), _length_message(column, len(value), limit)
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
    body = main[1:] if main.startswith("(") else main
    body = body[1:] if body.startswith("+") else body
    if not _PHONE_CHARACTERS.issuperset(body):
        return (
            f"The phone {_quoted(phone)} may hold only digits, spaces, a leading +, - ( ) . "
            'and an extension at the end such as "x123".'
        )
    digits = sum(map(main.count, _ASCII_DIGITS))
    if not PHONE_MIN_DIGITS <= digits <= PHONE_MAX_DIGITS:
        return (
            f"The phone {_quoted(phone)} has {digits} digits, but a phone number needs "
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


def _comparable(value: str) -> str:
    return unicodedata.normalize("NFC", " ".join(value.split()).casefold())


def _quoted(text: str) -> str:
    """Return a short, printable quotation of user text for a message."""
    shown = _INVISIBLE.sub("\ufffd", text[:QUOTED_PREFIX])
    return f'"{shown}…"' if len(text) > QUOTED_PREFIX else f'"{shown}"'


def _shortened(text: str) -> str:
    """Return a prefix of a cell refused as too long, so a refusal never echoes it whole."""
    return text[:QUOTED_PREFIX] + "…"


def _listed(groups: list[_Problems]) -> list[Problem]:
    """Return the first problems of the groups in order, then one line counting the ones left out."""
    found = _Problems()
    for group in groups:
        for problem in group.kept:
            found.add(problem)
        found.hidden += group.hidden
    if found.hidden:
        message = f"{found.hidden} more problems are not listed; fix the ones listed and check again."
        found.kept.append(Problem(None, None, message))
    return found.kept
