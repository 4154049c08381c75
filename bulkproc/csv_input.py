"""Turn an uploaded CSV of hospitals into validated rows, or into a list of problems."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass

COLUMNS = ("name", "address", "phone")
REQUIRED = ("name", "address")
MAX_LENGTH = 200
MAX_LISTED_ROW_PROBLEMS = 100

# An extension ends the number: "x123", "ext 123", "ext. 123", "extension 123" or "#123".
_PHONE_EXTENSION = re.compile(r"\s*(?:extension|ext\.?|x|#)\s*\d{1,6}$", re.IGNORECASE)
_PHONE_MAIN = re.compile(r"\(?\+?[0-9 ().-]*")
PHONE_MIN_DIGITS = 7
PHONE_MAX_DIGITS = 20


@dataclass(frozen=True)
class HospitalRow:
    """One hospital read from the CSV, its cells trimmed."""

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
    """The CSV content was refused; `problems` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        self.message = f"The CSV has {count} {noun}; nothing was created."
        super().__init__(self.message)

    @property
    def details(self) -> list[dict[str, int | str | None]]:
        """Return the problems in the shape of error details."""
        return [problem.as_dict() for problem in self.problems]


@dataclass(frozen=True)
class Inspection:
    """The rows that could be read and every problem found."""

    rows: list[HospitalRow]
    problems: list[Problem]

    @property
    def valid(self) -> bool:
        """Return whether the CSV can be accepted as it is."""
        return not self.problems


@dataclass(frozen=True)
class _Layout:
    index: dict[str, int]
    header: bool
    width: int


_POSITIONAL = _Layout(index={"name": 0, "address": 1, "phone": 2}, header=False, width=3)


def parse(data: bytes, max_rows: int = 20) -> list[HospitalRow]:
    """Return the hospitals of a CSV upload; raise CsvRejected listing every problem otherwise."""
    inspection = inspect(data, max_rows)
    if not inspection.valid:
        raise CsvRejected(inspection.problems)
    return inspection.rows


