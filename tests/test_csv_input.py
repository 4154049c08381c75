"""Tests for bulkproc.files.rules: the CSV rules of the contract, one case per behaviour."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from bulkproc.files.rules import (
    CsvRejected,
    HospitalRow,
    Problem,
    ReadOptions,
    accept,
    inspect,
    parse,
    phone_problem,
)

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
    # The spec's "Reading files" (issue 14): the delimiter of the first line, other columns ignored, UTF-16.
    "semicolon_separated": (b"A;1 Main St;5550100\n", [HospitalRow(1, "A", "1 Main St", "5550100")]),
    "unknown_header_column_is_ignored": (
        b"name,address,Email\nA,1 Main St,a@b.c\n",
        [HospitalRow(1, "A", "1 Main St", None)],
    ),
    "utf16_file": ("name,address\nA,1 Main St\n".encode("utf-16"), [HospitalRow(1, "A", "1 Main St", None)]),
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


def test_twenty_one_rows_are_refused_with_count_and_limit_without_their_rows():
    inspection = inspect(resource("hospitals_21.csv"))
    assert [(p.row, p.column) for p in inspection.problems] == [(None, None)]
    assert "21" in inspection.problems[0].message and "20" in inspection.problems[0].message
    assert (inspection.rows, inspection.total) == ([], 21)


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
    "a_semicolon_in_one_cell_of_a_comma_file": (b"A,1 Main St\nB;2 Main St\n", [(2, None)], "commas"),
    "header_row_wider_than_header": (b"name,address\nA,1 Main St,Springfield\n", [(1, None)], "3 fields"),
    "header_without_an_address_column": (b"name,Email\nA,a@b.c\n", [(None, "address"), (None, "address")],
                                          '"Email"'),
    "repeated_header_column": (b"name,address,Name\nA,1 Main St,B\n", [(None, "name")], '"Name" more than once'),
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
    "utf16_file_without_byte_order_mark": (
        "name,address\nA,1 Main St\n".encode("utf-16-le"), [(None, None)], "encoding=utf-16le"),
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
            "message": 'The file is not UTF-8 (the first bad byte is on line 2); it looks like Windows-1252: '
            'send encoding=windows-1252 with it or save it as "CSV UTF-8".',
            "line": 2,
        }
    ]


def test_every_problem_is_collected_with_its_row_number():
    data = b"A,1 Main St\n,2 Main St\n\nC,3 Main St,abc\nD\nE,5 Main St\nA,1 main st\n"
    assert problems_of(data) == [(2, "name"), (3, "phone"), (4, None), (6, None)]


def test_one_row_can_have_several_problems_in_column_order():
    assert problems_of(b'"","",12\n') == [(1, "name"), (1, "address"), (1, "phone")]


def test_file_problems_come_before_row_problems():
    data = b"name,address,Name\n" + b"\n".join(b",%d Main St" % i for i in range(1, 23)) + b"\n"
    problems = problems_of(data)
    assert problems[:2] == [(None, "name"), (None, None)]
    assert problems[2:] == [(i, "name") for i in range(1, 23)]


def test_problems_are_capped_at_100_then_one_line_with_how_many_more():
    data = b"\n".join(b",%d Main St" % i for i in range(1, 501)) + b"\n"
    problems = inspect(data).problems
    assert len(problems) == 101
    assert "500 data rows" in problems[0].message
    assert [p.row for p in problems[1:100]] == list(range(1, 100))
    assert (problems[100].row, problems[100].column) == (None, None)
    assert "401 more problems" in problems[100].message
    with pytest.raises(CsvRejected) as caught:
        parse(data)
    assert caught.value.message == "The CSV has 501 problems; nothing was created."


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
    assert problem.as_dict() == {"row": 3, "column": "phone", "message": "The phone is bad.", "line": None}
    assert Problem(3, "phone", "x", 4).as_dict()["line"] == 4


def test_problem_messages_are_one_sentence_without_row_prefix():
    data = b"name,address,x,name\n,\xc3\xa9,abc\nA,1,2,3,4\n"
    for problem in inspect(data).problems:
        assert problem.message[0].isupper() and problem.message.endswith(".")
        assert problem.message.count(". ") == 0


# --- Unicode, invisible characters and spreadsheet formulas ---------------------------------

NEW_RULES_ACCEPTED = {
    "double_bom_keeps_the_header": (
        resource("double_bom.csv"),
        [HospitalRow(1, "Saint Mary's", "1 Elm St, Boston", "(617) 555-0100")],
    ),
    "triple_bom_keeps_the_header": (
        b"\xef\xbb\xbf" * 3 + b"address,name\n1 Main St,A\n",
        [HospitalRow(1, "A", "1 Main St", None)],
    ),
    "failed_csv_uploaded_again_ignores_its_error_column": (
        resource("failed_reupload.csv"),
        [
            HospitalRow(1, "Saint Mary's", "1 Elm St, Boston", "(617) 555-0100"),
            HospitalRow(2, "City Clinic", "2 Oak Ave", None),
        ],
    ),
    "error_column_in_any_place_and_case": (
        b"Error,name,address\nrefused,A,1 Main St\n",
        [HospitalRow(1, "A", "1 Main St", None)],
    ),
    "nfd_text_is_stored_as_nfc": (
        "Cafe\u0301 Clinic,1 Rue de l'E\u0301glise\n".encode(),
        [HospitalRow(1, "Caf\u00e9 Clinic", "1 Rue de l'\u00c9glise", None)],
    ),
    "hyphen_plus_and_at_inside_a_name": (
        b"Saint-Jean + Clinic @ Town,1-3 Main St\n",
        [HospitalRow(1, "Saint-Jean + Clinic @ Town", "1-3 Main St", None)],
    ),
    "phone_of_40_characters": (
        b"A,1 Main St,+1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0\n",
        [HospitalRow(1, "A", "1 Main St", "+1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0")],
    ),
    "newline_inside_a_quoted_name": (
        b'"General\nHospital",1 Main St\n',
        [HospitalRow(1, "General\nHospital", "1 Main St", None)],
    ),
    "phone_written_behind_a_quote_by_our_result_files": (
        b"name,address,phone,error\nA,1 Main St,'+1 555 010 0100,refused\n",
        [HospitalRow(1, "A", "1 Main St", "+1 555 010 0100")],
    ),
    "quote_before_a_letter_is_kept": (
        b"'t Hooft Clinic,1 Main St\n",
        [HospitalRow(1, "'t Hooft Clinic", "1 Main St", None)],
    ),
    "thirty_combining_marks_in_a_row": (
        ("A" + "\u0301\u0316" * 15 + ",1 Main St\n").encode(),
        [HospitalRow(1, unicodedata.normalize("NFC", "A" + "\u0301\u0316" * 15), "1 Main St", None)],
    ),
}


@pytest.mark.parametrize("data, expected", NEW_RULES_ACCEPTED.values(), ids=NEW_RULES_ACCEPTED.keys())
def test_new_rules_accept(data, expected):
    inspection = inspect(data)
    assert inspection.problems == []
    assert inspection.rows == expected
    assert inspection.total == len(expected)


NEW_RULES_REFUSED = {
    "nul_in_name": (b"Gen\x00eral,1 Main St\n", [(1, "name")], "U+0000"),
    "ansi_escape_in_name": (b"\x1b[31mRed Cross\x1b[0m,1 Main St\n", [(1, "name")], "U+001B"),
    "tab_inside_a_name": (b'"General\tHospital",1 Main St\n', [(1, "name")], "U+0009"),
    "delete_in_address": (b"A,1 Main\x7f St\n", [(1, "address")], "U+007F"),
    "c1_next_line_in_address": ("A,1 Main\u0085 St\n".encode(), [(1, "address")], "U+0085"),
    "c1_csi_in_name": ("\u009b31mRed,1 Main St\n".encode(), [(1, "name")], "U+009B"),
    "bidi_override_in_name": ("Evil\u202eCorp,1 Main St\n".encode(), [(1, "name")], "U+202E"),
    "bidi_isolate_in_address": ("A,\u20661 Main St\u2069\n".encode(), [(1, "address")], "U+2066"),
    "control_in_phone": (b"A,1 Main St,555\x0b0100\n", [(1, "phone")], "U+000B"),
    "formula_equals_in_name": (b'"=HYPERLINK(""http://x"")",1 Main St\n', [(1, "name")], "formula"),
    "formula_plus_in_name": (b"+1 Clinic,1 Main St\n", [(1, "name")], 'starts with "+"'),
    "formula_minus_in_address": (b"A,-1 Main St\n", [(1, "address")], 'starts with "-"'),
    "formula_at_in_name": (b"@SUM(A1),1 Main St\n", [(1, "name")], 'starts with "@"'),
    "formula_after_trimmed_spaces": (b"A,  =1+1\n", [(1, "address")], "formula"),
    "formula_message_says_how_to_fix": (b"=A,1 Main St\n", [(1, "name")], "remove"),
    "nfc_and_nfd_spellings_are_duplicates": (
        "Caf\u00e9,1 Main St\nCafe\u0301,1 Main St\n".encode(),
        [(2, None)],
        "row 1",
    ),
    "duplicates_ignore_case_after_nfc": (
        "\u00c9cole,1 Main St\ne\u0301COLE,1 MAIN ST\n".encode(),
        [(2, None)],
        "row 1",
    ),
    "phone_of_41_characters": (b"A,1 Main St,555" + b" " * 34 + b"0100\n", [(1, "phone")], "at most 40"),
    "phone_with_non_ascii_digits_in_extension": (
        "A,1 Main St,555-0100 x\u0661\u0662\n".encode(),
        [(1, "phone")],
        "only digits",
    ),
    "header_with_repeated_name_column": (
        b"name,address,Name\nA,1 Main St,y\n",
        [(None, "name")],
        "more than once",
    ),
    "formula_behind_a_quote_is_still_a_formula": (b"'=HYPERLINK(1),1 Main St\n", [(1, "name")], "formula"),
    "thirty_one_combining_marks_in_a_row": (
        ("A" + "\u0301" * 31 + ",1 Main St\n").encode(),
        [(1, "name")],
        "combining",
    ),
}


@pytest.mark.parametrize("data, expected, key_words", NEW_RULES_REFUSED.values(), ids=NEW_RULES_REFUSED.keys())
def test_new_rules_refuse_naming_row_column_and_reason(data, expected, key_words):
    inspection = inspect(data)
    assert [(p.row, p.column) for p in inspection.problems] == expected
    assert key_words in inspection.problems[0].message


def test_messages_never_echo_control_characters():
    options = ReadOptions(columns={"\x1b[2J\u202e": "name"})
    inspection = inspect(b"name,address\nA,1 Main St\n", options=options)
    message = inspection.problems[0].message
    assert "which the header does not have" in message
    assert not any(unicodedata.category(char) == "Cc" or char == "\u202e" for char in message)


# --- linear time: adversarial cells that a careless check makes slow ------------------------
# Sized so that a quadratic check takes minutes; the timeout only turns such a hang into a failure.

SPACES = 100_000

LINEAR_TIME = {
    "spaces_inside_a_phone": (
        b"A,1 Main St,1" + b" " * SPACES + b"234567\n",
        [(1, "phone")],
        "at most 40",
    ),
    "spaces_before_an_extension_marker": (
        b"A,1 Main St,5550100" + b" " * SPACES + b"x\n",
        [(1, "phone")],
        "at most 40",
    ),
    "many_trailing_empty_cells_in_a_row": (b"A,1 Main St" + b"," * 400_000 + b"\n", [], None),
    "many_trailing_empty_columns_in_the_header": (
        b"name,address" + b"," * 400_000 + b"\nA,1 Main St\n",
        [],
        None,
    ),
    "a_long_run_of_combining_marks_in_a_name": (
        ("A" + "\u0301\u0316" * 300 + ",1 Main St\n").encode(),
        [(1, "name")],
        "combining",
    ),
    "a_huge_run_of_combining_marks_in_an_address": (
        ("A,1" + "\u0301\u0316" * 60_000 + "\n").encode(),
        [(1, "address")],
        "at most 200",
    ),
    "a_field_longer_than_the_csv_module_reads": (
        b"A," + b"x" * 200_000 + b"\n",
        [(None, None)],
        "longer than",
    ),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("data, expected, key_words", LINEAR_TIME.values(), ids=LINEAR_TIME.keys())
def test_adversarial_cells_are_checked_in_linear_time(data, expected, key_words):
    inspection = inspect(data)
    assert [(p.row, p.column) for p in inspection.problems] == expected
    if key_words:
        assert key_words in inspection.problems[0].message


# --- refusals stay small --------------------------------------------------------------------

RESPONSE_LIMIT = 64 * 1024

HUGE_FILES = {
    "a_megabyte_name": b"N" * 1_000_000 + b",1 Main St\n",
    "a_name_just_under_the_csv_field_limit": b"N" * 130_000 + b",1 Main St\n",
    "twenty_rows_of_long_cells": b"".join(
        b"%s,%s,%s\n" % (b"n%d" % i + b"N" * 16_000, b"a" * 16_000, b"1" * 16_000) for i in range(20)
    ),
    "a_400_kb_header_of_repeated_columns": b"name,address" + b",name" * 80_000 + b"\nA,1 Main St\n",
    "262k_rows_of_two_fields": b"a,b\n" * 262_144,
    "many_rows_with_bad_phones": b"".join(b"H%d,1 Main St,%s\n" % (i, b"9" * 39) for i in range(20_000)),
    "many_rows_with_four_fields": b"a,b,c,d\n" * 200_000,
    "control_characters_everywhere": "\u202e=A\x1b,\u2066@B\x00,\x9b1\n".encode() * 50_000,
    "an_unclosed_quote_then_a_megabyte": b'A,"' + b"x" * 1_000_000,
    "a_huge_doubled_header_cell": b"name,address,name" + b"_" * 130_000 + b"\nA,1 Main St\n",
    "astral_phones": b"".join(b"H%d,1 Main St,%s\n" % (i, "\U0001f3e5".encode() * 30) for i in range(500)),
}


def validate_body(inspection) -> bytes:
    """Shape an inspection as the validate endpoint does (ASCII-escaped JSON, as Flask sends it)."""
    body = {
        "valid": inspection.valid,
        "total_hospitals": inspection.total,
        "errors": [p.as_dict() for p in inspection.problems],
        "hospitals": [{"row": r.row, "name": r.name, "address": r.address, "phone": r.phone} for r in inspection.rows],
        "file": inspection.file,
    }
    return json.dumps(body).encode()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("data", HUGE_FILES.values(), ids=HUGE_FILES.keys())
def test_a_refused_file_is_described_in_at_most_64_kib(data):
    inspection = inspect(data)
    assert not inspection.valid
    assert len(inspection.problems) <= 101
    assert len(validate_body(inspection)) <= RESPONSE_LIMIT
    with pytest.raises(CsvRejected) as caught:
        parse(data)
    assert len(json.dumps(caught.value.details)) <= RESPONSE_LIMIT


# Other columns are ignored (issue 14), so a valid file may have a huge header: its answer stays small too.
VALID_HUGE_HEADERS = {
    "a_400_kb_header_of_unknown_columns": b"name,address" + b",z" * 200_000 + b"\nA,1 Main St\n",
    "a_400_kb_header_of_distinct_unknown_columns": b"name,address"
    + b"".join(b",z%d" % i for i in range(50_000)) + b"\nA,1 Main St\n",
    "a_huge_unknown_header_cell": b"name,address," + "\u00e9".encode() * 130_000 + b"\nA,1 Main St\n",
    "astral_unknown_header_columns": b"name,address" + ("," + "\U0001f3e5" * 30).encode() * 500 + b"\nA,1\n",
}


@pytest.mark.parametrize("data", VALID_HUGE_HEADERS.values(), ids=VALID_HUGE_HEADERS.keys())
def test_a_valid_file_with_a_huge_header_is_described_in_at_most_64_kib(data):
    inspection = inspect(data)
    assert inspection.valid, inspection.problems
    assert len(validate_body(inspection)) <= RESPONSE_LIMIT
    assert 1 <= len(inspection.file["ignored_columns"]) <= 50


def test_header_problems_are_capped_with_how_many_more():
    problems = inspect(b"name,address" + b",name" * 200_000 + b"\nA,1 Main St\n").problems
    assert len(problems) == 101
    assert "199900 more problems" in problems[-1].message


def test_a_long_cell_is_quoted_by_a_short_prefix_only():
    message = inspect(b"name,address,name" + b"_" * 100_000 + b"\nA,1 Main St\n").problems[0].message
    assert "name____" in message and len(message) < 300
    ignored = inspect(b"name,address," + b"z" * 100_000 + b"\nA,1 Main St\n").file["ignored_columns"]
    assert ignored[0].startswith("zzzz") and len(ignored[0]) <= 101


TOTALS = {
    "every_row_good": (b"A,1 Main St\nB,2 Main St\n", 20, 2),
    "a_four_field_row_and_a_bad_row": (b"A,1 Main St,x,y\n,2 Main St\n", 20, 2),
    "header_and_blank_lines_not_counted": (b"name,address\n\nA,1\n\n,\nB,2\n", 20, 2),
    "over_the_limit": (b"a,b\n" * 262_144, 20, 262_144),
    "over_the_limit_with_bad_rows": (b"a\n" * 30, 20, 30),
    "not_utf8": (b"A,1 Main St\n\xff,2\n", 20, 0),
}


@pytest.mark.parametrize("data, max_rows, total", TOTALS.values(), ids=TOTALS.keys())
def test_total_counts_every_data_row_of_the_file(data, max_rows, total):
    assert inspect(data, max_rows).total == total


OVER_THE_LIMIT = {
    "262k_distinct_rows": (b"".join(b"H%d,b\n" % i for i in range(262_144)), 20, 262_144, 1),
    # Found by hypothesis: a misshapen last row used to skip the clearing of the rows read before it.
    "last_row_misshapen": (b"a,b\n0\n", 1, 2, 2),
    "last_row_with_a_bad_phone": (b"A,1 Main St\nB,2 Main St,12\n", 1, 2, 2),
}


@pytest.mark.parametrize("data, max_rows, total, problem_count", OVER_THE_LIMIT.values(), ids=OVER_THE_LIMIT.keys())
def test_a_file_over_the_row_limit_lists_no_rows(data, max_rows, total, problem_count):
    inspection = inspect(data, max_rows)
    assert (inspection.rows, inspection.total) == ([], total)
    assert len(inspection.problems) == problem_count
    assert f"{total} data rows" in inspection.problems[0].message


def test_long_cells_of_a_refused_file_are_shortened_for_display():
    inspection = inspect(b"N" * 5000 + b",1 Main St\n")
    assert [(p.row, p.column) for p in inspection.problems] == [(1, "name")]
    assert inspection.rows[0].name.startswith("NNNN") and len(inspection.rows[0].name) <= 201


# --- large files: checked in one pass that keeps no rows, the rows read again --------------------


def large_csv(count: int, changed: dict[int, str] | None = None) -> bytes:
    """A CSV of `count` hospitals (about 50 bytes each) with a header; `changed` replaces whole rows."""
    lines = ["name,address,phone"] + [(changed or {}).get(n, f'Hospital {n},"{n} Main St, Springfield",555-010-{n:04d}')
                                      for n in range(1, count + 1)]
    return ("\n".join(lines) + "\n").encode()


def test_the_check_that_keeps_no_rows_finds_duplicates_far_apart_and_every_problem_in_order():
    # 150 KB: far past the blocks the text is decoded in, with the duplicate 2,997 rows after its first.
    data = large_csv(3000, {1500: 'Hospital 1500,"1500 Main St",abc', 2999: 'HOSPITAL  2,"2 main st,  Springfield",'})

    with pytest.raises(CsvRejected) as caught:
        accept(data, max_rows=3000)

    found = [(p.row, p.column, p.line) for p in caught.value.problems]
    assert found == [(1500, "phone", 1501), (2999, None, 3000)]
    assert "same name and address as row 2;" in caught.value.problems[1].message
    assert caught.value.problems == inspect(data, max_rows=3000).problems


def test_the_check_that_keeps_no_rows_caps_the_problems_as_inspect_does():
    data = large_csv(3000, {n: f",{n} Main St" for n in range(1, 3001, 3)})

    with pytest.raises(CsvRejected) as caught:
        accept(data, max_rows=3000)

    assert caught.value.problems == inspect(data, max_rows=3000).problems
    assert len(caught.value.problems) == 101 and "900 more problems" in caught.value.problems[-1].message
    assert caught.value.message == "The CSV has 1000 problems; nothing was created."


def file_with_edges(edges: list[int]) -> tuple[bytes, list[HospitalRow]]:
    """A UTF-8 file whose rows put, at each byte offset of `edges` in turn, a line break (\\r | \\n) or
    a 4-byte character (2 bytes | 2 bytes) across it, and the rows it holds."""
    data, rows = "name,address\r\n".encode(), []
    for edge in edges:
        while True:
            number = len(rows) + 1
            address = f"{number} Main St"
            straddle_break = len(rows) % 2 == 0
            # Bytes from the start of the row to the middle of the pair that is to straddle the edge.
            to_middle = len(f"Hospital {number}") + (len(f",{address}\r") if straddle_break else 2)
            filler = edge - len(data) - to_middle
            assert filler >= 0, f"edge {edge} is too close to the one before"
            if filler <= 150:
                break
            rows.append(HospitalRow(number, f"Hospital {number}", address, None))
            data += f"Hospital {number},{address}\r\n".encode()
        name = f"Hospital {number}" + "a" * filler + ("" if straddle_break else "\U0001f3e5")
        rows.append(HospitalRow(number, name, address, None))
        data += f"{name},{address}\r\n".encode()
        straddling = data[edge - 1:edge + 1] if straddle_break else data[edge - 2:edge + 2]
        assert straddling == (b"\r\n" if straddle_break else "\U0001f3e5".encode())
    return data, rows


def test_rows_read_again_are_the_files_rows_whatever_falls_on_the_edge_of_a_read_block():
    # 8 KiB: how much the text reader decodes at a time; 64 KiB: how much the encoding check does.
    data, rows = file_with_edges([8192, 16383, 65536, 65536 + 8191])

    accepted = accept(data, max_rows=5000)

    assert list(accepted.rows()) == rows == parse(data, max_rows=5000)
    assert accepted.total == len(rows)
    # And a line is still a line after them: a refused last row is named on the line it is on.
    with pytest.raises(CsvRejected) as caught:
        accept(data + b",no name\r\n", max_rows=5000)
    assert [(p.row, p.line) for p in caught.value.problems] == [(len(rows) + 1, len(rows) + 2)]
