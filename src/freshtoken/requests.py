"""requests integration: ``session.auth = TokenAuth(manager)``.

The auth attaches the token when requests prepares a request and registers a response hook
for that one request. The hook is a thin loop over the request's ``ResourceCall``
(``freshtoken/_engine/resource.py``), which decides every retry: it re-sends the request on
the same connection adapter, the way requests' own ``HTTPDigestAuth`` answers a challenge.
Everything a retry needs (the call, the body's start position) lives in that per-request
hook, never on the auth object, so one ``requests.Session`` can be shared between threads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

try:
    import requests
    from requests.auth import AuthBase
    from requests.models import REDIRECT_STATI
    from requests.sessions import SessionRedirectMixin
    from requests.utils import requote_uri
except ModuleNotFoundError as error:  # pragma: no cover - exercised with sys.modules patched
    raise ModuleNotFoundError(
        "freshtoken.requests needs the requests library: pip install 'freshtoken[requests]'",
        name=error.name,
    ) from error

from ._client_credentials import ClientCredentialsMixin
from ._core.policy import Destinations
from ._core.tokens import TokenSet
from ._engine.manager import TokenManager
from ._engine.resource import Attempt, Rejected, ResourceCall, bearer_settled
from .errors import InsecureTransportError, ReplayError

__all__ = ["ClientCredentialsAuth", "TokenAuth"]


class TokenAuth(AuthBase):
    """Attach the manager's access token; on a rejection retry with a new one.

    A rejection of the current token refreshes it; one of a token replaced while the request
    was in flight is retried with the newest, without a refresh. A request carries at most
    three tokens, never one twice ([`TokenManager.call()`][freshtoken.TokenManager.call]
    decides, answer by answer).

    ``origins`` (recommended) lists the ``scheme://host[:port]`` the token may go to, or
    ``scheme://host[:port]/path`` for that path and below it only; requests elsewhere are
    sent without it. Cross-origin redirects never carry it: requests strips the
    Authorization header itself and this auth is not applied again to the redirected request.
    A redirect within the host but out of a path prefix loses it too (this auth removes it
    before requests copies the request). Plain HTTP is refused except to loopback, unless
    ``allow_insecure_http``.

    Bodies of bytes, str, forms, JSON and multipart are replayed; a seekable file is rewound
    to where it was when the request was prepared. A body that cannot be sent again (a
    generator, an unseekable stream) is sent once: if it is rejected the manager still
    refreshes, so the next request succeeds, and [`ReplayError`][freshtoken.ReplayError] says the
    body could not be re-sent.

    The token is read when requests prepares the request, so a request prepared long before
    it is sent may carry a token that has expired meanwhile: the 401 retry covers that.

    With a DPoP manager each attempt carries a new proof; a ``use_dpop_nonce`` answer is
    retried once with the server's new nonce (no refresh). A proof never goes on to a
    redirect's target (it names its own URL); a redirect hop of the same origin that then
    asks for one is re-sent once with a proof of its own.
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

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if request.url is None or not self._applies(request.url):
            return request
        manager = self.manager
        tokens = manager.get_tokens()
        if manager.dpop is None:
            # The call is made at the first answer that is not settled (resource.py, rule 5).
            request.headers["Authorization"] = tokens.authorization
            call = None
        else:
            call = manager.call(request.method or "GET", request.url)
            _sign(request, call.first(tokens), True)
        # Appended directly: register_hook is the same append, untyped in requests' annotations.
        request.hooks["response"].append(_CallHook(self, call, tokens, _position(request.body)))
        return request

    def _applies(self, url: str) -> bool:
        return self.destinations.allows_url(url)

    def _follows_with_token(self, response: requests.Response) -> bool:
        """Whether the redirect ``response`` asks for may carry the token."""
        target = _redirect_target(response)
        try:
            return target is not None and self.destinations.allows_url(target)
        except InsecureTransportError:
            return False

    def __repr__(self) -> str:
        return f"TokenAuth({self.manager!r}, origins={self.destinations!r})"


class ClientCredentialsAuth(ClientCredentialsMixin, TokenAuth):
    """[`freshtoken.httpx.ClientCredentialsAuth`][] for requests, with the same arguments:
    ``session.auth = ClientCredentialsAuth(token_url, client_id, client_secret,
    scope="read", origins=[API])``, a [`TokenAuth`][] over a manager with a
    [`ClientCredentials`][freshtoken.ClientCredentials] refresher, shared between threads.
    ``origins`` is required, since a client's token is good for any API that trusts its issuer.
    """


