"""The upload page: served as plain HTML, and driven in a real headless Chromium."""

import os
from html.parser import HTMLParser

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 30

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
    """Collects the ids and the src/href values of a page."""

    def __init__(self):
        super().__init__()
        self.ids, self.urls = set(), []

    def handle_starttag(self, tag, attrs):
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
            "resume", "rollback", "error"} <= page.ids
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


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs /usr/bin/chromium and /usr/bin/chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1000,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture
def live_server(make_app, serve_app):
    """Serve an app over real HTTP on 127.0.0.1, in front of the simulator; returns its URL.

    The shared fixtures stop the server, then close the app's jobs and its store: an unclosed
    store leaves SQLite connections for the garbage collector (a ResourceWarning on 3.13).
    """
    return lambda **config: serve_app(make_app(**config)).url + "/"


@pytest.fixture
def live_url(live_server):
    return live_server()


def _choose_file(driver, tmp_path, text):
    path = tmp_path / "hospitals.csv"
    path.write_text(text, encoding="utf-8")
    driver.find_element("id", "file").send_keys(str(path.resolve()))


def _wait_for_text(driver, element_id, text):
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_SECONDS).until(
        expected_conditions.text_to_be_present_in_element(("id", element_id), text))


def _table(driver, element_id):
    rows = driver.find_elements("css selector", f"#{element_id} tbody tr")
    return [[td.text for td in row.find_elements("tag name", "td")] for row in rows]


def test_check_lists_the_problem_row_and_column(browser, live_url, tmp_path):
    browser.get(live_url)
    _choose_file(browser, tmp_path, BAD_CSV)
    browser.find_element("id", "check").click()
    _wait_for_text(browser, "validation-result", "Not valid")
    problems = _table(browser, "problems")
    assert [p[:2] for p in problems] == [["2", "address"]]
    assert problems[0][2]
    assert not browser.find_element("id", "problems").text.startswith("{")


def test_check_of_a_valid_file_previews_its_rows(browser, live_url, tmp_path):
    browser.get(live_url)
    _choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "check").click()
    _wait_for_text(browser, "validation-result", "Valid, 3 hospitals")
    assert [r[1] for r in _table(browser, "preview")] == ["General Hospital", "Saint Mary's", "City Clinic"]


def test_create_refused_file_shows_the_details_not_json(browser, live_url, tmp_path, upstream):
    browser.get(live_url)
    _choose_file(browser, tmp_path, BAD_CSV)
    browser.find_element("id", "create").click()
    _wait_for_text(browser, "error", "Row 2, column address")
    assert "{" not in browser.find_element("id", "error").text
    assert upstream.sim.hospitals() == []


def test_create_follows_the_batch_to_completion_and_rolls_back(browser, live_url, tmp_path, upstream):
    browser.get(live_url)
    _choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "create").click()
    _wait_for_text(browser, "summary", "completed")

    rows = _table(browser, "rows")
    assert [r[2] for r in rows] == ["created_and_activated"] * 3
    assert "activated" in browser.find_element("id", "summary").text
    assert browser.find_element("id", "counter").text == "3 of 3 rows done: 3 created."
    assert browser.find_element("id", "progress").get_attribute("value") == "3"
    assert not browser.find_element("id", "resume").is_displayed()
    stored = upstream.sim.hospitals()
    assert len(stored) == 3 and all(h["active"] for h in stored)

    browser.find_element("id", "rollback").click()
    browser.switch_to.alert.accept()
    _wait_for_text(browser, "summary", "rolled_back")
    assert [r[2] for r in _table(browser, "rows")] == ["deleted"] * 3
    assert upstream.sim.hospitals() == []


def test_token_is_asked_for_and_kept_for_the_tab(browser, live_server, tmp_path, upstream):
    browser.get(live_server(API_TOKEN="s3cret"))
    _choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "check").click()
    _wait_for_text(browser, "error", "API token is missing or wrong")

    browser.find_element("id", "token").send_keys("s3cret")
    browser.refresh()
    assert browser.find_element("id", "token").get_attribute("value") == "s3cret"
    _choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "check").click()
    _wait_for_text(browser, "validation-result", "Valid, 3 hospitals")
    assert not browser.find_element("id", "error").is_displayed()


def test_too_large_upload_is_explained(browser, live_server, tmp_path, upstream):
    browser.get(live_server(MAX_UPLOAD_BYTES=300))
    _choose_file(browser, tmp_path, VALID_CSV * 10)
    browser.find_element("id", "create").click()
    _wait_for_text(browser, "error", "too large")
    assert upstream.sim.hospitals() == []
