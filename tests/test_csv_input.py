"""Tests for bulkproc.csv_input: the CSV rules of the contract, one case per behaviour."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkproc.csv_input import CsvRejected, HospitalRow, Problem, inspect, parse, phone_problem

RESOURCES = Path(__file__).parent / "resources"


def resource(name: str) -> bytes:
    return (RESOURCES / name).read_bytes()


def problems_of(data: bytes, max_rows: int = 20) -> list[tuple[int | None, str | None]]:
    return [(p.row, p.column) for p in inspect(data, max_rows).problems]


# --- accepted input -------------------------------------------------------------------------

ACCEPTED = {
    "bom_and_crlf": (
        resource("with_bom_crlf.csv"),
        [
            HospitalRow(1, "Saint Mary's", "1 Elm St, Boston", "(617) 555-0100"),
            HospitalRow(2, "City Clinic", "2 Oak Ave", None),
        ],
    ),
    "positional_without_header": (
        resource("no_header.csv"),
        [
            HospitalRow(1, "General Hospital", "10 Main St, Springfield", "555-0100 x12"),
            HospitalRow(2, "River Clinic", "22 River Rd", None),
        ],
    ),
    "bom_without_header": (
        b'\xef\xbb\xbfA,"1 Main St"\n',
        [HospitalRow(1, "A", "1 Main St", None)],
    ),
    "crlf_line_endings": (
        b"A,1 Main St,555 0100 1\r\nB,2 Main St\r\n",
        [HospitalRow(1, "A", "1 Main St", "555 0100 1"), HospitalRow(2, "B", "2 Main St", None)],
    ),
    "quoted_comma_is_one_field": (
        b'A,"1 Main St, Springfield, IL"\n',
        [HospitalRow(1, "A", "1 Main St, Springfield, IL", None)],
    ),
    "quoted_newline_is_one_field": (
        b'A,"1 Main St\nSpringfield"\nB,2 Main St\n',
        [HospitalRow(1, "A", "1 Main St\nSpringfield", None), HospitalRow(2, "B", "2 Main St", None)],
    ),
    "quoted_crlf_newline_is_kept": (
        b'A,"1 Main St\r\nSpringfield"\r\n',
        [HospitalRow(1, "A", "1 Main St\r\nSpringfield", None)],
    ),
    "doubled_quotes_are_one_quote": (
        b'"The ""Good"" Hospital",1 Main St\n',
        [HospitalRow(1, 'The "Good" Hospital', "1 Main St", None)],
    ),
    "header_in_any_order_and_case": (
        b" PHONE , Address,NaMe \n555-010-0001,1 Main St,A\n",
        [HospitalRow(1, "A", "1 Main St", "555-010-0001")],
    ),
    "header_without_phone_column": (
        b"address,name\n1 Main St,A\n",
        [HospitalRow(1, "A", "1 Main St", None)],
    ),
    "header_row_shorter_than_header_has_no_phone": (
        b"name,address,phone\nA,1 Main St\n",
        [HospitalRow(1, "A", "1 Main St", None)],
    ),
    "positional_with_empty_phone": (
        b"A,1 Main St,\n",
        [HospitalRow(1, "A", "1 Main St", None)],
    ),
    "blank_lines_are_skipped_and_not_counted": (
        b"\n\nname,address\n\nA,1 Main St\n  ,  \n\r\n,,\nB,2 Main St\n\n",
        [HospitalRow(1, "A", "1 Main St", None), HospitalRow(2, "B", "2 Main St", None)],
    ),
    "surrounding_spaces_are_trimmed": (
        b'  A  ,\t1 Main St ,  " 555 0100 1 "\n',
        [HospitalRow(1, "A", "1 Main St", "555 0100 1")],
    ),
    "whitespace_only_phone_means_none": (
        b"A,1 Main St,   \n",
        [HospitalRow(1, "A", "1 Main St", None)],
    ),
    "trailing_empty_cells_are_ignored": (
        b"A,1 Main St,5550100,,\nname,address,,\n",
        [HospitalRow(1, "A", "1 Main St", "5550100"), HospitalRow(2, "name", "address", None)],
    ),
    "header_with_trailing_empty_columns": (
        b"name,address,,\nA,1 Main St,,\n",
        [HospitalRow(1, "A", "1 Main St", None)],
    ),
    "name_of_200_characters": (
        b"N" * 200 + b",1 Main St\n",
        [HospitalRow(1, "N" * 200, "1 Main St", None)],
    ),
    "address_of_200_non_ascii_characters": (
        "A,".encode() + ("é" * 200).encode() + b"\n",
        [HospitalRow(1, "A", "é" * 200, None)],
    ),
    "space_before_quoted_field_keeps_its_comma": (
        b'A, "1 Main St, Springfield", 5550100\n',
        [HospitalRow(1, "A", "1 Main St, Springfield", "5550100")],
    ),
    "same_name_different_address": (
        b"A,1 Main St\nA,2 Main St\n",
        [HospitalRow(1, "A", "1 Main St", None), HospitalRow(2, "A", "2 Main St", None)],
    ),
}


@pytest.mark.parametrize("data, expected", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_accepted_input_gives_rows(data, expected):
    inspection = inspect(data)
    assert inspection.problems == []
    assert inspection.valid
    assert inspection.rows == expected
    assert parse(data) == expected


def test_twenty_rows_are_accepted():
    rows = parse(resource("hospitals_20.csv"))
    assert [row.row for row in rows] == list(range(1, 21))
    assert rows[0] == HospitalRow(1, "General Hospital 1", "1 Main Street, Springfield", "+1 555 010 0001")


def test_twenty_one_rows_are_refused_with_count_and_limit():
    inspection = inspect(resource("hospitals_21.csv"))
    assert [(p.row, p.column) for p in inspection.problems] == [(None, None)]
    assert "21" in inspection.problems[0].message and "20" in inspection.problems[0].message
    assert len(inspection.rows) == 21


def test_max_rows_is_a_parameter():
    assert inspect(resource("hospitals_20.csv"), max_rows=25).valid
    assert problems_of(resource("hospitals_20.csv"), max_rows=19) == [(None, None)]


# --- phones ---------------------------------------------------------------------------------

GOOD_PHONES = [
    "5550100",
    "+1 555 010 0100",
    "+44 (0)20 7946 0958",
    "(+44) 20 7946 0958",
    "(617) 555-0100",
    "617.555.0100",
    "555-0100 x123",
    "555-0100x123",
    "555-0100 ext 123",
    "555-0100 ext. 123",
    "555-0100 Ext.123",
    "555-0100 extension 4",
    "555-0100 #123",
    "1" * 20,
]


@pytest.mark.parametrize("phone", GOOD_PHONES)
def test_good_phone_is_accepted(phone):
    assert phone_problem(phone) is None
    assert parse(f'A,1 Main St,"{phone}"\n'.encode())[0].phone == phone


BAD_PHONES = {
    "letters": ("555-CALL-NOW", "only digits"),
    "letters_after_number": ("5550100 call after 5", "only digits"),
    "too_few_digits": ("555-010", "6 digits"),
    "too_many_digits": ("1" * 21, "21 digits"),
    "plus_in_the_middle": ("555+0100123", "leading +"),
    "extension_only": ("x123456", "0 digits"),
    "extension_of_seven_digits": ("5550100 x1234567", "only digits"),
    "extension_digits_do_not_count": ("555 01 x12345", "5 digits"),
    "extension_without_digits": ("555-0100 ext", "extension"),
    "slash": ("555/0100123", "only digits"),
}


@pytest.mark.parametrize("phone, key_words", BAD_PHONES.values(), ids=BAD_PHONES.keys())
def test_bad_phone_is_refused_saying_why(phone, key_words):
    inspection = inspect(f"A,1 Main St,{phone}\n".encode())
    assert [(p.row, p.column) for p in inspection.problems] == [(1, "phone")]
    message = inspection.problems[0].message
    assert key_words in message and phone in message


# --- refused input --------------------------------------------------------------------------

REFUSED = {
    "empty_file": (b"", [(None, None)], "no data rows"),
    "only_blank_lines": (b"\n \r\n , ,\n", [(None, None)], "no data rows"),
    "header_only": (b"name,address,phone\n", [(None, None)], "no data rows"),
    "bom_only": (b"\xef\xbb\xbf", [(None, None)], "no data rows"),
    "four_positional_fields": (b"A,1 Main St,Springfield,5550100\n", [(1, None)], "4 fields"),
    "four_positional_fields_mention_quoting": (b"A,1 Main St,Springfield,5550100\n", [(1, None)], "double quotes"),
    "one_positional_field": (b"A\n", [(1, None)], "1 field"),
    "semicolon_separated": (b"A;1 Main St;5550100\n", [(1, None)], "commas"),
    "header_row_wider_than_header": (b"name,address\nA,1 Main St,Springfield\n", [(1, None)], "3 fields"),
    "unknown_header_column": (b"name,address,Email\nA,1 Main St,a@b.c\n", [(None, "Email")], "unknown"),
    "repeated_header_column": (b"name,address,Name\nA,1 Main St,B\n", [(None, "Name")], "more than once"),
    "blank_header_column": (b"name,,address\nA,x,1 Main St\n", [(None, None)], "Column 2"),
    "missing_name": (b",1 Main St\n", [(1, "name")], "name is empty"),
    "missing_name_in_header_mode": (b"address,name\n1 Main St\n", [(1, "name")], "name is empty"),
    "whitespace_only_address": (b'A,"   "\n', [(1, "address")], "address is empty"),
    "name_of_201_characters": (b"N" * 201 + b",1 Main St\n", [(1, "name")], "201 characters"),
    "address_of_201_characters": (b"A," + b"x" * 201 + b"\n", [(1, "address")], "at most 200"),
    "duplicate_rows_differ_in_case_and_spaces": (
        b"General Hospital,1 Main St\nB,2 Main St\n general  HOSPITAL ,1 MAIN ST\n",
        [(3, None)],
        "row 1",
    ),
    "not_utf8_latin1_e_acute": (b"name,address\nH\xf4pital,1 rue\n", [(None, None)], '"CSV UTF-8"'),
    "not_utf8_says_line": (b"name,address\nA,1 Main St\nH\xe9,1 rue\n", [(None, None)], "line 3"),
    "utf16_file": ("name,address\nA,1 Main St\n".encode("utf-16"), [(None, None)], "not UTF-8"),
    "unclosed_quote": (b'A,1 Main St\nB,"2 Main St\nC,3 Main St\n', [(None, None)], "line 2"),
    "text_after_closing_quote": (b'A,"1 Main" St\n', [(None, None)], "closing quote"),
    "unclosed_quote_at_end": (b'A,1 Main St\nB,"2 Main St\n', [(None, None)], "never closed"),
}


@pytest.mark.parametrize("data, expected, key_words", REFUSED.values(), ids=REFUSED.keys())
def test_refused_input_names_row_column_and_reason(data, expected, key_words):
    inspection = inspect(data)
    assert not inspection.valid
    assert [(p.row, p.column) for p in inspection.problems] == expected
    assert key_words in inspection.problems[0].message


def test_not_utf8_resource_file_is_refused():
    inspection = inspect(resource("not_utf8.csv"))
    assert inspection.rows == []
    assert [p.as_dict() for p in inspection.problems] == [
        {
            "row": None,
            "column": None,
            "message": 'The file is not UTF-8 (the first bad byte is on line 2); '
            'save it as "CSV UTF-8" and upload it again.',
        }
    ]


def test_every_problem_is_collected_with_its_row_number():
    data = b"A,1 Main St\n,2 Main St\n\nC,3 Main St,abc\nD\nE,5 Main St\nA,1 main st\n"
    assert problems_of(data) == [(2, "name"), (3, "phone"), (4, None), (6, None)]


def test_one_row_can_have_several_problems_in_column_order():
    assert problems_of(b'"","",12\n') == [(1, "name"), (1, "address"), (1, "phone")]


def test_file_problems_come_before_row_problems():
    data = b"name,address,fax\n" + b"\n".join(b",%d Main St" % i for i in range(1, 23)) + b"\n"
    problems = problems_of(data)
    assert problems[:2] == [(None, "fax"), (None, None)]
    assert problems[2:] == [(i, "name") for i in range(1, 23)]


def test_row_problems_are_capped_with_a_note():
    data = b"\n".join(b",%d Main St" % i for i in range(1, 501)) + b"\n"
    problems = inspect(data).problems
    assert [(p.row, p.column) for p in problems[:2]] == [(None, None), (None, None)]
    assert "500 data rows" in problems[0].message
    assert "400 more" in problems[1].message
    assert [p.row for p in problems[2:]] == list(range(1, 101))


def test_rows_with_value_problems_are_still_returned_for_display():
    inspection = inspect(b"A,1 Main St,abc\nB\nC,3 Main St\n")
    assert [row.row for row in inspection.rows] == [1, 3]
    assert inspection.rows[0].phone == "abc"


def test_parse_raises_csv_rejected_with_every_problem():
    with pytest.raises(CsvRejected) as caught:
        parse(b",1 Main St\nB,2 Main St,12\n")
    error = caught.value
    assert [(p.row, p.column) for p in error.problems] == [(1, "name"), (2, "phone")]
    assert str(error) == error.message == "The CSV has 2 problems; nothing was created."
    assert error.details == [p.as_dict() for p in error.problems]


def test_csv_rejected_message_for_one_problem_is_singular():
    assert CsvRejected([Problem(None, None, "x")]).message == "The CSV has 1 problem; nothing was created."


def test_problem_as_dict_has_row_column_and_message():
    problem = Problem(3, "phone", "The phone is bad.")
    assert problem.as_dict() == {"row": 3, "column": "phone", "message": "The phone is bad."}


def test_problem_messages_are_one_sentence_without_row_prefix():
    data = b"name,address,x,name\n,\xc3\xa9,abc\nA,1,2,3,4\n"
    for problem in inspect(data).problems:
        assert problem.message[0].isupper() and problem.message.endswith(".")
        assert problem.message.count(". ") == 0
