"""A refresher's own logins: [`LoginMethods`][], the browser, device and password logins with
the client settings an [`OAuth2Refresher`][freshtoken.OAuth2Refresher] already has. Each is the
login of `freshtoken._logins.flows`, written once there; each blocking method is generated from
its async twin (the same login on a private event loop).
"""

from __future__ import annotations

import webbrowser
from collections.abc import Callable, Mapping

import anyio

from .._core.clock import Clock, system_clock
from .._core.tokens import TokenSet
from .._oauth.client_auth import ClientAuth
from .._oauth.discovery import ServerMetadata
from .._oauth.dpop import DPoPKey
from .._oauth.http import Verify, adrive, blocking
from .device import DevicePrompt, print_prompt
from .flows import (
    BROWSER_TIMEOUT,
    DEFAULT_REDIRECT_URI,
    LoginOptions,
    grant_flow,
    in_browser,
    on_device,
)
from .loopback import OpenBrowser

__all__ = ["LoginMethods"]


class LoginMethods:
    """Logins with the client settings an [`OAuth2Refresher`][freshtoken.OAuth2Refresher] already
    has (its client id and authentication, scope, TLS settings, and for browser and device
    logins the server's metadata, which [`from_issuer()`][freshtoken.OAuth2Refresher.from_issuer]
    keeps). Hand the result to the manager: ``manager.login(refresher.browser_login)``.
    Each blocking method is generated from its async twin (the same login on a private event
    loop).
    """

    url: str
    client: ClientAuth
    scope: str | None
    metadata: ServerMetadata | None
    verify: Verify
    allow_insecure_http: bool

    def _login_metadata(self, flow: str) -> ServerMetadata:
        if self.metadata is None:
            raise ValueError(
                f"a {flow} login needs the server's metadata: "
                "make the refresher with from_issuer(issuer, ...)"
            )
        return self.metadata

    async def abrowser_login(
        self,
        *,
        scope: str | None = None,
        open_browser: OpenBrowser = webbrowser.open,
        timeout: float = BROWSER_TIMEOUT,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        authorization_params: Mapping[str, str] | None = None,
        clock: Clock = system_clock,
        dpop: DPoPKey | None = None,
    ) -> TokenSet:
        """The browser login (see [`freshtoken.abrowser_login()`][freshtoken.abrowser_login]) as
        this refresher's client, in async code."""
        options = LoginOptions(
            scope=scope or self.scope,
            open_browser=open_browser,
            timeout=timeout,
            redirect_uri=redirect_uri,
            authorization_params=authorization_params,
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
            clock=clock,
            dpop=dpop,
        )
        return await in_browser(self._login_metadata("browser"), self.client, options)

    browser_login = blocking(abrowser_login)
    """The browser login (authorization code with PKCE S256, a loopback redirect) as this
    refresher's client: [`abrowser_login()`][abrowser_login] from synchronous code."""

    async def adevice_login(
        self,
        *,
        scope: str | None = None,
        on_prompt: Callable[[DevicePrompt], object] = print_prompt,
        clock: Clock = system_clock,
        dpop: DPoPKey | None = None,
        sleep: Callable[[float], object] = anyio.sleep,
    ) -> TokenSet:
        """The device login (see [`freshtoken.adevice_login()`][freshtoken.adevice_login]) as
        this refresher's client, in async code."""
        options = LoginOptions(
            scope=scope or self.scope,
            on_prompt=on_prompt,
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
            clock=clock,
            dpop=dpop,
            sleep=sleep,
        )
        return await on_device(self._login_metadata("device"), self.client, options)

    device_login = blocking(adevice_login)
    """The device login (RFC 8628) as this refresher's client:
    [`adevice_login()`][adevice_login] from synchronous code."""

    async def apassword_login(
        self,
        *,
        username: str,
        password: str,
        scope: str | None = None,
        clock: Clock = system_clock,
        dpop: DPoPKey | None = None,
    ) -> TokenSet:
        """The password login (see [`freshtoken.apassword_login()`][freshtoken.apassword_login])
        at this refresher's token endpoint, in async code."""
        options = LoginOptions(
            scope=scope or self.scope,
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
            clock=clock,
            dpop=dpop,
        )
        form = {"grant_type": "password", "username": username, "password": password}
        flow = grant_flow(self.metadata, self.url, self.client, form, options)
        return await adrive(flow, verify=self.verify)

    password_login = blocking(apassword_login)
    """The password login at this refresher's token endpoint:
    [`apassword_login()`][apassword_login] from synchronous code."""
