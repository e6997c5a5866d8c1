"""Fixtures of the BFF tests (tests/bff/conftest.py imports them): a reference server, a BFF
in front of it (served by uvicorn on a real port, sessions in memory or in a real Redis), and
a logged-in browser's cookie.

Before the browser login exists the tests start sessions with ``BFF.start_session`` on the
BFF's own event loop, from tokens of a password grant at the reference server.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from redis_fixture import RedisServer

from freshtoken import ManualClock, TokenSet
from freshtoken.bff import BFF, MemorySessionStore, RedisSessionStore, SessionStore
from freshtoken.bff._demo import BFF_CLIENT_ID, BFF_CLIENT_SECRET, bff_server_config
from freshtoken.bff._serving import ServedApp
from freshtoken.server import ReferenceServer

SECRET = "a bff test passphrase, long enough"
CSRF = {"X-CSRF": "1"}


class Deployment:
    """A BFF in front of a reference server, served on a loopback port."""

    def __init__(self, server: ReferenceServer, bff: BFF, served: ServedApp) -> None:
        self.server = server
        self.bff = bff
        self.served = served
        self.url = served.url
        self.http = httpx.Client(base_url=served.url, timeout=10.0)

    def login(self, user: str = "demo", claims: dict[str, Any] | None = None) -> str:
        """A session for ``user``: its id, as the browser's cookie would hold it."""
        answer = self.server.login(
            user, user, client_id=BFF_CLIENT_ID, client_secret=BFF_CLIENT_SECRET, scope="read write"
        )
        tokens = TokenSet.from_response(answer, sent_at=self.server.clock())
        session_id, _ = self.served.call(
            self.bff.start_session(tokens, claims or {"sub": user, "name": user.title()})
        )
        return session_id

    def cookie(self, session_id: str) -> dict[str, str]:
        return {"Cookie": f"{self.bff.cookie_name}={session_id}"}

    def get(self, path: str, session_id: str | None, **headers: str) -> httpx.Response:
        sent = {**CSRF, **headers}
        if session_id is not None:
            sent.update(self.cookie(session_id))
        return self.http.get(path, headers=sent)

    def close(self) -> None:
        self.http.close()
        self.served.stop()


DeploymentFactory = Callable[..., Deployment]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def session_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_sessions(session_kind: str, request: pytest.FixtureRequest) -> Callable[[], SessionStore]:
    """Session stores of the kind under test (Redis: a fresh key prefix on a shared server)."""
    if session_kind == "memory":
        return MemorySessionStore
    server: RedisServer = request.getfixturevalue("shared_redis_server")
    prefix = f"freshtoken:bff-test:{uuid.uuid4().hex}:"
    return lambda: RedisSessionStore.from_url(server.url, prefix=prefix)


@pytest.fixture
def oauth_server(oauth_server_factory: Any) -> ReferenceServer:
    """The reference server, with the BFF's client (redirect URI: /bff/callback on loopback)."""
    server: ReferenceServer = oauth_server_factory(bff_server_config())
    return server


@pytest.fixture
def deploy(
    oauth_server: ReferenceServer, make_sessions: Callable[[], SessionStore]
) -> Iterator[DeploymentFactory]:
    """Make BFF deployments in front of ``oauth_server``; all stopped at teardown."""
    made: list[Deployment] = []

    def factory(**options: Any) -> Deployment:
        settings: dict[str, Any] = {
            "client_id": BFF_CLIENT_ID,
            "client_secret": BFF_CLIENT_SECRET,
            "issuer": oauth_server.url,
            "secret_key": SECRET,
            "routes": {"/api/": f"{oauth_server.url}/api/"},
            "sessions": make_sessions(),
            "clock": oauth_server.clock,
            "leeway": 5.0,
        }
        settings.update(options)
        bff = BFF(**settings)
        deployment = Deployment(oauth_server, bff, ServedApp(bff).start())
        made.append(deployment)
        return deployment

    yield factory
    for deployment in made:
        with contextlib.suppress(Exception):
            deployment.close()


@pytest.fixture
def deployment(deploy: DeploymentFactory) -> Deployment:
    return deploy()


@pytest.fixture
def clock(oauth_server: ReferenceServer) -> ManualClock:
    assert isinstance(oauth_server.clock, ManualClock)
    return oauth_server.clock
