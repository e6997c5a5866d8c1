"""requests integration: ``session.auth = TokenAuth(manager)``.

The auth attaches the token when requests prepares a request and registers a response hook
for that one request. On a rejection the hook refreshes (single flight, through the manager)
and re-sends the request once on the same connection adapter, the way requests' own
``HTTPDigestAuth`` answers a challenge. Everything a retry needs (the tokens sent, the body's
start position) lives in that per-request hook, never on the auth object, so one
``requests.Session`` can be shared between threads.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

try:
    import requests
    from requests.auth import AuthBase
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
from ._oauth.dpop import ResourceRequest, Step
from .errors import InsecureTransportError, ReplayError

__all__ = ["ClientCredentialsAuth", "TokenAuth"]


class TokenAuth(AuthBase):
    """Attach the manager's access token; on a rejection refresh once and retry once.

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
        if manager.dpop is not None:
            assert request.method is not None
            resource = manager.dpop.resource_request(
                request.method, request.url, tokens, manager.clock
            )
            _sign(request, resource)
            hook = _DPoPHook(self, resource, _position(request.body))
            request.hooks["response"].append(hook)
            return request
        request.headers["Authorization"] = tokens.authorization
        # Appended directly: register_hook is the same append, untyped in requests' annotations.
        request.hooks["response"].append(_RejectionHook(self, tokens, _position(request.body)))
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
    """The client credentials grant in one object, for the commonest machine-to-machine case:
    ``session.auth = ClientCredentialsAuth(token_url, client_id, client_secret,
    scope="read", origins=[API])``.

    It acquires a token when the first request needs one, re-acquires it before it expires
    and after a 401, and shares it between threads: a [`TokenAuth`][] over a
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


class _RejectionHook:
    """The response hook of one request: what was sent, and whether it was retried already.

    requests shares a request's hooks with the requests of its redirects, so this one object
    sees every hop; one auth retry in all, as with httpx.
    """

    __slots__ = ("_auth", "_position", "_retried", "_tokens")

    def __init__(self, auth: TokenAuth, tokens: TokenSet, position: int | None) -> None:
        self._auth = auth
        self._tokens = tokens
        self._position = position
        self._retried = False

    def __call__(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        manager = self._auth.manager
        _guard_redirect(self._auth, response, response.request, self._tokens.authorization)
        if (
            self._retried
            or response.status_code not in manager.refresh_statuses
            or not manager.wants_refresh(response.status_code, _challenge_lines(response))
        ):
            return response
        request = response.request
        sent = request.headers.get("Authorization")
        if sent != self._tokens.authorization or request.url is None:
            return response  # a redirect hop that requests stripped, or the caller's own header
        if not self._auth._applies(request.url):
            return response
        self._retried = True
        replacement = manager.handle_rejection(self._tokens)
        if replacement is None:
            return response  # fresh tokens are rejected too: the 401 is the caller's answer
        # Read and release the rejected response so that the retry can reuse its connection.
        _ = response.content
        response.close()
        _rewind(request, self._position, response.status_code)
        self._tokens = replacement
        # Redirects of the retried response are copied from the original request: give it the
        # new token too, or they would present the rejected one.
        request.headers["Authorization"] = replacement.authorization
        retry = request.copy()
        retry.headers["Authorization"] = replacement.authorization
        retried = response.connection.send(retry, **kwargs)
        retried.history.append(response)
        retried.request = retry
        # requests follows the retried answer's redirect with a copy of the original request.
        _guard_redirect(self._auth, retried, request, replacement.authorization)
        return retried

    def __repr__(self) -> str:
        return f"_RejectionHook(retried={self._retried})"


class _DPoPHook:
    """The response hook of one request sent with DPoP: every hop, every retry (at most one
    with a new proof and one with new tokens, as [`ResourceRequest`][] decides)."""

    __slots__ = ("_auth", "_position", "_resource")

    def __init__(self, auth: TokenAuth, resource: ResourceRequest, position: int | None) -> None:
        self._auth = auth
        self._resource = resource
        self._position = position

    def __call__(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        request = response.request
        if response.is_redirect:
            # requests follows it with a copy of this request: the proof names this URL only.
            request.headers.pop("DPoP", None)
            _guard_redirect(self._auth, response, request, self._resource.tokens.authorization)
            return response
        resource = self._resource
        manager = self._auth.manager
        if (
            request.url is None
            or request.method is None
            or request.headers.get("Authorization") != resource.tokens.authorization
            or not self._auth._applies(request.url)
        ):
            return response  # a hop that requests stripped, or the caller's own header
        if (request.method, request.url) != (resource.method, resource.url):
            # A redirect hop of the same origin, sent without a proof.
            if response.status_code != 401 or not resource.retry_proof():
                return response
            resource.retarget(request.method, request.url)
            resource.learn(response.headers.get("DPoP-Nonce"))
        else:
            step = resource.step(
                response.status_code,
                _challenge_lines(response),
                response.headers.get("DPoP-Nonce"),
                manager.wants_refresh,
            )
            if step is Step.DONE:
                return response
            if step is Step.REFRESH:
                replacement = manager.handle_rejection(resource.tokens)
                if replacement is None:
                    return response  # fresh tokens are rejected too: the caller's answer
                resource.use(replacement)
        # Read and release the answer so that the retry can reuse its connection.
        _ = response.content
        response.close()
        _rewind(request, self._position, response.status_code)
        retry = request.copy()
        _sign(retry, resource)
        retried = response.connection.send(retry, **kwargs)
        retried.history.append(response)
        retried.request = retry
        return self(retried, **kwargs)

    def __repr__(self) -> str:
        return f"_DPoPHook({self._resource.method} {self._resource.url})"


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


def _sign(request: requests.PreparedRequest, resource: ResourceRequest) -> None:
    authorization, proof = resource.headers()
    request.headers["Authorization"] = authorization
    if proof is None:
        request.headers.pop("DPoP", None)
    else:
        request.headers["DPoP"] = proof


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
