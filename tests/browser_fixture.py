"""The ``chromium`` fixture: a headless Chromium from Debian's packages (chromium and
chromium-driver, driven by Selenium), never a browser downloaded at run time; and
:func:`sign_in`, which logs in through the reference server's login page from a page that
shows a ``#login`` link (the example SPA's and the BFF demo's page both do)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from tools import require

__all__ = ["WAIT", "chromium", "sign_in"]

WAIT = 20.0


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Headless Chromium from Debian's packages; never a downloaded browser."""
    binary = require("chromium", "chromium")
    driver_path = require("chromedriver", "chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="freshtoken-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--no-first-run",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not fetch anything
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(10)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def sign_in(driver: Any, url: str, *, username: str = "demo", password: str = "demo") -> None:
    """Open ``url``, follow its ``#login`` link to the reference server's login page, sign in,
    and wait until the page shows ``username`` in ``#user``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, WAIT)
    driver.get(url)
    wait.until(shown.visibility_of_element_located((By.ID, "login"))).click()
    if username != "demo":
        field = wait.until(shown.visibility_of_element_located((By.ID, "username")))
        field.clear()
        field.send_keys(username)
    wait.until(shown.visibility_of_element_located((By.ID, "password"))).send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
    wait.until(shown.text_to_be_present_in_element((By.ID, "user"), username))
