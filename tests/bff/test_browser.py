"""The example SPA (examples/spa: Redux Toolkit Query, built with esbuild from npm), and the
page ``freshtoken bff --demo`` serves (plain JavaScript shipped in the package), each behind
the BFF in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium; tests/browser_fixture.py): log in through the reference server's login page, list
and add items while access tokens expire every few seconds, find no token in the page, its
cookies or its storage, get a 403 without the CSRF header, log out (the refresh token revoked
at the server) and see the login button again.

Chromium accepts the ``__Host-`` (so Secure) session cookie over plain http on
``localhost``: it counts as a potentially trustworthy origin, so no certificate is needed.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_fixture import WAIT, sign_in
from tools import require

from freshtoken import TokenSet, system_clock
from freshtoken.bff import BFF
from freshtoken.bff._command import demo_page, static_files
from freshtoken.bff._demo import BFF_CLIENT_ID, BFF_CLIENT_SECRET, bff_server_config, demo_bff
from freshtoken.bff._serving import ServedApp
from freshtoken.bff._sessions import handle_of
from freshtoken.server import ReferenceServer

pytestmark = pytest.mark.slow

SPA = Path(__file__).resolve().parents[2] / "examples" / "spa"
ACCESS_TTL = 3.0
POLL_MS = 300


@pytest.fixture(scope="session")
def spa_dist() -> Path:
    """The SPA, built from its committed source and lockfile (npm ci, then esbuild)."""
    npm = require("npm", "npm")
    require("node", "nodejs")
    lock = SPA / "package-lock.json"
    installed = SPA / "node_modules" / ".package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=SPA, check=True, capture_output=True
        )
    subprocess.run([npm, "run", "build"], cwd=SPA, check=True, capture_output=True)
    return SPA / "dist"


@pytest.fixture(params=["example-spa", "demo-page"])
def page(request: pytest.FixtureRequest) -> Path:
    """The app's files: the example SPA (built with npm), or the page `freshtoken bff --demo`
    serves (shipped in the package, no build): both pass the same test."""
    if request.param == "demo-page":
        return demo_page()
    spa: Path = request.getfixturevalue("spa_dist")
    return spa


@pytest.fixture
def app(page: Path) -> Iterator[tuple[ReferenceServer, BFF, str]]:
    server = ReferenceServer(bff_server_config(access_ttl=ACCESS_TTL), clock=system_clock)
    server.start()
    bff = demo_bff(server.url, app=static_files(page), leeway=0.5)
    served = ServedApp(bff).start()
    try:
        yield server, bff, served.url.replace("127.0.0.1", "localhost")
    finally:
        served.stop()
        server.stop()


def test_the_spa_works_through_the_bff_with_no_token_in_the_browser(
    chromium: Any, app: tuple[ReferenceServer, BFF, str], tmp_path: Path
) -> None:
    """Login, items across several token lifetimes (no error, one refresh per expiry, no
    reuse), no token in cookies/storage/page, 403 without X-CSRF, logout revokes."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    server, bff, url = app
    wait = WebDriverWait(chromium, WAIT)

    def text(element_id: str) -> str:
        return str(chromium.find_element(By.ID, element_id).text)

    try:
        # Signed out, the SPA offers to log in: the reference server's own login page, then
        # back to the SPA.
        sign_in(chromium, f"{url}/?poll={POLL_MS}")
        assert chromium.current_url.startswith(url)

        # A mutation through the proxy (POST with the CSRF header), then the list.
        for name in ("apples", "pears"):
            field = chromium.find_element(By.ID, "item-name")
            field.send_keys(name)
            field.submit()
            wait.until(shown.text_to_be_present_in_element((By.ID, "items"), name))

        # Several access token lifetimes go by while the SPA polls.
        server.reset_stats()
        started = time.monotonic()
        loads_before = int(text("loads"))
        needed = loads_before + math.ceil(3.5 * ACCESS_TTL * 1000 / POLL_MS)
        WebDriverWait(chromium, 3 * WAIT).until(lambda _: int(text("loads")) >= needed)
        elapsed = time.monotonic() - started
        stats = server.stats()
        assert text("failures") == "0"
        assert text("error") == ""
        assert text("user") == "demo"
        assert stats["reuse_detections"] == 0
        assert stats["token_errors"] == 0
        # At least one refresh per lifetime went by, at most one per refresh window.
        assert math.floor(elapsed / ACCESS_TTL) <= stats["refreshes"]
        assert stats["refreshes"] <= math.ceil(elapsed / (0.75 * ACCESS_TTL - 0.5)) + 1

        # No token anywhere the page's JavaScript (or an XSS) could read.
        cookie = next(c for c in chromium.get_cookies() if c["name"] == bff.cookie_name)
        assert cookie["httpOnly"] is True
        assert cookie["secure"] is True
        assert cookie["sameSite"] == "Lax"
        assert cookie["path"] == "/"
        stored = bff.sessions.token_store(handle_of(cookie["value"])).load()
        assert stored is not None
        tokens: TokenSet = stored.tokens
        readable = chromium.execute_script(
            "return [document.cookie, JSON.stringify(localStorage),"
            " JSON.stringify(sessionStorage), document.documentElement.outerHTML]"
        )
        assert readable[0] == ""
        assert readable[1] == "{}"
        assert readable[2] == "{}"
        for secret in (tokens.access_token, tokens.refresh_token, tokens.id_token):
            assert secret is not None
            assert all(secret not in part for part in readable)

        # The proxy refuses a call that lacks the CSRF header, even from the page itself.
        statuses = chromium.execute_async_script(
            "const done = arguments[0];"
            "Promise.all(["
            " fetch('/api/items', {credentials: 'include'}).then(r => r.status),"
            " fetch('/api/items', {credentials: 'include', headers: {'X-CSRF': '1'}})"
            "   .then(r => r.status)"
            "]).then(done);"
        )
        assert statuses == [403, 200]

        # Logout: revoked at the server, the cookie gone, the login button back.
        server.reset_stats()
        chromium.find_element(By.ID, "logout").click()
        wait.until(shown.visibility_of_element_located((By.ID, "login")))
        assert server.stats()["revocation_requests"] == 1
        assert tokens.refresh_token is not None
        with pytest.raises(httpx.HTTPStatusError):
            server.refresh(
                tokens.refresh_token, client_id=BFF_CLIENT_ID, client_secret=BFF_CLIENT_SECRET
            )
        assert bff.cookie_name not in {c["name"] for c in chromium.get_cookies()}
    finally:
        chromium.save_screenshot(str(tmp_path / "spa.png"))
