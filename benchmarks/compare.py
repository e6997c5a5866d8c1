"""freshtoken next to authlib, httpx-auth and requests-oauthlib, measured the same way.

    pip install -r benchmarks/requirements-compare.txt
    python benchmarks/compare.py [--quick] [--output docs/comparison.md]

Three measurements, each against the reference server in its own process (rotation and reuse
detection on, as many production servers run them: a refresh token presented twice revokes
the whole session):

* Storm after expiry: log in, let the access token expire, then send N requests at once
  (threads for sync clients, asyncio tasks for async ones). Counted at the server: refresh
  grants, password grants (a client that logs in again), reuse detections; at the client:
  requests that failed (an exception or a status other than 200).
* Steady traffic with short tokens: W workers, each at a fixed rate, for a number of token
  lifetimes. Failed requests, token requests per token lifetime, p50/p99 latency.
* Per-request overhead: sequential requests with a fresh long-lived token, next to the same
  HTTP client with an auth that sets a fixed token: round trips to the server, and the same
  requests answered inside the client process (no network), where the few microseconds each
  library adds are not lost in the noise of a round trip. Contenders take turns in blocks of
  50 so that drift in the machine's speed spreads evenly.

Each peer is configured the way its documentation recommends for automatic refresh (see
``CONFIGURATIONS``); the only change is the refresh leeway, scaled down to the short tokens
of the first two measurements (the peers' defaults, 60 s and 30 s, exceed the tokens' whole
lifetime). The peers are benchmark-only dependencies: a missing one is left out of the
tables, with a note. Writes the Markdown tables to ``--output`` and prints them.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import datetime
import importlib.metadata
import os
import platform
import statistics
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
import requests
import requests.adapters
import requests.auth
from _support import server_process, stats

import freshtoken
import freshtoken.httpx
import freshtoken.requests

# The feature table, written by hand (not measured): kept here so that a rerun keeps it.
FEATURES = Path(__file__).with_name("features.md")
ACCESS_TTL = 3.0  # seconds, storm and steady measurements
LEEWAY = 1  # seconds before expiry the peers refresh (their defaults exceed ACCESS_TTL)
CLIENT_ID, CLIENT_SECRET, USERNAME, PASSWORD = "demo", "demo-secret", "demo", "demo"
BLOCK = 50  # requests a contender sends in a row in the overhead runs, before the next one
POOL = 256  # connections per client: no request waits for a connection of its own client
# An API answered inside the client process (no network), to time what each library adds to a
# request. A loopback address, so that no library refuses plain HTTP to it.
STUB = "http://127.0.0.2:9"


class SyncClient(Protocol):
    def get(self, url: str) -> int: ...
    def close(self) -> None: ...


class AsyncClient(Protocol):
    async def get(self, url: str) -> int: ...
    async def close(self) -> None: ...


class OpenSync(Protocol):
    """Log in and make a client; ``stub``: requests to ``STUB`` are answered in-process."""

    def __call__(self, url: str, *, stub: bool = False) -> SyncClient: ...


class OpenAsync(Protocol):
    def __call__(self, url: str, *, stub: bool = False) -> Awaitable[AsyncClient]: ...


@dataclasses.dataclass(frozen=True)
class Contender:
    name: str  # library + HTTP client
    package: str  # the distribution whose version is reported ("" for baselines)
    open_sync: OpenSync | None = None
    open_async: OpenAsync | None = None
    baseline: bool = False  # a fixed token: the reference, never refreshes

    @property
    def mode(self) -> str:
        return "threads" if self.open_sync is not None else "asyncio tasks"


# -- adapters: one face for every HTTP client ---------------------------------------------


class _HttpxSync:
    def __init__(self, client: httpx.Client, on_close: Callable[[], None] = lambda: None):
        self.client, self._on_close = client, on_close

    def get(self, url: str) -> int:
        return self.client.get(url).status_code

    def close(self) -> None:
        self.client.close()
        self._on_close()


class _HttpxAsync:
    def __init__(self, client: httpx.AsyncClient, on_close: Callable[[], None] = lambda: None):
        self.client, self._on_close = client, on_close

    async def get(self, url: str) -> int:
        return (await self.client.get(url)).status_code

    async def close(self) -> None:
        await self.client.aclose()
        self._on_close()


class _Requests:
    def __init__(
        self,
        session: requests.Session,
        on_close: Callable[[], None] = lambda: None,
        *,
        stub: bool = False,
    ) -> None:
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=POOL)
        session.mount("http://", adapter)
        if stub:
            session.mount(STUB + "/", _StubAdapter())
        self.session, self._on_close = session, on_close

    def get(self, url: str) -> int:
        return self.session.get(url, timeout=60).status_code

    def close(self) -> None:
        self.session.close()
        self._on_close()


class _StubAdapter(requests.adapters.BaseAdapter):
    """Answers 200 at once, as MockTransport does for httpx."""

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        response = requests.Response()
        response.status_code = 200
        response._content = b"{}"
        response.headers["Content-Type"] = "application/json"
        response.request, response.url = request, request.url or STUB
        return response

    def close(self) -> None:
        pass


def _stub_answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={})


def _httpx_options(stub: bool) -> dict[str, Any]:
    options: dict[str, Any] = {
        "limits": httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL),
        "timeout": 60,
    }
    if stub:
        options["mounts"] = {STUB: httpx.MockTransport(_stub_answer)}
    return options


def _token_url(url: str) -> str:
    return url + "/oauth/token"


def _discard(token: object, refresh_token: object = None, access_token: object = None) -> None:
    """The token-saving callback the peers' docs ask for; these runs keep tokens in memory."""


