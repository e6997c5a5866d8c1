"""Getting the first tokens: browser (authorization code + PKCE), device, password, client
credentials and in-house JSON logins, each returning a TokenSet or raising
[`LoginFailed`][freshtoken.LoginFailed].

Each login is written once. Its requests are sans-I/O flows (`freshtoken._oauth.http`:
the code exchange, the device polls, the grant requests), its settings one frozen
[`LoginOptions`][], and its body one coroutine: `_browser`, `_device`, or a flow that
[`adrive()`][freshtoken._oauth.http.adrive] sends. The blocking logins are generated from the
async ones ([`blocking()`][freshtoken._oauth.http.blocking]: the same coroutine on a private
event loop), so there is one loopback listener, one polling loop, one place for a timeout or a
cancellation.

Every OAuth login takes an issuer (discovered, cached) or its [`ServerMetadata`][]; the
password and client-credentials logins also take a bare ``token_url`` for servers without
discovery. Client authentication is chosen from the metadata unless ``auth_method`` says
(see `freshtoken._oauth.client_auth`). A refresher made with ``from_issuer`` logs in with the
client settings it already has ([`LoginMethods`][]). The ``*_with`` functions are the
same logins for a caller that already has the metadata and a [`ClientAuth`][] (the CLI).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import webbrowser
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import httpx

from .._core.clock import Clock, system_clock
from .._core.tokens import TokenSet
from .._oauth.client_auth import ClientAuth, ClientAuthMethod, PrivateKey, choose_method
from .._oauth.discovery import MetadataSource, ServerMetadata, ametadata_of
from .._oauth.dpop import DPoPKey
from .._oauth.http import Flow, Verify, adrive, blocking, drive, run_blocking
from .authorization import AuthorizationRequest, with_default_lifetime
from .device import DEVICE_CODE_GRANT, DeviceAuthorization, DevicePrompt, print_prompt
from .loopback import LoopbackListener, OpenBrowser
from .token_endpoint import require_grant, token_endpoint_of, token_flow

__all__ = [
    "DEVICE_CODE_GRANT",
    "DeviceAuthorization",
    "DevicePrompt",
    "LoginMethods",
    "LoginOptions",
    "abrowser_login",
    "aclient_credentials_login",
    "adevice_login",
    "ajson_login",
    "apassword_login",
    "browser_login",
    "browser_with",
    "client_credentials_login",
    "client_credentials_with",
    "client_for",
    "device_login",
    "device_with",
    "json_login",
    "password_login",
    "password_with",
    "print_prompt",
]

DEFAULT_REDIRECT_URI = "http://127.0.0.1/callback"
BROWSER_TIMEOUT = 300.0


@dataclasses.dataclass(frozen=True, slots=True)
class LoginOptions:
    """How one login runs, whichever it is: one value handed to the login's body instead of
    the same dozen keyword arguments passed down through every function of every login. Each
    login reads the fields that concern it; the names are the public keyword arguments'."""

    scope: str | None = None
    verify: Verify = True
    allow_insecure_http: bool = False
    clock: Clock = system_clock
    dpop: DPoPKey | None = None
    # the browser login's
    open_browser: OpenBrowser = webbrowser.open
    timeout: float = BROWSER_TIMEOUT
    redirect_uri: str = DEFAULT_REDIRECT_URI
    authorization_params: Mapping[str, str] | None = None
    resource: str | None = None  # RFC 8707: on the authorization request and the exchange
    # the device login's: either may be a plain or an async function
    on_prompt: Callable[[DevicePrompt], object] = print_prompt
    sleep: Callable[[float], object] = anyio.sleep

    def __post_init__(self) -> None:
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError("timeout must be a finite number of seconds > 0")


def client_for(
    metadata: ServerMetadata | None,
    client_id: str,
    client_secret: str | None = None,
    *,
    auth_method: ClientAuthMethod | None = None,
    private_key: PrivateKey | None = None,
    key_id: str | None = None,
) -> ClientAuth:
    """The client's authentication, its method chosen from the metadata when not given."""
    if auth_method is None:
        supported = None if metadata is None else metadata.token_endpoint_auth_methods_supported
        auth_method = choose_method(
            supported, has_secret=bool(client_secret), has_key=private_key is not None
        )
    return ClientAuth(
        client_id,
        client_secret,
        auth_method,
        private_key=private_key,
        key_id=key_id,
        audience=None if metadata is None else metadata.token_endpoint,
    )


