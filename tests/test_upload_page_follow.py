"""The upload page follows a batch without its event stream: when a token is set, or the stream is refused."""

from tests.browser import choose_file, table, wait_for_text
from tests.test_upload_page import VALID_CSV


def _create_and_follow(browser, tmp_path):
    choose_file(browser, tmp_path, VALID_CSV)
    browser.find_element("id", "create").click()
    wait_for_text(browser, "summary", "completed")
    assert [r[2] for r in table(browser, "rows")] == ["created and activated"] * 3
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