async def _adiscard(
    token: object, refresh_token: object = None, access_token: object = None
) -> None:
    """The async form authlib's AsyncOAuth2Client awaits."""


# -- freshtoken ------------------------------------------------------------------------------


def _freshtoken_manager(url: str) -> tuple[freshtoken.TokenManager, Callable[[], None]]:
    """A logged-in manager with freshtoken's defaults, and what closes its refresher."""
    refresher = freshtoken.OAuth2Refresher(
        _token_url(url), client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    # Built before the first refresh, as in a long-running app (httpx builds its clients' own
    # when they are made, before any of these measurements start).
    assert refresher.ssl_context
    manager = freshtoken.TokenManager(refresher)
    manager.set_tokens(_password_login(url))
    return manager, refresher.close


def _password_login(url: str) -> freshtoken.TokenSet:
    return freshtoken.password_login(
        _token_url(url),
        username=USERNAME,
        password=PASSWORD,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )


def freshtoken_httpx(url: str, *, stub: bool = False) -> SyncClient:
    manager, close = _freshtoken_manager(url)
    client = httpx.Client(auth=freshtoken.httpx.TokenAuth(manager), **_httpx_options(stub))
    return _HttpxSync(client, close)


def freshtoken_requests(url: str, *, stub: bool = False) -> SyncClient:
    manager, close = _freshtoken_manager(url)
    session = requests.Session()
    session.auth = freshtoken.requests.TokenAuth(manager)
    return _Requests(session, close, stub=stub)


async def freshtoken_httpx_async(url: str, *, stub: bool = False) -> AsyncClient:
    manager, close = await asyncio.to_thread(_freshtoken_manager, url)
    auth = freshtoken.httpx.TokenAuth(manager)
    client = httpx.AsyncClient(auth=auth, **_httpx_options(stub))
    return _HttpxAsync(client, close)


# -- authlib ---------------------------------------------------------------------------------


def authlib_requests(url: str, *, stub: bool = False) -> SyncClient:
    from authlib.integrations.requests_client import OAuth2Session

    session = OAuth2Session(
        CLIENT_ID,
        CLIENT_SECRET,
        token_endpoint=_token_url(url),
        update_token=_discard,
        leeway=LEEWAY,
    )
    session.fetch_token(_token_url(url), username=USERNAME, password=PASSWORD)
    return _Requests(session, stub=stub)


async def authlib_httpx_async(url: str, *, stub: bool = False) -> AsyncClient:
    from authlib.deprecate import AuthlibDeprecationWarning

    with warnings.catch_warnings():
        # Recent Authlib prefers the httpx2 fork and says so on import; httpx still works.
        warnings.simplefilter("ignore", AuthlibDeprecationWarning)
        from authlib.integrations.httpx_client import AsyncOAuth2Client

    client = AsyncOAuth2Client(
        CLIENT_ID,
        CLIENT_SECRET,
        token_endpoint=_token_url(url),
        update_token=_adiscard,
        leeway=LEEWAY,
        **_httpx_options(stub),
    )
    await client.fetch_token(_token_url(url), username=USERNAME, password=PASSWORD)
    return _HttpxAsync(client)


# -- httpx-auth ------------------------------------------------------------------------------


def _httpx_auth(url: str) -> Any:
    import httpx_auth

    httpx_auth.OAuth2.token_cache.clear()  # its cache is global: every run logs in afresh
    return httpx_auth.OAuth2ResourceOwnerPasswordCredentials(
        _token_url(url),
        username=USERNAME,
        password=PASSWORD,
        client_auth=(CLIENT_ID, CLIENT_SECRET),
        early_expiry=LEEWAY,
    )


def httpx_auth_sync(url: str, *, stub: bool = False) -> SyncClient:
    client = _HttpxSync(httpx.Client(auth=_httpx_auth(url), **_httpx_options(stub)))
    client.get(url + "/api/me")  # the first request logs in (the password grant)
    return client


async def httpx_auth_async(url: str, *, stub: bool = False) -> AsyncClient:
    auth = _httpx_auth(url)
    client = _HttpxAsync(httpx.AsyncClient(auth=auth, **_httpx_options(stub)))
    await client.get(url + "/api/me")
    return client


# -- requests-oauthlib -----------------------------------------------------------------------


def requests_oauthlib_session(url: str, *, stub: bool = False) -> SyncClient:
    # requests-oauthlib refuses plain HTTP unless told otherwise; the server is on loopback.
    os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"
    from oauthlib.oauth2 import LegacyApplicationClient
    from requests_oauthlib import OAuth2Session

    token = OAuth2Session(client=LegacyApplicationClient(client_id=CLIENT_ID)).fetch_token(
        _token_url(url),
        username=USERNAME,
        password=PASSWORD,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )
    session = OAuth2Session(
        CLIENT_ID,
        token=token,
        auto_refresh_url=_token_url(url),
        auto_refresh_kwargs={"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        token_updater=_discard,
    )
    return _Requests(session, stub=stub)


# -- baselines: a fixed token, no refresh ----------------------------------------------------


class _FixedHttpxAuth(httpx.Auth):
    """The least an auth can do: the same header on every request (the overhead reference)."""

    def __init__(self, authorization: str) -> None:
        self.authorization = authorization

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self.authorization
        yield request


class _FixedRequestsAuth(requests.auth.AuthBase):
    def __init__(self, authorization: str) -> None:
        self.authorization = authorization

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.authorization
        return request


def fixed_httpx(url: str, *, stub: bool = False) -> SyncClient:
    auth = _FixedHttpxAuth(_password_login(url).authorization)
    return _HttpxSync(httpx.Client(auth=auth, **_httpx_options(stub)))


def fixed_requests(url: str, *, stub: bool = False) -> SyncClient:
    session = requests.Session()
    session.auth = _FixedRequestsAuth(_password_login(url).authorization)
    return _Requests(session, stub=stub)


async def fixed_httpx_async(url: str, *, stub: bool = False) -> AsyncClient:
    auth = _FixedHttpxAuth((await asyncio.to_thread(_password_login, url)).authorization)
    return _HttpxAsync(httpx.AsyncClient(auth=auth, **_httpx_options(stub)))


CONTENDERS = (
    Contender("freshtoken + httpx", "freshtoken", open_sync=freshtoken_httpx),
    Contender("freshtoken + requests", "freshtoken", open_sync=freshtoken_requests),
    Contender("authlib OAuth2Session (requests)", "authlib", open_sync=authlib_requests),
    Contender("httpx-auth + httpx", "httpx-auth", open_sync=httpx_auth_sync),
    Contender(
        "requests-oauthlib OAuth2Session", "requests-oauthlib", open_sync=requests_oauthlib_session
    ),
    Contender("freshtoken + httpx (async)", "freshtoken", open_async=freshtoken_httpx_async),
    Contender("authlib AsyncOAuth2Client (httpx)", "authlib", open_async=authlib_httpx_async),
    Contender("httpx-auth + httpx (async)", "httpx-auth", open_async=httpx_auth_async),
)
BASELINES = {
    "httpx": Contender("httpx, fixed token", "", open_sync=fixed_httpx, baseline=True),
    "requests": Contender("requests, fixed token", "", open_sync=fixed_requests, baseline=True),
    "async": Contender("httpx async, fixed token", "", open_async=fixed_httpx_async, baseline=True),
}

CONFIGURATIONS = {
    "freshtoken": (
        "`TokenManager(OAuth2Refresher(token_url, client_id=..., client_secret=...))` with its "
        "defaults (leeway 30 s, capped at a quarter of the token's life: 0.75 s here), tokens "
        "from `password_login`, `TokenAuth(manager)` on the client. The refresher's TLS "
        "context is built up front (`refresher.ssl_context`), as httpx builds its clients' when "
        "they are made: otherwise the first refresh builds it (0.1 to 0.3 s of CPU here)."
    ),
    "authlib": (
        "Its documented auto-refresh: `OAuth2Session` / `AsyncOAuth2Client(client_id, "
        f"client_secret, token_endpoint=..., update_token=..., leeway={LEEWAY})`, then "
        "`fetch_token(token_url, username=..., password=...)`. The default leeway (60 s) is "
        "longer than these tokens live."
    ),
    "httpx-auth": (
        "`OAuth2ResourceOwnerPasswordCredentials(token_url, username, password, "
        f"client_auth=(client_id, client_secret), early_expiry={LEEWAY})` as the client's "
        "`auth` (default early_expiry: 30 s). It keeps the password and logs in again "
        "whenever it holds no token; the async client runs the same (blocking) auth flow."
    ),
    "requests-oauthlib": (
        'Its documented "define automatic token refresh and update" set-up: '
        "`OAuth2Session(client_id, token=token, auto_refresh_url=token_url, "
        "auto_refresh_kwargs={client_id, client_secret}, token_updater=...)`, tokens from "
        "`fetch_token` with a `LegacyApplicationClient` (password grant); "
        "`OAUTHLIB_INSECURE_TRANSPORT=1` for the loopback server. It has no leeway: it refreshes "
        "once a token has expired."
    ),
}


# -- measurements ----------------------------------------------------------------------------


@dataclasses.dataclass
class Tally:
    """What one run saw: at the client (outcomes, latencies) and at the server (deltas)."""

    requests: int = 0
    failures: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    latencies: list[float] = dataclasses.field(default_factory=list)
    refreshes: int = 0
    logins: int = 0
    reuse_detections: int = 0
    seconds: float = 0.0

    def add(self, outcome: int | BaseException, latency: float) -> None:
        self.requests += 1
        self.latencies.append(latency)
        if isinstance(outcome, BaseException):
            self.failures[_describe(outcome)] += 1
        elif outcome != 200:
            self.failures[f"HTTP {outcome}"] += 1

    def merge(self, other: Tally) -> None:
        self.requests += other.requests
        self.failures.update(other.failures)
        self.latencies += other.latencies
        self.refreshes += other.refreshes
        self.logins += other.logins
        self.reuse_detections += other.reuse_detections
        self.seconds += other.seconds

    def count_server(self, before: dict[str, Any], after: dict[str, Any]) -> None:
        def grants(document: dict[str, Any], grant: str) -> int:
            return int(document["token_requests_by_grant"][grant])

        self.refreshes += grants(after, "refresh_token") - grants(before, "refresh_token")
        self.logins += grants(after, "password") - grants(before, "password")
        self.reuse_detections += after["reuse_detections"] - before["reuse_detections"]


def _describe(error: BaseException) -> str:
    text = str(error).split("\n")[0][:60]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _timed_sync(client: SyncClient, url: str) -> tuple[int | BaseException, float]:
    start = time.perf_counter()
    try:
        outcome: int | BaseException = client.get(url)
    except Exception as error:  # noqa: BLE001 - a failed request is a result here
        outcome = error
    return outcome, time.perf_counter() - start


async def _timed_async(client: AsyncClient, url: str) -> tuple[int | BaseException, float]:
    start = time.perf_counter()
    try:
        outcome: int | BaseException = await client.get(url)
    except Exception as error:  # noqa: BLE001 - a failed request is a result here
        outcome = error
    return outcome, time.perf_counter() - start


def storm(contender: Contender, url: str, concurrency: int) -> Tally:
    """One storm: log in, wait for the token to expire, ``concurrency`` requests at once.
    A baseline's storm goes at once, with its fresh fixed token: the clients' own cost."""
    api = url + "/api/me"
    tally = Tally()
    if contender.open_sync is not None:
        client = contender.open_sync(url)
        try:
            client.get(api)  # connections up; the token is fresh
            if not contender.baseline:
                time.sleep(ACCESS_TTL + 0.5)
            before = stats(url)
            barrier = threading.Barrier(concurrency)

            def one(_: int) -> tuple[int | BaseException, float]:
                barrier.wait()
                return _timed_sync(client, api)

            start = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                outcomes = list(pool.map(one, range(concurrency)))
            tally.seconds = time.perf_counter() - start
        finally:
            client.close()
    else:
        assert contender.open_async is not None
        outcomes, tally.seconds, before = asyncio.run(
            _async_storm(contender.open_async, url, concurrency, wait=not contender.baseline)
        )
    for outcome, latency in outcomes:
        tally.add(outcome, latency)
    tally.count_server(before, stats(url))
    return tally


async def _async_storm(
    open_async: OpenAsync, url: str, concurrency: int, *, wait: bool
) -> tuple[list[tuple[int | BaseException, float]], float, dict[str, Any]]:
    api = url + "/api/me"
    client = await open_async(url)
    try:
        await client.get(api)
        if wait:
            await asyncio.sleep(ACCESS_TTL + 0.5)
        before = await asyncio.to_thread(stats, url)
        start = time.perf_counter()
        outcomes = await asyncio.gather(*(_timed_async(client, api) for _ in range(concurrency)))
        return list(outcomes), time.perf_counter() - start, before
    finally:
        await client.close()


def steady(contender: Contender, url: str, workers: int, rate: float, seconds: float) -> Tally:
    """``workers`` workers at ``rate`` requests per second each, for ``seconds``."""
    api = url + "/api/me"
    tally = Tally()
    lock = threading.Lock()
    if contender.open_sync is not None:
        client = contender.open_sync(url)
        try:
            before = stats(url)
            ends = time.monotonic() + seconds

            def worker(number: int) -> None:
                for due in _schedule(rate, ends, number, workers):
                    time.sleep(max(0.0, due - time.monotonic()))
                    outcome, latency = _timed_sync(client, api)
                    with lock:
                        tally.add(outcome, latency)

            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(worker, range(workers)))
        finally:
            client.close()
    else:
        assert contender.open_async is not None
        before = asyncio.run(
            _async_steady(contender.open_async, url, workers, rate, seconds, tally=tally)
        )
    tally.seconds = seconds
    tally.count_server(before, stats(url))
    return tally


async def _async_steady(
    open_async: OpenAsync, url: str, workers: int, rate: float, seconds: float, *, tally: Tally
) -> dict[str, Any]:
    api = url + "/api/me"
    client = await open_async(url)
    try:
        before = await asyncio.to_thread(stats, url)
        ends = time.monotonic() + seconds

        async def worker(number: int) -> None:
            for due in _schedule(rate, ends, number, workers):
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                tally.add(*await _timed_async(client, api))

        await asyncio.gather(*(worker(number) for number in range(workers)))
        return before
    finally:
        await client.close()


def _schedule(rate: float, ends: float, worker: int, workers: int) -> list[float]:
    """When ``worker`` sends its requests: evenly spaced, the workers' turns interleaved."""
    start = time.monotonic() + worker / (rate * workers)
    count = int((ends - start) * rate)
    return [start + i / rate for i in range(count)]


def overhead(
    contenders: Sequence[Contender], url: str, requests_each: int, *, stub: bool
) -> dict[str, Tally]:
    """Sequential requests, contenders taking turns in blocks of 50; latencies per contender.
    ``stub``: to ``STUB``, answered in-process, rather than to the server's API."""
    api = (STUB if stub else url) + "/api/me"
    block = BLOCK
    rounds = max(1, requests_each // block)
    tallies = {c.name: Tally() for c in contenders}
    clients = {c.name: c.open_sync(url, stub=stub) for c in contenders if c.open_sync is not None}
    try:
        for client in clients.values():
            for _ in range(block):
                client.get(api)  # warm up: connections, and whatever is built on first use
        for _ in range(rounds):
            for name, client in clients.items():
                tally = tallies[name]
                for _ in range(block):
                    tally.add(*_timed_sync(client, api))
    finally:
        for client in clients.values():
            client.close()
    asynchronous = [c for c in contenders if c.open_async is not None]
    if asynchronous:
        asyncio.run(
            _async_overhead(
                asynchronous,
                url=url,
                api=api,
                rounds=rounds,
                block=block,
                tallies=tallies,
                stub=stub,
            )
        )
    return tallies


async def _async_overhead(
    contenders: Sequence[Contender],
    *,
    url: str,
    api: str,
    rounds: int,
    block: int,
    tallies: dict[str, Tally],
    stub: bool,
) -> None:
    clients = {}
    for contender in contenders:
        assert contender.open_async is not None
        clients[contender.name] = await contender.open_async(url, stub=stub)
    try:
        for client in clients.values():
            for _ in range(block):
                await client.get(api)
        for _ in range(rounds):
            for name, client in clients.items():
                tally = tallies[name]
                for _ in range(block):
                    tally.add(*await _timed_async(client, api))
    finally:
        for client in clients.values():
            await client.close()


# -- the report ------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _failures(tally: Tally) -> str:
    if not tally.failures:
        return "0"
    kinds = "; ".join(f"{count} x {kind}" for kind, count in tally.failures.most_common(2))
    more = " ..." if len(tally.failures) > 2 else ""
    return f"{sum(tally.failures.values())} ({kinds}{more})"


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    return [_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)]


def storm_table(results: dict[Contender, Tally], rounds: int) -> list[str]:
    rows = []
    for contender, tally in results.items():
        rows.append(
            [
                contender.name,
                contender.mode,
                tally.requests,
                _failures(tally),
                f"{tally.refreshes / rounds:.1f}",
                f"{tally.logins / rounds:.1f}",
                tally.reuse_detections,
                _ms(_percentile(tally.latencies, 0.5)),
                _ms(max(tally.latencies)),
            ]
        )
    header = [
        "client",
        "concurrency",
        "requests",
        "failed",
        "refresh requests per storm",
        "re-logins per storm",
        "reuse detections",
        "p50 (ms)",
        "slowest (ms)",
    ]
    return _table(header, rows)


def steady_table(results: dict[Contender, Tally]) -> list[str]:
    rows = []
    for contender, tally in results.items():
        lifetimes = tally.seconds / ACCESS_TTL
        rows.append(
            [
                contender.name,
                tally.requests,
                _failures(tally),
                f"{tally.refreshes / lifetimes:.2f}",
                f"{tally.logins / lifetimes:.2f}",
                tally.reuse_detections,
                _ms(_percentile(tally.latencies, 0.5)),
                _ms(_percentile(tally.latencies, 0.99)),
            ]
        )
    header = [
        "client",
        "requests",
        "failed",
        "refresh requests per token lifetime",
        "re-logins per token lifetime",
        "reuse detections",
        "p50 (ms)",
        "p99 (ms)",
    ]
    return _table(header, rows)


def overhead_table(
    network: dict[str, Tally],
    in_process: dict[str, Tally],
    pairs: Sequence[tuple[Contender, Contender]],
) -> list[str]:
    rows = []
    for contender, baseline in pairs:
        cost = _paired_difference(in_process[contender.name], in_process[baseline.name])
        failed = network[contender.name].failures + in_process[contender.name].failures
        rows.append(
            [
                contender.name,
                baseline.name,
                _ms(statistics.median(network[contender.name].latencies)),
                _ms(statistics.median(network[baseline.name].latencies)),
                f"{cost * 1e6:+.0f}",
                sum(failed.values()),
            ]
        )
    header = [
        "client",
        "compared with",
        "p50 round trip (ms)",
        "same client, fixed token (ms)",
        "added per request, no network (µs)",
        "failed",
    ]
    return _table(header, rows)


def _paired_difference(mine: Tally, base: Tally) -> float:
    """The median over rounds of (my block's median - the baseline's block median in the same
    round): blocks of one round ran within milliseconds of each other, so drift cancels."""
    rounds = min(len(mine.latencies), len(base.latencies)) // BLOCK
    differences = [
        statistics.median(mine.latencies[i * BLOCK : (i + 1) * BLOCK])
        - statistics.median(base.latencies[i * BLOCK : (i + 1) * BLOCK])
        for i in range(rounds)
    ]
    return statistics.median(differences)


def _versions(contenders: Sequence[Contender]) -> str:
    names = sorted({c.package for c in contenders if c.package} | {"httpx", "requests"})
    if "requests-oauthlib" in names:
        names.append("oauthlib")
    return ", ".join(f"{name} {importlib.metadata.version(name)}" for name in names)


# -- the run ---------------------------------------------------------------------------------


def available(contender: Contender) -> bool:
    module = {
        "authlib": "authlib",
        "httpx-auth": "httpx_auth",
        "requests-oauthlib": "requests_oauthlib",
    }
    name = module.get(contender.package)
    if name is None:
        return True
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter runs")
    parser.add_argument("--rounds", type=int, default=5, help="storms per contender")
    parser.add_argument("--threads", type=int, default=32, help="requests per threaded storm")
    parser.add_argument("--tasks", type=int, default=200, help="requests per asyncio storm")
    parser.add_argument("--workers", type=int, default=8, help="steady workers per contender")
    parser.add_argument("--rate", type=float, default=25.0, help="requests/s of each worker")
    parser.add_argument("--seconds", type=float, default=12.0, help="steady run length")
    parser.add_argument("--overhead", type=int, default=2000, help="sequential requests each")
    parser.add_argument("--only", action="append", help="contenders whose name contains this")
    parser.add_argument("--output", type=Path, default=Path("docs/comparison.md"))
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.overhead = 1, 6.0, 500

    chosen = [c for c in CONTENDERS if not args.only or any(o in c.name for o in args.only)]
    missing = [c for c in chosen if not available(c)]
    contenders = [c for c in chosen if c not in missing]
    pairs = [(c, _baseline_of(c)) for c in contenders]
    baselines = list(dict.fromkeys(b for _, b in pairs))

    storms: dict[Contender, Tally] = {}
    steadies: dict[Contender, Tally] = {}
    with server_process("--access-ttl", str(ACCESS_TTL)) as url:
        everyone = [*baselines, *contenders]
        for contender in everyone:
            storms[contender] = Tally()
        for _ in range(args.rounds):  # round-robin: drift in the machine's speed hits all alike
            for contender in everyone:
                n = args.threads if contender.open_sync is not None else args.tasks
                storms[contender].merge(storm(contender, url, n))
        for contender, total in storms.items():
            print(
                f"storm   {contender.name}: {total.refreshes} refreshes, {_failures(total)} failed",
                flush=True,
            )
        for contender in contenders:
            steadies[contender] = tally = steady(
                contender, url, args.workers, args.rate, args.seconds
            )
            print(
                f"steady  {contender.name}: {tally.requests} requests, {_failures(tally)} failed",
                flush=True,
            )
    with server_process() as url:  # long-lived tokens: no refresh during the overhead runs
        network = overhead(everyone, url, args.overhead, stub=False)
        in_process = overhead(everyone, url, args.overhead, stub=True)
    print("overhead measured", flush=True)

    lines = _document(
        args=args,
        contenders=contenders,
        missing=missing,
        storms=storms,
        steadies=steadies,
        network=network,
        in_process=in_process,
        pairs=pairs,
    )
    text = "\n".join(lines) + "\n"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(text)


def _baseline_of(contender: Contender) -> Contender:
    if contender.open_async is not None:
        return BASELINES["async"]
    return BASELINES["requests" if "requests" in contender.name else "httpx"]


def _document(
    *,
    args: argparse.Namespace,
    contenders: Sequence[Contender],
    missing: Sequence[Contender],
    storms: dict[Contender, Tally],
    steadies: dict[Contender, Tally],
    network: dict[str, Tally],
    in_process: dict[str, Tally],
    pairs: Sequence[tuple[Contender, Contender]],
) -> list[str]:
    today = datetime.date.today().isoformat()
    lines = [
        "# freshtoken next to other Python OAuth2 clients",
        "",
        f"Measured by `benchmarks/compare.py` on {today}: Python {platform.python_version()}, "
        f"{os.cpu_count()} CPU cores, {_versions(contenders)}. Rerun it with "
        "`pip install -r benchmarks/requirements-compare.txt && python benchmarks/compare.py`.",
        "",
        "The reference server runs in its own process with refresh-token rotation and reuse "
        "detection on and no grace period: a refresh token presented twice revokes the whole "
        f"session, as many production servers do. Access tokens live {ACCESS_TTL:g} s in the "
        "first two measurements. Every client logs in with the password grant of the demo user.",
        "",
        *FEATURES.read_text(encoding="utf-8").rstrip("\n").splitlines(),
        "",
        "## Storm after expiry",
        "",
        f"Log in, let the access token expire, then {args.threads} requests at once from threads "
        f"(sync clients) or {args.tasks} asyncio tasks (async clients); {args.rounds} storm(s) "
        "each, the clients taking turns. *Refresh requests* and *re-logins* are the "
        "refresh-token and password grants the server received during a storm (failed ones "
        "included); a *reuse detection* "
        "revoked the session. The *fixed token* rows send the same storm with a fresh token and "
        "an auth that only sets the header: what the HTTP client itself takes for that many "
        "requests at once.",
        "",
        *storm_table(storms, args.rounds),
        "",
        "## Steady traffic with short tokens",
        "",
        f"{args.workers} workers at {args.rate:g} requests/s each for {args.seconds:g} s "
        f"({args.seconds / ACCESS_TTL:g} token lifetimes); one shared client.",
        "",
        *steady_table(steadies),
        "",
        "## Per-request overhead",
        "",
        f"{args.overhead} sequential requests per client with a fresh token that outlives the "
        "run, contenders taking turns in blocks of 50: medians of round trips to the server, "
        "and what each library adds to a request, measured with the API answered inside the "
        "client process (the HTTP library's test transport or adapter, no network): the "
        "difference from the same HTTP client with an auth that only sets a fixed "
        "`Authorization` header (medians of each round's blocks, paired by round). Login and "
        "refreshes still go to the server.",
        "",
        *overhead_table(network, in_process, pairs),
        "",
        "## How each library was configured",
        "",
        *(f"- **{name}**: {text}" for name, text in CONFIGURATIONS.items()),
    ]
    if missing:
        names = ", ".join(c.name for c in missing)
        lines += ["", f"Not installed, left out: {names}."]
    return lines


if __name__ == "__main__":
    main()
