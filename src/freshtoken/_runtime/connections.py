"""Connections to token endpoints from the flight host: kept alive, shared, and capped per issuer.

A refresh used to open a client, a TCP connection and a TLS session of its own. On the host loop
(see ``host``) the refreshers share instead one keep-alive pool per TLS configuration (the
host's own HTTP/1.1 client, ``http1``, chosen by measurement), so the token endpoint sees a
handshake per connection, not per refresh.

Each issuer origin (scheme, host, port) also has a cap on the token requests in the air at
once (``HTTPRefresher(..., concurrency=8)``). A fleet of sessions whose tokens all fall due
together (the end of a provider outage, a process start) queues behind it instead of opening
thousands of connections: the queue drains at the pace the provider answers, never more than
the cap at once. The queue is served by urgency, earliest first (``Queued.urgency``: the
wall-clock time by which the answer is needed, which the engine sets to the token's expiry,
or to now when a caller waits), then in arrival order: a caller whose token has expired goes
before background refreshes of tokens that still work for seconds, which would otherwise
make it wait through a burst of them. A request waits for its place until its
attempt's deadline (``QUEUE_WAIT`` seconds when it has none); only then does it fail, as
``RefreshFailed("busy")``, without being sent. The refresh token was not presented, so a
retry may present it again safely, and the failure says nothing about the server: the
credential's backoff does not grow for it (see ``_core/credential.py``, rule 4).

Outside the host loop (a refresher's ``arefresh`` awaited by an application) nothing is shared:
a client of its own per request, as before, since a loop that is not ours may close at any time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import heapq
import itertools
import math
import os
import ssl
import sys
import time
import urllib.request
import weakref
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import anyio
import httpx

from ..errors import RefreshFailed
from .host import in_host_thread
from .http1 import Answer, Pool

__all__ = [
    "DEFAULT_CONCURRENCY",
    "QUEUE_WAIT",
    "Queued",
    "busy",
    "place_for",
    "queued",
    "send",
    "shared",
]


class Queued:
    """The engine's view of a request under the cap: the deadline of its attempt (monotonic),
    past which it is not sent (a request lingers past it once sent, see ``attempts``), its
    urgency (a wall-clock time: the earliest is sent first), and whether it got its place."""

    __slots__ = ("cap", "deadline", "origin", "sent", "urgency")

    def __init__(self, deadline: float, urgency: float = -math.inf) -> None:
        self.deadline = deadline
        self.urgency = urgency
        self.sent = False
        self.origin = "the token endpoint"
        self.cap = 0


def busy(origin: str, cap: int) -> RefreshFailed:
    """The failure of a request that found no place under the cap: it was not sent."""
    return RefreshFailed(
        "busy",
        f"{cap} token requests to {origin} were in the air until this one's deadline (the "
        "cap of HTTPRefresher(concurrency=...)); this one was not sent",
        answer_lost=False,
    )


queued: contextvars.ContextVar[Queued | None] = contextvars.ContextVar(
    "freshtoken_queued", default=None
)

DEFAULT_CONCURRENCY = 8
QUEUE_WAIT = 2.0  # seconds a token request without a deadline waits for a place


class Places:
    """``cap`` places, handed to the waiter with the earliest urgency, then the earliest
    arrival. (asyncio's semaphore serves its waiters in arrival order only.) On one loop."""

    __slots__ = ("_arrivals", "_waiting", "cap", "taken")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.taken = 0
        # (urgency, arrival, future): a future set to True hands its waiter a place; one
        # already done (its wait timed out) is skipped when a place frees up.
        self._waiting: list[tuple[float, int, asyncio.Future[bool]]] = []
        self._arrivals = itertools.count()

    async def take(self, urgency: float, wait: float) -> bool:
        """A place, waiting at most ``wait`` seconds for one; False if none came."""
        if self.taken < self.cap:  # a free place means nobody waits: each is handed on
            self.taken += 1
            return True
        loop = asyncio.get_running_loop()
        handed: asyncio.Future[bool] = loop.create_future()
        heapq.heappush(self._waiting, (urgency, next(self._arrivals), handed))
        timer = loop.call_later(max(wait, 0.0), _settle_once, handed, False)
        try:
            return await handed
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled() and handed.result():
                self.release()  # handed a place just as its waiter was cancelled
            raise
        finally:
            timer.cancel()
            _settle_once(handed, False)

    def release(self) -> None:
        waiting = self._waiting
        while waiting:
            handed = heapq.heappop(waiting)[2]
            if not handed.done():
                handed.set_result(True)  # the place goes straight to it: taken stays
                return
        self.taken -= 1

    def waiters(self) -> int:
        return sum(1 for _, _, handed in self._waiting if not handed.done())


def _settle_once(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


_TLSKey: TypeAlias = tuple[int, bool]  # id of the SSLContext (kept alive by the pool), or verify


class _LoopConnections:
    """What one event loop holds: its pools and its per-origin caps."""

    __slots__ = ("caps", "pools", "proxied")

    def __init__(self) -> None:
        self.pools: dict[_TLSKey, Pool] = {}
        self.proxied: dict[_TLSKey, httpx.AsyncClient] = {}  # through the environment's proxy
        self.caps: dict[str, Places] = {}


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopConnections] = (
    weakref.WeakKeyDictionary()
)


def shared() -> bool:
    """Whether the running task may use the shared pools and caps (it runs on the host)."""
    return in_host_thread()


def time_limit(seconds: float | None) -> contextlib.AbstractAsyncContextManager[object]:
    """Cancel what runs inside after ``seconds`` (None: no limit), raising TimeoutError.

    On the host loop asyncio's own timeout (Python 3.11+), a third of anyio's cost per
    refresh; elsewhere anyio's, which also serves trio."""
    if sys.version_info >= (3, 11) and shared():
        return asyncio.timeout(seconds)
    return _AnyioLimit(seconds)


class _AnyioLimit:
    """anyio's ``fail_after`` (a plain context manager) entered with ``async with``."""

    __slots__ = ("_scope",)

    def __init__(self, seconds: float | None) -> None:
        self._scope = anyio.fail_after(seconds)

    async def __aenter__(self) -> object:
        return self._scope.__enter__()

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        return self._scope.__exit__(*exc_info)


def _connections() -> _LoopConnections:
    loop = asyncio.get_running_loop()
    held = _loops.get(loop)
    if held is None:
        held = _loops[loop] = _LoopConnections()
    return held


async def send(
    request: httpx.Request, timeout: httpx.Timeout, verify: ssl.SSLContext | bool, limit: int
) -> Answer:
    """Send ``request`` from the host loop's pool for this TLS configuration (made on first
    use) and read its answer, the body decoded and cut off past ``limit`` bytes.

    Redirects are never followed: the pool carries nothing from one refresher to another but
    its connections. When the environment names a proxy for the URL (``HTTPS_PROXY``,
    ``ALL_PROXY``... and not ``NO_PROXY``), the request goes through it, on an httpx client
    (which speaks to proxies; the host's own client does not). Failures raise httpx's
    exceptions.
    """
    held = _connections()
    key: _TLSKey = (id(verify), True) if isinstance(verify, ssl.SSLContext) else (0, verify)
    if _through_proxy(request.url):
        return await _send_proxied(_proxy_client(held, key, verify), request, timeout, limit)
    pool = held.pools.get(key)
    if pool is None:
        pool = held.pools[key] = Pool(_context(verify))
    return await pool.send(request, timeout, limit)


_PROXY_VARIABLES = tuple(
    name
    for scheme in ("http", "https", "all")
    for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY")
)


def _through_proxy(url: httpx.URL) -> bool:
    """Whether the environment sends requests to ``url`` through a proxy (urllib's reading of
    the variables, as httpx's): a few lookups when none is set."""
    if not any(name in os.environ for name in _PROXY_VARIABLES):
        return False
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(url.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(url.host)


def _proxy_client(
    held: _LoopConnections, key: _TLSKey, verify: ssl.SSLContext | bool
) -> httpx.AsyncClient:
    client = held.proxied.get(key)
    if client is None:
        client = held.proxied[key] = httpx.AsyncClient(
            verify=_context(verify),
            follow_redirects=False,
            trust_env=True,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
    return client


async def _send_proxied(
    client: httpx.AsyncClient, request: httpx.Request, timeout: httpx.Timeout, limit: int
) -> Answer:
    request.extensions = {**request.extensions, "timeout": timeout.as_dict()}
    response = await client.send(request, stream=True)
    try:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                break
    finally:
        await response.aclose()
    return response.status_code, list(response.headers.raw), bytes(body)


def _context(verify: ssl.SSLContext | bool) -> ssl.SSLContext:
    return verify if isinstance(verify, ssl.SSLContext) else _default_context(verify)


@functools.lru_cache(maxsize=2)
def _default_context(verify: bool) -> ssl.SSLContext:
    # httpx's: the same CA bundle its clients trust (loading it costs ~25-100 ms, once).
    return httpx.create_ssl_context(verify=verify)


@contextlib.asynccontextmanager
async def place_for(origin: str, cap: int, deadline: float | None) -> AsyncIterator[None]:
    """Hold one of ``cap`` places for ``origin`` (on the host loop) while the request runs.

    Raises ``RefreshFailed("busy")``, known not to have reached the server, when no place
    frees up by ``deadline`` (monotonic) or the attempt's (``queued``), or within
    ``QUEUE_WAIT`` seconds without either. Waiters are served by the attempt's urgency
    (``Queued``; a request without one is the most urgent), then in arrival order.
    """
    held = _connections()
    places = held.caps.get(origin)
    if places is None or places.cap != cap:
        # A refresher with another cap for the same origin: the latest setting wins for new
        # requests; those in the air finish under the places they took.
        places = held.caps[origin] = Places(cap)
    mark = queued.get()
    urgency = -math.inf
    if mark is not None:
        deadline = mark.deadline if deadline is None else min(deadline, mark.deadline)
        mark.origin, mark.cap = origin, cap
        urgency = mark.urgency
    wait = QUEUE_WAIT if deadline is None else deadline - time.monotonic()
    if not await places.take(urgency, wait):
        raise busy(origin, cap)
    if mark is not None:
        mark.sent = True
    try:
        yield
    finally:
        places.release()


def in_the_air(origin: str) -> int:
    """Token requests to ``origin`` holding a place on the running loop (for tests)."""
    places = _connections().caps.get(origin)
    return 0 if places is None else places.taken


def waiting(origin: str) -> int:
    """Token requests to ``origin`` queued for a place on the running loop (for tests)."""
    places = _connections().caps.get(origin)
    return 0 if places is None else places.waiters()
