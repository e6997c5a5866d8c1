"""``for_resource()`` against the reference server's API over real TCP: the API says where to
log in, a client is registered once per server, the grant's resource goes with every token
request, and a refused or failed refresh never throws away an access token that works."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

import freshtoken
from freshtoken import FileStore, LoginFailed, MemoryStore, RefreshFailed, SessionExpired
from freshtoken._resource_logins import ResourceRefresher
from freshtoken.httpx import TokenAuth
from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory


def _refresher(manager: freshtoken.TokenManager) -> ResourceRefresher:
    assert isinstance(manager.refresher, ResourceRefresher)
    return manager.refresher


def _me(manager: freshtoken.TokenManager, server: ReferenceServer) -> httpx.Response:
    with httpx.Client(auth=TokenAuth(manager, origins=[server.url])) as http:
        return http.get(f"{server.api_url}/me")


def test_the_first_request_logs_in_with_nothing_configured(
    oauth_server_factory: ServerFactory,
) -> None:
    """Metadata, discovery, registration, browser login with the resource: one call each."""
    server = oauth_server_factory(strict_resource=True)
    manager = freshtoken.for_resource(
        server.api_url, store=MemoryStore(), open_browser=server.browser(), clock=server.clock
    )
    answer = _me(manager, server)
    assert answer.status_code == 200, answer.text
    assert answer.json()["client_id"].startswith("reg-")
    assert answer.json()["scope"] == "offline_access read write"  # the resource's scopes
    stats = server.stats()
    assert (stats["registrations"], stats["logins"]) == (1, 1)
    assert _refresher(manager).logins == 1


def test_every_refresh_carries_the_resource(oauth_server_factory: ServerFactory) -> None:
    """RFC 8707 on refresh: a strict server accepts each one (DESIGN.md invariant 15)."""
    server = oauth_server_factory(strict_resource=True, access_ttl=60)
    manager = freshtoken.for_resource(
        server.api_url, store=MemoryStore(), open_browser=server.browser(), clock=server.clock
    )
    assert _me(manager, server).status_code == 200
    for _ in range(3):
        server.advance(61)
        assert _me(manager, server).status_code == 200
    stats = server.stats()
    assert stats["refreshes"] == 3
    assert stats["refreshes_without_resource"] == 0
    assert stats["logins"] == 1


def test_processes_share_one_registration_and_one_grant(
    oauth_server: ReferenceServer, tmp_path: Path
) -> None:
    """Two managers on one token file (two processes' worth): one registration, one login;
    a second API at the same server reuses the registration."""
    path = tmp_path / "tokens.json"
    browser = oauth_server.browser()
    first = freshtoken.for_resource(
        oauth_server.api_url, store=FileStore(path, profile="api"), open_browser=browser
    )
    assert _me(first, oauth_server).status_code == 200
    second = freshtoken.for_resource(
        oauth_server.api_url, store=FileStore(path, profile="api"), open_browser=browser
    )
    assert _me(second, oauth_server).status_code == 200
    assert oauth_server.stats()["logins"] == 1
    other = freshtoken.for_resource(
        f"{oauth_server.api_url}/items",
        store=FileStore(path, profile="items"),
        open_browser=browser,
    )
    other.get_tokens()
    stats = oauth_server.stats()
    assert (stats["registrations"], stats["logins"]) == (1, 2)
    profiles = FileStore(path).profiles()
    assert any(name.startswith("client-") for name in profiles)


def test_a_refused_refresh_keeps_an_access_token_that_works(
    oauth_server_factory: ServerFactory,
) -> None:
    """A 400 invalid_grant while the access token is valid is no end of the session: the
    token is used until it expires; then (not interactive) the session ends."""
    server = oauth_server_factory(access_ttl=300, refresh_idle_ttl=10)
    manager = freshtoken.for_resource(
        server.api_url,
        store=MemoryStore(),
        open_browser=server.browser(),
        clock=server.clock,
        interactive=True,
    )
    assert _me(manager, server).status_code == 200
    _refresher(manager).interactive = False
    server.advance(20)  # the grant is idle too long; the access token has 280 s left
    with pytest.raises(RefreshFailed, match="kept until it expires"):
        manager.refresh()
    assert _me(manager, server).status_code == 200
    server.advance(300)
    with pytest.raises(SessionExpired):
        manager.get_tokens()
    assert server.stats()["logins"] == 1


def test_a_transient_refresh_failure_keeps_the_tokens(oauth_server: ReferenceServer) -> None:
    manager = freshtoken.for_resource(
        oauth_server.api_url,
        store=MemoryStore(),
        open_browser=oauth_server.browser(),
        clock=oauth_server.clock,
        retry=freshtoken.RetryPolicy(attempts=1),
    )
    before = manager.get_tokens()
    oauth_server.inject("status_503")
    with pytest.raises(RefreshFailed):
        manager.refresh()
    assert manager.get_tokens() == before
    assert manager.refresh() != before
    assert oauth_server.stats()["logins"] == 1


def test_an_expired_grant_logs_in_again_when_interactive(oauth_server: ReferenceServer) -> None:
    manager = freshtoken.for_resource(
        oauth_server.api_url,
        store=MemoryStore(),
        open_browser=oauth_server.browser(),
        clock=oauth_server.clock,
    )
    manager.get_tokens()
    oauth_server.revoke("demo")
    oauth_server.advance(400)
    assert _me(manager, oauth_server).status_code == 200
    assert oauth_server.stats()["logins"] == 2


def test_step_up_logs_in_once_for_the_union_of_scopes(oauth_server: ReferenceServer) -> None:
    """403 insufficient_scope: a login for read write admin; asked again, no second one."""
    manager = freshtoken.for_resource(
        oauth_server.api_url,
        store=MemoryStore(),
        open_browser=oauth_server.browser("admin", "admin"),
        clock=oauth_server.clock,
    )
    refresher = _refresher(manager)
    tokens = manager.get_tokens()
    with httpx.Client() as http:
        denied = http.get(
            f"{oauth_server.api_url}/admin", headers={"Authorization": tokens.authorization}
        )
    assert denied.status_code == 403
    challenge = denied.headers.get_list("WWW-Authenticate")
    assert refresher.step_up(challenge, tokens) is True
    stepped = manager.refresh()
    assert stepped.scope is not None
    assert set(stepped.scope.split()) >= {"read", "write", "admin"}
    assert refresher.step_up(challenge, tokens) is False  # asked for already: no loop
    assert oauth_server.stats()["logins"] == 2
    assert oauth_server.stats()["refreshes"] == 0  # a step-up is never a refresh


def test_no_resource_metadata_is_a_clear_login_failure(oauth_server: ReferenceServer) -> None:
    manager = freshtoken.for_resource(
        f"{oauth_server.url}/elsewhere", store=MemoryStore(), open_browser=oauth_server.browser()
    )
    with pytest.raises(LoginFailed, match="no protected resource metadata") as failed:
        manager.get_tokens()
    assert "HTTP 404" in str(failed.value)


def test_a_given_client_id_is_used_without_registering(oauth_server: ReferenceServer) -> None:
    manager = freshtoken.for_resource(
        oauth_server.api_url,
        store=MemoryStore(),
        client_id="demo-public",
        open_browser=oauth_server.browser(),
    )
    assert _me(manager, oauth_server).json()["client_id"] == "demo-public"
    assert oauth_server.stats()["registrations"] == 0


def test_a_client_steps_up_once_on_insufficient_scope(oauth_server: ReferenceServer) -> None:
    """Through an httpx2 client: the 403 leads to one login for read write admin and one
    retry, never a refresh; the new tokens serve the next requests."""
    import httpx2

    import freshtoken.httpx2

    manager = freshtoken.for_resource(
        oauth_server.api_url,
        store=MemoryStore(),
        open_browser=oauth_server.browser("admin", "admin"),
        clock=oauth_server.clock,
    )
    auth = freshtoken.httpx2.TokenAuth(manager, origins=[oauth_server.api_url])
    with httpx2.Client(auth=auth) as http:
        assert http.get(f"{oauth_server.api_url}/me").status_code == 200
        admin = http.get(f"{oauth_server.api_url}/admin")
        assert admin.status_code == 200, admin.text
        assert http.get(f"{oauth_server.api_url}/admin").status_code == 200
    stats = oauth_server.stats()
    assert (stats["logins"], stats["refreshes"], stats["forbidden_403"]) == (2, 0, 1)


def test_a_fleet_on_redis_shares_the_grant_and_the_registration(
    oauth_server: ReferenceServer, shared_redis_server: Any
) -> None:
    """Two managers on one Redis key (two machines' worth): one registration, kept under a key
    of its own beside the tokens, and one login."""
    from freshtoken import RedisStore

    key = f"freshtoken:test:{uuid.uuid4().hex}"
    browser = oauth_server.browser()
    managers = [
        freshtoken.for_resource(
            oauth_server.api_url,
            store=RedisStore(shared_redis_server.url, key),
            open_browser=browser,
        )
        for _ in range(2)
    ]
    assert [_me(manager, oauth_server).status_code for manager in managers] == [200, 200]
    stats = oauth_server.stats()
    assert (stats["registrations"], stats["logins"]) == (1, 1)
    keys = shared_redis_server.client().keys(f"{key}:client-*")
    assert len(keys) == 1


def test_a_revoked_grant_logs_in_again_at_once(oauth_server: ReferenceServer) -> None:
    """The API refuses the token and the refresh is refused: the session is over now, not
    when the token would have expired; an interactive client logs in again and goes on."""
    import httpx2

    import freshtoken.httpx2

    manager = freshtoken.for_resource(
        oauth_server.api_url,
        store=MemoryStore(),
        open_browser=oauth_server.browser(),
        clock=oauth_server.clock,
    )
    auth = freshtoken.httpx2.TokenAuth(manager, origins=[oauth_server.api_url])
    with httpx2.Client(auth=auth) as http:
        assert http.get(f"{oauth_server.api_url}/me").status_code == 200
        oauth_server.revoke("demo")
        assert http.get(f"{oauth_server.api_url}/me").status_code == 200
    stats = oauth_server.stats()
    assert (stats["logins"], stats["invalid_grant"]) == (2, 1)
