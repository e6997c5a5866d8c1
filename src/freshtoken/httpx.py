"""httpx integration: ``httpx.Client(auth=TokenAuth(manager))``, sync and async alike.

One flow serves both clients, as httpx's own auth classes do; the sync and async entry points
differ only in how they ask the manager (which blocks in one and awaits in the other). With a
DPoP manager the flow is `TokenAuth._dpop_flow()`, which yields the rejected tokens when
it needs the manager's answer.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Iterable
from typing import Any, TypeAlias

import httpx

from ._client_credentials import ClientCredentialsMixin
from ._core.policy import Destinations
from ._core.tokens import TokenSet
from ._engine.manager import TokenManager
from ._oauth.dpop import Step
from .errors import ReplayError

# What the DPoP flow yields: a request to send (it receives the response), or the tokens the
# server rejected (it receives the manager's replacement, or None).
_DPoPFlow: TypeAlias = Generator["httpx.Request | TokenSet", Any, None]

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
        tokens = manager.get_tokens()
        if manager.dpop is not None:
            flow = self._dpop_flow(request, tokens)
            step = next(flow)
            try:
                while True:
                    if isinstance(step, TokenSet):
                        step = flow.send(manager.handle_rejection(step))
                    else:
                        step = flow.send((yield step))
            except StopIteration:
                return
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
        if manager.dpop is not None:
            flow = self._dpop_flow(request, tokens)
            step = next(flow)
            try:
                while True:
                    if isinstance(step, TokenSet):
                        step = flow.send(await manager.ahandle_rejection(step))
                    else:
                        step = flow.send((yield step))
            except StopIteration:
                return
        response = yield _authorize(request, tokens)
        if not self._rejected(response, tokens):
            return
        replacement = await manager.ahandle_rejection(tokens)
        if replacement is None:
            return  # fresh tokens are rejected too: the 401 is the caller's answer
        _ensure_replayable(request, response)
        yield _authorize(request, replacement)

    def _dpop_flow(self, request: httpx.Request, tokens: TokenSet) -> _DPoPFlow:
        manager = self.manager
        assert manager.dpop is not None
        resource = manager.dpop.resource_request(
            request.method, str(request.url), tokens, manager.clock
        )
        while True:
            authorization, proof = resource.headers()
            request.headers["Authorization"] = authorization
            if proof is not None:
                request.headers["DPoP"] = proof
            response: httpx.Response = yield request
            sent = response.request
            ours = sent.headers.get("Authorization") == authorization
            if sent is not request:  # a redirect hop answered
                if not (ours and response.status_code == 401 and resource.retry_proof()):
                    return
                # The hop carried the first request's proof: send it again with its own.
                request = sent
                resource.retarget(request.method, str(request.url))
                resource.learn(response.headers.get("DPoP-Nonce"))
                continue
            step = resource.step(
                response.status_code,
                response.headers.get_list("WWW-Authenticate"),
                response.headers.get("DPoP-Nonce"),
                manager.wants_refresh,
            )
            if step is Step.DONE:
                return
            if step is Step.REFRESH:
                replacement: TokenSet | None = yield resource.tokens
                if not isinstance(replacement, TokenSet):
                    return  # fresh tokens are rejected too: the 401 is the caller's answer
                resource.use(replacement)
            _ensure_replayable(request, response)

    def _applies(self, request: httpx.Request) -> bool:
        url = request.url
        destinations = self.destinations
        path = url.raw_path.partition(b"?")[0].decode("ascii") if destinations.has_paths else "/"
        return destinations.allows(url.scheme, url.host, url.port, path)

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
