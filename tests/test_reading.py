"""Files as people have them (issue 14): what the bytes are, encodings, delimiters, workbooks, lines.

Each case of the issue's "What was seen" list is a plain test here; the round trips are generated
in test_reading_properties.py, the header words in test_headers.py.
"""

from __future__ import annotations

import codecs
import tracemalloc

import pytest

from bulkproc.files import workbooks
from bulkproc.files.rules import HospitalRow, ReadOptions, inspect
from tests import spreadsheets

ROWS = [HospitalRow(1, "General", "1 Main St", "555-0100"), HospitalRow(2, "Saint Mary's", "2 Elm St, Boston", None)]
TABLE = [["name", "address", "phone"], ["General", "1 Main St", "555-0100"], ["Saint Mary's", "2 Elm St, Boston", ""]]


def problems_of(data: bytes, **options) -> list[tuple[int | None, str | None, int | None]]:
    return [(p.row, p.column, p.line) for p in inspect(data, options=ReadOptions(**options)).problems]


# --- what was seen 1-3: a header is a header, in people's words ------------------------------


@pytest.mark.parametrize("header", ["Hospital,Address", "Facility,Street", "HOSPITAL NAME,Full Address",
                                    "Organisation Name,Location"])
def test_a_header_in_other_words_is_never_a_hospital(header):
    inspection = inspect(f"{header}\nGeneral,1 Main St\n".encode())
    assert inspection.valid
    assert inspection.rows == [HospitalRow(1, "General", "1 Main St", None)]
    assert inspection.total == 1 and inspection.file["header"] is True


@pytest.mark.parametrize("header", ["Hospital Name,Street Address,Phone Number", "Name,Address,Phone Number",
                                    "name,address,telephone", "Facility Name,Address Line 1,Main Phone",
                                    "name,address,Tel.", "Name:,Address #,Phone #"])
def test_a_phone_column_in_other_words_is_read_as_the_phone(header):
    inspection = inspect(f"{header}\nGeneral,1 Main St,555-0100\n".encode())
    assert inspection.problems == []
    assert inspection.rows == [HospitalRow(1, "General", "1 Main St", "555-0100")]
    assert sorted(inspection.file["columns"].values()) == ["address", "name", "phone"]


# --- what was seen 4: delimiters --------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [";", "\t", "|", ","])
def test_each_delimiter_is_read_from_the_first_line(delimiter):
    lines = [delimiter.join(["name", "address", "phone"]), delimiter.join(["General", "1 Main St", "555-0100"]),
             delimiter.join(["Saint Mary's", '"2 Elm St, Boston"', ""])]
    inspection = inspect(("\r\n".join(lines) + "\r\n").encode())
    assert inspection.problems == []
    assert inspection.rows == ROWS
    assert inspection.file["delimiter"] == delimiter


DELIMITER_CASES = {
    "semicolons_with_a_comma_in_a_cell": (b"General;1 Main St, Springfield;555-0100\n", ";"),
    "a_quoted_semicolon_does_not_count": (b'name,"a;b;c"\nA,1 Main St\n', ","),
    "blank_lines_before_the_first_line": (b"\n  \r\nname|address\nA|1\n", "|"),
    "no_delimiter_at_all_means_comma": (b"A\n", ","),
    "a_tie_goes_to_the_comma": (b"A;B,1 Main St\n", ","),
    "excel_semicolon_export_with_a_bom": (b"\xef\xbb\xbfname;address\nA;1 Main St\n", ";"),
}


@pytest.mark.parametrize("data, delimiter", DELIMITER_CASES.values(), ids=DELIMITER_CASES.keys())
def test_the_delimiter_is_the_one_found_most_often_outside_quotes(data, delimiter):
    assert inspect(data).file["delimiter"] == delimiter


def test_a_positional_semicolon_file_names_its_delimiter_when_a_row_is_too_wide():
    inspection = inspect(b"A;1 Main St;555-0100\nB;2 Main St;555-0101;extra\n")
    assert [(p.row, p.line) for p in inspection.problems] == [(2, 2)]
    assert "a semicolon must be in double quotes" in inspection.problems[0].message


# --- what was seen 5 and 6: encodings, and what a file is --------------------------------------


