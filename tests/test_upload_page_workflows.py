"""The upload page's workflows (issue 15) in headless Chromium, each at 1280 and 400 px wide:
one upload per chosen file, the address naming what is shown, recent uploads, the three endings
of a partial failure, an import's rows fixed in place, and skipping hospitals already in the directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from tests.browser import WAIT_SECONDS, choose_file, overflow, table, wait_for_text
from tests.support import hospitals_csv, wait_until
from tests.test_upload_page import VALID_CSV

SHOTS = Path("/tmp/flows15")  # screenshots to look at, never committed


@pytest.fixture(params=[1280, 400], ids=["1280px", "400px"])
def page(request, browser):
    """The module's browser at the width of the test's parameter."""
    browser.set_window_size(request.param, 900)
    browser.width = request.param
    yield browser
    browser.set_window_size(1000, 900)


def _shot(browser, name: str, element_id: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    browser.execute_script("document.getElementById(arguments[0]).scrollIntoView()", element_id)
    browser.save_screenshot(str(SHOTS / f"{name}-{browser.width}.png"))


def _fits(browser) -> None:
    if browser.width <= 400:
        assert overflow(browser) == {"page": 0, "elements": []}


def _wait(browser, condition, what: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, WAIT_SECONDS).until(condition, message=f"timed out waiting for {what}")


def _alert(browser):
    from selenium.webdriver.support import expected_conditions

    return _wait(browser, expected_conditions.alert_is_present(), "a confirmation")


def _batches(url: str) -> list[dict]:
    return requests.get(url + "hospitals/bulk", timeout=10).json()["batches"]


def test_one_batch_per_chosen_file_and_a_question_before_sending_it_again(page, make_app, serve_app, tmp_path,
                                                                         upstream):
    app = make_app()
    url = serve_app(app).url + "/"
    page.get(url)
    choose_file(page, tmp_path, VALID_CSV)
    page.find_element("id", "create").click()
    wait_for_text(page, "summary", "Batch completed")
    (first,) = _batches(url)
    # A click sent again (a double click, a retry) names the same upload: the service answers its batch.
    assert app.extensions["bulkproc"].store.get_batch(first["batch_id"]).idempotency_key

    page.find_element("id", "create").click()
    _alert(page).dismiss()
    assert len(_batches(url)) == 1  # the clerk said no: nothing sent

    page.find_element("id", "create").click()
    alert = _alert(page)
    assert "already sent" in alert.text
    alert.accept()
    wait_until(lambda: len(_batches(url)) == 2, timeout=WAIT_SECONDS, what="the second batch")
    wait_for_text(page, "summary", "Batch completed")
    assert page.find_element("id", "batch-id").text != first["batch_id"]
    _fits(page)


def test_the_address_names_the_batch_shown_for_reload_back_and_a_shared_link(page, live_server, tmp_path, upstream):
    url = live_server()
    page.get(url)
    choose_file(page, tmp_path, VALID_CSV)
    page.find_element("id", "create").click()
    wait_for_text(page, "summary", "Batch completed")
    first = page.find_element("id", "batch-id").text
    assert page.current_url == f"{url}#batch={first}"
    choose_file(page, tmp_path, VALID_CSV.replace("Hospital", "Infirmary"))
    page.find_element("id", "create").click()
    _wait(page, lambda d: d.current_url.split("#batch=")[-1] not in ("", first) and "#batch=" in d.current_url,
          "the address of the second batch")
    second = page.current_url.split("#batch=")[1]

    page.back()
    _wait(page, lambda d: d.find_element("id", "batch-id").text == first, "the first batch again")
    page.refresh()
    _wait(page, lambda d: d.find_element("id", "batch-id").text == first, "the first batch after a reload")
    wait_for_text(page, "summary", "Batch completed")

    page.get(f"{url}#batch={second}")  # a shared link, in a page that never saw the batch
    page.refresh()
    _wait(page, lambda d: d.find_element("id", "batch-id").text == second, "the shared batch")
    wait_for_text(page, "recent-list", "Batch of 3 hospitals")
    links = page.find_elements("css selector", "#recent-list a")
    assert [a.get_attribute("href").split("#batch=")[1] for a in links] == [second, first]
    _shot(page, "recent", "recent")
    _fits(page)

    links[1].click()
    _wait(page, lambda d: d.find_element("id", "batch-id").text == first, "the batch opened from the list")


def test_after_a_reload_each_batch_numbers_its_rows_by_the_lines_of_its_own_file(page, live_server, tmp_path,
                                                                                 upstream):
    url = live_server()
    page.get(url)
    choose_file(page, tmp_path, "name,address\nGeneral,1 Main St\n\n\nMercy,2 Elm St\n")  # blank lines 3 and 4
    page.find_element("id", "create").click()
    wait_for_text(page, "summary", "Batch completed")
    spaced = page.find_element("id", "batch-id").text
    choose_file(page, tmp_path, "City Clinic,3 Oak Ave\n")  # no header: the row is line 1
    page.find_element("id", "create").click()
    _wait(page, lambda d: d.find_element("id", "batch-id").text not in ("", spaced), "the second batch")
    wait_for_text(page, "summary", "Batch completed")
    assert [r[0] for r in table(page, "rows")] == ["1"]

    page.get(f"{url}#batch={spaced}")
    page.refresh()
    _wait(page, lambda d: d.find_element("id", "batch-id").text == spaced, "the first batch after a reload")
    wait_for_text(page, "summary", "Batch completed")
    assert [r[:2] for r in table(page, "rows")] == [["2", "General"], ["5", "Mercy"]]


def test_a_partial_failure_offers_three_explained_endings_and_finishes_without_the_failed_rows(
        page, live_server, tmp_path, upstream):
    upstream.sim.add_fault("create", "reject_422")
    url = live_server()
    page.get(url)
    choose_file(page, tmp_path, VALID_CSV)
    page.find_element("id", "create").click()
    wait_for_text(page, "summary", "Batch partially failed")

    summary = page.find_element("id", "summary").text
    assert "not live until you choose below" in summary and "activated" not in summary
    for choice, words in (("resume", "Fix and resume"), ("activate", "Finish without the failed rows"),
                          ("rollback", "Roll back")):
        block = page.find_element("id", f"{choice}-choice")
        assert block.is_displayed() and block.find_element("tag name", "button").text == words
        assert len(block.find_element("css selector", ".hint").text) > 40  # explained in words
    (failed,) = [r for r in table(page, "rows") if r[2] == "failed"]
    assert failed[4] == "The directory refused this name: refused by the directory"  # not "Value error, …"
    assert failed[0] in ("2", "3", "4")  # the spreadsheet's line (the header is line 1)
    _shot(page, "choices", "summary")
    _fits(page)

    page.find_element("id", "activate").click()
    _alert(page).accept()
    wait_for_text(page, "summary", "finished without the failed rows")

    assert sorted(r[2] for r in table(page, "rows")) == ["failed"] + ["live in the directory"] * 2
    assert "left out" in page.find_element("id", "summary").text
    assert not page.find_element("id", "resume-choice").is_displayed()
    assert not page.find_element("id", "activate-choice").is_displayed()
    assert page.find_element("id", "download-failed").is_displayed()
    assert sorted(h["active"] for h in upstream.sim.hospitals()) == [True, True]


def test_an_imports_rows_not_created_are_fixed_in_place_and_resumed(page, live_server, tmp_path, upstream):
    upstream.sim.add_fault("create", "reject_422", after=2)  # the third creation (batches overlap: 3 or 4)
    url = live_server(MAX_ROWS=2)
    page.get(url)
    choose_file(page, tmp_path, hospitals_csv(5))
    page.find_element("id", "create").click()
    wait_for_text(page, "import-summary", "Import partially failed")
    assert "#import=" in page.current_url
    wait_for_text(page, "import-rows", "Hospital ")
    ((line, name, _address, _phone, problem, _action),) = table(page, "import-rows")
    number = int(name.removeprefix("Hospital "))
    assert line == str(number + 1)  # the spreadsheet's line: the header is line 1
    assert problem.startswith("The directory refused this name")
    assert page.find_element("id", "import-activate-choice").is_displayed()
    _shot(page, "import-rows", "import-summary")
    _fits(page)
    wait_for_text(page, "recent-list", "Import of 5 hospitals")
    assert [r[0] for r in table(page, "recent-list")] == ["Import of 5 hospitals"]  # not its batches as well

    page.find_element("css selector", "#import-rows button.edit").click()
    field = _wait(page, lambda d: d.find_elements("id", "edit-name"), "the editor")[0]
    assert field.get_attribute("value") == name
    field.clear()
    field.send_keys("Hospital Fixed")
    page.find_element("css selector", "#import-rows button.save").click()
    wait_for_text(page, "import-notice", f"Line {line} saved")
    _fits(page)
    page.find_element("id", "import-resume").click()
    wait_for_text(page, "import-summary", "Import completed")

    assert not page.find_element("id", "import-rows-wrap").is_displayed()
    stored = upstream.sim.hospitals()
    assert sorted(h["name"] for h in stored) == sorted({f"Hospital {n}" for n in range(1, 6)} - {name}
                                                       | {"Hospital Fixed"})
    assert all(h["active"] for h in stored)


def test_check_can_skip_hospitals_already_in_the_directory_and_create_then_skips_them(
        page, live_server, tmp_path, upstream):
    existing = requests.post(f"{upstream.url}/hospitals/", timeout=5,
                             json={"name": "general hospital", "address": "1 MAIN ST", "phone": None}).json()
    url = live_server()
    page.get(url)
    assert page.find_element("id", "sample-link").get_attribute("href") == url + "hospitals/template.csv"
    assert page.find_element("id", "docs-link").get_attribute("href") == url + "docs"
    choose_file(page, tmp_path, VALID_CSV)
    page.find_element("id", "skip-existing").click()
    page.find_element("id", "check").click()
    wait_for_text(page, "validation-result", "1 is already live in the directory and will be skipped")
    preview = table(page, "preview")
    assert preview[0][4] == f"already there (hospital {existing['id']})"
    assert [r[4] for r in preview[1:]] == ["", ""]
    _shot(page, "skip-check", "validation")
    _fits(page)

    page.find_element("id", "create").click()
    wait_for_text(page, "summary", "Batch completed")
    assert [r[2] for r in table(page, "rows")] == ["already in the directory"] + ["live in the directory"] * 2
    assert "1 already in the directory" in page.find_element("id", "summary").text
    assert page.find_element("id", "counter").text == "3 of 3 rows done: 2 created, 1 already in the directory."
    assert "the one that was already there stays" in page.find_element("id", "rollback-hint").text
    assert len(upstream.sim.hospitals()) == 3
    _shot(page, "skip-created", "rows")
    _fits(page)