class _CallHook:
    """The response hook of one request: its [`ResourceCall`][] and where its body starts.

    requests shares a request's hooks with the requests of its redirects, so this one object
    sees every hop, and the call's bound on sends covers them all, as with httpx. A Bearer
    request's call is made at its first answer that is not settled, with the tokens it was
    sent with (``_engine/resource.py``, rule 5): the hot path makes none. That answer is the
    first this hook sees, so it answers the request the tokens were put on.
    """

    __slots__ = ("_auth", "_call", "_position", "_tokens")

    def __init__(
        self, auth: TokenAuth, call: ResourceCall | None, tokens: TokenSet, position: int | None
    ) -> None:
        self._auth = auth
        self._call = call
        self._tokens = tokens
        self._position = position

    def __call__(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        call = self._call
        auth = self._auth
        manager = auth.manager
        status = response.status_code
        if call is None:
            if bearer_settled(manager, status) and (
                status not in REDIRECT_STATI or not response.is_redirect
            ):
                return response  # the hot path: no call made, nothing read
            sent = response.request
            call = self._call = manager.call(sent.method or "GET", sent.url)
            call.first(self._tokens)
        elif call.settled(status) and not response.is_redirect:
            return response
        dpop = manager.dpop is not None
        # requests follows a redirect of the answer this hook returns with a copy of the
        # request it sent: the one this answer is for, not a retry's copy.
        base = response.request
        while True:
            request = response.request
            if response.is_redirect:
                if dpop:
                    base.headers.pop("DPoP", None)  # the proof names this URL only
                authorization = call.authorization
                assert authorization is not None
                _guard_redirect(auth, response, base, authorization)
                return response
            if (
                request.url is None
                or request.method is None
                or request.headers.get("Authorization") != call.authorization
                or not auth._applies(request.url)
            ):
                return response  # a hop that requests stripped, or the caller's own header
            nonce = response.headers.get("DPoP-Nonce")
            if dpop and (request.method, request.url) != (call.method, call.url):
                # A redirect hop of the same origin, sent without a proof.
                attempt = call.hop(request.method, request.url, response.status_code, nonce)
            else:
                decision = call.answer(response.status_code, _challenge_lines(response), nonce)
                if isinstance(decision, Rejected):
                    decision = call.replaced(manager.handle_rejection(decision.tokens))
                attempt = decision
            if attempt is None:
                return response
            # Read and release the answer so that the retry can reuse its connection.
            _ = response.content
            response.close()
            _rewind(request, self._position, response.status_code)
            # Redirects of the retried answer are copied from ``base``: give it the new token
            # too, or they would present the rejected one.
            base.headers["Authorization"] = attempt.authorization
            retry = request.copy()
            _sign(retry, attempt, dpop)
            retried = response.connection.send(retry, **kwargs)
            retried.history.append(response)
            retried.request = retry
            response = retried

    def __repr__(self) -> str:
        return f"_CallHook({self._call!r})"


def _guard_redirect(
    auth: TokenAuth,
    response: requests.Response,
    request: requests.PreparedRequest,
    authorization: str,
) -> None:
    """requests follows a redirect with a copy of ``request``, and strips the token only when
    the host changes: remove it when the target is not a destination (out of a path prefix)."""
    if not response.is_redirect or request.headers.get("Authorization") != authorization:
        return
    if not auth._follows_with_token(response):
        del request.headers["Authorization"]


def _redirect_target(response: requests.Response) -> str | None:
    """The absolute URL requests follows ``response`` to (as its resolve_redirects does)."""
    location = _REDIRECTS.get_redirect_target(response)
    if location is None:
        return None
    if location.startswith("//"):
        location = f"{urlsplit(response.url).scheme}:{location}"
    if not urlsplit(location).netloc:
        return urljoin(response.url, requote_uri(location))
    return str(requote_uri(location))


_REDIRECTS = SessionRedirectMixin()


def _sign(request: requests.PreparedRequest, attempt: Attempt, dpop: bool) -> None:
    request.headers["Authorization"] = attempt.authorization
    if attempt.proof is not None:
        request.headers["DPoP"] = attempt.proof
    elif dpop:
        request.headers.pop("DPoP", None)  # a token issued as Bearer: no proof


def _challenge_lines(response: requests.Response) -> list[str] | str | None:
    """Every WWW-Authenticate line. ``response.headers`` joins repeated lines with ", ", so a
    broken line would swallow the next; urllib3's own headers keep them apart."""
    getlist = getattr(getattr(response.raw, "headers", None), "getlist", None)
    if callable(getlist):
        lines = getlist("WWW-Authenticate")
        if isinstance(lines, list):
            return lines
    return response.headers.get("WWW-Authenticate")  # another adapter's raw response


def _position(body: object) -> int | None:
    """Where a file-like body starts, so that a retry can rewind it; None if it cannot."""
    if body is None or isinstance(body, (bytes, str)) or not hasattr(body, "read"):
        return None
    tell = getattr(body, "tell", None)
    if tell is None:
        return None
    try:
        position = tell()
    except OSError:
        return None  # a pipe or socket: not seekable
    return position if isinstance(position, int) else None


def _rewind(request: requests.PreparedRequest, position: int | None, status: int) -> None:
    body: object = request.body
    if body is None or isinstance(body, (bytes, bytearray, str)):
        return
    if hasattr(body, "read") and position is not None and _seek(body, position):
        return
    # A generator or an unseekable stream was consumed by the first attempt; buffering it
    # behind the caller's back could exhaust memory.
    raise ReplayError(
        f"{request.method} {_without_query(request.url)} was rejected with {status} and its "
        "body is a one-shot stream, so it was not retried; the token has been refreshed: send "
        "the request again"
    )


def _seek(body: Any, position: int) -> bool:
    try:
        body.seek(position)
    except OSError:
        return False  # the caller raises ReplayError: the body cannot be sent again
    return True


def _without_query(url: str | None) -> str:
    if url is None:
        return "<no url>"
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