def test_excel_unicode_text_is_read():
    text = "Name\tAddress\tPhone\r\nHôpital Saint-Éloi\t1 rue de l'Église\t555-0100\r\n"
    inspection = inspect(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    assert inspection.problems == []
    assert inspection.rows == [HospitalRow(1, "Hôpital Saint-Éloi", "1 rue de l'Église", "555-0100")]
    assert (inspection.file["encoding"], inspection.file["delimiter"]) == ("utf-16", "\t")


def test_big_endian_utf16_is_read():
    inspection = inspect("name,address\nA,1 Main St\n".encode("utf-16-be").join([codecs.BOM_UTF16_BE, b""]))
    assert inspection.rows == [HospitalRow(1, "A", "1 Main St", None)]


WINDOWS_1252 = "name,address\nHôpital Saint-Éloi,1 rue de l'Église – côté Nord\nCafé Clinic,2 rue\n".encode("cp1252")


def test_windows_1252_is_refused_naming_it_and_how_to_send_it():
    inspection = inspect(WINDOWS_1252)
    (problem,) = inspection.problems
    assert "looks like Windows-1252" in problem.message
    assert "send encoding=windows-1252" in problem.message and "CSV UTF-8" in problem.message
    assert (problem.line, inspection.file["suggested_encoding"]) == (2, "windows-1252")
    assert inspection.rows == [] and inspection.file["format"] is None


def test_a_named_encoding_decodes_the_file():
    inspection = inspect(WINDOWS_1252, options=ReadOptions(encoding="windows-1252"))
    assert inspection.problems == []
    assert inspection.rows[0] == HospitalRow(1, "Hôpital Saint-Éloi", "1 rue de l'Église – côté Nord", None)
    assert inspection.file["encoding"] == "windows-1252"


@pytest.mark.parametrize("encoding, text", [
    ("iso-8859-1", "name,address\nH\u00f4pital,1 rue\n"),
    ("windows-1250", "name,address\nSzpital \u015awi\u0119tej \u0141ucji,ul. \u017b\u00f3\u0142ta 5\n"),
    ("mac-roman", "name,address\nCaf\u00e9 Clinic,1 Main St\n"),
    ("utf-16le", "name,address\nA,1 Main St\n"),
])
def test_the_encodings_the_spec_names_decode(encoding, text):
    codec = {"mac-roman": "mac_roman"}.get(encoding, encoding)
    inspection = inspect(text.encode(codec), options=ReadOptions(encoding=encoding))
    assert inspection.problems == []
    assert inspection.rows[0].name == text.splitlines()[1].split(",")[0]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf_16_or_32_named_for_a_file_without_a_mark_reads_little_endian(encoding):
    # schemathesis sent a UTF-8 file with encoding=utf-16: the block-at-a-time decoder refused it
    # for its missing byte-order mark, an error no reader expected (a 500).
    rows = "name,address\nGeneral,1 Main St\n"
    assert inspect(rows.encode(encoding + "-le"), options=ReadOptions(encoding=encoding)).rows[0].name == "General"
    utf8 = inspect(rows.encode("utf-8"), options=ReadOptions(encoding=encoding))
    assert not utf8.valid and utf8.problems and utf8.rows == []  # refused in words, whatever they are


def test_a_named_encoding_that_does_not_fit_names_the_line_and_byte():
    # 0x81 has no character in Windows-1252.
    inspection = inspect(b"name,address\nA,1 Main St\nB\x81,2\n", options=ReadOptions(encoding="windows-1252"))
    (problem,) = inspection.problems
    assert problem.line == 3 and "0x81" in problem.message


def test_nothing_is_transcoded_by_guess():
    # Whatever the detector thinks, without `encoding` a non-UTF-8 file yields no rows at all.
    assert inspect("name,address\nAé,1\n".encode("cp1252")).rows == []


def test_utf16_without_a_byte_order_mark_says_how_to_send_it():
    problem = inspect("name,address\nA,1 Main St\n".encode("utf-16-le")).problems[0]
    assert "encoding=utf-16le" in problem.message


KINDS = {
    "png": (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "This is a PNG image"),
    "jpeg": (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "This is a JPEG image"),
    "pdf": (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "This is a PDF document"),
    "gzip": (b"\x1f\x8b\x08\x00" + b"\x00" * 20, "This is a gzip archive"),
    "html": (b"<!DOCTYPE html>\n<html><body><table></table></body></html>", "This is a web page (HTML)"),
    "excel_2003_xml": (b'<?xml version="1.0"?>\n<Workbook xmlns="urn:schemas-microsoft-com:office:spreadsheet">',
                       "This is an Excel 2003 XML spreadsheet"),
    "plain_zip": (None, "This is a zip archive that is not a workbook"),
    "docx": (None, "This is a Word document (.docx)"),
    "damaged_zip": (b"PK\x03\x04" + b"\x00" * 30, "This is a damaged zip archive"),
}


@pytest.mark.parametrize("text", ["<!DOCTYPE HTML,0,\n", "<html clinic,1 Main St\n", "<?xml,1 Main St\n"])
def test_a_hospital_named_like_a_tag_is_a_hospital(text):
    # Found by hypothesis (make fuzz): "<!DOCTYPE HTML" was refused as a web page.
    assert inspect(text.encode()).valid


def _archive(names: list[str]) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "x")
    return buffer.getvalue()