# -- each login, once ---------------------------------------------------------------------------


async def _browser(metadata: ServerMetadata, client: ClientAuth, options: LoginOptions) -> TokenSet:
    """Authorization code with PKCE S256 and a loopback redirect (RFC 8252)."""
    params = dict(options.authorization_params or {})
    resource = {} if options.resource is None else {"resource": options.resource}
    async with LoopbackListener(options.redirect_uri) as listener:
        request = AuthorizationRequest.start(
            metadata,
            client_id=client.client_id,
            redirect_uri=listener.redirect_uri,
            scope=options.scope,
            params={**params, **resource} or None,
        )
        code = await listener.wait_for_code(
            request, open_browser=options.open_browser, timeout=options.timeout
        )
    exchange = request.exchange_flow(
        code,
        client,
        allow_insecure_http=options.allow_insecure_http,
        clock=options.clock,
        dpop=options.dpop,
        params=resource,
    )
    return with_default_lifetime(await adrive(exchange, verify=options.verify), metadata)


async def _device(metadata: ServerMetadata, client: ClientAuth, options: LoginOptions) -> TokenSet:
    """RFC 8628: show the prompt, then poll until the user answers or the code expires."""
    device = DeviceAuthorization(metadata, client, options.scope, dpop=options.dpop)
    prompt = device.prompt_flow(
        clock=options.clock, allow_insecure_http=options.allow_insecure_http
    )
    await _completed(options.on_prompt(await adrive(prompt, verify=options.verify)))

    async def sleep(seconds: float) -> None:
        await _completed(options.sleep(seconds))

    return await adrive(device.poll_flow(clock=options.clock), verify=options.verify, sleep=sleep)


def _grant_flow(
    metadata: ServerMetadata | None,
    token_url: str,
    client: ClientAuth,
    form: dict[str, str],
    options: LoginOptions,
) -> Flow[TokenSet]:
    """The password grant (RFC 6749 section 4.3) or the client credentials grant (4.4)."""
    grant = form["grant_type"]
    require_grant(metadata, grant, grant.replace("_", " "))
    if grant == "client_credentials" and client.method == "none":
        raise ValueError("the client_credentials grant needs a client_secret or a private_key")
    if options.scope:
        form["scope"] = options.scope
    password = (form["password"],) if "password" in form else ()
    return (
        yield from token_flow(
            client.request(token_url, form, {}),
            clock=options.clock,
            secrets=(*password, *client.secrets()),
            allow_insecure_http=options.allow_insecure_http,
            dpop=options.dpop,
        )
    )


def _json_flow(
    url: str, body: Mapping[str, Any], *, allow_insecure_http: bool, clock: Clock
) -> Flow[TokenSet]:
    request = httpx.Request("POST", url, json=dict(body), headers={"Accept": "application/json"})
    # Which fields are secret is unknown: none of the body's strings may come back in an error.
    secrets = tuple(value for value in body.values() if isinstance(value, str))
    return (
        yield from token_flow(
            request, clock=clock, secrets=secrets, allow_insecure_http=allow_insecure_http
        )
    )


async def _completed(result: object) -> None:
    """Wait for ``result`` if a callback that may be async gave an awaitable."""
    if inspect.isawaitable(result):
        await result


async def _client_at(
    issuer: str | ServerMetadata | MetadataSource | None,
    token_url: str | None,
    client: Callable[[ServerMetadata | None], ClientAuth],
    options: LoginOptions,
) -> tuple[ServerMetadata | None, str, ClientAuth]:
    """The metadata (discovered unless given), the token endpoint and the client."""
    if token_url is not None:
        return None, token_url, client(None)
    assert issuer is not None
    verify, insecure = options.verify, options.allow_insecure_http
    metadata = await ametadata_of(issuer, verify=verify, allow_insecure_http=insecure)
    return metadata, token_endpoint_of(metadata), client(metadata)


def _client_keys(
    client_id: str,
    client_secret: str | None,
    auth_method: ClientAuthMethod | None,
    private_key: PrivateKey | None,
) -> Callable[[ServerMetadata | None], ClientAuth]:
    def client(metadata: ServerMetadata | None) -> ClientAuth:
        return client_for(
            metadata, client_id, client_secret, auth_method=auth_method, private_key=private_key
        )

    return client


