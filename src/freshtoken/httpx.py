"""httpx integration: ``httpx.Client(auth=TokenAuth(manager))``, sync and async alike.

One flow serves both clients, as httpx's own auth classes do: `TokenAuth._flow()` is a thin
loop over the request's ``ResourceCall`` (``freshtoken/_engine/resource.py``), which decides
every retry. It yields the requests to send, and the rejected tokens when it needs the
manager's answer; the sync and async entry points differ only in how they ask the manager
(one blocks, the other awaits).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Iterable
from typing import Any, TypeAlias

import httpx

from ._core.policy import Destinations
from ._core.tokens import TokenSet
from ._engine.client_credentials import ClientCredentialsMixin
from ._engine.manager import TokenManager
from ._engine.resource import Attempt, Rejected
from .errors import ReplayError

# What the flow yields: a request to send (it receives the response), or the tokens the API
# rejected (it receives the manager's replacement, or None).
_Flow: TypeAlias = Generator["httpx.Request | Rejected", Any, None]

__all__ = ["ClientCredentialsAuth", "TokenAuth"]


class TokenAuth(httpx.Auth):
    """Attach the manager's access token; on a rejection refresh once and retry once.

    ``origins`` (recommended) lists the ``scheme://host[:port]`` the token may go to, or
    ``scheme://host[:port]/path`` for that path and below it only; requests elsewhere are
    sent without it. Cross-origin redirects never carry it (httpx drops the Authorization
    header itself). A redirect within an origin keeps it, even out of a path prefix: httpx
    follows redirects (when ``follow_redirects`` is on; it is off by default) without asking
    the auth, so a prefix limits where requests start, not where such redirects lead. Plain
    HTTP is refused except to loopback, unless ``allow_insecure_http``.

    A request whose body is a one-shot stream (a generator) is sent once: if it is rejected
    the manager still refreshes, so the next request succeeds, and [`ReplayError`][] says
    the body could not be sent again. Bytes, str, JSON, forms and files are replayed.

    With a DPoP manager each attempt carries a new proof; a ``use_dpop_nonce`` answer is
    retried once with the server's new nonce (no refresh), and a redirect hop of the same
    origin that refuses the first request's proof is re-sent once with its own. httpx copies
    every header but Authorization to a redirect, so a proof (already spent at its own URL)
    may reach the redirect's target.
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
        flow = self._flow(request, manager.get_tokens())
        step = next(flow)
        try:
            while True:
                if isinstance(step, Rejected):
                    step = flow.send(manager.handle_rejection(step.tokens))
                else:
                    step = flow.send((yield step))
        except StopIteration:
            return

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not self._applies(request):
            yield request
            return
        manager = self.manager
        flow = self._flow(request, manager.cached_tokens() or await manager.aget_tokens())
        step = next(flow)
        try:
            while True:
                if isinstance(step, Rejected):
                    step = flow.send(await manager.ahandle_rejection(step.tokens))
                else:
                    step = flow.send((yield step))
        except StopIteration:
            return

    def _flow(self, request: httpx.Request, tokens: TokenSet) -> _Flow:
        manager = self.manager
        call = manager.call(request.method, str(request.url))
        attempt: Attempt | None = call.first(tokens)
        while attempt is not None:
            _authorize(request, attempt)
            response: httpx.Response = yield request
            sent = response.request
            if sent.headers.get("Authorization") != attempt.authorization:
                # httpx follows redirects inside the flow: a 401 from a hop that went out
                # without our token (another origin) says nothing about it.
                return
            if sent is not request and manager.dpop is not None:
                # A hop of the same origin carried the first request's proof: send it again
                # with its own (once). Its 401 says nothing about the token.
                attempt = call.hop(
                    sent.method,
                    str(sent.url),
                    response.status_code,
                    response.headers.get("DPoP-Nonce"),
                )
                request = sent
                continue
            decision = call.answer(
                response.status_code,
                response.headers.get_list("WWW-Authenticate"),
                response.headers.get("DPoP-Nonce"),
            )
            if isinstance(decision, Rejected):
                decision = call.replaced((yield decision))
            if decision is not None:
                _ensure_replayable(request, response)
            attempt = decision

    def _applies(self, request: httpx.Request) -> bool:
        url = request.url
        destinations = self.destinations
        path = url.raw_path.partition(b"?")[0].decode("ascii") if destinations.has_paths else "/"
        return destinations.allows(url.scheme, url.host, url.port, path)

    def __repr__(self) -> str:
        return f"TokenAuth({self.manager!r}, origins={self.destinations!r})"


class ClientCredentialsAuth(ClientCredentialsMixin, TokenAuth):
    """The client credentials grant in one object, for the commonest machine-to-machine case:
    ``httpx.Client(auth=ClientCredentialsAuth(token_url, client_id, client_secret,
    scope="read", origins=[API]))``.

    It acquires a token when the first request needs one, re-acquires it before it expires
    and after a 401, and shares it between threads and tasks: a [`TokenAuth`][] over a
    [`TokenManager`][freshtoken.TokenManager] with a
    [`ClientCredentials`][freshtoken.ClientCredentials] refresher (``manager`` and
    ``manager.refresher`` are there to look at or use).

    ``origins`` is required: the API origins (or ``https://host/path`` prefixes) the token
    may go to, since a client's token is good for any API that trusts its issuer. Without a
    ``client_secret``, ``private_key`` signs private_key_jwt assertions; ``auth_method``,
    ``scope`` and ``extra_params`` (``audience``, ``resource``...) are those of
    [`ClientCredentials`][freshtoken.ClientCredentials], and ``verify`` is for the token endpoint.
    ``store`` shares the token between processes ([`FileStore`][freshtoken.FileStore],
    [`RedisStore`][freshtoken.RedisStore]). ``close()`` closes the manager.
    """


def _authorize(request: httpx.Request, attempt: Attempt) -> None:
    headers = request.headers
    headers["Authorization"] = attempt.authorization
    if attempt.proof is not None:
        headers["DPoP"] = attempt.proof


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
