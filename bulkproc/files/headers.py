"""Header rows in people's own words: which column holds which field, by the contract's table."""

from __future__ import annotations

from dataclasses import dataclass, field

from .problems import Problem, Problems, quoted, shortened

FIELDS = ("name", "address", "address2", "city", "state", "postal_code", "phone")
REQUIRED = ("name", "address")
IGNORE = "ignore"
KNOWN_NAMES: dict[str, tuple[str, ...]] = {
    "name": ("name", "hospital", "hospital name", "facility", "facility name", "institution",
             "institution name", "organization name", "organisation name", "provider name"),
    "address": ("address", "street", "street address", "address 1", "address line 1", "location", "full address"),
    "address2": ("address 2", "address line 2", "suite", "unit"),
    "city": ("city", "town"),
    "state": ("state", "province", "region"),
    "postal_code": ("zip", "zip code", "postal code", "postcode"),
    "phone": ("phone", "telephone", "tel", "phone number", "telephone number", "contact number", "contact phone",
              "main phone"),
}
_FIELD_OF = {word: name for name, words in KNOWN_NAMES.items() for word in words}
# The result files' own columns (results.csv, failed.csv): read past without a word, so that
# those files can be fixed and uploaded again as they are.
SILENT = frozenset({"error", "row", "status", "hospital id", "batch id"})
_SEPARATORS = str.maketrans("_-.#:", "     ")
# What the validate answer shows of a header: enough to recognise each column, never a huge echo.
MAX_SHOWN_CELL = 100
MAX_SHOWN_COLUMNS = 50
MAX_NAMED_COLUMNS = 6


def normalised(cell: str) -> str:
    """A header cell as it is compared: trimmed, case-folded, `_ - . # :` as spaces, runs of spaces collapsed."""
    return " ".join(cell.casefold().translate(_SEPARATORS).split())


@dataclass(frozen=True)
class Layout:
    """Where each field is in a row, and what the header said about its columns."""

    index: dict[str, int]
    header: bool
    width: int
    columns: dict[str, str] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    # Positions of header cells left blank: a spreadsheet's empty spacer column is read past, but
    # a value under a blank header is a column nobody named (see unnamed_columns).
    blank: tuple[int, ...] = ()
    line: int | None = None


POSITIONAL = Layout(index={"name": 0, "address": 1, "phone": 2}, header=False, width=3)


def overrides(columns: dict[str, str] | None) -> dict[str, str]:
    """The `columns` form field keyed by normalised header cell."""
    return {normalised(cell): target for cell, target in (columns or {}).items()}


def is_header(cells: list[str], mapped: dict[str, str]) -> bool:
    """Whether a first row is a header: any of its cells is a known column name, or one `columns` maps."""
    return any((key := normalised(cell)) in _FIELD_OF or key in mapped for cell in cells)


def read_header(cells: list[str], line: int | None, mapped: dict[str, str], problems: Problems) -> Layout:
    """Return the layout a header row declares, adding its doubled or missing columns to `problems`."""
    width = filled_width(cells, 0)
    index: dict[str, int] = {}
    columns: dict[str, str] = {}
    ignored: list[str] = []
    blank: list[int] = []
    for position in range(width):
        cell = cells[position]
        key = normalised(cell)
        target = mapped.get(key) or _FIELD_OF.get(key)
        if not key:
            blank.append(position)
        elif target is None or target == IGNORE:
            if target is None and key not in SILENT and len(ignored) < MAX_SHOWN_COLUMNS:
                shown = shortened(cell, MAX_SHOWN_CELL)
                ignored.extend([shown] if shown not in ignored else [])
        elif target in index:
            problems.add(Problem(None, target, _twice_message(cells[index[target]], cell, target), line))
        else:
            index[target] = position
            if len(columns) < MAX_SHOWN_COLUMNS:
                columns[shortened(cell, MAX_SHOWN_CELL)] = target
    _check_overrides(cells[:width], mapped, line, problems)
    _check_required(cells[:width], index, line, problems)
    return Layout(index=index, header=True, width=width, columns=columns, ignored=ignored, blank=tuple(blank),
                  line=line)


def unnamed_columns(layout: Layout, cells: list[str], found: dict[int, int], row: int) -> None:
    """Note in `found` (position -> first row) each blank-headed column this row has a value in."""
    for position in layout.blank:
        if position >= len(cells):
            break  # positions ascend: the row's cells end here, so each row costs at most its length
        if cells[position] and position not in found:
            found[position] = row


def unnamed_problems(layout: Layout, found: dict[int, int]) -> list[Problem]:
    """The problems of the blank-headed columns that hold values, in column order."""
    return [Problem(None, None, _blank_message(position, row), layout.line) for position, row in sorted(found.items())]


def filled_width(cells: list[str], floor: int) -> int:
    """Return how many cells remain once empty trailing cells beyond `floor` are dropped."""
    # Spreadsheets pad rows with empty cells when any row is wider; counting down keeps this linear.
    width = len(cells)
    while width > floor and not cells[width - 1]:
        width -= 1
    return width


def _blank_message(position: int, row: int) -> str:
    return (f"Column {position + 1} of the header has no name, but row {row} has a value in it; name it "
            "(name, address or phone, for instance) or delete the column.")


def _twice_message(first: str, second: str, target: str) -> str:
    if normalised(first) == normalised(second):
        return f"The header has the column {quoted(second)} more than once; keep only one."
    return (f"The header has two columns for the {target}, {quoted(first)} and {quoted(second)}; "
            f'keep only one, or send columns={{{_json_key(second)}: "ignore"}} to read past the other.')


def _check_overrides(cells: list[str], mapped: dict[str, str], line: int | None, problems: Problems) -> None:
    present = {normalised(cell) for cell in cells}
    for key, target in mapped.items():
        if target != IGNORE and target not in FIELDS:
            problems.add(Problem(None, None, (
                f"The columns field maps {quoted(key)} to {quoted(target)}, which is not a field; use one of "
                f"{', '.join(FIELDS)} or ignore."), line))
        elif key not in present:
            problems.add(Problem(None, None, (
                f"The columns field names the column {quoted(key)}, which the header does not have; "
                f"its columns are {_named(cells)}."), line))


def _check_required(cells: list[str], index: dict[str, int], line: int | None, problems: Problems) -> None:
    for required in REQUIRED:
        if required in index:
            continue
        problems.add(Problem(None, required, (
            f"The header has no {required} column (its columns are {_named(cells)}); rename the one that holds "
            f'the {required}, or send columns={{"<that column>": "{required}"}} with the file.'), line))
        problems.add(Problem(None, required, (
            f"A column is read as the {required} when its header is one of: "
            f"{', '.join(KNOWN_NAMES[required])}."), line))


def _named(cells: list[str]) -> str:
    shown = ", ".join(quoted(cell) for cell in cells[:MAX_NAMED_COLUMNS] if cell.strip())
    more = len(cells) - MAX_NAMED_COLUMNS
    return (shown or "none") + (f" and {more} more" if more > 0 else "")


def _json_key(cell: str) -> str:
    return quoted(cell.strip().replace('"', "'"))


# GET /hospitals/template.csv: the header and two rows a person can copy.
TEMPLATE_CSV = (
    "name,address,phone\r\n"
    'General Hospital,"1 Main St, Springfield, IL 62701",555-010-0100\r\n'
    "Saint Mary's Clinic,\"22 Elm St, Boston, MA 02110\",(617) 555-0101\r\n"
)
