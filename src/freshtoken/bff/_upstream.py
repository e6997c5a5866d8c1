"""The proxy's HTTP client: one aiohttp ``ClientSession`` per event loop, made to add nothing.
(And ``SharedTransport``, the one httpx pool of ``user_client()`` and revocation.)

Chosen by measurement (``benchmarks/bench_bff.py --floors``): on one worker a bare ASGI proxy
over aiohttp forwards several times the calls per second of the same proxy over httpx, whose
pool, h11 and anyio plumbing took most of the BFF's CPU.

The session is set up so that what reaches the API is what the proxy decided, byte for byte:

* no cookie jar (``DummyCookieJar``): one user's API cookies never ride along another's call;
* no automatic headers: no ``User-Agent``, ``Accept``,
  ``Accept-Encoding`` or ``Content-Type`` of aiohttp's own (``Host`` is the upstream's);
* no decompression: the API's ``Content-Encoding`` and bytes pass through as they are;
* the URL is taken as already encoded (``yarl.URL(encoded=True)``): the path checked by the
  proxy is the path sent, with no normalisation or re-quoting in between;
* no redirects followed, and at most ``limit`` connections in all.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import AsyncIterator, Sequence

import aiohttp
import httpx
from multidict import CIMultiDict
from yarl import URL

__all__ = ["UPSTREAM_ERRORS", "SharedTransport", "Upstream", "client_timeout"]

# What a call that never got an answer raises: the proxy's 502.
UPSTREAM_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_SKIPPED: CIMultiDict[None] = CIMultiDict(
    (name, None) for name in ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")
)
# Response header lines up to 16 KiB (aiohttp's default is 8 KiB; h11, used before, took 16).
_LONGEST_HEADER = 16 * 1024


def client_timeout(timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
    """The BFF's upstream timeout (an httpx.Timeout, its public type) in aiohttp's terms:
    ``pool`` bounds the wait for a free connection, ``connect`` the TCP/TLS connect, ``read``
    every wait for the answer's next bytes. There is no overall bound: a download may stream
    for as long as it keeps coming."""

    def seconds(value: float | None) -> float | None:
        return None if value is None or not math.isfinite(value) else value

    connect = seconds(timeout.connect)
    pool = seconds(timeout.pool)
    return aiohttp.ClientTimeout(
        total=None,
        connect=None if connect is None or pool is None else connect + pool,
        sock_connect=connect,
        sock_read=seconds(timeout.read),
    )


class _AsDecided(aiohttp.ClientRequest):
    """A request that gets no header of aiohttp's choosing (``Host`` aside, from the URL).

    What ``skip_auto_headers`` does, without building the list of skipped headers anew for
    every call (a tenth of a proxied call's CPU when measured)."""

    def update_auto_headers(self, skip_auto_headers: object) -> None:
        # Read later by aiohttp: no Content-Type of its own for a body, either.
        self._skip_auto_headers = _SKIPPED


class Upstream:
    """The proxy's sessions, one per event loop that calls (a BFF mounted in one server has
    one); [`aclose()`][aclose] closes them, at the app's shutdown."""

    def __init__(self, *, verify: bool | str, timeout: httpx.Timeout, limit: int = 256) -> None:
        self._ssl: ssl.SSLContext | bool = (
            False if verify is False else httpx.create_ssl_context(verify=verify)
        )
        self._timeout = client_timeout(timeout)
        self._limit = limit
        # Keyed by the loop's id: uvloop's loops cannot be weakly referenced. The loop itself
        # is kept with its session, so an id reused by a later loop is never mistaken for it.
        self._sessions: dict[int, tuple[asyncio.AbstractEventLoop, aiohttp.ClientSession]] = {}

    def session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        found = self._sessions.get(id(loop))
        if found is not None and found[0] is loop:
            return found[1]
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, ssl=self._ssl),
            cookie_jar=aiohttp.DummyCookieJar(),
            request_class=_AsDecided,
            auto_decompress=False,
            timeout=self._timeout,
            max_line_size=_LONGEST_HEADER,
            max_field_size=_LONGEST_HEADER,
        )
        self._sessions[id(loop)] = (loop, session)
        return session

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
    ) -> aiohttp.ClientResponse:
        """Send a call; the answer's body is still to be read (``response.content``) and the
        response released. Raises one of ``UPSTREAM_ERRORS`` when no answer came."""
        return await self.session().request(
            method,
            URL(url, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
        )

    async def aclose(self) -> None:
        """Close the sessions: this loop's now; another loop's on that loop if it still runs
        (else its connections went with it)."""
        sessions, self._sessions = self._sessions, {}
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:  # closed from trio (a lifespan): no session of ours runs here
            current = None
        for loop, session in sessions.values():
            if loop is current:
                await session.close()
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop)
            else:
                session.detach()  # its loop is closed: nothing is left to close on it

    def __repr__(self) -> str:
        return f"Upstream(sessions={len(self._sessions)}, limit={self._limit})"


class SharedTransport(httpx.AsyncBaseTransport):
    """One connection pool for every user_client: a client closing does not close it."""

    def __init__(self, transport: httpx.AsyncHTTPTransport) -> None:
        self._transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._transport.handle_async_request(request)

    async def aclose(self) -> None:
        """Kept open: the BFF closes it ([`close()`][close])."""

    async def close(self) -> None:
        await self._transport.aclose()
