"""aiohttp integration: ``aiohttp.ClientSession(middlewares=(TokenMiddleware(manager),))``.

A client middleware (aiohttp 3.12 or newer). aiohttp runs the middlewares once per request it
sends, redirects included: the session follows a redirect by building a new request and
passing it through the middlewares again. So the middleware itself makes sure a redirect to
another origin goes out without the token (see [`TokenMiddleware`][]).
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Iterable

try:
    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
    from yarl import URL
except ModuleNotFoundError as error:  # pragma: no cover - exercised with sys.modules patched
    raise ModuleNotFoundError(
        "freshtoken.aiohttp needs the aiohttp library: pip install 'freshtoken[aiohttp]'",
        name=error.name,
    ) from error

from ._client_credentials import ClientCredentialsMixin
from ._core.policy import Destinations, Origin, default_port
from ._deprecation import module_getattr as _module_getattr
from ._engine.manager import TokenManager
from ._engine.resource import Attempt, Rejected
from .errors import InsecureTransportError, ReplayError

__all__ = ["ClientCredentialsMiddleware", "TokenMiddleware"]

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclasses.dataclass(frozen=True, slots=True)
class _Redirect:
    """A ``session.request()`` call that was redirected to another origin.

    aiohttp makes one timer per call (its total timeout spans every redirect hop) and hands it
    to the ClientRequest of each hop: a request with that timer is a later hop of the call, and
    none of them carries the token. Any other request, in this task or not, is not a hop.
    (Should aiohttp drop the timer, every request would look like a hop: tokens would be lost,
    never leaked, and the redirect tests would say so.)
    """

    call: object
    # The Authorization value that went out before the redirect, when it was ours: aiohttp
    # copies headers to a hop of the same origin, and a hop out of a path prefix must lose it.
    authorization: str | None = None

    def continues(self, request: ClientRequest) -> bool:
        return _call_of(request) is self.call


# The redirect out of the allowed destinations last seen in this task. The session follows a
# redirect in the same task, right after the middleware returned, so the next request through
# the middleware in this context is either a hop of that call (the mark stays for the hops
# after it, and for a hop aiohttp re-sends on a fresh connection) or something else (the mark
# is dropped).
_cross_origin_redirect: contextvars.ContextVar[_Redirect | None] = contextvars.ContextVar(
    "freshtoken_aiohttp_cross_origin_redirect", default=None
)


class TokenMiddleware:
    """Attach the manager's access token; on a rejection retry with a new one.

    A rejection of the current token refreshes it; one of a token replaced while the request
    was in flight is retried with the newest, without a refresh. A request carries at most
    three tokens, never one twice ([`TokenManager.call()`][freshtoken.TokenManager.call]
    decides, answer by answer).

    ``origins`` (recommended) lists the ``scheme://host[:port]`` the token may go to, or
    ``scheme://host[:port]/path`` for that path and below it only; requests elsewhere are
    sent without it. A redirect to another origin, and every hop after it, never carries it,
    whatever ``origins`` says: aiohttp strips the Authorization header it copies to the
    redirected request, and this middleware does not add it back. A redirect within the
    origin but out of its path prefix is treated the same way: the middleware removes the
    token that aiohttp copied. Plain HTTP is refused except to loopback, unless
    ``allow_insecure_http``.

    The retry re-sends the same ``ClientRequest``: bytes, str, JSON, forms and seekable files
    are replayed by aiohttp. A payload that aiohttp marks as consumed (an async generator, an
    unseekable stream) is sent once: if it is rejected the manager still refreshes, so the
    next request succeeds, and [`ReplayError`][freshtoken.ReplayError] says the body could not be
    re-sent.

    With a DPoP manager every request and every redirect hop of this origin carries a proof
    of its own; a ``use_dpop_nonce`` answer is retried once with the server's new nonce (no
    refresh). A hop to another origin carries neither token nor proof.
    """

    __slots__ = ("destinations", "manager")

    def __init__(
        self,
        manager: TokenManager,
        *,
        origins: Iterable[str] | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        self.manager = manager
        self.destinations = Destinations(origins, allow_insecure_http=allow_insecure_http)

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        redirect = _cross_origin_redirect.get()
        if redirect is not None and not redirect.continues(request):
            _cross_origin_redirect.set(None)
            redirect = None
        origin = _origin(request.url)
        if redirect is not None or not self._applies(request.url, origin):
            ours = None if redirect is None else redirect.authorization
            if ours is not None and request.headers.get(hdrs.AUTHORIZATION) == ours:
                del request.headers[hdrs.AUTHORIZATION]
            request.headers.pop("DPoP", None)
            response = await handler(request)
            if redirect is None:
                self._note_redirect(request, response, origin, None)
            return response
        manager = self.manager
        tokens = manager.cached_tokens() or await manager.aget_tokens()
        dpop = manager.dpop is not None
        call = manager.call(request.method, request.url)
        attempt: Attempt | None = call.first(tokens)
        while attempt is not None:
            _sign(request, attempt, dpop)
            response = await handler(request)
            if call.settled(response.status):
                break  # the hot path: nothing to read
            headers = response.headers
            decision = call.answer(
                response.status,
                headers.getall(hdrs.WWW_AUTHENTICATE, []),
                headers.get("DPoP-Nonce"),
            )
            if isinstance(decision, Rejected):
                decision = call.replaced(await manager.ahandle_rejection(decision.tokens))
            if decision is not None:
                response.release()
                _ensure_replayable(request, response.status)
            attempt = decision
        self._note_redirect(request, response, origin, request.headers.get(hdrs.AUTHORIZATION))
        return response

    def _applies(self, url: URL, origin: Origin) -> bool:
        destinations = self.destinations
        path = url.raw_path if destinations.has_paths else "/"
        return destinations.allows(origin.scheme, origin.host, origin.port, path)

    def _note_redirect(
        self,
        request: ClientRequest,
        response: ClientResponse,
        origin: Origin,
        authorization: str | None,
    ) -> None:
        """Mark the call if ``response`` redirects out of where the token may go: to another
        origin, or (when ``authorization`` was ours) out of the origin's path prefixes."""
        if response.status not in _REDIRECTS:
            return
        location = response.headers.get(hdrs.LOCATION) or response.headers.get(hdrs.URI)
        if not location:
            return
        try:
            url = response.url.join(URL(location))
            target = _origin(url)
        except ValueError:
            # Not an http(s) URL: aiohttp refuses to follow it, so there is nothing to guard.
            return
        leaves = target != origin
        if not leaves and authorization is not None and self.destinations.has_paths:
            try:
                leaves = not self._applies(url, target)
            except InsecureTransportError:
                leaves = True
        if leaves:
            _cross_origin_redirect.set(_Redirect(_call_of(request), authorization))

    def __repr__(self) -> str:
        return f"TokenMiddleware({self.manager!r}, origins={self.destinations!r})"