def _one_of(token_url: str | None, issuer: object) -> None:
    if (token_url is None) == (issuer is None):
        raise ValueError("give either a token_url or an issuer")


# -- with a ready client (the CLI) --------------------------------------------------------------


def browser_with(metadata: ServerMetadata, client: ClientAuth, **options: Any) -> TokenSet:
    """The browser login with a ready client authentication; ``options`` are
    [`LoginOptions`][]' fields."""
    return run_blocking(_browser(metadata, client, LoginOptions(**options)))


def device_with(metadata: ServerMetadata, client: ClientAuth, **options: Any) -> TokenSet:
    """The device login with a ready client authentication; ``options`` are
    [`LoginOptions`][]' fields."""
    return run_blocking(_device(metadata, client, LoginOptions(**options)))


def password_with(
    metadata: ServerMetadata | None,
    token_url: str,
    client: ClientAuth,
    *,
    username: str,
    password: str,
    **options: Any,
) -> TokenSet:
    """The password login with a ready client authentication."""
    settings = LoginOptions(**options)
    form = {"grant_type": "password", "username": username, "password": password}
    return drive(_grant_flow(metadata, token_url, client, form, settings), verify=settings.verify)


def client_credentials_with(
    metadata: ServerMetadata | None, token_url: str, client: ClientAuth, **options: Any
) -> TokenSet:
    """The client credentials login with a ready client authentication."""
    settings = LoginOptions(**options)
    form = {"grant_type": "client_credentials"}
    return drive(_grant_flow(metadata, token_url, client, form, settings), verify=settings.verify)


# -- the free functions (deprecated in the public API until 0.2.0) -----------------------------


async def abrowser_login(
    issuer: str | ServerMetadata | MetadataSource,
    *,
    client_id: str,
    client_secret: str | None = None,
    private_key: PrivateKey | None = None,
    auth_method: ClientAuthMethod | None = None,
    scope: str | None = None,
    open_browser: OpenBrowser = webbrowser.open,
    timeout: float = BROWSER_TIMEOUT,
    redirect_uri: str = DEFAULT_REDIRECT_URI,
    authorization_params: Mapping[str, str] | None = None,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
) -> TokenSet:
    """Log in through the user's browser: authorization code with PKCE S256 and a loopback
    redirect (RFC 8252), in async code (asyncio or trio). ``open_browser(url)`` may be an
    async function; a plain one is called in a worker thread; any callable works (tests and
    headless scripts play the browser through it); returning ``False`` means no browser could
    be opened. ``redirect_uri`` must be a loopback ``http`` URI; without a port a free one is
    used. ``scope`` defaults to ``openid offline_access`` where offered. With ``dpop`` the code
    is redeemed with proofs of that key and the tokens are bound to it (RFC 9449). Cancelling
    the login closes the listener. Raises [`LoginFailed`][freshtoken.LoginFailed]
    (``access_denied``, ``timeout``...)."""
    options = LoginOptions(
        scope=scope,
        open_browser=open_browser,
        timeout=timeout,
        redirect_uri=redirect_uri,
        authorization_params=authorization_params,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        clock=clock,
        dpop=dpop,
    )
    keys = _client_keys(client_id, client_secret, auth_method, private_key)
    metadata, _, client = await _client_at(issuer, None, keys, options)
    assert metadata is not None
    return await _browser(metadata, client, options)


browser_login = blocking(abrowser_login)
"""[`abrowser_login()`][abrowser_login] from synchronous code: log in through the user's browser
(authorization code with PKCE S256, a loopback redirect)."""


async def adevice_login(
    issuer: str | ServerMetadata | MetadataSource,
    *,
    client_id: str,
    client_secret: str | None = None,
    private_key: PrivateKey | None = None,
    auth_method: ClientAuthMethod | None = None,
    scope: str | None = None,
    on_prompt: Callable[[DevicePrompt], object] = print_prompt,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
    sleep: Callable[[float], object] = anyio.sleep,
) -> TokenSet:
    """Log in on a device without a browser (RFC 8628): ``on_prompt`` shows the user where
    to go and which code to enter; then the token endpoint is polled every ``interval``
    seconds (5 more after each ``slow_down``) until the user approves, denies, or the code
    expires. With ``dpop`` every poll carries a proof of that key and the tokens are bound to
    it (RFC 9449). ``on_prompt`` and ``sleep`` may be plain or async functions; ``sleep`` and
    ``clock`` are for tests."""
    options = LoginOptions(
        scope=scope,
        on_prompt=on_prompt,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        clock=clock,
        dpop=dpop,
        sleep=sleep,
    )
    keys = _client_keys(client_id, client_secret, auth_method, private_key)
    metadata, _, client = await _client_at(issuer, None, keys, options)
    assert metadata is not None
    return await _device(metadata, client, options)


