"""httpx integration: ``httpx.Client(auth=TokenAuth(manager))``, sync and async alike.

One flow serves both clients, as httpx's own auth classes do, and httpx2's too
(``freshtoken.httpx2``): `freshtoken._httpx_flow` is a thin loop over the request's
``ResourceCall`` (``freshtoken/_engine/resource.py``), which decides every retry; the sync and
async entry points differ only in how they ask the manager (one blocks, the other awaits).
"""

from __future__ import annotations

import httpx

from ._client_credentials import ClientCredentialsMixin
from ._httpx_flow import HTTPXFlow

__all__ = ["ClientCredentialsAuth", "TokenAuth"]


class TokenAuth(HTTPXFlow, httpx.Auth):
    """Attach the manager's access token; on a rejection retry with a new one.

    A rejection of the current token refreshes it; one of a token replaced while the request
    was in flight is retried with the newest, without a refresh. A request carries at most
    three tokens, never one twice ([`TokenManager.call()`][freshtoken.TokenManager.call]
    decides, answer by answer).

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

    _byte_stream = httpx.ByteStream


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
