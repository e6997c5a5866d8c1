"""httpx integration: ``httpx.Client(auth=TokenAuth(manager))``, sync and async alike.

One flow serves both clients, as httpx's own auth classes do; the sync and async entry points
differ only in how they ask the manager (which blocks in one and awaits in the other).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Iterable

import httpx

from ._manager import TokenManager
from ._policy import Destinations
from ._tokens import TokenSet
from .errors import ReplayError

__all__ = ["TokenAuth"]


class TokenAuth(httpx.Auth):
    """Attach the manager's access token; on a rejection refresh once and retry once.

    ``origins`` (recommended) lists the ``scheme://host[:port]`` the token may go to; requests
    elsewhere are sent without it. Cross-origin redirects never carry it (httpx drops the
    Authorization header itself). Plain HTTP is refused except to loopback, unless
    ``allow_insecure_http``.

    A request whose body is a one-shot stream (a generator) is sent once: if it is rejected
    the manager still refreshes, so the next request succeeds, and :class:`ReplayError` says
    the body could not be sent again. Bytes, str, JSON, forms and files are replayed.
    """

    def __init__(
        self,
        manager: TokenManager,
        *,
        origins: Iterable[str] | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        self.manager = manager
        self.destinations = Destinations(origins, allow_insecure_http=allow_insecure_http)

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        if not self._applies(request):
            yield request
            return
        manager = self.manager
        tokens = manager.get_tokens()
        response = yield _authorize(request, tokens)
        if not self._rejected(response, tokens):
            return
        replacement = manager.handle_rejection(tokens)
        if replacement is None:
            return  # fresh tokens are rejected too: the 401 is the caller's answer
        _ensure_replayable(request, response)
        yield _authorize(request, replacement)

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self._applies(request):
            yield request
            return
        manager = self.manager
        tokens = manager.cached_tokens() or await manager.aget_tokens()
        response = yield _authorize(request, tokens)
        if not self._rejected(response, tokens):
            return
        replacement = await manager.ahandle_rejection(tokens)
        if replacement is None:
            return  # fresh tokens are rejected too: the 401 is the caller's answer
        _ensure_replayable(request, response)
        yield _authorize(request, replacement)

    def _applies(self, request: httpx.Request) -> bool:
        url = request.url
        return self.destinations.allows(url.scheme, url.host, url.port)

    def _rejected(self, response: httpx.Response, tokens: TokenSet) -> bool:
        return (
            response.status_code in self.manager.refresh_statuses
            and _answers_our_token(response, tokens)
            and self.manager.wants_refresh(
                response.status_code, response.headers.get_list("WWW-Authenticate")
            )
        )

    def __repr__(self) -> str:
        return f"TokenAuth({self.manager!r}, origins={self.destinations!r})"


def _authorize(request: httpx.Request, tokens: TokenSet) -> httpx.Request:
    request.headers["Authorization"] = tokens.authorization
    return request


def _answers_our_token(response: httpx.Response, tokens: TokenSet) -> bool:
    # httpx follows redirects inside the auth flow; a 401 from another origin, reached
    # without our token, says nothing about it.
    sent: str | None = response.request.headers.get("Authorization")
    return sent == tokens.authorization


def _ensure_replayable(request: httpx.Request, response: httpx.Response) -> None:
    # httpx keeps bytes, JSON, forms and multipart as re-iterable streams; only a caller's
    # iterator is one-shot, and buffering it behind the caller's back could exhaust memory.
    if isinstance(request.stream, httpx.ByteStream) or _is_multipart(request.stream):
        return
    raise ReplayError(
        f"{request.method} {request.url.copy_with(query=None)} was rejected with "
        f"{response.status_code} and its body is a one-shot stream, so it was not retried; "
        "the token has been refreshed: send the request again"
    )


def _is_multipart(stream: object) -> bool:
    return type(stream).__name__ == "MultipartStream"