device_login = blocking(adevice_login)
"""[`adevice_login()`][adevice_login] from synchronous code: log in on a device without a
browser (RFC 8628)."""


async def apassword_login(
    token_url: str | None = None,
    *,
    issuer: str | ServerMetadata | None = None,
    username: str,
    password: str,
    client_id: str,
    client_secret: str | None = None,
    private_key: PrivateKey | None = None,
    auth_method: ClientAuthMethod | None = None,
    scope: str | None = None,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
) -> TokenSet:
    """First tokens through the resource owner password grant (RFC 6749 section 4.3), at
    ``token_url`` or at the ``issuer``'s token endpoint. A wrong password is
    ``LoginFailed("invalid_grant")``. OAuth 2.1 drops this grant: prefer a browser login. With
    ``dpop`` the tokens are bound to that DPoP key from the first (RFC 9449)."""
    _one_of(token_url, issuer)
    options = LoginOptions(
        scope=scope, verify=verify, allow_insecure_http=allow_insecure_http, clock=clock, dpop=dpop
    )
    keys = _client_keys(client_id, client_secret, auth_method, private_key)
    metadata, url, client = await _client_at(issuer, token_url, keys, options)
    form = {"grant_type": "password", "username": username, "password": password}
    return await adrive(_grant_flow(metadata, url, client, form, options), verify=verify)


password_login = blocking(apassword_login)
"""[`apassword_login()`][apassword_login] from synchronous code: first tokens through the
resource owner password grant."""


async def aclient_credentials_login(
    token_url: str | None = None,
    *,
    issuer: str | ServerMetadata | None = None,
    client_id: str,
    client_secret: str | None = None,
    private_key: PrivateKey | None = None,
    auth_method: ClientAuthMethod | None = None,
    scope: str | None = None,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
) -> TokenSet:
    """A token through the client credentials grant (RFC 6749 section 4.4), authenticated
    with a secret or a private key (private_key_jwt); with ``dpop``, bound to that DPoP key."""
    _one_of(token_url, issuer)
    options = LoginOptions(
        scope=scope, verify=verify, allow_insecure_http=allow_insecure_http, clock=clock, dpop=dpop
    )
    keys = _client_keys(client_id, client_secret, auth_method, private_key)
    metadata, url, client = await _client_at(issuer, token_url, keys, options)
    form = {"grant_type": "client_credentials"}
    return await adrive(_grant_flow(metadata, url, client, form, options), verify=verify)


client_credentials_login = blocking(aclient_credentials_login)
"""[`aclient_credentials_login()`][aclient_credentials_login] from synchronous code: a token
through the client credentials grant."""


def json_login(
    url: str,
    body: Mapping[str, Any],
    *,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
) -> TokenSet:
    """First tokens from an in-house JSON login endpoint (``POST url`` with ``body``)."""
    return drive(
        _json_flow(url, body, allow_insecure_http=allow_insecure_http, clock=clock), verify=verify
    )


async def ajson_login(
    url: str,
    body: Mapping[str, Any],
    *,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
) -> TokenSet:
    """[`json_login()`][json_login] for async code."""
    flow = _json_flow(url, body, allow_insecure_http=allow_insecure_http, clock=clock)
    return await adrive(flow, verify=verify)


# -- a refresher's own logins -------------------------------------------------------------------


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
        return await _browser(self._login_metadata("browser"), self.client, options)

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
        return await _device(self._login_metadata("device"), self.client, options)

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
        flow = _grant_flow(self.metadata, self.url, self.client, form, options)
        return await adrive(flow, verify=self.verify)

    password_login = blocking(apassword_login)
    """The password login at this refresher's token endpoint:
    [`apassword_login()`][apassword_login] from synchronous code."""
