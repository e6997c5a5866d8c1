"""The API proxy: forward a browser's call upstream with the session's access token.

Bodies stream both ways: a request body is read into memory only up to ``replay_limit`` (so
that a 401 can be retried once with a refreshed token, as the client integrations do); a
larger one streams through and, if rejected, the 401 goes back to the browser after the
refresh (its next call succeeds). Responses are never buffered.

What is dropped on the way up: hop-by-hop headers (and those the Connection header names),
``Host``, every browser cookie (the session cookie above all), the browser's own
``Authorization``, the CSRF header, and ``Forwarded``/``X-Forwarded-*``/``X-Real-IP`` (a
browser could forge them; an API that trusts its proxy's would believe the forgery). On the
way down: hop-by-hop headers and ``Set-Cookie`` (an API must not set cookies on the app's
origin, least of all one that could shadow the session's); ``Vary: Cookie`` is added, since
the answer depends on whose session asked (a shared cache must not give it to someone else).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

from .._core.policy import check_transport, origin_of
from ._security import HOP_BY_HOP, forwardable_path

__all__ = [
    "CallLimit",
    "Route",
    "Routes",
    "forwarded_request_headers",
    "forwarded_response_headers",
    "raw_prefix_end",
]


# What a browser could forge to make an API believe another client address or origin.
_FORGEABLE = frozenset(
    {"forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-real-ip"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """Calls under ``prefix`` (``/api/``) go to ``upstream`` (``https://api.example.com/v1/``)
    with the rest of their path appended."""

    prefix: str
    upstream: str


class Routes:
    """The configured routes, longest prefix first."""

    def __init__(self, routes: Mapping[str, str], *, allow_insecure_http: bool) -> None:
        checked = []
        for prefix, upstream in routes.items():
            if not prefix.startswith("/") or not prefix.endswith("/"):
                raise ValueError(f"a proxy route's prefix starts and ends with '/': {prefix!r}")
            parts = urlsplit(upstream)
            if parts.query or parts.fragment or parts.username or parts.password:
                raise ValueError(f"an upstream is a base URL without query or userinfo: {prefix}")
            base = upstream if upstream.endswith("/") else upstream + "/"
            # Plain HTTP upstream carries a token: refused off loopback unless allowed.
            check_transport(
                origin_of(base), allow_insecure_http=allow_insecure_http, what="access tokens"
            )
            checked.append(Route(prefix, base))
        self.routes = tuple(sorted(checked, key=lambda route: len(route.prefix), reverse=True))
        self.origins = frozenset(str(origin_of(route.upstream)) for route in self.routes)

    def match(self, path: str) -> Route | None:
        for route in self.routes:
            if path.startswith(route.prefix):
                return route
        return None

    def target(self, route: Route, raw_path: str, query: bytes) -> str | None:
        """The upstream URL for a request (its raw, still percent-encoded path), or None if
        the path tries to climb out of the route, or spells the route's prefix otherwise than
        a browser does (``/%61pi/`` for ``/api/``): the route was matched on the decoded path,
        and only then is it certain where the prefix ends in the raw one."""
        end = raw_prefix_end(raw_path, route.prefix)
        if end is None:
            return None
        rest = raw_path[end:]
        if not forwardable_path(rest):
            return None
        url = route.upstream + rest
        if query:
            url += "?" + query.decode("latin-1")
        return url


# What a browser percent-encodes in a path (the WHATWG URL standard's path percent-encode
# set, and "%" itself); it sends every other ASCII character as it is.
_PATH_ENCODED = frozenset(' "#<>?`{}%')


def raw_prefix_end(raw_path: str, prefix: str) -> int | None:
    """Where ``prefix`` ends in ``raw_path`` if the raw path begins with it as a browser writes
    it: each character as itself, except those a browser must percent-encode (non-ASCII, space,
    ``"#<>?`{}``, ``%``), which count as their UTF-8 escapes, hex digits in either case. None
    if it does not begin so: an escape where a browser writes the character, ``%2F`` for ``/``.
    """
    position = 0
    for byte in prefix.encode("utf-8"):
        if 0x20 < byte < 0x7F and chr(byte) not in _PATH_ENCODED:
            if raw_path[position : position + 1] != chr(byte):
                return None
            position += 1
        else:
            escape = raw_path[position : position + 3]
            if escape[:1] != "%" or escape[1:].upper() != f"{byte:02X}":
                return None
            position += 3
    return position


class CallLimit:
    """How many calls each session has upstream at once, and a bound on it: one session (a
    runaway loop, a hostile script) cannot take the connection pool every user shares.

    Counted in this process, on its event loop (no lock needed); a session that has no call
    in flight costs nothing here."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._calls: dict[str, int] = {}

    def enter(self, handle: str) -> bool:
        """Take a slot for ``handle``'s call; False (and no slot) if it has ``limit`` already."""
        calls = self._calls.get(handle, 0)
        if calls >= self.limit:
            return False
        self._calls[handle] = calls + 1
        return True

    def leave(self, handle: str) -> None:
        calls = self._calls.get(handle, 0) - 1
        if calls > 0:
            self._calls[handle] = calls
        else:
            self._calls.pop(handle, None)

    def __len__(self) -> int:
        """Sessions with a call in flight."""
        return len(self._calls)


def _connection_listed(headers: Iterable[tuple[bytes, bytes]]) -> set[str]:
    listed: set[str] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            listed.update(
                token.strip().lower() for token in value.decode("latin-1").split(",") if token
            )
    return listed


def forwarded_request_headers(
    raw: Iterable[tuple[bytes, bytes]], csrf_header: str
) -> list[tuple[str, str]]:
    headers = list(raw)
    drop = HOP_BY_HOP | _connection_listed(headers) | {"host", "cookie", "authorization"}
    drop |= {csrf_header.lower()} | _FORGEABLE
    kept = []
    for name, value in headers:
        lowered = name.decode("latin-1").lower()
        if lowered not in drop:
            kept.append((lowered, value.decode("latin-1")))
    return kept


def forwarded_response_headers(response: httpx.Response) -> list[tuple[bytes, bytes]]:
    raw = response.headers.raw
    drop = HOP_BY_HOP | _connection_listed(raw) | {"set-cookie"}
    kept = [(name.lower(), value) for name, value in raw if name.lower().decode() not in drop]
    kept.append((b"vary", b"Cookie"))
    return kept


async def read_replayable(
    chunks: AsyncIterator[bytes], limit: int
) -> tuple[bytes, AsyncIterator[bytes] | None]:
    """Read up to ``limit`` bytes: ``(body, None)`` if the body ended within it (it can be
    sent twice), else ``(first bytes, the rest)`` to stream once."""
    buffered = bytearray()
    async for chunk in chunks:
        buffered += chunk
        if len(buffered) > limit:
            return bytes(buffered), chunks
    return bytes(buffered), None


async def chained(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield first
    async for chunk in rest:
        yield chunk


def has_body(headers: Mapping[str, Any]) -> bool:
    return "content-length" in headers or "transfer-encoding" in headers
