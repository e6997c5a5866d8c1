"""Sending a token request and reading its answer: ``HTTPRefresher``,
the base of every HTTP refresher, and the capped, deadline-bound exchange it goes out on.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

import httpx

from .._core.clock import Clock, system_clock
from .._core.policy import LARGEST_ANSWER, check_transport, origin_of
from .._core.quirks import Quirks
from .._core.tokens import TokenSet
from .._oauth.http import run_blocking, ssl_context
from .._oauth.token_answers import read_token_answer
from .._runtime import connections
from .._runtime.connections import DEFAULT_CONCURRENCY
from ..errors import RefreshFailed, SessionExpired

if TYPE_CHECKING:
    from .._oauth.dpop import DPoP, DPoPKey


T = TypeVar("T")


DEFAULT_TIMEOUT = httpx.Timeout(10.0)


_MOST_WRAPPERS = 4


class HTTPRefresher:
    """Shared sending logic: subclasses say what to send and how to read the answer.

    When a [`TokenManager`][freshtoken.TokenManager] refreshes, the request goes out on the
    library's flight host over a kept-alive connection shared with the other refreshers of that
    TLS configuration, and at most ``concurrency`` token requests to one issuer origin are in
    the air at once (the others queue, first come first served, until their attempt's
    deadline; one still queued then fails, never sent, as a transient ``RefreshFailed("busy")``).
    """

    can_acquire = False
    quirks = Quirks()
    # Set once an answer replaced the refresh token presented: the server rotates them.
    _seen_rotation = False

    def __init__(
        self,
        url: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
        headers: Mapping[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.url = url
        self._origin = origin_of(url)
        self.allow_insecure_http = allow_insecure_http
        self.timeout = timeout
        self.verify = verify
        self.headers = dict(headers or {})
        if not (isinstance(concurrency, int) and concurrency >= 1):
            raise ValueError("concurrency must be a whole number >= 1")
        self.concurrency = concurrency
        self._ssl_context: ssl.SSLContext | None = None
        self._parsed: tuple[str, httpx.URL] | None = None

    @property
    def _parsed_url(self) -> httpx.URL:
        """``url`` parsed, once (again if ``url`` is replaced)."""
        kept = self._parsed
        if kept is None or kept[0] != self.url:
            kept = self._parsed = (self.url, httpx.URL(self.url))
        return kept[1]

    @property
    def ssl_context(self) -> ssl.SSLContext:
        # Built once: loading the CA bundle costs ~25-100 ms, more than a refresh round trip.
        if self._ssl_context is None:
            self._ssl_context = ssl_context(self.verify)
        return self._ssl_context

    def _tls(self) -> ssl.SSLContext | bool:
        # Plain HTTP (loopback, or allowed insecure) needs no TLS: loading the CA bundle
        # would cost the first refresh ~0.1-0.3 s of CPU for nothing.
        return self.ssl_context if self._origin.scheme == "https" else False

    def build_request(self, current: TokenSet | None) -> httpx.Request:
        raise NotImplementedError

    def parse_response(
        self,
        response: httpx.Response,
        *,
        sent_at: float,
        current: TokenSet | None,
        sent_secrets: tuple[str, ...] = (),
        dpop_key: DPoPKey | None = None,
    ) -> TokenSet:
        """Read a token endpoint's answer; ``sent_secrets`` (a password...) are cut out of
        any error text, as are the current tokens and the client's own secret. Whatever the
        answer holds, this raises SessionExpired, RefreshFailed or DPoPError, nothing else.
        ``dpop_key`` is the key the request was signed with: ``DPoP`` tokens are accepted,
        bound to it. The wire reads the answer (`freshtoken._oauth.token_answers`); the
        refresher decides what an unreadable 2xx means for its refresh token."""
        try:
            tokens = read_token_answer(
                response,
                sent_at=sent_at,
                previous=current,
                secrets=sent_secrets + self.secrets(),
                dpop_key=dpop_key,
                quirks=self.quirks,
                translate=self.translate,
            )
        except RefreshFailed as failure:
            if failure.answer_lost:
                self._check_not_spent(current, failure)
            raise
        if current is not None and current.refresh_token not in (None, tokens.refresh_token):
            self._seen_rotation = True
        return tokens

    def _check_not_spent(self, current: TokenSet | None, failure: RefreshFailed) -> None:
        """A 2xx answer means the server spent the refresh token (DESIGN invariant 14): when
        it rotates, presenting that token again is a replay that revokes the grant, so the
        session ends here instead of at the server's reuse detection."""
        if self.can_acquire or current is None or current.refresh_token is None:
            return
        reuse = self.quirks.reused_refresh_token
        if reuse == "refused" or (reuse == "unknown" and self._seen_rotation):
            raise SessionExpired(
                "refresh_token_spent",
                "the token endpoint accepted the refresh but its answer cannot be read "
                f"({failure.description}); the refresh token it spent cannot be presented "
                "again: log in again",
                status=failure.status,
            ) from None

    def translate(self, document: Mapping[str, Any]) -> Mapping[str, Any]:
        """Map the endpoint's field names onto RFC 6749's; identity by default."""
        return document

    def secrets(self) -> tuple[str, ...]:
        """This refresher's own credentials, never to be repeated in an error."""
        return ()

    def refresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
        dpop: DPoP | None = None,
    ) -> TokenSet:
        """One attempt, ended by ``deadline`` (monotonic) whatever the server does. With
        ``dpop`` the request carries a proof (and is sent again once with the server's new
        nonce if it demands one)."""
        return run_blocking(self.arefresh(current, clock, deadline=deadline, dpop=dpop))

    async def arefresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
        dpop: DPoP | None = None,
    ) -> TokenSet:
        request = await self._request_for(current, deadline)
        sent = self._sent_secrets(request)
        if dpop is None:
            sent_at = clock()
            response = await exchange(request, self.timeout, self._tls(), deadline, cap=self._cap())
            return self.parse_response(
                response, sent_at=sent_at, current=current, sent_secrets=sent
            )
        key = dpop.key_for(current)
        flow = dpop.token_request(request, key, clock)
        step = next(flow)
        while True:
            sent_at = clock()
            response = await exchange(step, self.timeout, self._tls(), deadline, cap=self._cap())
            try:
                step = flow.send(response)
            except StopIteration as done:
                response = done.value
                break
        return self.parse_response(
            response, sent_at=sent_at, current=current, sent_secrets=sent, dpop_key=key
        )

    def close(self) -> None:
        """Nothing to release: the connections are the flight host's (kept for symmetry)."""

    def _cap(self) -> tuple[str, int]:
        origin = self._origin
        return f"{origin.scheme}://{origin.host}:{origin.port}", self.concurrency

    # Form fields whose values are credentials of their own (an assertion, a subject token):
    # cut out of any error text, as the refresh token is.
    _secret_fields: tuple[str, ...] = ()

    async def _request_for(self, current: TokenSet | None, deadline: float | None) -> httpx.Request:
        """The request of one attempt; refreshers that must first fetch something (a subject
        token) do it here, by ``deadline``."""
        return self._checked_request(current)

    def _sent_secrets(self, request: httpx.Request) -> tuple[str, ...]:
        if not self._secret_fields:
            return ()
        form = parse_qsl(request.content.decode("utf-8", "replace"))
        return tuple(value for name, value in form if name in self._secret_fields)

    def _checked_request(self, current: TokenSet | None) -> httpx.Request:
        check_transport(
            self._origin, allow_insecure_http=self.allow_insecure_http, what="a refresh token"
        )
        return self.build_request(current)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