@pytest.mark.parametrize("kind", KINDS.keys())
def test_a_file_of_another_kind_is_named(kind):
    data, words = KINDS[kind]
    data = data if data is not None else _archive(["word/document.xml"] if kind == "docx" else ["notes.txt"])
    inspection = inspect(data)
    (problem,) = inspection.problems
    assert problem.message.startswith(words), problem.message
    assert "not UTF-8" not in problem.message
    assert inspection.total == 0


# --- workbooks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("write, kind", [(spreadsheets.xlsx, "xlsx"), (spreadsheets.ods, "ods"),
                                         (spreadsheets.xls, "xls")])
def test_a_workbook_is_read_by_its_bytes(write, kind):
    inspection = inspect(write(TABLE))
    assert inspection.problems == []
    assert inspection.rows == ROWS
    assert inspection.file == {"format": kind, "sheet": "Hospitals", "sheets": ["Hospitals"], "header": True,
                               "columns": {"name": "name", "address": "address", "phone": "phone"},
                               "ignored_columns": []}


@pytest.mark.parametrize("write", [spreadsheets.xlsx, spreadsheets.ods, spreadsheets.xls])
def test_workbook_cells_read_as_a_person_sees_them(write):
    rows = [["Hospital", "Street", "City", "State", "Zip", "Phone"],
            ["General", "1 Main St", "Springfield", "IL", 62701, 5550100],
            ["Mercy", 12, "Boston", "MA", "02110", 6175550101.0]]
    inspection = inspect(write(rows))
    assert inspection.problems == []
    assert inspection.rows == [HospitalRow(1, "General", "1 Main St, Springfield, IL 62701", "5550100"),
                               HospitalRow(2, "Mercy", "12, Boston, MA 02110", "6175550101")]


def test_a_formula_is_read_as_its_computed_value():
    rows = [["name", "address", "phone"], ["General", "1 Main St", 5550100]]
    inspection = inspect(spreadsheets.ods(rows, formulas={(1, 2): "of:=5550000+100"}))
    assert inspection.rows == [HospitalRow(1, "General", "1 Main St", "5550100")]


def test_a_formula_typed_as_text_is_still_refused():
    inspection = inspect(spreadsheets.xlsx([["name", "address"], ["=HYPERLINK(1)", "1 Main St"]]))
    assert [(p.row, p.column, p.line) for p in inspection.problems] == [(1, "name", 2)]


def test_the_sheet_field_picks_a_sheet_and_an_unknown_one_lists_them():
    book = spreadsheets.xlsx(TABLE, title="Notes", more_sheets=("Hospitals 2024",))
    other = inspect(book, options=ReadOptions(sheet="Hospitals 2024"))
    assert other.file["sheet"] == "Hospitals 2024" and other.file["sheets"] == ["Notes", "Hospitals 2024"]
    missing = inspect(book, options=ReadOptions(sheet="Sheet9"))
    (problem,) = missing.problems
    assert '"Sheet9"' in problem.message and '"Notes", "Hospitals 2024"' in problem.message


def test_problems_name_the_sheet_row():
    rows = [[], ["name", "address", "phone"], [], ["General", "1 Main St", "12"], ["", "2 Elm St", ""]]
    assert problems_of(spreadsheets.xlsx(rows)) == [(1, "phone", 4), (2, "name", 5)]


def test_a_workbook_of_more_than_50_columns_is_refused():
    inspection = inspect(spreadsheets.xlsx([["name", "address"] + [f"c{n}" for n in range(49)], ["A", "1"]]))
    (problem,) = inspection.problems
    assert "51 columns" in problem.message and "at most 50" in problem.message


