"""ASGI plumbing the BFF's endpoints share: reading a request's scope, and writing its short
answers (JSON, redirects, the 503 that asks the browser to come back later)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

from ._security import uri_encoded

__all__ = [
    "ASGIApp",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "body_chunks",
    "cookie_names",
    "cookie_of",
    "headers_of",
    "own_origin",
    "query_of",
    "send_json",
    "send_redirect",
    "send_still_refreshing",
    "send_unavailable",
]

logger = logging.getLogger("freshtoken.bff")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def headers_of(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }


def cookie_of(scope: Scope, name: str) -> str | None:
    for header, value in scope["headers"]:
        if header.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, _, found = part.strip().partition("=")
            if key == name:
                return str(found)
    return None


def cookie_names(scope: Scope, prefix: str) -> list[str]:
    names = []
    for header, value in scope["headers"]:
        if header.lower() == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name = part.strip().partition("=")[0]
                if name.startswith(prefix):
                    names.append(name)
    return names


def query_of(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return dict(httpx.QueryParams(raw))


def own_origin(scope: Scope) -> str:
    scheme = scope.get("scheme", "http")
    host = headers_of(scope).get("host")
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
    return f"{scheme}://{host}"


async def body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("the browser went away")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def send_json(
    send: Send, status: int, document: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps(document, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_redirect(send: Send, location: str, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 302,
            "headers": [
                (b"location", uri_encoded(location).encode("ascii")),
                (b"cache-control", b"no-store"),
                (b"content-length", b"0"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def send_unavailable(send: Send, error: Exception) -> None:
    """503 temporarily_unavailable for ``error`` (the token endpoint or the store is down),
    with its Retry-After if it has one, else 1 s: the browser's session is kept."""
    logger.warning("bff: %s", error)
    retry_after = getattr(error, "retry_after", None)
    if not isinstance(retry_after, (int, float)) or not math.isfinite(retry_after):
        retry_after = 1
    headers = [(b"retry-after", str(max(1, math.ceil(retry_after))).encode())]
    await send_json(send, 503, {"error": "temporarily_unavailable"}, headers)


async def send_still_refreshing(send: Send) -> None:
    """The session's refresh takes longer than refresh_wait: come back in a second."""
    await send_json(send, 503, {"error": "temporarily_unavailable"}, [(b"retry-after", b"1")])
