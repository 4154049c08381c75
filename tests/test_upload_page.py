"""The upload page: served as plain HTML, and driven in a real headless Chromium."""

import re
from html.parser import HTMLParser

import pytest
import requests

from tests.browser import WAIT_SECONDS, choose_file, overflow, table, wait_for_text

VALID_CSV = (
    "name,address,phone\n"
    "General Hospital,1 Main St,555-0100\n"
    '"Saint Mary\'s","2 Elm St, Boston",(617) 555-0101\n'
    "City Clinic,3 Oak Ave,\n"
)
BAD_CSV = (
    "name,address,phone\n"
    "General Hospital,1 Main St,555-0100\n"
    "No Address Clinic,,555-0102\n"
)


class _Links(HTMLParser):
    """Collects the ids, the src/href values and the ids of polite live regions of a page."""

    def __init__(self):
        super().__init__()
        self.ids, self.urls, self.live = set(), [], set()

    def handle_starttag(self, tag, attrs):
        if dict(attrs).get("aria-live") == "polite":
            self.live.add(dict(attrs).get("id"))
        for name, value in attrs:
            if name == "id":
                self.ids.add(value)
            if name in ("src", "href"):
                self.urls.append(value)


def _parse(html):
    links = _Links()
    links.feed(html)
    return links


# --- the page as HTML ---------------------------------------------------------


def test_page_has_the_form_and_only_local_resources(app):
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = _parse(response.get_data(as_text=True))
    assert {"file", "check", "create", "problems", "rows", "summary", "progress",
            "resume", "rollback", "error", "download-results", "download-failed"} <= page.ids
    assert {"counter", "summary", "validation-result", "notice"} <= page.live
    assert "token" not in page.ids
    assert "/static/upload.js" in page.urls
    assert "/static/upload.css" in page.urls
    assert not [url for url in page.urls if "http" in url or url.startswith("//")]


def test_page_asks_for_a_token_when_one_is_required(make_app):
    html = make_app(API_TOKEN="s3cret").test_client().get("/").get_data(as_text=True)
    assert "token" in _parse(html).ids
    assert "s3cret" not in html


@pytest.mark.parametrize("name, mimetype", [("upload.js", "text/javascript"), ("upload.css", "text/css")])
def test_static_files_are_served(app, name, mimetype):
    with app.test_client().get(f"/static/{name}") as response:
        assert response.status_code == 200
        assert response.mimetype == mimetype
        assert "http" not in response.get_data(as_text=True)


# --- the page in a browser ----------------------------------------------------


@pytest.fixture
def live_url(live_server):
    return live_server()


def test_check_lists_the_problem_row_and_column(browser, live_url, tmp_path):
    browser.get(live_url)
    choose_file(browser, tmp_path, BAD_CSV)
    browser.find_element("id", "check").click()
    wait_for_text(browser, "validation-result", "Not valid")
    problems = table(browser, "problems")
    assert [p[:2] for p in problems] == [["3", "address"]]  # the file's line: a header, then rows
    assert problems[0][2]
    assert not browser.find_element("id", "problems").text.startswith("{")


def test_check_of_a_valid_file_previews_its_rows(browser, live_url, tmp_path):
    browser.get(live_url)
    choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "check").click()
    wait_for_text(browser, "validation-result", "Valid, 3 hospitals")
    assert [r[1] for r in table(browser, "preview")] == ["General Hospital", "Saint Mary's", "City Clinic"]


def test_create_refused_file_shows_the_details_not_json(browser, live_url, tmp_path, upstream):
    browser.get(live_url)
    choose_file(browser, tmp_path, BAD_CSV)
    browser.find_element("id", "create").click()
    wait_for_text(browser, "validation-result", "nothing was created")
    assert [p[:2] for p in table(browser, "problems")] == [["3", "address"]]
    assert "{" not in browser.find_element("id", "validation").text
    assert upstream.sim.hospitals() == []


def test_a_refused_files_problems_are_listed_once_after_a_check(browser, live_url, tmp_path, upstream):
    browser.get(live_url)
    choose_file(browser, tmp_path, BAD_CSV)
    browser.find_element("id", "check").click()
    wait_for_text(browser, "validation-result", "Not valid")
    (problem,) = table(browser, "problems")

    browser.find_element("id", "create").click()
    wait_for_text(browser, "validation-result", "nothing was created")

    assert browser.find_element("tag name", "main").text.count(problem[2]) == 1
    assert not browser.find_element("id", "error").is_displayed()


