"""Generated tests for bulkproc.files.rules: any bytes give rows or a refusal, with problems that point at real places."""

from __future__ import annotations

import csv
import io
import re
import unicodedata

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bulkproc.files.headers import is_header
from bulkproc.files.rules import MAX_LISTED_PROBLEMS, CsvRejected, HospitalRow, accept, inspect, parse
from tests.support import examples

# 200 derandomized examples each in `make test`; HYPOTHESIS_PROFILE=long (make fuzz) explores far more.
BUDGET = settings(max_examples=examples(200, 20_000))

# Since issue 14 a header may also name the address's parts; a problem may be about any field.
COLUMNS = (None, "name", "address", "phone", "address2", "city", "state", "postal_code")
# Written independently of csv_input, so that the rules are checked against a second reading of the spec.
INVISIBLE = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
PHONE = re.compile(r"\(?\+?[0-9 ().-]*(?: *(?:extension|ext\.?|x|#) *[0-9]{1,6})?", re.IGNORECASE)
NASTY = [
    "", " ", ",", '"', '""', "\n", "\r\n", "\r", "\t", ";", "\x00", "\x1b[31m", "\x7f", "\x85", "\x9b",
    "\u202e", "\u2066", "\u2069", "\ufeff", "=", "+", "-", "@", "e\u0301", "\u0301" * 31, "name",
    "address", "phone", "error", "NAME", "x12", "555-0100", "+1 (555) 010-0100 ext. 12", " " * 50,
    "N" * 201, "9" * 41, "\u00e9", "\U0001f3e5", "\u1100\u1161\u11a8",
]


def check_invariants(data: bytes, max_rows: int) -> None:
    """Assert what holds for every input: rows or a refusal, and problems naming places that exist."""
    inspection = inspect(data, max_rows)
    assert inspection.valid == (inspection.problems == [])
    assert len(inspection.problems) <= MAX_LISTED_PROBLEMS + 1
    assert inspection.problem_count >= len(inspection.problems) - 1
    assert (inspection.problem_count == 0) == inspection.valid
    for problem in inspection.problems:
        assert problem.row is None or 1 <= problem.row <= inspection.total
        assert problem.column in COLUMNS
        assert isinstance(problem.message, str) and 0 < len(problem.message) <= 400
        assert not INVISIBLE.search(problem.message)
    numbers = [row.row for row in inspection.rows]
    assert numbers == sorted(set(numbers)) and all(1 <= n <= inspection.total for n in numbers)
    if inspection.total > max_rows:
        assert inspection.rows == []
    if inspection.valid:
        assert parse(data, max_rows) == inspection.rows
        assert_rows_obey_the_rules(inspection.rows, max_rows)
        # The check that keeps no rows reads them again exactly as inspect kept them, as often as asked.
        accepted = accept(data, max_rows)
        assert accepted.total == inspection.total
        assert list(accepted.rows()) == inspection.rows == list(accepted.rows())
    else:
        for check in (parse, accept):
            try:
                check(data, max_rows)
            except CsvRejected as exc:
                assert exc.problems == inspection.problems
                assert str(inspection.problem_count) in exc.message
            else:
                raise AssertionError(f"{check.__name__} accepted a file that inspect refused")


def assert_rows_obey_the_rules(rows: list[HospitalRow], max_rows: int) -> None:
    assert 1 <= len(rows) <= max_rows
    assert [row.row for row in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        for value in (row.name, row.address):
            assert value and len(value) <= 200 and value == value.strip()
            assert not value.startswith(("=", "+", "-", "@"))
            assert_clean_text(value)
        if row.phone is not None:
            assert 0 < len(row.phone) <= 40 and row.phone == row.phone.strip()
            assert_clean_text(row.phone)
            assert PHONE.fullmatch(row.phone)
    keys = [(comparable(row.name), comparable(row.address)) for row in rows]
    assert len(set(keys)) == len(keys)


def assert_clean_text(value: str) -> None:
    assert unicodedata.is_normalized("NFC", value)
    assert not INVISIBLE.search(value)


def comparable(value: str) -> str:
    return unicodedata.normalize("NFC", " ".join(value.split()).casefold())


# --- arbitrary bytes --------------------------------------------------------------------------


@BUDGET
@given(st.binary(max_size=3000), st.integers(min_value=1, max_value=30))
def test_arbitrary_bytes_give_rows_or_a_refusal(data, max_rows):
    check_invariants(data, max_rows)


@BUDGET
@given(st.text(max_size=1500), st.integers(min_value=1, max_value=30))
def test_arbitrary_text_gives_rows_or_a_refusal(text, max_rows):
    check_invariants(text.encode("utf-8", "surrogatepass"), max_rows)


# --- structured, near-valid files -------------------------------------------------------------

cell_text = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=30),
    st.lists(st.sampled_from(NASTY) | st.text(max_size=5), max_size=6).map("".join),
)


