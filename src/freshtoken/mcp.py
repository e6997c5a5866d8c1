"""MCP clients that never lose a session: an auth for the MCP Python SDK and FastMCP.

    http = httpx2.AsyncClient(auth=freshtoken.mcp.auth(url))
    async with streamable_http_client(url, http_client=http) as (read, write): ...

    async with fastmcp.Client(url, auth=freshtoken.mcp.auth(url)) as client: ...

[`auth()`][auth] is a [`freshtoken.httpx2.TokenAuth`][freshtoken.httpx2.TokenAuth] over a
[`for_resource()`][freshtoken.for_resource] manager: the MCP server says where to log in (RFC
9728), a client is registered there once (RFC 7591), the user logs in in a browser the first
time, and the tokens are kept fresh with the ``resource`` on every token request (RFC 8707).
They live in the user's token file (or the ``store`` given: a keychain, Redis for a fleet of
agents), so every process and every task shares one grant: when the token expires during a
burst of tool calls from many tasks and processes, one of them refreshes and the others
use its tokens. A refresh that fails for a while (a 503, a timeout) keeps the tokens; a
refresh refused while the access token works keeps it until it expires; a 403
``insufficient_scope`` logs in once for the union of scopes.

For applications that keep the SDK's own ``OAuthClientProvider``, [`TokenStorage`][] puts its
tokens and client registration in a freshtoken store, with absolute expiry times.

Needs ``pip install 'freshtoken[mcp]'`` (httpx2; the MCP SDK or FastMCP is yours).
"""

from __future__ import annotations

import webbrowser
from typing import TYPE_CHECKING, Any

from ._core.clock import Clock, system_clock
from ._core.tokens import TokenSet
from ._logins.loopback import OpenBrowser
from ._oauth.registration import ClientRegistration
from ._oauth.resources import canonical_resource
from ._resource_logins import RegistrationStore, for_resource
from .httpx2 import TokenAuth
from .stores._base import TokenStore

if TYPE_CHECKING:
    from ._engine.manager import TokenManager

__all__ = ["TokenStorage", "auth"]

CLIENT_NAME = "freshtoken MCP client"
_SDK_CLIENT = "mcp-sdk-client"


def auth(
    url: str,
    *,
    client_name: str = CLIENT_NAME,
    scope: str | None = None,
    store: TokenStore | None = None,
    open_browser: OpenBrowser = webbrowser.open,
    client_id: str | None = None,
    client_secret: str | None = None,
    client_metadata_url: str | None = None,
    interactive: bool = True,
    verify: bool | str = True,
    allow_insecure_http: bool = False,
    **manager_options: Any,
) -> TokenAuth:
    """An ``httpx2.Auth`` for the MCP server at ``url``: give it to the ``httpx2.AsyncClient``
    of the SDK's ``streamable_http_client``, or to FastMCP's ``Client(url, auth=...)``.

    The token goes only to ``url`` and the paths below it. The arguments are those of
    [`for_resource()`][freshtoken.for_resource]: ``client_name`` is what the server's consent page
    shows; ``open_browser`` opens the login page (any callable: a headless agent can print
    it); ``interactive=False`` never logs in (requests fail with
    [`SessionExpired`][freshtoken.SessionExpired] until ``freshtoken login --resource URL``).
    ``auth(url).manager`` is the manager (``close()`` it when done).
    """
    manager = for_resource(
        url,
        client_name=client_name,
        scope=scope,
        store=store,
        client_id=client_id,
        client_secret=client_secret,
        client_metadata_url=client_metadata_url,
        open_browser=open_browser,
        interactive=interactive,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        **manager_options,
    )
    return TokenAuth(
        manager, origins=[canonical_resource(url)], allow_insecure_http=allow_insecure_http
    )


class TokenStorage:
    """The MCP SDK's ``TokenStorage`` over a freshtoken store, for an ``OAuthClientProvider``.

    Tokens are kept as a [`TokenSet`][freshtoken.TokenSet] with an absolute expiry (the SDK's
    ``OAuthToken`` has only ``expires_in``: handed back, it counts from now, so a restarted
    process knows how long the token has left); the client registration beside them, in a
    store of the same kind (see [`for_resource()`][freshtoken.for_resource]). With ``manager`` (a
    [`for_resource()`][freshtoken.for_resource] manager over the same store), ``get_tokens``
    hands out tokens that manager refreshed first, once for every process.

    The SDK still decides itself when to refresh and when to log in: with several processes
    its refreshes are not single-flighted, and any failed refresh sends the user to the
    browser (see the MCP clients page). [`auth()`][auth] has neither problem.
    """

    def __init__(
        self,
        store: TokenStore,
        *,
        manager: TokenManager | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.store = store
        self.manager = manager
        self.clock = clock
        self._registrations = RegistrationStore(store)

    async def get_tokens(self) -> Any:
        from mcp.shared.auth import OAuthToken

        tokens: TokenSet | None
        if self.manager is not None:
            tokens = self.manager.cached_tokens() or await _fresh(self.manager)
        else:
            stored = await self.store.aload()
            tokens = None if stored is None else stored.tokens
        if tokens is None:
            return None
        left = tokens.expires_in(self.clock())
        return OAuthToken(
            access_token=tokens.access_token,
            expires_in=None if left is None else max(0, int(left)),
            scope=tokens.scope,
            refresh_token=tokens.refresh_token,
        )

    async def set_tokens(self, tokens: Any) -> None:
        now = self.clock()
        expires_in = tokens.expires_in
        saved = TokenSet(
            access_token=tokens.access_token,
            refresh_token=tokens.refresh_token,
            expires_at=None if expires_in is None else now + expires_in,
            obtained_at=now,
            scope=tokens.scope,
        )
        if self.manager is not None:
            await self.manager.aset_tokens(saved)
        else:
            await self.store.asave(saved, expected_generation=None)

    async def get_client_info(self) -> Any:
        from mcp.shared.auth import OAuthClientInformationFull

        registration = await _in_thread(self._registrations.load, _SDK_CLIENT)
        if registration is None:
            return None
        return OAuthClientInformationFull(
            client_id=registration.client_id,
            client_secret=registration.client_secret,
            token_endpoint_auth_method=registration.auth_method,
            redirect_uris=list(registration.redirect_uris) or None,
        )

    async def set_client_info(self, client_info: Any) -> None:
        registration = ClientRegistration(
            _SDK_CLIENT,
            client_info.client_id,
            client_info.client_secret,
            client_info.token_endpoint_auth_method or "none",
            tuple(str(uri) for uri in client_info.redirect_uris or ()),
            kind="given",
        )
        await _in_thread(self._registrations.save, registration)

    def __repr__(self) -> str:
        return f"TokenStorage({self.store!r})"


async def _fresh(manager: TokenManager) -> TokenSet | None:
    from .errors import SessionExpired

    try:
        return await manager.aget_tokens()
    except SessionExpired:
        return None  # the SDK logs in itself


async def _in_thread(function: Any, *args: Any) -> Any:
    import anyio.to_thread

    return await anyio.to_thread.run_sync(function, *args)