def inspect(data: bytes, max_rows: int = 20) -> Inspection:
    """Read and check a CSV upload, collecting every problem instead of raising."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Inspection(rows=[], problems=[_not_utf8_problem(data, exc.start)])
    records, file_problems = _read_records(text)
    read_to_end = not file_problems
    layout = _POSITIONAL
    if records and _is_header(records[0]):
        layout, header_problems = _read_header(records.pop(0))
        file_problems += header_problems
    # After broken quoting the count is only a lower bound, so "no data rows" would mislead.
    if read_to_end or records:
        file_problems += _count_problems(len(records), max_rows)
    rows, row_problems = _read_rows(records, layout)
    return Inspection(rows=rows, problems=file_problems + _capped(row_problems))


def _not_utf8_problem(data: bytes, offset: int) -> Problem:
    line = data.count(b"\n", 0, offset) + 1
    return Problem(
        None,
        None,
        f"The file is not UTF-8 (the first bad byte is on line {line}); "
        'save it as "CSV UTF-8" and upload it again.',
    )


def _read_records(text: str) -> tuple[list[list[str]], list[Problem]]:
    """Return the non-blank records with trimmed cells, and a problem if the CSV quoting is broken."""
    # strict=True turns an unclosed quote into an error instead of silently eating the rest of the file;
    # skipinitialspace lets a hand-typed `A, "1 Main St, Springfield"` keep its quoted comma.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True, skipinitialspace=True)
    records: list[list[str]] = []
    start_line = 1
    try:
        for cells in reader:
            trimmed = [cell.strip() for cell in cells]
            if any(trimmed):
                records.append(trimmed)
            start_line = reader.line_num + 1
    except csv.Error:
        return records, [_broken_quoting_problem(start_line)]
    return records, []


def _broken_quoting_problem(line: int) -> Problem:
    return Problem(
        None,
        None,
        f"The file cannot be read from line {line} on: a quoted field is never closed "
        'or has text after its closing quote (write a quote inside a quoted field as "").',
    )


def _is_header(cells: list[str]) -> bool:
    folded = {cell.casefold() for cell in cells}
    return "name" in folded and "address" in folded


def _read_header(cells: list[str]) -> tuple[_Layout, list[Problem]]:
    """Return the column layout a header row declares, and any unknown, blank or repeated columns."""
    while cells and not cells[-1]:
        cells = cells[:-1]
    index: dict[str, int] = {}
    problems: list[Problem] = []
    for position, cell in enumerate(cells):
        column = cell.casefold()
        if not column:
            problems.append(Problem(None, None, _blank_header_message(position)))
        elif column not in COLUMNS:
            problems.append(Problem(None, cell, _unknown_header_message(cell)))
        elif column in index:
            problems.append(Problem(None, cell, f'The header has the column "{cell}" more than once; keep only one.'))
        else:
            index[column] = position
    return _Layout(index=index, header=True, width=len(cells)), problems


def _blank_header_message(position: int) -> str:
    return f"Column {position + 1} of the header has no name; name it name, address or phone, or delete it."


def _unknown_header_message(cell: str) -> str:
    return f'The header has an unknown column "{cell}"; use only the columns name, address and phone.'


def _count_problems(count: int, max_rows: int) -> list[Problem]:
    if count == 0:
        return [Problem(None, None, "The file has no data rows; add at least one hospital as name,address,phone.")]
    if count > max_rows:
        message = f"The file has {count} data rows, but at most {max_rows} are allowed; split it into smaller files."
        return [Problem(None, None, message)]
    return []


def _read_rows(records: list[list[str]], layout: _Layout) -> tuple[list[HospitalRow], list[Problem]]:
    """Return the rows whose shape fits the layout, and every problem of every row."""
    rows: list[HospitalRow] = []
    problems: list[Problem] = []
    first_seen: dict[tuple[str, str], int] = {}
    for number, cells in enumerate(records, start=1):
        shape_message = _shape_message(cells, layout)
        if shape_message:
            problems.append(Problem(number, None, shape_message))
            continue
        row = _row_from(number, cells, layout.index)
        rows.append(row)
        problems += _value_problems(row)
        problems += _duplicate_problems(row, first_seen)
    return rows, problems


def _shape_message(cells: list[str], layout: _Layout) -> str | None:
    # Spreadsheets pad rows with empty cells when any row is wider, so only filled extra cells count.
    while len(cells) > layout.width and not cells[-1]:
        cells = cells[:-1]
    count = len(cells)
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


def _row_from(number: int, cells: list[str], index: dict[str, int]) -> HospitalRow:
    values = {column: cells[position] if position < len(cells) else "" for column, position in index.items()}
    return HospitalRow(
        row=number,
        name=values.get("name", ""),
        address=values.get("address", ""),
        phone=values.get("phone") or None,
    )


def _value_problems(row: HospitalRow) -> list[Problem]:
    problems = []
    for column in REQUIRED:
        value: str = getattr(row, column)
        if not value:
            problems.append(Problem(row.row, column, f"The {column} is empty; every hospital needs one."))
        elif len(value) > MAX_LENGTH:
            message = f"The {column} is {len(value)} characters long; shorten it to at most {MAX_LENGTH}."
            problems.append(Problem(row.row, column, message))
    phone_message = phone_problem(row.phone) if row.phone else None
    if phone_message:
        problems.append(Problem(row.row, "phone", phone_message))
    return problems


def phone_problem(phone: str) -> str | None:
    """Return why a trimmed, non-empty phone is not a plausible phone number, or None when it is."""
    main = _PHONE_EXTENSION.sub("", phone, count=1)
    if not _PHONE_MAIN.fullmatch(main):
        return (
            f'The phone "{phone}" may hold only digits, spaces, a leading +, - ( ) . '
            'and an extension at the end such as "x123".'
        )
    digits = sum(char.isdigit() for char in main)
    if not PHONE_MIN_DIGITS <= digits <= PHONE_MAX_DIGITS:
        return (
            f'The phone "{phone}" has {digits} digits, but a phone number needs '
            f"{PHONE_MIN_DIGITS} to {PHONE_MAX_DIGITS} (not counting an extension)."
        )
    return None


def _duplicate_problems(row: HospitalRow, first_seen: dict[tuple[str, str], int]) -> list[Problem]:
    if not row.name or not row.address:
        return []
    key = (_comparable(row.name), _comparable(row.address))
    earlier = first_seen.setdefault(key, row.row)
    if earlier == row.row:
        return []
    return [Problem(row.row, None, f"This row has the same name and address as row {earlier}; remove one of them.")]


def _comparable(value: str) -> str:
    return " ".join(value.split()).casefold()


def _capped(row_problems: list[Problem]) -> list[Problem]:
    if len(row_problems) <= MAX_LISTED_ROW_PROBLEMS:
        return row_problems
    hidden = len(row_problems) - MAX_LISTED_ROW_PROBLEMS
    note = Problem(None, None, f"{hidden} more row problems are not listed; fix the ones listed and check again.")
    return [note] + row_problems[:MAX_LISTED_ROW_PROBLEMS]
