"""Fixtures of the behaviour suite: every test runs once per integration and per store.

``STORES`` is the one place that lists the stores; each entry makes a fresh store and may ask
pytest for what it needs (``request.getfixturevalue("tmp_path")``...).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import freshtoken
from freshtoken.server import ReferenceServer

from .drivers import KINDS, Driver, make_driver

StoreFactory = Callable[[pytest.FixtureRequest], freshtoken.TokenStore]


def _file_store(request: pytest.FixtureRequest) -> freshtoken.TokenStore:
    return freshtoken.FileStore(request.getfixturevalue("tmp_path") / "tokens.json")


def _redis_store(request: pytest.FixtureRequest) -> freshtoken.TokenStore:
    server = request.getfixturevalue("shared_redis_server")
    return freshtoken.RedisStore(server.url, key=f"freshtoken:{uuid.uuid4().hex}")


STORES: dict[str, StoreFactory] = {
    "memory": lambda request: freshtoken.MemoryStore(),
    "file": _file_store,
    "redis": _redis_store,
}

# Every behaviour runs on MemoryStore; those marked ``every_store`` (where the store takes
# part: storms, rotation, expiry, fallback) also run on the durable ones. Running all of them
# on every store would triple the suite's time and prove nothing more.


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store" not in metafunc.fixturenames:
        return
    every = metafunc.definition.get_closest_marker("every_store") is not None
    names = sorted(STORES) if every else ["memory"]
    metafunc.parametrize("store", names, indirect=True)


FAST_RETRY = freshtoken.RetryPolicy(attempts=3, initial=0.01, maximum=0.05)


@pytest.fixture(params=KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Iterator[freshtoken.TokenStore]:
    made = STORES[request.param](request)
    yield made
    made.close()


@dataclasses.dataclass
class Env:
    """One test's world: the server, a logged-in manager, and a way to make clients."""

    server: ReferenceServer
    manager: freshtoken.TokenManager
    kind: str
    expired: list[BaseException]  # every on_session_expired call
    issued: list[freshtoken.TokenSet]  # every token set the manager held: for secret scans
    drivers: list[Driver] = dataclasses.field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"

    def driver(self, **options: Any) -> Driver:
        """A client of this test's integration; options go to its auth (origins=...)."""
        made = make_driver(self.kind, self.manager, **options)
        self.drivers.append(made)
        return made

    def login(self) -> freshtoken.TokenSet:
        tokens = freshtoken.TokenSet.from_response(self.server.login(), sent_at=self.server.clock())
        self.issued.append(tokens)
        return tokens

    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    def secrets(self) -> set[str]:
        found = set()
        for tokens in self.issued:
            found.add(tokens.access_token)
            if tokens.refresh_token:
                found.add(tokens.refresh_token)
        return found


@pytest.fixture
def env(
    oauth_server: ReferenceServer, store: freshtoken.TokenStore, client_kind: str
) -> Iterator[Env]:
    """A logged-in manager on the server's clock; asserts no reuse detection at the end."""
    expired: list[BaseException] = []
    issued: list[freshtoken.TokenSet] = []
    refresher = freshtoken.OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    manager = freshtoken.TokenManager(
        refresher,
        store,
        retry=FAST_RETRY,
        clock=oauth_server.clock,
        on_session_expired=expired.append,
        on_refresh=issued.append,
    )
    world = Env(oauth_server, manager, client_kind, expired, issued)
    manager.set_tokens(world.login())
    yield world
    for made in world.drivers:
        made.close()
    refresher.close()
    assert oauth_server.stats()["reuse_detections"] == 0, "a rotated refresh token was reused"


# -- another origin: a plain HTTP listener that says whether it saw a token --------------------


class _Recorder(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status = 401 if self.path.startswith("/401") else 200
        document = {
            "method": self.command,
            "path": self.path,
            "has_authorization": "Authorization" in self.headers,
            "body": body.decode("utf-8", "replace"),
        }
        payload = json.dumps(document).encode()
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="elsewhere"')
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean: the test reads the JSON answers instead


@pytest.fixture(scope="session")
def other_origin() -> Iterator[str]:
    """The URL of a listener on another port (so another origin) that reports tokens seen.

    ``/401...`` answers 401 with a Bearer challenge, anything else 200; both as JSON with
    ``has_authorization``.
    """
    listener = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    listener.daemon_threads = True
    thread = threading.Thread(target=listener.serve_forever, name="other-origin", daemon=True)
    thread.start()
    host, port = listener.server_address[:2]
    yield f"http://{host!s}:{port}"
    listener.shutdown()
    listener.server_close()
    thread.join(timeout=5)
