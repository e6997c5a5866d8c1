"""httpx2 integration: ``httpx2.Client(auth=TokenAuth(manager))``, sync and async alike.

httpx2 is Pydantic's maintained successor of httpx (the MCP Python SDK 2.x and FastMCP use
it). Its ``Auth`` protocol is httpx's, but its classes are its own, so an ``httpx.Auth`` is
refused by an ``httpx2.Client``: this module is the same flow as ``freshtoken.httpx``
(`freshtoken._httpx_flow`) over ``httpx2.Auth``. Needs ``pip install 'freshtoken[httpx2]'``
(httpx2 needs Python 3.11+).
"""

from __future__ import annotations

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
    """[`freshtoken.httpx.TokenAuth`][] for httpx2: the same flow (one decision per request, at
    most three tokens, DPoP proofs and nonces), the same ``origins`` and
    ``allow_insecure_http``, and the same limits, which httpx2 shares with httpx: a redirect
    within an origin keeps the token even out of a path prefix, a one-shot stream is sent once
    ([`ReplayError`][]), and every header but Authorization (a DPoP proof included) is copied
    to a redirect.
    """

    _byte_stream = httpx2.ByteStream


class ClientCredentialsAuth(ClientCredentialsMixin, TokenAuth):
    """[`freshtoken.httpx.ClientCredentialsAuth`][] for httpx2, with the same arguments:
    ``httpx2.Client(auth=ClientCredentialsAuth(token_url, client_id, client_secret,
    scope="read", origins=[API]))``. ``origins`` is required, since a client's token is good
    for any API that trusts its issuer.
    """
