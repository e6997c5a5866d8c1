"""What each integration's ``ClientCredentialsAuth`` is made of: a [`TokenManager`][] over a
[`ClientCredentials`][freshtoken.ClientCredentials] refresher, and ``origins`` that must be given.

Why ``origins`` is required: a client credentials token speaks for the client itself, to any
API that trusts its issuer, and the auth re-acquires one whenever it has none; sent along with
a request to a URL built from user input or to a third party, it would be theirs to use. The
token endpoint's origin is no default either: the API usually lives elsewhere, and the token
has no business there.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping

from ._core.policy import Destinations
from ._engine.manager import TokenManager
from ._oauth.client_auth import ClientAuthMethod, PrivateKey
from .refreshers import ClientCredentials
from .stores._base import TokenStore

__all__ = ["ClientCredentialsMixin", "required_origins"]


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


class ClientCredentialsMixin:
    """The constructor, ``close`` and repr of every integration's ``ClientCredentialsAuth``,
    placed before the integration's own auth class in the bases: it makes the manager and hands
    it on with the origins (see [`freshtoken.httpx.ClientCredentialsAuth`][])."""

    __slots__ = ()
    manager: TokenManager
    destinations: Destinations

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str | None = None,
        *,
        origins: Iterable[str],
        scope: str | None = None,
        private_key: PrivateKey | None = None,
        auth_method: ClientAuthMethod | None = None,
        extra_params: Mapping[str, str] | None = None,
        store: TokenStore | None = None,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
    ) -> None:
        allowed = required_origins(origins)
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
        # The integration's auth: __init__(manager, *, origins, allow_insecure_http).
        super().__init__(  # type: ignore[call-arg]
            TokenManager(refresher, store), origins=allowed, allow_insecure_http=allow_insecure_http
        )

    def close(self) -> None:
        """Close the manager (see [`close()`][freshtoken.TokenManager.close])."""
        self.manager.close()

    async def aclose(self) -> None:
        await self.manager.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.manager.refresher!r}, origins={self.destinations!r})"
