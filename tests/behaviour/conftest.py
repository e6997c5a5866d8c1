"""Fixtures of the behaviour suite: every test runs once per integration and per store.

``STORES`` is the one place that lists the stores; each entry makes a fresh store and may ask
pytest for what it needs (``request.getfixturevalue("tmp_path")``...).

``SCHEMES``: tests marked ``dpop`` also run with DPoP on (``dpop(only=True)``: only with it).
Then the server demands nonces (rotated every five minutes of its clock), the manager is
given a DPoP key, and the session is a public client's, whose refresh tokens are bound to
that key.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

import freshtoken
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken.server import DPoPConfig, ReferenceServer

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A behaviour that cannot apply to a proxy (marked ``not_bff(reason)``) does not run for
    the BFF: deselected, not skipped, since a skip would read as a missing service in CI."""
    unfit = [
        item
        for item in items
        if item.get_closest_marker("not_bff") is not None
        and getattr(item, "callspec", None) is not None
        and item.callspec.params.get("client_kind") == "bff"  # type: ignore[attr-defined]
    ]
    if unfit:
        config.hook.pytest_deselected(items=unfit)
        items[:] = [item for item in items if item not in unfit]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # DPoP changes what goes over the wire, not how a store takes part (its key travels with
    # the tokens: test_dpop proves that across processes on the durable stores), so the DPoP
    # run of a behaviour shared with Bearer uses the memory store; the Bearer run covers every
    # store, and DPoP's own behaviours (dpop(only=True)) follow their every_store mark.
    every = metafunc.definition.get_closest_marker("every_store") is not None
    stores = sorted(STORES) if every else ["memory"]
    has_store = "store" in metafunc.fixturenames
    if "scheme" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("dpop")
        schemes = ["bearer"] if marker is None else ["bearer", "dpop"]
        only = marker is not None and bool(marker.kwargs.get("only"))
        if only:
            schemes = ["dpop"]
        if has_store:
            pairs = [
                (s, n) for s in schemes for n in (stores if s == "bearer" or only else ["memory"])
            ]
            metafunc.parametrize(("scheme", "store"), pairs, indirect=True)
            return
        metafunc.parametrize("scheme", schemes, indirect=True)
    if has_store:
        metafunc.parametrize("store", stores, indirect=True)


FAST_RETRY = freshtoken.RetryPolicy(attempts=3, initial=0.01, maximum=0.05)


@pytest.fixture(params=KINDS)
def client_kind(request: pytest.FixtureRequest) -> str:
    """The integration under test. A behaviour that cannot apply to a proxy is marked
    ``not_bff(reason)`` and does not run for the BFF (pytest_collection_modifyitems)."""
    kind = str(request.param)
    return kind


@pytest.fixture
def scheme(request: pytest.FixtureRequest) -> str:
    """``bearer``, or ``dpop`` for a test marked ``dpop``."""
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
    dpop_key: freshtoken.DPoPKey | None = None  # the session's key when DPoP is on
    drivers: list[Driver] = dataclasses.field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.server.url}{path}"

    def driver(self, **options: Any) -> Driver:
        """A client of this test's integration; options go to its auth (origins=...)."""
        made = make_driver(self.kind, self.manager, **options)
        self.drivers.append(made)
        return made

    def login(self) -> freshtoken.TokenSet:
        if self.dpop_key is None:
            answer = self.server.login()
            tokens = freshtoken.TokenSet.from_response(answer, sent_at=self.server.clock())
        else:
            tokens = flows.password_login(
                self.server.token_url,
                username="demo",
                password="demo",
                client_id=DPOP_CLIENT,
                clock=self.server.clock,
                dpop=self.dpop_key,
            )
            assert tokens.token_type == "DPoP"
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


DPOP_CLIENT = "demo-public"  # a public client: its refresh tokens are bound to the key too


@pytest.fixture
def env(
    oauth_server: ReferenceServer, store: freshtoken.TokenStore, client_kind: str, scheme: str
) -> Iterator[Env]:
    """A logged-in manager on the server's clock; asserts no reuse detection at the end."""
    expired: list[BaseException] = []
    issued: list[freshtoken.TokenSet] = []
    key = None
    if scheme == "dpop":
        key = freshtoken.DPoPKey.generate()
        oauth_server.configure(dpop=DPoPConfig(nonces=True))
        refresher = freshtoken.OAuth2Refresher(oauth_server.token_url, client_id=DPOP_CLIENT)
    else:
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
        dpop=key,
    )
    world = Env(oauth_server, manager, client_kind, expired, issued, key)
    manager.set_tokens(world.login())
    if scheme == "dpop":
        oauth_server.reset_stats()  # the login's nonce round trip is no test's business
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
        path, _, query = self.path.partition("?")
        targets = parse_qs(query).get("to")
        if targets:
            self.send_response(302)
            self.send_header("Location", targets[0])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status = 401 if "401" in path.split("/") else 200
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

    A path with a ``401`` segment answers 401 with a Bearer challenge, one with ``?to=URL``
    redirects there (302), anything else 200; 200 and 401 as JSON with ``has_authorization``
    and the ``path`` as it arrived.
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
