"""httpx2 integration: ``httpx2.Client(auth=TokenAuth(manager))``, sync and async alike.

httpx2 is Pydantic's maintained successor of httpx (the MCP Python SDK 2.x and FastMCP use
it). Its ``Auth`` protocol is httpx's, but its classes are its own, so an ``httpx.Auth`` is
refused by an ``httpx2.Client``: this module is the same flow as ``freshtoken.httpx``
(`freshtoken._httpx_flow`) over ``httpx2.Auth``. Needs ``pip install 'freshtoken[httpx2]'``
(httpx2 needs Python 3.11+).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

try:
    import httpx2
except ModuleNotFoundError as error:  # pragma: no cover - exercised with sys.modules patched
    raise ModuleNotFoundError(
        "freshtoken.httpx2 needs the httpx2 library (Python 3.11+): "
        "pip install 'freshtoken[httpx2]'",
        name=error.name,
    ) from error

from ._client_credentials import ClientCredentialsMixin
from ._httpx_flow import HTTPXFlow

__all__ = ["ClientCredentialsAuth", "TokenAuth"]


class TokenAuth(HTTPXFlow, httpx2.Auth):
    """Attach the manager's access token; on a rejection retry with a new one (at most three
    tokens per request), exactly as [`freshtoken.httpx.TokenAuth`][] does.

    ``origins`` (recommended) lists the ``scheme://host[:port]`` the token may go to, or
    ``scheme://host[:port]/path`` for that path and below it only; requests elsewhere are
    sent without it. Cross-origin redirects never carry it (httpx2 drops the Authorization
    header itself). A redirect within an origin keeps it, even out of a path prefix: httpx2
    follows redirects (when ``follow_redirects`` is on; it is off by default) without asking
    the auth, so a prefix limits where requests start, not where such redirects lead. Plain
    HTTP is refused except to loopback, unless ``allow_insecure_http``.

    A request whose body is a one-shot stream (a generator) is sent once: if it is rejected
    the manager still refreshes, so the next request succeeds, and [`ReplayError`][] says
    the body could not be sent again. Bytes, str, JSON, forms and files are replayed.

    With a DPoP manager each attempt carries a new proof; a ``use_dpop_nonce`` answer is
    retried once with the server's new nonce (no refresh), and a redirect hop of the same
    origin that refuses the first request's proof is re-sent once with its own. httpx2 copies
    every header but Authorization to a redirect, so a proof (already spent at its own URL)
    may reach the redirect's target.
    """

    _byte_stream = httpx2.ByteStream

    def sync_auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response]:
        return HTTPXFlow.sync_auth_flow(self, request)

    def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        return HTTPXFlow.async_auth_flow(self, request)


class ClientCredentialsAuth(ClientCredentialsMixin, TokenAuth):
    """The client credentials grant in one object, for the commonest machine-to-machine case:
    ``httpx2.Client(auth=ClientCredentialsAuth(token_url, client_id, client_secret,
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
