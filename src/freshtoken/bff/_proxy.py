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

from .._policy import check_transport, origin_of
from ._security import HOP_BY_HOP, forwardable_path

__all__ = ["Route", "Routes", "forwarded_request_headers", "forwarded_response_headers"]


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
        the path tries to climb out of the route."""
        rest = raw_path[len(route.prefix) :]
        if not forwardable_path(rest):
            return None
        url = route.upstream + rest
        if query:
            url += "?" + query.decode("latin-1")
        return url


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
