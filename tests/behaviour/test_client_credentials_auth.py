"""``ClientCredentialsAuth``: the client credentials grant in one object, through every
integration (httpx sync, asyncio and trio, httpx2, requests, aiohttp), against the reference
server."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

import freshtoken
import freshtoken.aiohttp
import freshtoken.httpx
import freshtoken.httpx2
import freshtoken.requests
from freshtoken.server import ReferenceServer

from .drivers import AiohttpDriver, Driver, HttpxAsyncDriver, HttpxSyncDriver, RequestsDriver

SECRET = "demo-secret"


@pytest.fixture
def drive(oauth_server: ReferenceServer, client_kind: str) -> Any:
    """Makes a driver of this test's integration whose auth is a ClientCredentialsAuth."""
    made: list[Driver] = []

    def drive(**options: Any) -> Driver:
        options.setdefault("origins", [oauth_server.url])
        arguments = (oauth_server.token_url, "demo", options.pop("client_secret", SECRET))
        driver: Driver
        if client_kind == "httpx-sync":
            driver = HttpxSyncDriver(freshtoken.httpx.ClientCredentialsAuth(*arguments, **options))
        elif client_kind in ("httpx-async", "httpx-trio"):
            auth = freshtoken.httpx.ClientCredentialsAuth(*arguments, **options)
            driver = HttpxAsyncDriver(auth, "trio" if client_kind == "httpx-trio" else "asyncio")
        elif client_kind == "httpx2-sync":
            auth2 = freshtoken.httpx2.ClientCredentialsAuth(*arguments, **options)
            driver = HttpxSyncDriver(auth2, httpx2)
        elif client_kind == "httpx2-async":
            auth2 = freshtoken.httpx2.ClientCredentialsAuth(*arguments, **options)
            driver = HttpxAsyncDriver(auth2, "asyncio", httpx2)
        elif client_kind == "requests":
            session_auth = freshtoken.requests.ClientCredentialsAuth(*arguments, **options)
            driver = RequestsDriver(session_auth)
        else:
            middleware = freshtoken.aiohttp.ClientCredentialsMiddleware(*arguments, **options)
            driver = AiohttpDriver(middleware)
        made.append(driver)
        return driver

    yield drive
    for driver in made:
        driver.close()
        driver.auth.close()  # type: ignore[attr-defined]


def acquisitions(server: ReferenceServer) -> int:
    return int(server.stats()["token_requests_by_grant"]["client_credentials"])


def test_one_object_acquires_a_token_and_keeps_it(
    drive: Any, oauth_server: ReferenceServer
) -> None:
    client = drive()
    for _ in range(3):
        status, body = client.get(f"{oauth_server.url}/api/me")
        assert (status, body["sub"], body["client_id"]) == (200, "demo", "demo")
    assert acquisitions(oauth_server) == 1


def test_the_scope_is_asked_for(drive: Any, oauth_server: ReferenceServer) -> None:
    status, body = drive(scope="read").get(f"{oauth_server.url}/api/me")
    assert (status, body["scope"]) == (200, "read")


def test_a_storm_acquires_once(drive: Any, oauth_server: ReferenceServer) -> None:
    outcomes = drive().storm(f"{oauth_server.url}/api/me", 32)
    assert [outcome[0] for outcome in outcomes if isinstance(outcome, tuple)] == [200] * 32
    assert acquisitions(oauth_server) == 1


def test_a_rejection_acquires_a_new_token_and_retries_once(
    drive: Any, oauth_server: ReferenceServer
) -> None:
    client = drive()
    assert client.get(f"{oauth_server.url}/api/me")[0] == 200
    oauth_server.fail_api(1)
    assert client.get(f"{oauth_server.url}/api/me")[0] == 200
    assert acquisitions(oauth_server) == 2


def test_the_token_goes_only_to_the_origins_given(
    drive: Any, oauth_server: ReferenceServer, other_origin: str
) -> None:
    client = drive()
    assert client.get(f"{other_origin}/echo")[1]["has_authorization"] is False
    elsewhere = oauth_server.url.replace("127.0.0.1", "localhost")  # same server, other origin
    assert client.get(f"{elsewhere}/api/echo")[1]["has_authorization"] is False
    assert acquisitions(oauth_server) == 0


def test_a_wrong_secret_is_one_clear_error_without_the_secret(
    drive: Any, oauth_server: ReferenceServer
) -> None:
    client = drive(client_secret="not-the-secret")
    with pytest.raises(freshtoken.SessionExpired) as caught:
        client.get(f"{oauth_server.url}/api/me")
    assert caught.value.error == "invalid_client"
    assert "not-the-secret" not in str(caught.value)
    assert "not-the-secret" not in repr(client.auth)


def test_closing_the_auth_closes_its_manager(drive: Any, oauth_server: ReferenceServer) -> None:
    client = drive()
    assert client.get(f"{oauth_server.url}/api/me")[0] == 200
    client.auth.close()
    assert client.auth.manager.closed
    with pytest.raises(RuntimeError, match="closed"):
        client.get(f"{oauth_server.url}/api/me")


@pytest.mark.parametrize(
    "auth",
    [
        freshtoken.httpx.ClientCredentialsAuth,
        freshtoken.requests.ClientCredentialsAuth,
        freshtoken.aiohttp.ClientCredentialsMiddleware,
    ],
)
def test_origins_must_be_named(auth: Any) -> None:
    """No default: not everywhere, and not the token endpoint's origin either."""
    url = "https://id.example.com/oauth/token"
    with pytest.raises(TypeError, match="origins"):
        auth(url, "demo", SECRET)
    with pytest.raises(TypeError, match=r"origins=\[\.\.\.\]"):
        auth(url, "demo", SECRET, origins=None)
    with pytest.raises(TypeError, match=r"origins=\[\.\.\.\]"):
        auth(url, "demo", SECRET, origins="https://api.example.com")
    with pytest.raises(ValueError, match="origins is empty"):
        auth(url, "demo", SECRET, origins=[])
    with pytest.raises(ValueError, match="needs a client_secret or a private_key"):
        auth(url, "demo", origins=["https://api.example.com"])
