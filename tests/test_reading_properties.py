"""Generated round trips (issue 14): a table of hospitals written as people's programs write it
(CSV with any delimiter and quoting, UTF-16, .xlsx, .ods) reads back to exactly its rows, and a
header in any spelling of the table's words maps to the same fields.

A small derandomized budget in `make test`; HYPOTHESIS_PROFILE=long (`make fuzz`) explores more.
"""

from __future__ import annotations

import codecs
import csv
import io
import unicodedata

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bulkproc.files.headers import KNOWN_NAMES
from bulkproc.files.rules import HospitalRow, inspect
from tests import spreadsheets
from tests.support import examples

TEXT_BUDGET = settings(max_examples=examples(60, 5_000),
                       suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
# Each workbook example writes a file and starts a reader process: a few in make test.
WORKBOOK_BUDGET = settings(max_examples=examples(12, 500),
                           suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

PARTS = ("address2", "city", "state", "postal_code")
# Written apart from bulkproc.files, so that the reading is checked against a second reading of the spec.
NORMAL = str.maketrans("_-.#:", "     ")
KNOWN = {" ".join(word.translate(NORMAL).split()) for words in KNOWN_NAMES.values() for word in words}

# Text anyone could type: no control, surrogate, unassigned or private characters, no bidi controls.
typed_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Cn", "Co", "Zl", "Zp"),
                           exclude_characters="\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff"),
    min_size=1, max_size=40,
).map(lambda text: unicodedata.normalize("NFC", " ".join(text.split())))
required_value = typed_text.filter(lambda text: text and not text.startswith(("=", "+", "-", "@", "'")))
part_value = st.one_of(st.just(""), typed_text.filter(lambda text: not text.startswith("'")))


@st.composite
def phones(draw) -> str:
    digits = draw(st.text(alphabet="0123456789", min_size=7, max_size=15))
    separator = draw(st.sampled_from(["", " ", "-", "."]))
    return draw(st.sampled_from(["", "+"])) + separator.join([digits[:3], digits[3:]])


def comparable(value: str) -> str:
    return unicodedata.normalize("NFC", " ".join(value.split()).casefold())


def joined(street: str, parts: dict[str, str]) -> str:
    region = " ".join(p for p in (parts.get("state", ""), parts.get("postal_code", "")) if p)
    return ", ".join(p for p in (street, parts.get("address2", ""), parts.get("city", ""), region) if p)


@st.composite
def spelled(draw, word: str) -> str:
    """`word` as a person might type it in a header: any case, any of `_ - .` between words, a `#` or `:`."""
    cased = "".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in word)
    between = draw(st.sampled_from([" ", "_", "-", ".", "  ", " - "]))
    return (draw(st.sampled_from(["", " ", "#"])) + between.join(cased.split(" "))
            + draw(st.sampled_from(["", " ", ":", " #", "_"])))


@st.composite
def tables(draw) -> tuple[list[str] | None, list[list[str]], list[HospitalRow], dict[str, str]]:
    """A header (or None), its rows of text, the rows they must read as, and header cell -> field."""
    fields = ["name", "address"] + draw(st.lists(st.sampled_from(("phone",) + PARTS), unique=True))
    fields = draw(st.permutations(fields))
    with_header = draw(st.booleans())
    if not with_header:
        fields = ["name", "address"] + draw(st.sampled_from([[], ["phone"]]))
    count = draw(st.integers(1, 12))
    rows, expected, seen = [], [], set()
    for number in range(1, count + 1):
        values = {f: draw(required_value) for f in ("name", "address")}
        values.update({f: draw(part_value) for f in fields if f in PARTS})
        values["phone"] = draw(st.one_of(st.just(""), phones())) if "phone" in fields else ""
        address = unicodedata.normalize("NFC", joined(values["address"], values))
        key = (comparable(values["name"]), comparable(address))
        assume(key not in seen and len(address) <= 200)
        seen.add(key)
        rows.append([values[f] for f in fields])
        expected.append(HospitalRow(number, values["name"], address, values["phone"] or None))
    header = [draw(spelled(draw(st.sampled_from(KNOWN_NAMES[f])))) for f in fields] if with_header else None
    if header is None:
        assume(not any(" ".join(cell.casefold().translate(NORMAL).split()) in KNOWN for cell in rows[0]))
    return header, rows, expected, dict(zip(header or [], fields, strict=False))


def csv_text(records: list[list[str]], delimiter: str, quoting: int, line_end: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator=line_end).writerows(records)
    return buffer.getvalue()


def first_line_delimiter(line: str) -> str:
    """The spec's delimiter rule, written apart: the most frequent of `, ; tab |` outside quotes, `,` on a tie."""
    counts = dict.fromkeys([",", ";", "\t", "|"], 0)
    quoted = False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] else ","


def assert_reads_back(data: bytes, header, expected, fields) -> dict:
    inspection = inspect(data)
    assert inspection.problems == [], inspection.problems
    assert inspection.rows == expected
    if header:
        assert dict(zip(inspection.file["columns"].values(), inspection.file["columns"], strict=True)) == \
            {field: cell.strip() for cell, field in fields.items()}
    return inspection.file


@TEXT_BUDGET
@given(tables(), st.sampled_from([",", ";", "\t", "|"]),
       st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONNUMERIC]),
       st.sampled_from(["\n", "\r\n", "\r"]), st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-be-bom"]))
def test_a_text_table_reads_back_to_exactly_its_rows(table, delimiter, quoting, line_end, encoding):
    header, rows, expected, fields = table
    # The spec's rule reads the delimiter off the first line: a positional first row holding more
    # of another delimiter, unquoted, than of its own is read by that one, as it should be.
    assume(first_line_delimiter(csv_text(([header] if header else rows)[:1], delimiter, quoting, "")) == delimiter)
    text = csv_text(([header] if header else []) + rows, delimiter, quoting, line_end)
    data = codecs.BOM_UTF16_BE + text.encode("utf-16-be") if encoding == "utf-16-be-bom" else text.encode(encoding)
    file = assert_reads_back(data, header, expected, fields)
    assert file["delimiter"] == delimiter and file["format"] == "csv"


@WORKBOOK_BUDGET
@given(tables(), st.sampled_from(["xlsx", "ods"]))
def test_a_workbook_table_reads_back_to_exactly_its_rows(table, kind):
    header, rows, expected, fields = table
    write = spreadsheets.xlsx if kind == "xlsx" else spreadsheets.ods
    data = write(([header] if header else []) + rows)
    file = assert_reads_back(data, header, expected, fields)
    assert file["format"] == kind
