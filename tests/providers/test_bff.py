"""The BFF in front of two emulations, over real HTTP: GitHub (no discovery, form-encoded
answers unless asked, single-use refresh tokens, the previous access token revoked) and Google
(discovery, a refresh answer without a refresh token). A person logs in through the provider's
page; calls through the proxy go on across expiries with one refresh each, none failing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from bff.bff_support import CSRF, Deployment
from bff.test_login import Browser

from freshtoken.bff import BFF
from freshtoken.bff._demo import BFF_CLIENT_ID, BFF_CLIENT_SECRET, bff_server_config
from freshtoken.bff._serving import ServedApp
from freshtoken.testing import ServerFactory

from .conftest import preset_for


@pytest.fixture(params=["github", "google"])
def deployment(
    request: pytest.FixtureRequest, oauth_server_factory: ServerFactory
) -> Iterator[Deployment]:
    name = str(request.param)
    server = oauth_server_factory(bff_server_config(), as_=name)
    bff = BFF(
        provider=preset_for(name, server),
        client_id=BFF_CLIENT_ID,
        client_secret=BFF_CLIENT_SECRET,
        secret_key="a providers test passphrase",
        routes={"/api/": f"{server.url}/api/"},
        scope="openid read write",
        clock=server.clock,
        leeway=5.0,
        idle_timeout=3 * 86400.0,  # GitHub's tokens live 8 hours, the default idle time
        absolute_timeout=30 * 86400.0,
    )
    made = Deployment(server, bff, ServedApp(bff).start())
    yield made
    made.close()


def test_a_browser_session_lives_across_expiries(deployment: Deployment) -> None:
    server = deployment.server
    browser = Browser(deployment)
    assert browser.login().status_code in (302, 303, 200)
    cookie = browser.cookies[deployment.bff.cookie_name]
    headers = {**CSRF, "Cookie": f"{deployment.bff.cookie_name}={cookie}"}
    first = deployment.bff.sessions.token_store(_handle(cookie)).load()
    assert first is not None
    for round_ in range(1, 4):
        server.advance(server.config.access_ttl + 1)
        for _ in range(5):
            assert deployment.http.get("/api/me", headers=headers).status_code == 200
        assert server.stats()["refreshes"] == round_
    stored = deployment.bff.sessions.token_store(_handle(cookie)).load()
    assert stored is not None
    if server.config.personality == "google":  # no refresh token in the answers: kept
        assert stored.tokens.refresh_token == first.tokens.refresh_token
    else:  # rotated at each refresh
        assert stored.tokens.refresh_token != first.tokens.refresh_token
    stats = server.stats()
    assert (stats["reuse_detections"], stats["family_revocations"], stats["token_errors"]) == (
        0,
        0,
        0,
    )


def _handle(session_id: str) -> str:
    from freshtoken.bff._sessions import handle_of

    return handle_of(session_id)
