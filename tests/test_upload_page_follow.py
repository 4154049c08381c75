"""The upload page follows a batch without its event stream: when a token is set, or the stream is refused."""

from tests.browser import choose_file, table, wait_for_text
from tests.support import wait_until
from tests.test_upload_page import VALID_CSV


def _create_and_follow(browser, tmp_path):
    choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "create").click()
    wait_for_text(browser, "summary", "completed")
    assert [r[2] for r in table(browser, "rows")] == ["live in the directory"] * 3
    assert not browser.find_element("id", "error").is_displayed()


def test_with_a_token_the_page_follows_the_batch_by_asking_with_the_token(browser, live_server, tmp_path,
                                                                         upstream):
    # EventSource cannot send an Authorization header, and the stream needs the token now.
    browser.get(live_server(API_TOKEN="s3cret"))
    browser.find_element("id", "token").send_keys("s3cret")
    _create_and_follow(browser, tmp_path)
    assert len(upstream.sim.hospitals()) == 3


def test_a_refused_stream_falls_back_to_asking_for_the_document(browser, live_server, tmp_path, upstream):
    browser.get(live_server(MAX_STREAMS=0))  # every stream is refused with 503
    _create_and_follow(browser, tmp_path)


def test_with_a_token_the_result_files_download_with_it(browser, live_server, tmp_path, upstream):
    # A link cannot send an Authorization header: the page fetches the file with the token.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.get(live_server(API_TOKEN="s3cret"))
    browser.find_element("id", "token").send_keys("s3cret")
    _create_and_follow(browser, tmp_path)
    browser.find_element("id", "download-results").click()

    saved = wait_until(lambda: [p for p in downloads.glob("batch-*-results.csv")], timeout=30,
                       what="the results file to be saved")
    lines = saved[0].read_text(encoding="utf-8").splitlines()
    assert lines[0] == "row,name,address,phone,status,hospital_id,batch_id,error"
    assert len(lines) == 4 and all(",created_and_activated," in line for line in lines[1:])
    assert not browser.find_element("id", "error").is_displayed()