def test_create_follows_the_batch_to_completion_and_rolls_back(browser, live_url, tmp_path, upstream):
    browser.get(live_url)
    choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "create").click()
    wait_for_text(browser, "summary", "completed")

    rows = table(browser, "rows")
    assert [r[2] for r in rows] == ["live in the directory"] * 3
    assert "Batch completed in" in browser.find_element("id", "summary").text
    assert "3 live in the directory" in browser.find_element("id", "summary").text
    assert browser.find_element("id", "counter").text == "3 of 3 rows done: 3 created."
    assert browser.find_element("id", "progress").get_attribute("value") == "3"
    assert not browser.find_element("id", "resume").is_displayed()
    stored = upstream.sim.hospitals()
    assert len(stored) == 3 and all(h["active"] for h in stored)

    browser.find_element("id", "rollback").click()
    browser.switch_to.alert.accept()
    wait_for_text(browser, "summary", "rolled back")
    assert [r[2] for r in table(browser, "rows")] == ["deleted"] * 3
    assert upstream.sim.hospitals() == []


def test_after_a_rollback_the_summary_says_so_without_a_stale_time(browser, live_url, tmp_path):
    browser.get(live_url)
    choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "create").click()
    wait_for_text(browser, "summary", "completed")

    browser.find_element("id", "rollback").click()
    browser.switch_to.alert.accept()
    wait_for_text(browser, "summary", "rolled back")

    batch_text = browser.find_element("id", "batch").text
    assert "Batch rolled back" in batch_text
    assert not re.search(r"\d s\b", batch_text), batch_text  # no "in 0.52 s" left from the creation
    assert "rows done" not in batch_text and "_" not in batch_text
    assert not browser.find_element("id", "progress").is_displayed()


def test_statuses_read_as_words_in_the_rows_and_the_summary(browser, live_url, tmp_path, upstream):
    upstream.sim.add_fault("create", "reject_422")
    browser.get(live_url)
    choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "create").click()
    wait_for_text(browser, "summary", "Batch partially failed in")

    assert sorted(r[2] for r in table(browser, "rows")) == ["created, not live yet"] * 2 + ["failed"]
    statuses = [e.get_attribute("data-status") for e in browser.find_elements("css selector", "#rows .status")]
    assert sorted(statuses) == ["created", "created", "failed"]
    assert "_" not in browser.find_element("id", "summary").text


def test_download_links_point_at_the_result_files(browser, live_url, tmp_path, upstream):
    browser.get(live_url)
    choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "create").click()
    wait_for_text(browser, "summary", "completed")
    assert browser.find_element("id", "download-results").is_displayed()
    assert not browser.find_element("id", "download-failed").is_displayed()

    upstream.sim.add_fault("create", "reject_422")
    choose_file(browser, tmp_path, VALID_CSV.replace("Hospital", "Infirmary"))
    browser.find_element("id", "create").click()
    wait_for_text(browser, "summary", "partially failed")

    failed_link = browser.find_element("id", "download-failed")
    assert failed_link.is_displayed() and failed_link.text == "Download failed rows"
    assert browser.find_element("id", "download-results").text == "Download results"
    batch_id = browser.find_element("id", "batch-id").text
    assert failed_link.get_attribute("href") == f"{live_url}hospitals/bulk/{batch_id}/failed.csv"
    assert browser.find_element("id", "download-results").get_attribute("href") == (
        f"{live_url}hospitals/bulk/{batch_id}/results.csv")
    with requests.get(failed_link.get_attribute("href"), timeout=10) as response:
        lines = response.text.splitlines()
    (failed,) = [r for r in table(browser, "rows") if r[2] == "failed"]
    assert lines[0] == "name,address,phone,error" and len(lines) == 2 and failed[1] in lines[1]


def _failed_row(browser):
    return next(tr for tr in browser.find_elements("css selector", "#rows tbody tr")
                if tr.find_elements("css selector", ".status-failed"))


