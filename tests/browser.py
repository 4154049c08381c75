"""Driving the upload page in a real headless Chromium: the driver and the helpers its tests share."""

from __future__ import annotations

import os

import pytest

from tests.support import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_SECONDS = 30


def start_chromium(*, window: str = "1000,900", performance_log: bool = False):
    """A headless Chromium under chromedriver (skip the test when either is missing), with the
    browser's network log kept when `performance_log`; quit() it after."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("needs /usr/bin/chromium and /usr/bin/chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", f"--window-size={window}"):
        options.add_argument(arg)
    if performance_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    # Our free_port, not selenium's: its port is free only until another xdist worker picks it.
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER, port=free_port()))


def choose_file(driver, tmp_path, text):
    path = tmp_path / "hospitals.csv"
    path.write_text(text, encoding="utf-8")
    driver.find_element("id", "file").send_keys(str(path.resolve()))


def wait_for_text(driver, element_id, text):
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_SECONDS).until(
        expected_conditions.text_to_be_present_in_element(("id", element_id), text))


def table(driver, element_id):
    rows = driver.find_elements("css selector", f"#{element_id} tbody tr")
    return [[td.text for td in row.find_elements("tag name", "td")] for row in rows]


def overflow(driver):
    """Elements of the page that reach past the right edge of the window, and the page's own overflow."""
    return driver.execute_script("""
        // The width left beside any vertical scroll bar.
        const width = document.documentElement.clientWidth;
        const wide = [...document.querySelectorAll("main *")]
            .filter((e) => e.getClientRects().length && e.getBoundingClientRect().right > width + 0.5)
            .map((e) => e.tagName + "#" + e.id + "." + e.className);
        return {page: document.documentElement.scrollWidth - width, elements: wide};
    """)


