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
from urllib.parse import urlsplit

from .._core.policy import check_transport, origin_of
from ._security import (
    _METHOD_OVERRIDE_HEADERS,
    HOP_BY_HOP,
    forwardable_path,
    forwardable_path_cached,
)

__all__ = [
    "CallLimit",
    "Inbound",
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
    # Whether a browser writes the prefix as it is (no character it must percent-encode):
    # then the raw path begins with it literally or not at all (see raw_prefix_end()).
    plain: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        plain = all(0x20 < ord(char) < 0x7F and char not in _PATH_ENCODED for char in self.prefix)
        object.__setattr__(self, "plain", plain)


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
        if route.plain:  # the common case, and what raw_prefix_end() finds for it
            end: int | None = len(route.prefix) if raw_path.startswith(route.prefix) else None
        else:
            end = raw_prefix_end(raw_path, route.prefix)
        if end is None:
            return None
        rest = raw_path[end:]
        # Short paths (those an app calls again and again) have their answer remembered.
        if not (forwardable_path_cached(rest) if len(rest) <= 256 else forwardable_path(rest)):
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


# Never forwarded up, whatever the request: the browser's cookies (the session's above all),
# its own Authorization, Host (the upstream's is sent), and what a browser could forge.
_NEVER_UP = frozenset(
    name.encode() for name in HOP_BY_HOP | _FORGEABLE | {"host", "cookie", "authorization"}
)
_NEVER_DOWN = frozenset(name.encode() for name in HOP_BY_HOP | {"set-cookie"})
_VARY_COOKIE = (b"vary", b"Cookie")


class Inbound:
    """What the proxy needs of a browser's request headers, read in one pass: the session
    cookie, whether the CSRF header proves the app's own script, whether a body follows, the
    methods an override header names, and the headers to forward (as ``str`` pairs)."""

    __slots__ = ("csrf", "forward", "has_body", "overrides", "session_id")

    def __init__(
        self,
        raw: Iterable[tuple[bytes, bytes]],
        *,
        cookie_name: bytes,
        csrf_header: bytes,
        csrf_value: bytes,
    ) -> None:
        session_id: bytes | None = None
        csrf: bytes | None = None
        fetch_site = b"same-origin"
        has_body = False
        overrides: list[bytes] = []
        forward: list[tuple[str, str]] = []
        connection = False
        for raw_name, value in raw:
            name = raw_name.lower()
            if name in _NEVER_UP:
                if name == b"cookie":
                    found = _cookie_value(value, cookie_name)
                    if found is not None and session_id is None:
                        session_id = found
                elif name == b"transfer-encoding":
                    has_body = True
                elif name == b"connection":
                    connection = True
                continue
            if name == csrf_header:
                csrf = value  # the last one counts, as in a dict of the headers
                continue
            if name == b"content-length":
                has_body = True
            elif name == b"sec-fetch-site":
                fetch_site = value
            elif name in _METHOD_OVERRIDE_HEADERS:
                overrides.append(value)
            forward.append((name.decode("latin-1"), value.decode("latin-1")))
        if connection:  # the headers the Connection header names are hop-by-hop too
            listed = _connection_listed(raw)
            forward = [(name, value) for name, value in forward if name not in listed]
        self.session_id = None if session_id is None else session_id.decode("latin-1")
        self.csrf = csrf == csrf_value and fetch_site != b"cross-site"
        self.has_body = has_body
        self.overrides = overrides
        self.forward = forward


def _cookie_value(header: bytes, name: bytes) -> bytes | None:
    """The first cookie named ``name`` in one Cookie header (``a=1; b=2``)."""
    for part in header.split(b";"):
        key, _, value = part.strip().partition(b"=")
        if key == name:
            return value
    return None


def forwarded_request_headers(
    raw: Iterable[tuple[bytes, bytes]], csrf_header: str
) -> list[tuple[str, str]]:
    csrf = csrf_header.lower().encode("latin-1")
    return Inbound(raw, cookie_name=b"", csrf_header=csrf, csrf_value=b"").forward


def forwarded_response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    kept = []
    connection = False
    for name, value in raw:
        lowered = name.lower()
        if lowered in _NEVER_DOWN:
            connection = connection or lowered == b"connection"
            continue
        kept.append((lowered, value))
    if connection:
        listed = {name.encode("latin-1") for name in _connection_listed(raw)}
        kept = [(name, value) for name, value in kept if name not in listed]
    kept.append(_VARY_COOKIE)
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
