"""Header rows in people's own words: the spec's table, `columns`, the address joined from its parts."""

from __future__ import annotations

import pytest

from bulkproc.files.headers import KNOWN_NAMES, TEMPLATE_CSV, normalised
from bulkproc.files.rules import HospitalRow, ReadOptions, inspect


def read(text: str, **options):
    return inspect(text.encode(), options=ReadOptions(**options))


@pytest.mark.parametrize("field, word", [(f, w) for f, words in KNOWN_NAMES.items() for w in words])
def test_every_word_of_the_table_means_its_field(field, word):
    others = {"name": "Hospital", "address": "Street"}
    header = [word] + [cell for f, cell in others.items() if f != field]
    inspection = read(",".join(header) + "\n" + ",".join(["x1"] + ["1 Main St"] * (len(header) - 1)) + "\n")
    assert inspection.file["columns"][word] == field


@pytest.mark.parametrize("cell, words", [
    ("  Phone_Number ", "phone number"), ("ZIP-CODE", "zip code"), ("Address.Line.1", "address line 1"),
    ("Tel #", "tel"), ("Name:", "name"), ("STREET   ADDRESS", "street address"), ("Straße", "strasse"),
])
def test_cells_are_trimmed_case_folded_and_separators_read_as_spaces(cell, words):
    assert normalised(cell) == words


def test_the_address_is_joined_from_its_parts():
    inspection = read("Facility Name,Street,Suite,City,State,Zip,Tel\n"
                      "General,1 Main St,Suite 4,Springfield,IL,62701,555-0100\n"
                      "Mercy,2 Elm St,,Boston,,02110,\n"
                      "Hope,3 Oak Ave,,,,,\n")
    assert inspection.problems == []
    assert [row.address for row in inspection.rows] == ["1 Main St, Suite 4, Springfield, IL 62701",
                                                        "2 Elm St, Boston, 02110", "3 Oak Ave"]


def test_a_city_alone_is_no_address():
    inspection = read("name,street,city\nGeneral,,Springfield\n")
    assert [(p.row, p.column) for p in inspection.problems] == [(1, "address")]


def test_a_joined_address_over_200_characters_is_refused():
    inspection = read(f"name,address,city\nGeneral,{'a' * 150},{'b' * 60}\n")
    assert [(p.row, p.column) for p in inspection.problems] == [(1, "address")]
    assert "212 characters" in inspection.problems[0].message


def test_other_columns_are_ignored_and_reported_and_result_columns_silently():
    inspection = read("ID,Hospital,Street,Notes,error,status,Batch ID\n7,General,1 Main St,call first,x,failed,b\n")
    assert inspection.rows == [HospitalRow(1, "General", "1 Main St", None)]
    assert inspection.file["ignored_columns"] == ["ID", "Notes"]
    assert inspection.file["columns"] == {"Hospital": "name", "Street": "address"}


def test_failed_csv_uploads_again_as_it_is():
    inspection = read("name,address,phone,error\r\nGeneral,1 Main St,'+1 555 010 0100,The directory refused it\r\n")
    assert inspection.rows == [HospitalRow(1, "General", "1 Main St", "+1 555 010 0100")]
    assert inspection.file["ignored_columns"] == []


def test_a_header_without_a_name_column_lists_its_columns_and_the_words():
    inspection = read("Title,Street,Phone\nGeneral,1 Main St,555-0100\n")
    assert [(p.row, p.column, p.line) for p in inspection.problems] == [(None, "name", 1), (None, "name", 1)]
    listing, words = (p.message for p in inspection.problems)
    assert '"Title", "Street", "Phone"' in listing and 'columns={"<that column>": "name"}' in listing
    assert "hospital name" in words and "facility" in words


def test_two_columns_for_one_field_are_refused():
    inspection = read("Hospital,Facility Name,Address\nA,B,1 Main St\n")
    assert [(p.row, p.column) for p in inspection.problems] == [(None, "name")]
    assert '"Hospital" and "Facility Name"' in inspection.problems[0].message


def test_columns_maps_a_header_cell_to_a_field_or_ignores_it():
    inspection = read("Site,Where,Hospital\nGeneral,1 Main St,old name\n",
                      columns={"site": "name", "WHERE": "address", "Hospital": "ignore"})
    assert inspection.problems == []
    assert inspection.rows == [HospitalRow(1, "General", "1 Main St", None)]
    assert inspection.file["columns"] == {"Site": "name", "Where": "address"}
    assert inspection.file["ignored_columns"] == []


def test_columns_overrides_the_table():
    inspection = read("name,address,Location\nGeneral,old,1 Main St\n", columns={"address": "ignore",
                                                                                   "Location": "address"})
    assert inspection.rows == [HospitalRow(1, "General", "1 Main St", None)]


@pytest.mark.parametrize("columns, words", [
    ({"Nope": "name"}, "which the header does not have"),
    ({"Site": "hospital"}, "which is not a field"),
])
def test_columns_naming_what_is_not_there_is_refused(columns, words):
    inspection = read("Site,address\nGeneral,1 Main St\n", columns=columns)
    assert any(words in p.message for p in inspection.problems), inspection.problems


def test_the_first_row_is_a_header_when_columns_names_its_cells():
    inspection = read("Site,Where\nGeneral,1 Main St\n", columns={"Site": "name", "Where": "address"})
    assert inspection.total == 1 and inspection.file["header"]


def test_a_positional_file_keeps_reading_by_position():
    inspection = read("General,1 Main St,555-0100\n")
    assert inspection.rows == [HospitalRow(1, "General", "1 Main St", "555-0100")]
    assert (inspection.file["header"], inspection.file["columns"]) == (False, {})


def test_the_template_is_a_valid_file():
    inspection = read(TEMPLATE_CSV)
    assert inspection.valid and inspection.total == 2


def test_an_empty_spacer_column_without_a_header_is_read_past():
    inspection = read("name,,address\nGeneral,,1 Main St\nMercy, ,2 Elm St\n")
    assert inspection.problems == []
    assert [row.address for row in inspection.rows] == ["1 Main St", "2 Elm St"]


def test_a_value_under_a_blank_header_cell_is_refused_naming_the_column_and_row():
    inspection = read("name,,address\nGeneral,,1 Main St\nMercy,x,2 Elm St\n")
    assert [(p.row, p.column, p.line) for p in inspection.problems] == [(None, None, 1)]
    assert "Column 2" in inspection.problems[0].message and "row 2" in inspection.problems[0].message


@pytest.mark.timeout(30)
def test_many_blank_header_cells_are_checked_in_linear_time():
    blanks = b"," * 400_000
    inspection = inspect(b"name" + blanks + b"address\n" + b"".join(b"H%d" % n + blanks + b"1 Main St\n"
                                                                  for n in range(3)))
    assert inspection.valid and inspection.total == 3