def test_a_workbook_over_the_row_limit_is_refused_with_its_count_without_its_rows():
    rows = [["name", "address"]] + [[f"H{n}", f"{n} Main St"] for n in range(30)]
    inspection = inspect(spreadsheets.xlsx(rows), max_rows=20)
    assert [(p.row, p.column) for p in inspection.problems] == [(None, None)]
    assert "30 data rows" in inspection.problems[0].message
    assert (inspection.rows, inspection.total) == ([], 30)


def test_a_zip_bomb_is_refused_at_once_in_bounded_memory():
    bomb = spreadsheets.zip_bomb(256)
    assert len(bomb) < 2**20
    tracemalloc.start()
    try:
        inspection = inspect(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (problem,) = inspection.problems
    assert "unpacks to 256 MiB" in problem.message
    assert peak < 8 * 2**20, peak  # refused from the declared sizes, before anything is unpacked


def test_a_sheet_spanning_the_whole_grid_is_refused_and_the_worker_lives():
    # Two cells, A1 and XFD1048576: calamine asks for the dense grid between them, 17 billion cells.
    far = spreadsheets.with_sheet_xml(spreadsheets.xlsx(TABLE), lambda xml: xml.replace(
        "</sheetData>", '<row r="1048576"><c r="XFD1048576" t="n"><v>1</v></c></row></sheetData>'))
    tracemalloc.start()
    try:
        inspection = inspect(far)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (problem,) = inspection.problems
    assert "memory and time" in problem.message
    assert peak < 8 * 2**20, peak


def test_the_reader_process_is_held_to_its_memory_limit(monkeypatch):
    # AX100000: a grid of 5 million cells, about 160 MB, which the limit of 96 MiB refuses; a
    # small workbook reads within it. Without the limit the grid would be read (and be 50 columns).
    grid = spreadsheets.with_sheet_xml(spreadsheets.xlsx(TABLE), lambda xml: xml.replace(
        "</sheetData>", '<row r="100000"><c r="AX100000" t="n"><v>1</v></c></row></sheetData>'))
    monkeypatch.setattr(workbooks, "CHILD_MEMORY_BYTES", 96 * 2**20)
    assert inspect(spreadsheets.xlsx(TABLE)).rows == ROWS
    (problem,) = inspect(grid).problems
    assert "memory and time" in problem.message


def test_a_workbook_too_slow_to_read_is_refused(monkeypatch):
    monkeypatch.setattr(workbooks, "CHILD_WAIT_SECONDS", 0.001)
    (problem,) = inspect(spreadsheets.xlsx(TABLE)).problems
    assert "too long to read" in problem.message


def test_a_damaged_workbook_is_refused():
    book = spreadsheets.xlsx(TABLE)
    (problem,) = inspect(book[: len(book) // 2] + b"\x00" * 100).problems
    assert "damaged" in problem.message


def test_an_ole2_file_that_is_not_a_workbook_is_refused():
    (problem,) = inspect(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 1000).problems
    assert "cannot be read" in problem.message


# --- lines: where a person finds a problem --------------------------------------------------------


def test_problems_name_the_line_of_the_file_beside_the_row():
    data = b'name,address,phone\n\nA,"1 Main St\nSpringfield",12\n\nB,2 Main St,555-0100\nA,"1 Main St\nSpringfield"\n'
    assert problems_of(data) == [(1, "phone", 3), (3, None, 7)]


def test_an_unclosed_quote_names_its_line():
    assert problems_of(b'name,address\nA,1 Main St\nB,"2 Main St\nC,3 Main St\n') == [(None, None, 3)]


def test_a_header_problem_names_the_header_line():
    assert problems_of(b"\n\nname,address,Name\nA,1 Main St,x\n") == [(None, "name", 3)]


# --- the result files go back in as they are ---------------------------------------------------


def test_results_csv_uploads_again_as_it_is():
    data = (b"row,name,address,phone,status,hospital_id,batch_id,error\r\n"
            b"1,General,1 Main St,555-0100,failed,,b-1,The directory refused it\r\n")
    inspection = inspect(data)
    assert inspection.problems == []
    assert inspection.rows == [HospitalRow(1, "General", "1 Main St", "555-0100")]
    assert inspection.file["ignored_columns"] == []