@st.composite
def near_valid_files(draw) -> bytes:
    """Files shaped like uploads (a header or not, quoting, line endings) whose cells may be anything."""
    header = draw(st.none() | st.lists(st.sampled_from(["name", "address", "phone", "error", "Name", "fax", ""]),
                                       min_size=1, max_size=5))
    width = len(header) if header else 3
    rows = draw(st.lists(st.lists(cell_text, min_size=max(0, width - 2), max_size=width + 2), max_size=25))
    records = ([header] if header else []) + rows
    if draw(st.booleans()):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"]))).writerows(records)
        text = buffer.getvalue()
    else:
        text = "".join(",".join(cells) + "\n" for cells in records)
    return "\ufeff".encode() * draw(st.integers(0, 2)) + text.encode("utf-8", "surrogatepass")


@BUDGET
@given(near_valid_files(), st.integers(min_value=1, max_value=25))
def test_near_valid_files_give_rows_or_a_refusal(data, max_rows):
    check_invariants(data, max_rows)


# --- round trip: a valid file parses to exactly its rows --------------------------------------

# Text anyone could type: no control, surrogate or unassigned characters, no bidi controls, no BOM.
typed_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Cn", "Co"),
                           exclude_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"),
    min_size=1,
    max_size=60,
).map(lambda text: unicodedata.normalize("NFC", text).strip())
# A quote before a formula sign is how the result files write such a cell: it reads as the formula
# (make fuzz found "'=" generated as a valid address).
required_value = typed_text.filter(lambda text: text and not text.startswith(("=", "+", "-", "@"))
                                   and not (text.startswith("'") and text[1:].startswith(("=", "+", "-", "@"))))


@st.composite
def phones(draw) -> str:
    groups = draw(st.lists(st.text(alphabet="0123456789", min_size=1, max_size=4), min_size=1, max_size=6))
    digits = "".join(groups)
    assume(7 <= len(digits) <= 20)
    number = draw(st.sampled_from(["", "+"])) + draw(st.sampled_from([" ", "-", "."])).join(groups)
    extension = draw(st.sampled_from(["", " x", " ext. ", "#", " extension "]))
    phone = number + (extension + draw(st.text(alphabet="0123456789", min_size=1, max_size=6)) if extension else "")
    assume(len(phone) <= 40)
    return phone


@st.composite
def valid_files(draw) -> tuple[bytes, list[HospitalRow]]:
    """A file that follows every rule, written in one of the accepted layouts, and the rows it holds."""
    hospitals = draw(st.lists(st.tuples(required_value, required_value, st.none() | phones()),
                              min_size=1, max_size=20,
                              unique_by=lambda h: (comparable(h[0]), comparable(h[1]))))
    expected = [HospitalRow(n, name, address, phone) for n, (name, address, phone) in enumerate(hospitals, 1)]
    columns = draw(st.permutations(["name", "address", "phone", "error"]))
    with_header = draw(st.booleans())
    if not with_header:
        columns = ["name", "address", "phone"]
        # Since issue 14 any known header word makes the first row a header.
        assume(not is_header(list(hospitals[0][:2]), {}))
        # ...and the delimiter is the one found most often in the first line, outside quotes: a first
        # row holding more unquoted `;`, tabs or `|` than commas is read by that one (make fuzz found one).
        first = io.StringIO()
        csv.writer(first).writerow([hospitals[0][0], hospitals[0][1], hospitals[0][2] or ""])
        unquoted = re.sub(r'"[^"]*"', "", first.getvalue())
        assume(all(unquoted.count(other) <= unquoted.count(",") for other in (";", "\t", "|")))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    if with_header:
        writer.writerow([column.upper() if draw(st.booleans()) else column for column in columns])
    for row in expected:
        values = {"name": row.name, "address": row.address, "phone": row.phone or "", "error": "was refused"}
        writer.writerow([values[column] for column in columns])
    return "\ufeff".encode() * draw(st.integers(0, 2)) + buffer.getvalue().encode(), expected


@settings(max_examples=examples(200, 20_000), suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(valid_files())
def test_a_valid_file_parses_to_exactly_its_rows(file):
    data, expected = file
    assert parse(data) == expected
    check_invariants(data, 20)
