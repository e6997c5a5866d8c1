"""Getting the first tokens: browser (authorization code + PKCE), device, password, client
credentials and in-house JSON logins, each returning a TokenSet or raising
[`LoginFailed`][freshtoken.LoginFailed].

Each login is written once. Its requests are sans-I/O flows (`freshtoken._oauth.http`:
the code exchange, the device polls, the grant requests), its settings one frozen
[`LoginOptions`][], and its body one coroutine: `in_browser`, `on_device`, or a flow that
[`adrive()`][freshtoken._oauth.http.adrive] sends. The blocking logins are generated from the
async ones ([`blocking()`][freshtoken._oauth.http.blocking]: the same coroutine on a private
event loop), so there is one loopback listener, one polling loop, one place for a timeout or a
cancellation.

Every OAuth login takes an issuer (discovered, cached) or its [`ServerMetadata`][]; the
password and client-credentials logins also take a bare ``token_url`` for servers without
discovery. Client authentication is chosen from the metadata unless ``auth_method`` says
(see `freshtoken._oauth.client_auth`). A refresher made with ``from_issuer`` logs in with the
client settings it already has (`freshtoken._logins.methods`). The ``*_with`` functions are the
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
from .loopback import LoopbackListener, OpenBrowser, check_redirect_uri
from .token_endpoint import require_grant, token_endpoint_of, token_flow

__all__ = [
    "BROWSER_TIMEOUT",
    "DEFAULT_REDIRECT_URI",
    "DEVICE_CODE_GRANT",
    "DeviceAuthorization",
    "DevicePrompt",
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
    "grant_flow",
    "in_browser",
    "json_login",
    "on_device",
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
        # A bad redirect URI is the caller's mistake: say so before any request is sent.
        check_redirect_uri(self.redirect_uri)


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


async def in_browser(
    metadata: ServerMetadata, client: ClientAuth, options: LoginOptions
) -> TokenSet:
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

        async def redeem(code: str) -> TokenSet:
            exchange = request.exchange_flow(
                code,
                client,
                allow_insecure_http=options.allow_insecure_http,
                clock=options.clock,
                dpop=options.dpop,
                params=resource,
            )
            return with_default_lifetime(await adrive(exchange, verify=options.verify), metadata)

        # The tab says "signed in" once the code is exchanged, or what went wrong.
        return await listener.sign_in(
            request, open_browser=options.open_browser, timeout=options.timeout, redeem=redeem
        )


async def on_device(
    metadata: ServerMetadata, client: ClientAuth, options: LoginOptions
) -> TokenSet:
    """RFC 8628: show the prompt, then poll until the user answers or the code expires."""
    device = DeviceAuthorization(metadata, client, options.scope, dpop=options.dpop)
    prompt = device.prompt_flow(
        clock=options.clock, allow_insecure_http=options.allow_insecure_http
    )
    await _completed(options.on_prompt(await adrive(prompt, verify=options.verify)))

    async def sleep(seconds: float) -> None:
        await _completed(options.sleep(seconds))

    return await adrive(device.poll_flow(clock=options.clock), verify=options.verify, sleep=sleep)


def grant_flow(
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


_ClientKeys = tuple[str, "str | None", "ClientAuthMethod | None", "PrivateKey | None"]


async def _client_at(
    issuer: str | ServerMetadata | MetadataSource | None, keys: _ClientKeys, options: LoginOptions
) -> tuple[ServerMetadata | None, ClientAuth]:
    """The issuer's metadata (discovered unless given; none without an issuer) and the
    client of ``keys`` (id, secret, method, private key)."""
    metadata = None
    if issuer is not None:
        verify, insecure = options.verify, options.allow_insecure_http
        metadata = await ametadata_of(issuer, verify=verify, allow_insecure_http=insecure)
    client_id, secret, method, key = keys
    return metadata, client_for(metadata, client_id, secret, auth_method=method, private_key=key)


def _options_of(arguments: Mapping[str, Any]) -> LoginOptions:
    """The options among a free login function's arguments (its ``locals()``): the keyword
    arguments are named as [`LoginOptions`][]' fields, so each is written once, there."""
    names = {field.name for field in dataclasses.fields(LoginOptions)}
    return LoginOptions(**{name: value for name, value in arguments.items() if name in names})


async def _grant_login(
    token_url: str | None,
    issuer: str | ServerMetadata | None,
    keys: _ClientKeys,
    form: dict[str, str],
    options: LoginOptions,
) -> TokenSet:
    """A grant at ``token_url`` or at the ``issuer``'s token endpoint (exactly one)."""
    if (token_url is None) == (issuer is None):
        raise ValueError("give either a token_url or an issuer")
    metadata, client = await _client_at(issuer, keys, options)
    url = token_url if metadata is None else token_endpoint_of(metadata)
    assert url is not None
    flow = grant_flow(metadata, url, client, form, options)
    return await adrive(flow, verify=options.verify)


# -- with a ready client (the CLI) --------------------------------------------------------------


def browser_with(metadata: ServerMetadata, client: ClientAuth, **options: Any) -> TokenSet:
    """The browser login with a ready client authentication; ``options`` are
    [`LoginOptions`][]' fields."""
    return run_blocking(in_browser(metadata, client, LoginOptions(**options)))


def device_with(metadata: ServerMetadata, client: ClientAuth, **options: Any) -> TokenSet:
    """The device login with a ready client authentication; ``options`` are
    [`LoginOptions`][]' fields."""
    return run_blocking(on_device(metadata, client, LoginOptions(**options)))


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
    return drive(grant_flow(metadata, token_url, client, form, settings), verify=settings.verify)


def client_credentials_with(
    metadata: ServerMetadata | None, token_url: str, client: ClientAuth, **options: Any
) -> TokenSet:
    """The client credentials login with a ready client authentication."""
    settings = LoginOptions(**options)
    form = {"grant_type": "client_credentials"}
    return drive(grant_flow(metadata, token_url, client, form, settings), verify=settings.verify)


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
    redirect (RFC 8252), in async code (asyncio or trio). ``openbrowser_flow(url)`` may be an
    async function; a plain one is called in a worker thread; any callable works (tests and
    headless scripts play the browser through it); returning ``False`` means no browser could
    be opened. ``redirect_uri`` must be a loopback ``http`` URI; without a port a free one is
    used. ``scope`` defaults to ``openid offline_access`` where offered. With ``dpop`` the code
    is redeemed with proofs of that key and the tokens are bound to it (RFC 9449). Cancelling
    the login closes the listener. Raises [`LoginFailed`][freshtoken.LoginFailed]
    (``access_denied``, ``timeout``...)."""
    options = _options_of(locals())
    keys = (client_id, client_secret, auth_method, private_key)
    metadata, client = await _client_at(issuer, keys, options)
    assert metadata is not None
    return await in_browser(metadata, client, options)


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
    options = _options_of(locals())
    keys = (client_id, client_secret, auth_method, private_key)
    metadata, client = await _client_at(issuer, keys, options)
    assert metadata is not None
    return await on_device(metadata, client, options)


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
    form = {"grant_type": "password", "username": username, "password": password}
    keys = (client_id, client_secret, auth_method, private_key)
    return await _grant_login(token_url, issuer, keys, form, _options_of(locals()))


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
    keys = (client_id, client_secret, auth_method, private_key)
    form = {"grant_type": "client_credentials"}
    return await _grant_login(token_url, issuer, keys, form, _options_of(locals()))


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
