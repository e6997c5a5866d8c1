"""What only one library can express: file bodies, a library's own redirect settings."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from urllib.parse import quote

import aiohttp
import pytest
import requests

import freshtoken
from freshtoken.aiohttp import TokenMiddleware
from freshtoken.aiohttp import TokenMiddleware as AiohttpTokenAuth
from freshtoken.requests import TokenAuth

from .conftest import Env


@pytest.fixture(params=["requests"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def session(env: Env) -> Iterator[requests.Session]:
    with requests.Session() as made:
        made.auth = TokenAuth(env.manager)
        yield made


def test_requests_rewinds_a_file_body(env: Env, session: requests.Session) -> None:
    """A seekable file is rewound to where it stood when the request was prepared."""
    body = io.BytesIO(b"skipped|the file's content")
    body.seek(len(b"skipped|"))
    env.server.fail_api(1)
    response = session.post(env.url("/api/echo"), data=body)
    assert response.status_code == 200
    assert response.json()["body"] == "the file's content"
    assert [r.status_code for r in response.history] == [401]


def test_requests_retry_keeps_redirect_history(env: Env, session: requests.Session) -> None:
    """A rejected request that then redirects within the origin uses the new token."""
    env.server.fail_api(1)
    target = env.url("/api/echo")
    response = session.get(env.url("/api/redirect"), params={"to": target})
    assert response.status_code == 200
    assert response.json()["has_authorization"] is True
    assert env.stats()["refreshes"] == 1


def test_requests_auth_per_request(env: Env) -> None:
    """``requests.get(url, auth=TokenAuth(manager))`` works without a session."""
    env.server.fail_api(1)
    response = requests.get(env.url("/api/me"), auth=TokenAuth(env.manager), timeout=10)
    assert response.status_code == 200
    assert env.stats()["refreshes"] == 1


def test_aiohttp_replays_a_file_payload(env: Env) -> None:
    """aiohttp rewinds a seekable file payload itself: the retry sends it whole."""

    async def main() -> tuple[int, str]:
        middleware = TokenMiddleware(env.manager, origins=[env.server.url])
        async with aiohttp.ClientSession(middlewares=(middleware,)) as client:
            env.server.fail_api(1)
            async with client.post(env.url("/api/echo"), data=io.BytesIO(b"file")) as response:
                return response.status, json.loads(await response.read())["body"]

    assert asyncio.run(main()) == (200, "file")
    assert env.stats()["refreshes"] == 1


def test_aiohttp_alias_and_repr(env: Env) -> None:
    """``TokenAuth`` is the middleware under the other integrations' name; repr hides tokens."""
    assert AiohttpTokenAuth is TokenMiddleware
    text = repr(TokenMiddleware(env.manager, origins=[env.server.url]))
    assert env.server.url.split("//")[1] in text
    assert env.manager.get_tokens().access_token not in text


def test_requests_insecure_allowed_explicitly(env: Env) -> None:
    """``allow_insecure_http`` lets a token cross plain HTTP to a named host."""
    auth = TokenAuth(env.manager, origins=["http://api.example.invalid"], allow_insecure_http=True)
    prepared = requests.Request("GET", "http://api.example.invalid/me", auth=auth).prepare()
    assert prepared.headers["Authorization"].startswith("Bearer ")
    with pytest.raises(freshtoken.InsecureTransportError):
        requests.Request(
            "GET", "http://api.example.invalid/me", auth=TokenAuth(env.manager)
        ).prepare()


def test_aiohttp_unfollowed_redirect_leaves_the_next_request_alone(
    env: Env, other_origin: str
) -> None:
    """A cross-origin redirect fetched with allow_redirects=False does not strip the token
    from the task's next request to that (allowed) origin."""

    async def main() -> tuple[int, bool]:
        middleware = TokenMiddleware(env.manager, origins=[env.server.url, other_origin])
        redirect = env.url("/api/redirect?to=" + quote(f"{other_origin}/echo", safe=""))
        async with aiohttp.ClientSession(middlewares=(middleware,)) as client:
            async with client.get(redirect, allow_redirects=False) as response:
                status = response.status
            async with client.get(f"{other_origin}/echo") as response:
                return status, json.loads(await response.read())["has_authorization"]

    assert asyncio.run(main()) == (302, True)
