"""The ``chromium`` fixture: a headless Chromium from Debian's packages (chromium and
chromium-driver), driven by Selenium; never a downloaded browser."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from tools import require

__all__ = ["chromium"]


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
