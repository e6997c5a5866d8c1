"""One face for every integration, so that each behaviour test reads the same for all of them.

A :class:`Driver` sends requests through one HTTP library configured with freshtoken's auth
for that library, and answers ``(status, json)``. Async libraries run on an event loop in a
background thread (an anyio blocking portal), so tests stay plain functions; a storm is
threads for sync libraries and tasks on that loop for async ones. Exceptions raised by the
library or by freshtoken reach the test unchanged.

A new integration proves itself by adding a driver here and a name to ``KINDS``.
"""

from __future__ import annotations

import abc
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, TypeAlias, TypeVar

import aiohttp
import anyio
import anyio.from_thread
import httpx
import httpx2
import requests
import requests.adapters

import freshtoken
import freshtoken.aiohttp
import freshtoken.httpx
import freshtoken.httpx2
import freshtoken.requests

__all__ = ["KINDS", "BffDriver", "Driver", "Outcome", "Reply", "make_driver"]

Reply: TypeAlias = tuple[int, Any]
"""The status and the JSON body (None when the body is not JSON)."""

Outcome: TypeAlias = Reply | BaseException
"""One request of a storm: its reply, or what it raised."""

KINDS = (
    "httpx-sync",
    "httpx-async",
    "httpx-trio",
    "requests",
    "aiohttp",
    "httpx2-sync",
    "httpx2-async",
    "bff",
)
"""httpx-async runs on asyncio, httpx-trio is the same client on trio; httpx2 is httpx's
successor (its own classes: freshtoken.httpx2); bff sends each request through a BFF session
(the browser's side: a cookie and the CSRF header)."""

SYNC_STORM_THREADS = 64
_T = TypeVar("_T")


def _decode(status: int, body: bytes) -> Reply:
    try:
        return status, json.loads(body) if body else None
    except ValueError:
        return status, None


def _body_kwargs(
    json_body: Any, data: Mapping[str, str] | None, content: bytes | None
) -> dict[str, Any]:
    given = {"json": json_body, "data": data, "content": content}
    return {name: value for name, value in given.items() if value is not None}