def test_a_failed_row_is_fixed_in_place_and_the_batch_resumed(browser, live_url, tmp_path, upstream):
    from selenium.webdriver.support.ui import WebDriverWait

    upstream.sim.add_fault("create", "reject_422")
    browser.get(live_url)
    choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "create").click()
    wait_for_text(browser, "summary", "partially failed")
    row = _failed_row(browser)
    number, name = (td.text for td in row.find_elements("tag name", "td")[:2])
    original = {"General Hospital": ("1 Main St", "555-0100"), "Saint Mary's": ("2 Elm St, Boston", "(617) 555-0101"),
                "City Clinic": ("3 Oak Ave", "")}[name]

    row.find_element("css selector", "button.edit").click()
    WebDriverWait(browser, WAIT_SECONDS).until(lambda d: d.find_elements("id", "edit-name"))
    fields = {f: browser.find_element("id", f"edit-{f}") for f in ("name", "address", "phone")}
    assert [fields[f].get_attribute("value") for f in fields] == [name, *original]
    assert browser.switch_to.active_element == fields["name"]
    fields["phone"].clear()
    fields["phone"].send_keys("12")
    browser.find_element("css selector", "#rows button.save").click()
    wait_for_text(browser, "edit-phone-error", "digits")
    assert fields["phone"].get_attribute("aria-invalid") == "true"
    assert not browser.find_element("id", "edit-name-error").is_displayed()

    fields["name"].clear()
    fields["name"].send_keys("Mercy Hospital")
    fields["phone"].clear()
    fields["phone"].send_keys("617-555-0177")
    browser.find_element("css selector", "#rows button.save").click()
    wait_for_text(browser, "notice", f"Line {number} saved")
    assert not browser.find_elements("id", "edit-name")
    assert "Mercy Hospital" in [r[1] for r in table(browser, "rows")]

    browser.find_element("id", "resume").click()
    wait_for_text(browser, "summary", "Batch completed")
    assert [r[2] for r in table(browser, "rows")] == ["live in the directory"] * 3
    stored = {h["name"]: h for h in upstream.sim.hospitals()}
    assert (stored["Mercy Hospital"]["address"], stored["Mercy Hospital"]["phone"]) == (original[0], "617-555-0177")
    assert name not in stored and all(h["active"] for h in stored.values())


@pytest.fixture
def narrow(browser):
    browser.set_window_size(400, 900)
    yield browser
    browser.set_window_size(1000, 900)


def test_the_page_fits_a_400_px_window_with_long_rows_and_an_editor(narrow, live_url, tmp_path, upstream):
    browser = narrow
    assert browser.execute_script("return window.innerWidth") <= 400
    long_csv = ("name,address,phone\n"
                "Saint Mary's Regional Medical Center of the Greater Boston Metropolitan Area,"
                '"1200 Commonwealth Avenue, Suite 400, Boston, Massachusetts 02215",+1 (617) 555-0101 ext 1234\n'
                "General Hospital,1 Main St,555-0100\n")
    upstream.sim.add_fault("create", "reject_422")
    browser.get(live_url)
    choose_file(browser, tmp_path, long_csv)
    browser.find_element("id", "check").click()
    wait_for_text(browser, "validation-result", "Valid, 2 hospitals")
    assert overflow(browser) == {"page": 0, "elements": []}

    browser.find_element("id", "create").click()
    wait_for_text(browser, "summary", "partially failed")
    assert overflow(browser) == {"page": 0, "elements": []}
    _failed_row(browser).find_element("css selector", "button.edit").click()
    wait_for_text(browser, "rows", "Fix line")
    assert overflow(browser) == {"page": 0, "elements": []}


def test_token_is_asked_for_and_kept_for_the_tab(browser, live_server, tmp_path, upstream):
    browser.get(live_server(API_TOKEN="s3cret"))
    choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "check").click()
    wait_for_text(browser, "error", "API token is missing or wrong")

    browser.find_element("id", "token").send_keys("s3cret")
    browser.refresh()
    assert browser.find_element("id", "token").get_attribute("value") == "s3cret"
    choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "check").click()
    wait_for_text(browser, "validation-result", "Valid, 3 hospitals")
    assert not browser.find_element("id", "error").is_displayed()


def test_too_large_upload_is_explained(browser, live_server, tmp_path, upstream):
    browser.get(live_server(MAX_UPLOAD_BYTES=300))
    choose_file(browser, tmp_path, VALID_CSV * 10)
    browser.find_element("id", "create").click()
    wait_for_text(browser, "error", "too large")
    assert upstream.sim.hospitals() == []
