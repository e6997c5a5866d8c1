"""Browser and device logins bound to a DPoP key from the first token (RFC 9449), against the
reference server demanding nonces: the tokens carry the key, work only with its proofs, and
the refresh token bound to it refreshes through a DPoP manager."""

from __future__ import annotations

import httpx
import pytest
from test_device_login import Approver

import freshtoken
import freshtoken.httpx
from freshtoken import DPoPKey, TokenManager, TokenSet
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken.server import DPoPConfig, ReferenceServer


@pytest.fixture
def server(oauth_server: ReferenceServer) -> ReferenceServer:
    oauth_server.configure(dpop=DPoPConfig(nonces=True))
    return oauth_server


def assert_bound(server: ReferenceServer, tokens: TokenSet, key: DPoPKey) -> None:
    assert tokens.dpop_key == key
    assert tokens.token_type == "DPoP"
    bearer = httpx.get(
        f"{server.api_url}/me", headers={"Authorization": f"Bearer {tokens.access_token}"}
    )
    assert bearer.status_code == 401  # a bound token is worth nothing without the key
    refresher = freshtoken.OAuth2Refresher.from_issuer(server.issuer, client_id="demo-public")
    manager = TokenManager(refresher, clock=server.clock, dpop=key)
    manager.set_tokens(tokens)
    with httpx.Client(auth=freshtoken.httpx.TokenAuth(manager)) as client:
        assert client.get(f"{server.api_url}/me").status_code == 200
        server.advance(301)
        assert client.get(f"{server.api_url}/me").status_code == 200
    assert server.stats()["refreshes"] == 1
    assert server.stats()["reuse_detections"] == 0


def test_a_browser_login_binds_the_tokens_to_its_dpop_key(server: ReferenceServer) -> None:
    """browser_login(dpop=key): the code is redeemed with a proof (after the server's nonce
    demand); the tokens are DPoP tokens bound to the key, refreshed with it later."""
    key = DPoPKey.generate()
    browser = server.browser("alice", "alice")
    tokens = flows.browser_login(
        server.issuer, client_id="demo-public", open_browser=browser, dpop=key
    )
    assert browser.wait()
    assert_bound(server, tokens, key)


def test_a_device_login_binds_the_tokens_to_its_dpop_key(server: ReferenceServer) -> None:
    """device_login(dpop=key): every poll carries a fresh proof; the tokens are bound."""
    key = DPoPKey.generate("EdDSA")
    approver = Approver(server, after=2)
    refresher = freshtoken.OAuth2Refresher.from_issuer(server.issuer, client_id="demo-public")
    tokens = refresher.device_login(
        on_prompt=approver.on_prompt, sleep=approver.sleep, clock=server.clock, dpop=key
    )
    assert_bound(server, tokens, key)


@pytest.mark.anyio
async def test_async_browser_login_with_dpop(server: ReferenceServer) -> None:
    """abrowser_login(dpop=key) binds the same way."""
    key = DPoPKey.generate()
    browser = server.browser("alice", "alice")
    tokens = await flows.abrowser_login(
        server.issuer, client_id="demo-public", open_browser=browser, dpop=key
    )
    assert tokens.dpop_key == key


def test_the_refresher_s_password_login_binds_the_tokens_to_its_dpop_key(
    server: ReferenceServer,
) -> None:
    """manager.login(refresher.password_login, ..., dpop=key): the one way to log in binds a
    password login as the free function did."""
    key = DPoPKey.generate()
    refresher = freshtoken.OAuth2Refresher.from_issuer(server.issuer, client_id="demo-public")
    manager = TokenManager(refresher, clock=server.clock, dpop=key)
    tokens = manager.login(refresher.password_login, username="alice", password="alice", dpop=key)
    assert_bound(server, tokens, key)


@pytest.mark.anyio
async def test_the_refresher_s_async_password_login_binds_too(server: ReferenceServer) -> None:
    """apassword_login(dpop=key) on the refresher binds the same way."""
    key = DPoPKey.generate()
    refresher = freshtoken.OAuth2Refresher.from_issuer(server.issuer, client_id="demo-public")
    tokens = await refresher.apassword_login(username="alice", password="alice", dpop=key)
    assert tokens.dpop_key == key
    assert tokens.token_type == "DPoP"