async def exchange(
    request: httpx.Request,
    timeout: httpx.Timeout | float,
    verify: ssl.SSLContext | bool,
    deadline: float | None,
    *,
    cap: tuple[str, int] | None = None,
) -> httpx.Response:
    """Send ``request`` and read the answer (at most ``LARGEST_ANSWER``) by ``deadline``.

    httpx's timeouts bound each read, not the whole: a server that drips a byte at a time
    would hold an attempt for hours. Here the whole exchange (connect, headers, body) is
    cancelled at the deadline. Redirects are not followed: credentials stay with the URL.
    Every failure is a [`RefreshFailed`][] that says whether the answer may be lost.

    On the flight host the request takes one of ``cap`` = (origin, places) first, and goes
    out on the host's shared keep-alive client (see ``_runtime.connections``).
    """
    if connections.shared() and cap is not None:
        async with connections.place_for(cap[0], cap[1], deadline):
            return await _exchange(request, timeout, verify, deadline)
    return await _exchange(request, timeout, verify, deadline)


async def _exchange(
    request: httpx.Request,
    timeout: httpx.Timeout | float,
    verify: ssl.SSLContext | bool,
    deadline: float | None,
) -> httpx.Response:
    budget = math.inf if deadline is None else deadline - time.monotonic()
    status: int | None = None
    try:
        async with connections.time_limit(max(budget, 0.0) if math.isfinite(budget) else None):
            if connections.shared():
                status, raw, body = await connections.send(
                    request, httpx.Timeout(timeout), verify, LARGEST_ANSWER
                )
            else:
                async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
                    response = await client.send(request, stream=True)
                    status, raw = response.status_code, response.headers.raw
                    try:
                        body = await _read_capped(response)
                    finally:
                        await response.aclose()
    except TimeoutError:
        raise RefreshFailed(
            "timeout",
            f"no complete answer from the token endpoint within {budget:.3g} s",
            answer_lost=True,
        ) from None
    except httpx.TransportError as error:
        raise _transport_failure(error) from None
    except httpx.DecodingError:
        raise RefreshFailed(
            "malformed_response",
            "the token endpoint's answer could not be decoded (corrupt compression)",
            status=status,
            answer_lost=True,
        ) from None
    _check_length(body, status)
    headers = [(name, value) for name, value in raw if name.lower() not in _BODY_FRAMING]
    return httpx.Response(status, headers=headers, content=body, request=request)


# The body is handed on decoded and whole: the headers that described its transfer go.
_BODY_FRAMING = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        _check_length(body, response.status_code)
    return bytes(body)


def _check_length(body: bytes | bytearray, status: int | None) -> None:
    if len(body) > LARGEST_ANSWER:
        raise RefreshFailed(
            "malformed_response",
            f"the token endpoint's answer is over {LARGEST_ANSWER} bytes long, more than "
            "any token answer",
            status=status,
            answer_lost=True,
        )


def _transport_failure(error: httpx.TransportError) -> RefreshFailed:
    # Connect errors never reached the server; anything later may have been processed there.
    lost = not isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    return RefreshFailed(
        "network_error", f"{type(error).__name__} talking to the token endpoint", answer_lost=lost
    )


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