class Driver(abc.ABC):
    """Requests through one integration. ``auth`` is the freshtoken object under test."""

    kind: str
    auth: object

    def get(self, url: str) -> Reply:
        return self.request("GET", url)

    def post(
        self,
        url: str,
        *,
        json: Any = None,
        data: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> Reply:
        return self.request("POST", url, **_body_kwargs(json, data, content))

    @abc.abstractmethod
    def request(self, method: str, url: str, **body: Any) -> Reply:
        """``body``: at most one of ``json=``, ``data=`` (a form) or ``content=`` (bytes)."""

    @abc.abstractmethod
    def post_stream(self, url: str, chunks: Iterable[bytes]) -> Reply:
        """POST a one-shot stream (a generator, sync or async as the library takes it)."""

    @abc.abstractmethod
    def storm(self, url: str, n: int) -> list[Outcome]:
        """GET ``url`` ``n`` times at once; every outcome, in no particular order."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __repr__(self) -> str:
        return f"<{self.kind} driver>"


# -- sync libraries -------------------------------------------------------------------------


class _SyncDriver(Driver):
    def storm(self, url: str, n: int) -> list[Outcome]:
        start = threading.Barrier(n)

        def one() -> Outcome:
            start.wait()
            try:
                return self.get(url)
            except Exception as error:  # noqa: BLE001 - an outcome the test inspects
                return error

        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(lambda _: one(), range(n)))


class HttpxSyncDriver(_SyncDriver):
    kind = "httpx-sync"

    def __init__(
        self, auth: freshtoken.httpx.TokenAuth | freshtoken.httpx2.TokenAuth, module: Any = httpx
    ) -> None:
        self.auth = auth
        self.kind = "httpx2-sync" if module is httpx2 else "httpx-sync"
        limits = module.Limits(max_connections=SYNC_STORM_THREADS)
        self.client = module.Client(
            auth=auth,
            follow_redirects=True,
            limits=limits,
            timeout=module.Timeout(10.0, pool=None),  # see _open below
        )

    def request(self, method: str, url: str, **body: Any) -> Reply:
        response = self.client.request(method, url, **body)
        return _decode(response.status_code, response.content)

    def post_stream(self, url: str, chunks: Iterable[bytes]) -> Reply:
        def stream() -> Iterator[bytes]:
            yield from chunks

        return self.request("POST", url, content=stream())

    def close(self) -> None:
        self.client.close()


class RequestsDriver(_SyncDriver):
    kind = "requests"

    def __init__(self, auth: freshtoken.requests.TokenAuth) -> None:
        self.auth = auth
        self.session = requests.Session()
        self.session.auth = auth
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=SYNC_STORM_THREADS)
        self.session.mount("http://", adapter)

    def request(self, method: str, url: str, **body: Any) -> Reply:
        if "content" in body:
            body["data"] = body.pop("content")
        response = self.session.request(method, url, timeout=10, **body)
        return _decode(response.status_code, response.content)

    def post_stream(self, url: str, chunks: Iterable[bytes]) -> Reply:
        def stream() -> Iterator[bytes]:
            yield from chunks

        return self.request("POST", url, data=stream())

    def close(self) -> None:
        self.session.close()


# -- async libraries, on a loop in a background thread --------------------------------------


class _AsyncDriver(Driver):
    def __init__(self, backend: str) -> None:
        self._portal_cm: AbstractContextManager[anyio.from_thread.BlockingPortal] = (
            anyio.from_thread.start_blocking_portal(backend)
        )
        self.portal = self._portal_cm.__enter__()
        try:
            self.portal.call(self._open)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            raise

    @abc.abstractmethod
    async def _open(self) -> None: ...

    @abc.abstractmethod
    async def _aclose(self) -> None: ...

    @abc.abstractmethod
    async def _arequest(self, method: str, url: str, body: dict[str, Any]) -> Reply: ...

    def _run(self, function: Callable[[], Awaitable[_T]]) -> _T:
        return self.portal.call(function)

    def request(self, method: str, url: str, **body: Any) -> Reply:
        return self._run(lambda: self._arequest(method, url, body))

    def post_stream(self, url: str, chunks: Iterable[bytes]) -> Reply:
        materialised = list(chunks)

        async def stream() -> AsyncIterator[bytes]:
            for chunk in materialised:
                yield chunk

        return self._run(lambda: self._arequest("POST", url, {"stream": stream()}))

    def storm(self, url: str, n: int) -> list[Outcome]:
        async def storm() -> list[Outcome]:
            outcomes: list[Outcome] = []

            async def one() -> None:
                try:
                    outcomes.append(await self._arequest("GET", url, {}))
                except Exception as error:  # noqa: BLE001 - an outcome the test inspects
                    outcomes.append(error)

            async with anyio.create_task_group() as group:
                for _ in range(n):
                    group.start_soon(one)
            return outcomes

        return self._run(storm)

    def close(self) -> None:
        try:
            self.portal.call(self._aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)


class HttpxAsyncDriver(_AsyncDriver):
    auth: freshtoken.httpx.TokenAuth | freshtoken.httpx2.TokenAuth

    def __init__(
        self,
        auth: freshtoken.httpx.TokenAuth | freshtoken.httpx2.TokenAuth,
        backend: str,
        module: Any = httpx,
    ) -> None:
        self.kind = "httpx-trio" if backend == "trio" else "httpx-async"
        if module is httpx2:
            self.kind = "httpx2-async"
        self.auth = auth
        self.module = module
        super().__init__(backend)

    async def _open(self) -> None:
        # A storm's tasks all reach the auth at once; the requests then share a few
        # connections, which httpx's pool serves much faster than a hundred new ones.
        limits = self.module.Limits(max_connections=16)
        self.client = self.module.AsyncClient(
            auth=self.auth,
            follow_redirects=True,
            limits=limits,
            # A storm queues for the pool's few connections; on a loaded machine that queue
            # outlasts the default 5 s pool timeout, which says nothing about the auth under
            # test. Each request keeps its own 10 s connect/read deadline.
            timeout=self.module.Timeout(10.0, pool=None),
        )

    async def _arequest(self, method: str, url: str, body: dict[str, Any]) -> Reply:
        if "stream" in body:
            body["content"] = body.pop("stream")
        response = await self.client.request(method, url, **body)
        return _decode(response.status_code, response.content)

    async def _aclose(self) -> None:
        await self.client.aclose()


class AiohttpDriver(_AsyncDriver):
    kind = "aiohttp"
    auth: freshtoken.aiohttp.TokenMiddleware

    def __init__(self, auth: freshtoken.aiohttp.TokenMiddleware) -> None:
        self.auth = auth
        super().__init__("asyncio")

    async def _open(self) -> None:
        self.session = aiohttp.ClientSession(
            middlewares=(self.auth,), timeout=aiohttp.ClientTimeout(total=10)
        )

    async def _arequest(self, method: str, url: str, body: dict[str, Any]) -> Reply:
        if "content" in body:
            body["data"] = body.pop("content")
        if "stream" in body:
            body["data"] = body.pop("stream")
        async with self.session.request(method, url, **body) as response:
            return _decode(response.status, await response.read())

    async def _aclose(self) -> None:
        await self.session.close()


# -- the BFF: the browser's side of a session whose tokens the manager under test keeps -----


class BffDriver(_SyncDriver):
    """Requests through a BFF's proxy, as a browser makes them: the session cookie and the
    CSRF header, to the BFF's route for the target's origin (one BFF per origin, made on first
    use, ``/api/`` routed to the origin's root). The session's manager is the test's, so what
    the suite asserts of the manager and the store holds of the proxy too.

    The BFF's own answers become what the library integrations raise: 401 login_required is
    SessionExpired (the BFF does not tell the browser the provider's reason), 503
    temporarily_unavailable is RefreshFailed, 502 bad_gateway an httpx.ConnectError.
    """

    kind = "bff"
    PREFIX = "/api/"

    def __init__(
        self,
        manager: freshtoken.TokenManager,
        origins: Iterable[str] | None,
        allow_insecure_http: bool,
    ) -> None:
        self.auth = self._manager = manager
        self.origins = None if origins is None else list(origins)
        self.allow_insecure_http = allow_insecure_http
        self._deployments: dict[str, tuple[Any, str, str]] = {}
        self._mutex = threading.Lock()
        limits = httpx.Limits(max_connections=SYNC_STORM_THREADS)
        self.http = httpx.Client(limits=limits, timeout=httpx.Timeout(10.0, pool=None))

    def _deployment(self, origin: str) -> tuple[Any, str, str]:
        """The BFF in front of ``origin``: (served app, its URL, the session's cookie)."""
        from freshtoken.bff import BFF
        from freshtoken.bff._serving import ServedApp
        from freshtoken.bff._sessions import handle_of, new_session_id

        with self._mutex:
            found = self._deployments.get(origin)
            if found is not None:
                return found
            manager = self._manager
            bff = BFF(
                client_id="behaviour-suite",
                secret_key="the behaviour suite's BFF passphrase",
                refresher=manager.refresher,
                routes={self.PREFIX: origin + "/"},
                secure_cookies=False,
                cookie_name="bff",
                clock=manager.clock,
                max_calls_per_session=SYNC_STORM_THREADS * 4,
                # The suite proves decisions, not the time bound: a loaded machine must not
                # turn a storm's slow refresh into 503s (tests/bff/test_refresh_wait.py).
                refresh_wait=30.0,
            )
            served = ServedApp(bff).start()
            session_id = new_session_id()
            handle = handle_of(session_id)
            now = manager.clock()
            served.call(bff.sessions.create(handle, {}, now=now, idle=3600, absolute=7200))
            bff._managers[handle] = manager  # the session's tokens are the manager's
            found = (served, served.url, f"bff={session_id}")
            self._deployments[origin] = found
            return found

    def request(self, method: str, url: str, **body: Any) -> Reply:
        parts = httpx.URL(url)
        origin = f"{parts.scheme}://{parts.netloc.decode('ascii')}"
        _, base, cookie = self._deployment(origin)
        target = base + self.PREFIX.rstrip("/") + parts.raw_path.decode("ascii")
        if "data" in body:
            body["data"] = dict(body["data"])
        headers = {"X-CSRF": "1", "Cookie": cookie}
        response = self.http.request(method, target, headers=headers, **body)
        return self._reply(response.status_code, response.content, response.headers)

    @staticmethod
    def _reply(status: int, content: bytes, headers: httpx.Headers) -> Reply:
        reply = _decode(status, content)
        error = reply[1].get("error") if isinstance(reply[1], dict) else None
        own = headers.get("cache-control") == "no-store"  # the BFF's own JSON answers
        if own and status == 401 and error == "login_required":
            raise freshtoken.SessionExpired("login_required", "the BFF ended the session")
        if own and status == 503 and error == "temporarily_unavailable":
            raise freshtoken.RefreshFailed("temporarily_unavailable", "the BFF answered 503")
        if own and status == 502 and error == "bad_gateway":
            raise httpx.ConnectError("the BFF could not reach the API")
        return reply

    def post_stream(self, url: str, chunks: Iterable[bytes]) -> Reply:
        def stream() -> Iterator[bytes]:
            yield from chunks

        return self.request("POST", url, content=stream())

    def close(self) -> None:
        self.http.close()
        for served, _, _ in self._deployments.values():
            served.stop()


def make_driver(
    kind: str,
    manager: freshtoken.TokenManager,
    *,
    origins: Iterable[str] | None = None,
    allow_insecure_http: bool = False,
) -> Driver:
    """A driver of ``kind`` whose auth uses ``manager``; close it after use."""
    options: dict[str, Any] = {"origins": origins, "allow_insecure_http": allow_insecure_http}
    if kind == "httpx-sync":
        return HttpxSyncDriver(freshtoken.httpx.TokenAuth(manager, **options))
    if kind in ("httpx-async", "httpx-trio"):
        backend = "trio" if kind == "httpx-trio" else "asyncio"
        return HttpxAsyncDriver(freshtoken.httpx.TokenAuth(manager, **options), backend)
    if kind == "httpx2-sync":
        return HttpxSyncDriver(freshtoken.httpx2.TokenAuth(manager, **options), httpx2)
    if kind == "httpx2-async":
        auth = freshtoken.httpx2.TokenAuth(manager, **options)
        return HttpxAsyncDriver(auth, "asyncio", httpx2)
    if kind == "requests":
        return RequestsDriver(freshtoken.requests.TokenAuth(manager, **options))
    if kind == "aiohttp":
        return AiohttpDriver(freshtoken.aiohttp.TokenMiddleware(manager, **options))
    if kind == "bff":
        return BffDriver(manager, origins, allow_insecure_http)
    raise ValueError(f"unknown integration {kind!r}; one of {KINDS}")
