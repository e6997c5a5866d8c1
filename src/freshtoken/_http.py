"""Sending the few requests of a login (discovery, JWKS, token endpoint), sync and async.

Each request goes through a client of its own, follows no redirect (credentials stay with the
URL they were meant for), and turns a transport failure into one readable
:class:`~freshtoken.LoginFailed`: ``cannot reach https://host/path: connection refused``.
"""

from __future__ import annotations

import functools
import ssl

import httpx

from .errors import LoginFailed

__all__ = ["DEFAULT_TIMEOUT", "Verify", "asend", "send", "ssl_context", "unreachable"]

Verify = bool | str | ssl.SSLContext
DEFAULT_TIMEOUT = httpx.Timeout(10.0)


def ssl_context(verify: Verify) -> ssl.SSLContext:
    """``verify`` as a context: True (system CAs), False, a CA bundle path, or a context."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    return _cached_context(verify)


@functools.lru_cache(maxsize=8)
def _cached_context(verify: bool | str) -> ssl.SSLContext:
    # Loading the CA bundle costs ~25-100 ms: once per process is enough.
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify)


def unreachable(url: str, error: httpx.TransportError) -> LoginFailed:
    return LoginFailed("network_error", f"cannot reach {_without_query(url)}: {_reason(error)}")


def send(
    request: httpx.Request, *, verify: Verify = True, timeout: httpx.Timeout | float | None = None
) -> httpx.Response:
    with httpx.Client(
        verify=ssl_context(verify), timeout=timeout or DEFAULT_TIMEOUT, follow_redirects=False
    ) as client:
        try:
            return client.send(request)
        except httpx.TransportError as error:
            raise unreachable(str(request.url), error) from None


async def asend(
    request: httpx.Request, *, verify: Verify = True, timeout: httpx.Timeout | float | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(
        verify=ssl_context(verify), timeout=timeout or DEFAULT_TIMEOUT, follow_redirects=False
    ) as client:
        try:
            return await client.send(request)
        except httpx.TransportError as error:
            raise unreachable(str(request.url), error) from None


def _without_query(url: str) -> str:
    # A query may hold a code or a token; the host and path say where well enough.
    return url.split("?", 1)[0].split("#", 1)[0]


def _reason(error: BaseException) -> str:
    """The operating system's words for it ("connection refused"), else httpx's."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror[:1].lower() + cause.strerror[1:]
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    text = " ".join(str(error).split())
    return text[:200] if text else type(error).__name__