class ClientCredentialsMiddleware(ClientCredentialsMixin, TokenMiddleware):
    """[`freshtoken.httpx.ClientCredentialsAuth`][] for aiohttp, with the same arguments:
    ``aiohttp.ClientSession(middlewares=(ClientCredentialsMiddleware(token_url, client_id,
    client_secret, scope="read", origins=[API]),))``, a [`TokenMiddleware`][] over a manager
    with a [`ClientCredentials`][freshtoken.ClientCredentials] refresher. ``origins`` is
    required, since a client's token is good for any API that trusts its issuer.
    """

    __slots__ = ()


# The classes' former second names (the other integrations' words): until 0.2.0, with a warning.
__getattr__ = _module_getattr(
    "freshtoken.aiohttp",
    {
        "TokenAuth": ("freshtoken.aiohttp", "TokenMiddleware", "TokenMiddleware"),
        "ClientCredentialsAuth": (
            "freshtoken.aiohttp",
            "ClientCredentialsMiddleware",
            "ClientCredentialsMiddleware",
        ),
    },
)


def _origin(url: URL) -> Origin:
    scheme = url.scheme.lower()
    host = url.host
    if not default_port(scheme) or not host:
        raise ValueError(f"not an absolute http(s) URL (scheme {scheme!r})")
    return Origin(scheme, host.lower(), url.port or default_port(scheme))


def _sign(request: ClientRequest, attempt: Attempt, dpop: bool) -> None:
    request.headers[hdrs.AUTHORIZATION] = attempt.authorization
    if attempt.proof is not None:
        request.headers["DPoP"] = attempt.proof
    elif dpop:
        request.headers.pop("DPoP", None)  # a token issued as Bearer: no proof


def _call_of(request: ClientRequest) -> object:
    return getattr(request, "_timer", None)


def _ensure_replayable(request: ClientRequest, status: int) -> None:
    body = request.body
    if isinstance(body, bytes) or not body.consumed:
        return
    # An async iterator or an unseekable stream was consumed by the first attempt; buffering
    # it behind the caller's back could exhaust memory.
    raise ReplayError(
        f"{request.method} {request.url.with_user(None).with_query(None).with_fragment(None)} "
        "was rejected "
        f"with {status} and its body is a one-shot stream, so it was not retried; the token "
        "has been refreshed: send the request again"
    )
