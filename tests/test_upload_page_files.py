"""The upload page shows how a file was read and lets a person pick what it needs (issue 14), in Chromium."""

from __future__ import annotations

import pytest
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests import spreadsheets
from tests.browser import WAIT_SECONDS, overflow, table, wait_for_text


@pytest.fixture
def page(browser, live_server):
    browser.get(live_server())
    return browser


def choose(driver, tmp_path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    driver.find_element("id", "file").send_keys(str(path.resolve()))


def check(driver, words: str) -> None:
    driver.find_element("id", "check").click()
    wait_for_text(driver, "validation-result", words)


def test_a_semicolon_file_says_how_it_was_read(page, tmp_path):
    data = "Hospital Name;Street;City;Notes\nGeneral;1 Main St;Springfield;call first\n".encode()
    choose(page, tmp_path, "hospitals.csv", data)
    check(page, "Valid, 1 hospital")
    assert page.find_element("id", "file-read-as").text == \
        "Read as a CSV file in UTF-8, fields separated by semicolons."
    assert page.find_element("id", "file-columns").text == \
        "Columns: Hospital Name → name, Street → address, City → city."
    assert page.find_element("id", "file-ignored").text == "Not read: Notes."
    assert [r[2] for r in table(page, "preview")] == ["1 Main St, Springfield"]
    assert not page.find_element("id", "encoding-field").is_displayed()


def test_a_windows_1252_file_offers_its_encoding_and_reads_with_it(page, tmp_path):
    choose(page, tmp_path, "hospitals.csv", "name,address\nHôpital Nord,1 rue de l'Église\n".encode("cp1252"))
    check(page, "Not valid")
    assert "Windows-1252" in table(page, "problems")[0][2]
    assert page.find_element("id", "encoding-field").is_displayed()
    Select(page.find_element("id", "encoding")).select_by_value("windows-1252")
    wait_for_text(page, "validation-result", "Valid, 1 hospital")
    assert [r[1] for r in table(page, "preview")] == ["Hôpital Nord"]
    assert "WINDOWS-1252" in page.find_element("id", "file-read-as").text


def test_a_workbook_of_several_sheets_offers_them(page, tmp_path):
    book = spreadsheets.xlsx([["notes"]], title="Read me", more_sheets=("Hospitals",))
    choose(page, tmp_path, "hospitals.xlsx", book)
    check(page, "Not valid")
    assert page.find_element("id", "file-read-as").text == "Read as an Excel workbook, sheet “Read me”."
    assert page.find_element("id", "sheet-field").is_displayed()
    Select(page.find_element("id", "sheet")).select_by_value("Hospitals")
    wait_for_text(page, "file-read-as", "sheet “Hospitals”")


def test_a_header_in_unknown_words_asks_which_column_holds_what(page, tmp_path):
    choose(page, tmp_path, "hospitals.csv", b"Site,Where,Phone\nGeneral,1 Main St,555-0100\n")
    check(page, "Not valid")
    assert [p[2][:30] for p in table(page, "problems")][0].startswith("The header has no name column")
    assert [p[0] for p in table(page, "problems")][0] == "1"  # the line of the file, first as every row number
    Select(page.find_element("id", "column-name")).select_by_visible_text("Site")
    # Checked again, the page asks only for the address (the old result said "Not valid" too, and its
    # selects are replaced when the new one is drawn).
    WebDriverWait(page, WAIT_SECONDS).until(lambda d: not d.find_elements("id", "column-name"),
                                            message="the check with the name column chosen")
    assert table(page, "problems")[0][2].startswith("The header has no address column")
    Select(page.find_element("id", "column-address")).select_by_visible_text("Where")
    wait_for_text(page, "validation-result", "Valid, 1 hospital")
    assert table(page, "preview") == [["2", "General", "1 Main St", "555-0100", ""]]  # its spreadsheet line; not asked about the directory


def test_a_workbook_is_created_and_the_template_is_linked(page, tmp_path, upstream):
    link = page.find_element("id", "sample-link")
    assert link.get_attribute("href").endswith("/hospitals/template.csv")
    rows = [["Facility", "Street", "Zip"], ["General", "1 Main St", 62701], ["Mercy", "2 Elm St", "02110"]]
    choose(page, tmp_path, "hospitals.xlsx", spreadsheets.xlsx(rows))
    page.find_element("id", "create").click()
    wait_for_text(page, "summary", "completed")
    assert sorted(h["address"] for h in upstream.sim.hospitals()) == ["1 Main St, 62701", "2 Elm St, 02110"]


def test_the_reading_display_fits_400_px(page, tmp_path):
    page.set_window_size(400, 900)
    try:
        header = "Hospital Name;Street Address;A very long column name nobody reads;Another one;Site"
        choose(page, tmp_path, "hospitals.csv", (header + "\nGeneral;1 Main St;x;y;z\n").encode())
        check(page, "Valid, 1 hospital")
        assert page.find_element("id", "file-ignored").is_displayed()
        assert overflow(page) == {"page": 0, "elements": []}
    finally:
        page.set_window_size(1000, 900)
