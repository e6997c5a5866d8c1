"""What each integration's ``ClientCredentialsAuth`` is made of: a :class:`TokenManager` over a
:class:`~freshtoken.ClientCredentials` refresher, and ``origins`` that must be given.

Why ``origins`` is required: a client credentials token speaks for the client itself, to any
API that trusts its issuer, and the auth re-acquires one whenever it has none; sent along with
a request to a URL built from user input or to a third party, it would be theirs to use. The
token endpoint's origin is no default either: the API usually lives elsewhere, and the token
has no business there.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping

from ._client_auth import ClientAuthMethod, PrivateKey
from ._manager import TokenManager
from .refreshers import ClientCredentials
from .stores._base import TokenStore

__all__ = ["client_credentials_manager", "required_origins"]


def required_origins(origins: Iterable[str] | None) -> list[str]:
    """``origins`` as a list, refusing None, one bare URL and an empty list."""
    if origins is None or isinstance(origins, str):
        raise TypeError(
            "ClientCredentialsAuth needs origins=[...], a list of the API's origins "
            "(https://api.example.com, or https://host/api for a path): a client's token "
            "must not go wherever a request goes"
        )
    listed = list(origins)
    if not listed:
        raise ValueError("origins is empty: name the API origins the token may go to")
    return listed


def client_credentials_manager(
    token_url: str,
    client_id: str,
    client_secret: str | None,
    *,
    scope: str | None,
    private_key: PrivateKey | None,
    auth_method: ClientAuthMethod | None,
    extra_params: Mapping[str, str] | None,
    store: TokenStore | None,
    verify: bool | str | ssl.SSLContext,
    allow_insecure_http: bool,
) -> TokenManager:
    refresher = ClientCredentials(
        token_url,
        client_id=client_id,
        client_secret=client_secret,
        private_key=private_key,
        auth_method=auth_method,
        scope=scope,
        extra_params=extra_params,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
    )
    return TokenManager(refresher, store)
