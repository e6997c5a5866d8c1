"""Several BFF worker processes on one Redis, each started by ``freshtoken bff --config``:
a session logged in through one is served by all, and its tokens are refreshed once per
expiry across them (no reuse of a rotated refresh token). And ``--workers 2`` serves."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis_fixture import RedisServer, _free_port

from freshtoken import system_clock
from freshtoken.bff._demo import BFF_CLIENT_ID, BFF_CLIENT_SECRET, bff_server_config
from freshtoken.bff._serving import ServedApp
from freshtoken.server import ReferenceServer

from .bff_support import CSRF
from .test_login import Browser

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ACCESS_TTL = 2.0
START_TIMEOUT = 20.0


class RecordingAPI:
    """An upstream that answers 200 and remembers which access tokens it was shown."""

    def __init__(self) -> None:
        self.tokens: list[str] = []
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        with self._lock:
            self.tokens.append(headers.get(b"authorization", b"").decode())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})


class Worker:
    """A ``freshtoken bff`` process (one, or a uvicorn master with workers)."""

    def __init__(self, config: dict[str, Any], directory: Path, workers: int = 1) -> None:
        self.port = _free_port()
        config = {**config, "server": {"host": "127.0.0.1", "port": self.port, "workers": workers}}
        path = directory / f"bff-{self.port}.json"
        path.write_text(json.dumps(config))
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / f"bff-{self.port}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "freshtoken.cli", "bff", "--config", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # a process has nothing to wait on but its port
            assert self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/bff/user", headers=CSRF, timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"no answer within {START_TIMEOUT} s"
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def fleet(tmp_path: Path, redis_server: RedisServer) -> Iterator[dict[str, Any]]:
    server = ReferenceServer(bff_server_config(access_ttl=ACCESS_TTL), clock=system_clock)
    server.start()
    api = RecordingAPI()
    served = ServedApp(api).start()
    config = {
        "issuer": server.url,
        "client_id": BFF_CLIENT_ID,
        "client_secret": BFF_CLIENT_SECRET,
        "secret_key": "the workers share this passphrase",
        "leeway": 0.5,
        "routes": {"/api/": f"{served.url}/"},
        "sessions": {"kind": "redis", "url": redis_server.url, "prefix": "fleet:"},
    }
    workers: list[Worker] = []
    try:
        yield {"server": server, "api": api, "config": config, "workers": workers}
    finally:
        for worker in workers:
            worker.stop()
        served.stop()
        server.stop()


def test_two_workers_refresh_each_sessions_tokens_once_per_expiry(
    fleet: dict[str, Any], tmp_path: Path
) -> None:
    """Log in through worker A; hammer A and B for a few token lifetimes: every call 200,
    one refresh per access token the API saw, no refresh token presented twice."""
    server: ReferenceServer = fleet["server"]
    api: RecordingAPI = fleet["api"]
    workers: list[Worker] = fleet["workers"]
    workers += [Worker(fleet["config"], tmp_path), Worker(fleet["config"], tmp_path)]

    browser = Browser(httpx.Client(base_url=workers[0].url, timeout=10.0))
    browser.login()
    session = browser.cookies["__Host-bff"]
    server.reset_stats()
    clients = [httpx.Client(base_url=w.url, timeout=10.0) for w in workers]
    headers = {**CSRF, "Cookie": f"__Host-bff={session}"}
    deadline = time.monotonic() + 3 * ACCESS_TTL

    def hammer(index: int) -> list[int]:
        client = clients[index % 2]
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(client.get("/api/items", headers=headers).status_code)
        return statuses

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = [status for statuses in pool.map(hammer, range(6)) for status in statuses]
    for client in clients:
        _one_date_and_no_server_header(client.get("/api/items", headers=headers))
        client.close()
    stats = server.stats()
    seen = {token for token in api.tokens if token}
    assert set(results) == {200}, sorted(set(results))
    assert len(results) > 50
    assert stats["reuse_detections"] == 0
    assert stats["token_errors"] == 0
    assert stats["refreshes"] >= 2  # three lifetimes went by
    # One refresh per token generation: every refresh gave a token the API then saw, but for
    # at most the last one, which may land as the hammering stops.
    assert len(seen) - 1 <= stats["refreshes"] <= len(seen)


def test_uvicorn_with_two_workers_serves_a_session(fleet: dict[str, Any], tmp_path: Path) -> None:
    """``workers = 2`` in the config (Redis sessions): the BFF starts and logs in."""
    fleet["workers"].append(Worker(fleet["config"], tmp_path, workers=2))
    url = fleet["workers"][-1].url

    browser = Browser(httpx.Client(base_url=url, timeout=10.0))
    done = browser.login()
    assert done.status_code == 302
    session = browser.cookies["__Host-bff"]
    for _ in range(10):  # new connections: the kernel spreads them over both workers
        answer = httpx.get(
            f"{url}/api/items", headers={**CSRF, "Cookie": f"__Host-bff={session}"}, timeout=10
        )
        assert answer.status_code == 200
        _one_date_and_no_server_header(answer)


def _one_date_and_no_server_header(answer: httpx.Response) -> None:
    """A proxied answer carries the API's Date only, and no Server header of uvicorn's
    (uvicorn adds both by default: the answer had two Date headers)."""
    assert answer.status_code == 200
    assert len(answer.headers.get_list("date")) <= 1
    assert "uvicorn" not in answer.headers.get_list("server")


@pytest.fixture
def api_fleet(
    tmp_path: Path, redis_server: RedisServer, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """Workers whose ``/api/`` is the reference server's own API (it checks every token, and
    counts the 401s it answers), access tokens of 5 s (or the test's indirect parameter);
    ``/rec/`` records the tokens seen."""
    ttl = float(getattr(request, "param", 5.0))
    server = ReferenceServer(bff_server_config(access_ttl=ttl), clock=system_clock)
    server.start()
    api = RecordingAPI()
    served = ServedApp(api).start()
    config = {
        "issuer": server.url,
        "client_id": BFF_CLIENT_ID,
        "client_secret": BFF_CLIENT_SECRET,
        "secret_key": "the workers share this passphrase",
        "leeway": 0.5,
        "routes": {"/api/": f"{server.url}/api/", "/rec/": f"{served.url}/"},
        "sessions": {"kind": "redis", "url": redis_server.url, "prefix": "fleet5:"},
    }
    workers: list[Worker] = []
    try:
        yield {"server": server, "api": api, "config": config, "workers": workers}
    finally:
        for worker in workers:
            worker.stop()
        served.stop()
        server.stop()


@pytest.mark.parametrize("api_fleet", [300.0], indirect=True)  # B would keep its token minutes
def test_a_token_one_worker_replaced_is_dropped_by_the_others_at_once(
    api_fleet: dict[str, Any], tmp_path: Path
) -> None:
    """Worker A refreshes (the API rejected the token once); worker B, which had the old
    token cached for minutes to come, sends the new one within a second: it heard of the
    change on its one pattern subscription."""
    server: ReferenceServer = api_fleet["server"]
    api: RecordingAPI = api_fleet["api"]
    workers: list[Worker] = api_fleet["workers"]
    workers += [Worker(api_fleet["config"], tmp_path), Worker(api_fleet["config"], tmp_path)]
    browser = Browser(httpx.Client(base_url=workers[0].url, timeout=10.0))
    browser.login()
    headers = {**CSRF, "Cookie": f"__Host-bff={browser.cookies['__Host-bff']}"}
    first, second = (httpx.Client(base_url=w.url, timeout=10.0) for w in workers)
    assert second.get("/rec/x", headers=headers).status_code == 200  # B caches the token
    old = api.tokens[-1]
    server.fail_api(1)
    assert first.get("/api/me", headers=headers).status_code == 200  # A refreshes, retries
    assert first.get("/rec/x", headers=headers).status_code == 200
    new = api.tokens[-1]
    assert new != old
    deadline = time.monotonic() + 1.0
    while True:  # the notification crosses Redis on its own schedule: a bounded wait
        assert second.get("/rec/x", headers=headers).status_code == 200
        if api.tokens[-1] == new:
            break
        assert api.tokens[-1] == old
        assert time.monotonic() < deadline, "worker B kept sending the replaced token"
    first.close()
    second.close()


def test_three_workers_on_five_second_tokens_send_no_token_the_api_rejects(
    api_fleet: dict[str, Any], tmp_path: Path
) -> None:
    """Three workers, one session, calls spread over them for three token lifetimes: every
    call 200, and the API never answered 401 (no worker sent a token another had replaced,
    nor an expired one); one refresh per expiry, no refresh token reused."""
    server: ReferenceServer = api_fleet["server"]
    workers: list[Worker] = api_fleet["workers"]
    workers += [Worker(api_fleet["config"], tmp_path) for _ in range(3)]
    browser = Browser(httpx.Client(base_url=workers[0].url, timeout=10.0))
    browser.login()
    headers = {**CSRF, "Cookie": f"__Host-bff={browser.cookies['__Host-bff']}"}
    server.reset_stats()
    clients = [httpx.Client(base_url=w.url, timeout=10.0) for w in workers]
    deadline = time.monotonic() + 15.0

    def hammer(index: int) -> list[int]:
        client = clients[index % 3]
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(client.get("/api/me", headers=headers).status_code)
        return statuses

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = [status for statuses in pool.map(hammer, range(6)) for status in statuses]
    for client in clients:
        _one_date_and_no_server_header(client.get("/api/items", headers=headers))
        client.close()
    stats = server.stats()
    assert set(results) == {200}, sorted(set(results))
    assert stats["unauthorized_401"] == 0
    assert stats["reuse_detections"] == 0
    assert 2 <= stats["refreshes"] <= 4  # one per 5 s lifetime (refreshed before expiry)
