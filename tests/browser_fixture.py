"""The ``chromium`` fixture: a headless Chromium from Debian's packages (chromium and
chromium-driver, driven by Selenium), never a browser downloaded at run time; :func:`sign_in`,
which logs in through the reference server's login page from a page that shows a ``#login``
link (the example SPA's and the BFF demo's page both do); and :func:`bff_demo`, a running
``freshtoken bff --demo`` to point the browser at."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tools import require

__all__ = ["WAIT", "DemoRun", "bff_demo", "chromium", "sign_in"]

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


@dataclasses.dataclass
class DemoRun:
    """What a ``bff --demo`` run showed: the URL of its banner's first line; after it ended
    (Ctrl-C), the rest of its output and its exit status."""

    url: str = ""
    out: str = ""
    err: str = ""
    code: int | None = None


@contextlib.contextmanager
def bff_demo(command: Sequence[str | Path], cwd: Path | None = None) -> Iterator[DemoRun]:
    """``COMMAND bff --demo --port 0`` until the block ends, then Ctrl-C."""
    process = subprocess.Popen(
        [*map(str, command), "bff", "--demo", "--port", "0"],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    run = DemoRun()
    try:
        banner = process.stdout.readline()
        found = re.search(r"open (http://localhost:\d+)/ and sign in as demo/demo", banner)
        if found is None:
            process.kill()
            raise AssertionError(f"no URL in {banner!r}: {process.stderr.read()}")
        run.url = found.group(1)
        yield run
    finally:
        process.send_signal(signal.SIGINT)
        # read(), not communicate(): the first line's read may have buffered the next ones.
        run.out, run.err = process.stdout.read(), process.stderr.read()
        run.code = process.wait(30)
        process.stdout.close()
        process.stderr.close()
