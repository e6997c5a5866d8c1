"""Getting the first tokens: browser (authorization code + PKCE), device, password, client
credentials and in-house JSON logins, each sync and async, each returning a TokenSet or
raising [`LoginFailed`][freshtoken.LoginFailed].

Every OAuth login takes an issuer (discovered, cached) or its [`ServerMetadata`][]; the
password and client-credentials logins also take a bare ``token_url`` for servers without
discovery. Client authentication is chosen from the metadata unless ``auth_method`` says
(see `freshtoken._oauth.client_auth`). A refresher made with ``from_issuer`` logs in with the
client settings it already has ([`LoginMethods`][]). The ``*_with`` functions are the
same logins for a caller that already has the metadata and a [`ClientAuth`][] (the CLI,
a refresher, a backend-for-frontend).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import sys
import time
import webbrowser
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import httpx

from .._core.clock import Clock, system_clock
from .._core.policy import read_token_answer
from .._core.tokens import TokenResponseError, TokenSet
from .._oauth.client_auth import ClientAuth, ClientAuthMethod, PrivateKey, choose_method
from .._oauth.discovery import MetadataSource, ServerMetadata, ametadata_of, metadata_of
from .._oauth.dpop import DPoP, DPoPKey
from .._oauth.http import Flow, Pause, Verify, adrive, drive
from .._oauth.id_tokens import check_id_token_claims
from ..errors import LoginFailed
from .authorization import AuthorizationRequest, default_scope, with_default_lifetime
from .loopback import AsyncLoopbackListener, LoopbackListener, OpenBrowser
from .token_endpoint import check_login_transport, token_flow, tokens_from

__all__ = [
    "DEVICE_CODE_GRANT",
    "DeviceAuthorization",
    "DevicePrompt",
    "LoginMethods",
    "abrowser_login",
    "abrowser_with",
    "aclient_credentials_login",
    "aclient_credentials_with",
    "adevice_login",
    "adevice_with",
    "ajson_login",
    "apassword_login",
    "apassword_with",
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

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_REDIRECT_URI = "http://127.0.0.1/callback"
BROWSER_TIMEOUT = 300.0
_SLOW_DOWN = 5.0  # RFC 8628 section 3.5
_TRANSIENT_POLL_FAILURES = 3
_LONGEST_INTERVAL = 60.0  # a server's slow_down interval beyond this is hostile, not slow


# -- shared set-up ------------------------------------------------------------------------------


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


def _token_endpoint(metadata: ServerMetadata) -> str:
    if metadata.token_endpoint is None:
        raise LoginFailed("discovery_failed", f"{metadata.issuer} names no token_endpoint")
    return metadata.token_endpoint


def _require_grant(metadata: ServerMetadata | None, grant: str, name: str) -> None:
    # The server would refuse anyway; asking first keeps a password from being sent at all.
    listed = metadata is not None and "grant_types_supported" in metadata.raw
    if metadata is not None and listed and grant not in metadata.grant_types_supported:
        offered = ", ".join(metadata.grant_types_supported) or "none"
        raise LoginFailed(
            "unsupported_grant_type",
            f"{metadata.issuer} does not offer the {name} grant (it offers: {offered})",
        )


def _check_timeout(timeout: float) -> None:
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError("timeout must be a finite number of seconds > 0")


# -- browser login (authorization code + PKCE, loopback redirect) --------------------------------


def browser_login(
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
    redirect (RFC 8252). ``open_browser(url)`` is called in a worker thread; any callable
    works (tests and headless scripts play the browser through it); returning ``False``
    means no browser could be opened. ``redirect_uri`` must be a loopback ``http`` URI; without
    a port a free one is used. ``scope`` defaults to ``openid offline_access`` where offered.
    With ``dpop`` the code is redeemed with proofs of that key and the tokens are bound to it
    (RFC 9449). Raises [`LoginFailed`][freshtoken.LoginFailed] (``access_denied``,
    ``timeout``...)."""
    _check_timeout(timeout)
    metadata = metadata_of(issuer, verify=verify, allow_insecure_http=allow_insecure_http)
    client = client_for(
        metadata, client_id, client_secret, auth_method=auth_method, private_key=private_key
    )
    return browser_with(
        metadata,
        client,
        scope=scope,
        open_browser=open_browser,
        timeout=timeout,
        redirect_uri=redirect_uri,
        params=authorization_params,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        clock=clock,
        dpop=dpop,
    )


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
    """[`browser_login()`][browser_login] for async code (asyncio or trio). ``open_browser`` may be
    an async function; cancelling the login closes the listener."""
    _check_timeout(timeout)
    metadata = await ametadata_of(issuer, verify=verify, allow_insecure_http=allow_insecure_http)
    client = client_for(
        metadata, client_id, client_secret, auth_method=auth_method, private_key=private_key
    )
    return await abrowser_with(
        metadata,
        client,
        scope=scope,
        open_browser=open_browser,
        timeout=timeout,
        redirect_uri=redirect_uri,
        params=authorization_params,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        clock=clock,
        dpop=dpop,
    )


def browser_with(
    metadata: ServerMetadata,
    client: ClientAuth,
    *,
    scope: str | None = None,
    open_browser: OpenBrowser = webbrowser.open,
    timeout: float = BROWSER_TIMEOUT,
    redirect_uri: str = DEFAULT_REDIRECT_URI,
    params: Mapping[str, str] | None = None,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
) -> TokenSet:
    """browser_login with a ready client authentication."""
    with LoopbackListener(redirect_uri) as listener:
        request = AuthorizationRequest.start(
            metadata,
            client_id=client.client_id,
            redirect_uri=listener.redirect_uri,
            scope=scope,
            params=params,
        )
        code = listener.wait_for_code(request, open_browser=open_browser, timeout=timeout)
    tokens = request.exchange(
        code, client, verify=verify, allow_insecure_http=allow_insecure_http, clock=clock, dpop=dpop
    )
    return with_default_lifetime(tokens, metadata)


async def abrowser_with(
    metadata: ServerMetadata,
    client: ClientAuth,
    *,
    scope: str | None = None,
    open_browser: OpenBrowser = webbrowser.open,
    timeout: float = BROWSER_TIMEOUT,
    redirect_uri: str = DEFAULT_REDIRECT_URI,
    params: Mapping[str, str] | None = None,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
) -> TokenSet:
    """abrowser_login with a ready client authentication."""
    async with AsyncLoopbackListener(redirect_uri) as listener:
        request = AuthorizationRequest.start(
            metadata,
            client_id=client.client_id,
            redirect_uri=listener.redirect_uri,
            scope=scope,
            params=params,
        )
        code = await listener.wait_for_code(request, open_browser=open_browser, timeout=timeout)
    tokens = await request.aexchange(
        code, client, verify=verify, allow_insecure_http=allow_insecure_http, clock=clock, dpop=dpop
    )
    return with_default_lifetime(tokens, metadata)


# -- device login (RFC 8628) --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DevicePrompt:
    """What the user must do to approve a device login (RFC 8628 section 3.3)."""

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float

    def __str__(self) -> str:
        minutes = max(1, round(self.expires_in / 60))
        if self.verification_uri_complete:
            return (
                f"To sign in, open {self.verification_uri_complete}\n"
                f"and check that it shows the code {self.user_code}"
                f" (or open {self.verification_uri} and enter it)."
                f" The code expires in {minutes} min."
            )
        return (
            f"To sign in, open {self.verification_uri} and enter the code {self.user_code}."
            f" The code expires in {minutes} min."
        )


def print_prompt(prompt: DevicePrompt) -> None:
    """The default ``on_prompt``: the instructions on stderr (stdout may be piped)."""
    print(prompt, file=sys.stderr, flush=True)


class DeviceAuthorization:
    """One device login, sans I/O: the requests to send and what their answers mean.

    ``interval`` is how long to wait before the next poll (it grows by 5 s on each
    ``slow_down``); ``deadline`` is when the device code expires, on the clock given to
    [`prompt_from()`][prompt_from].
    """

    def __init__(
        self,
        metadata: ServerMetadata,
        client: ClientAuth,
        scope: str | None = None,
        *,
        dpop: DPoPKey | None = None,
    ) -> None:
        if metadata.device_authorization_endpoint is None:
            raise LoginFailed(
                "unsupported_flow",
                f"{metadata.issuer} has no device_authorization_endpoint: use a browser login",
            )
        _require_grant(metadata, DEVICE_CODE_GRANT, "device code")
        self.metadata = metadata
        self.client = client
        self.scope = default_scope(metadata) if scope is None else scope
        self.interval = 5.0
        self.deadline = math.inf
        self._device_code: str | None = None
        self._failures = 0
        self.dpop = dpop  # polls carry its proofs, and the tokens are bound to it

    def start_request(self) -> httpx.Request:
        assert self.metadata.device_authorization_endpoint is not None
        form = {"scope": self.scope} if self.scope else {}
        return self.client.request(self.metadata.device_authorization_endpoint, form, {})

    def prompt_from(self, response: httpx.Response, *, now: float) -> DevicePrompt:
        """Read the device authorization answer (RFC 8628 section 3.2)."""
        if response.status_code != 200:
            tokens_from(response, sent_at=now, secrets=self.client.secrets())  # raises its error
            raise LoginFailed("invalid_response", f"HTTP {response.status_code}")
        document, problem = read_token_answer(response.content)
        if not isinstance(document, dict):
            raise LoginFailed(
                "invalid_response",
                f"the device authorization {problem or 'is not a JSON object'}",
            )
        if "verification_uri" not in document:
            # Google's spelling (https://developers.google.com/identity/protocols/oauth2/limited-input-device#step-2:-handle-the-authorization-server-response)
            document = {**document, "verification_uri": document.get("verification_url")}
        fields = {}
        for name in ("device_code", "user_code", "verification_uri"):
            value = document.get(name)
            if not isinstance(value, str) or not value:
                raise LoginFailed("invalid_response", f"the device authorization lacks {name}")
            fields[name] = value
        complete = document.get("verification_uri_complete")
        expires_in = _number(document.get("expires_in"), "expires_in")
        interval = document.get("interval")
        self.interval = 5.0 if interval is None else _number(interval, "interval")
        self.deadline = now + expires_in
        self._device_code = fields["device_code"]
        return DevicePrompt(
            fields["user_code"],
            fields["verification_uri"],
            complete if isinstance(complete, str) and complete else None,
            expires_in,
        )

    def poll_request(self) -> httpx.Request:
        if self._device_code is None:
            raise RuntimeError("read the device authorization first (prompt_from)")
        form = {"grant_type": DEVICE_CODE_GRANT, "device_code": self._device_code}
        return self.client.request(_token_endpoint(self.metadata), form, {})

    def expired(self, now: float) -> LoginFailed | None:
        if now < self.deadline:
            return None
        return LoginFailed("expired_token", "the code expired before anyone approved it")

    def outcome(self, response: httpx.Response, *, sent_at: float) -> TokenSet | None:
        """The tokens, or ``None`` to poll again after ``interval``; raises LoginFailed.

        The error decides, whatever the status: GitHub answers ``authorization_pending`` and
        ``slow_down`` with 200 (and the new ``interval`` with ``slow_down``)."""
        error = _error_code(response)
        if response.status_code == 200 and error is None:
            tokens = tokens_from(response, sent_at=sent_at, secrets=self._secrets(), dpop=self.dpop)
            tokens = with_default_lifetime(tokens, self.metadata)
            return _checked_id_token(tokens, self.metadata, self.client.client_id, sent_at)
        if error == "authorization_pending":
            self._failures = 0
            return None
        if error == "slow_down":
            self._failures = 0
            self.interval += _SLOW_DOWN
            asked = _interval_of(response)
            if asked is not None and asked > self.interval:
                self.interval = min(asked, _LONGEST_INTERVAL)
            return None
        if error == "access_denied":
            raise LoginFailed(
                "access_denied", "the user denied access", status=response.status_code
            )
        if error == "expired_token":
            raise LoginFailed(
                "expired_token",
                "the code expired before anyone approved it: start again",
                status=response.status_code,
            )
        if response.status_code in (429, *range(500, 600)) and self.transient_failure():
            return None
        tokens_from(response, sent_at=sent_at, secrets=self._secrets())  # raises the error
        raise LoginFailed("invalid_response", f"HTTP {response.status_code}")

    def prompt_flow(self, *, clock: Clock, allow_insecure_http: bool = False) -> Flow[DevicePrompt]:
        """Ask for the codes; returns what to show the user."""
        request = self.start_request()
        check_login_transport(str(request.url), allow_insecure_http=allow_insecure_http)
        sent_at = clock()
        response: httpx.Response = yield request
        return self.prompt_from(response, now=sent_at)

    def poll_flow(self, *, clock: Clock) -> Flow[TokenSet]:
        """Poll until the user answers or the code expires (after
        [`prompt_flow()`][prompt_flow])."""
        while True:
            if (expired := self.expired(clock())) is not None:
                raise expired
            yield Pause(self.interval)
            sent_at = clock()
            try:
                if self.dpop is None:
                    response: httpx.Response = yield self.poll_request()
                else:
                    proofs = DPoP(self.dpop).token_request(self.poll_request(), self.dpop, clock)
                    response = yield from proofs
            except LoginFailed as failure:
                if failure.error == "network_error" and self.transient_failure():
                    continue
                raise
            tokens = self.outcome(response, sent_at=sent_at)
            if tokens is not None:
                return tokens

    def transient_failure(self) -> bool:
        """Count a failure that may pass (network, 5xx); True while polling should go on."""
        self._failures += 1
        return self._failures <= _TRANSIENT_POLL_FAILURES

    def _secrets(self) -> tuple[str, ...]:
        return (self._device_code or "", *self.client.secrets())


def _number(value: object, name: str) -> float:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LoginFailed("invalid_response", f"the device authorization's {name} is no number")
    if value < 0:
        raise LoginFailed("invalid_response", f"the device authorization's {name} is negative")
    return float(value)


def _error_code(response: httpx.Response) -> str | None:
    document = read_token_answer(response.content)[0]
    error = document.get("error") if isinstance(document, dict) else None
    return error if isinstance(error, str) and error else None


def _interval_of(response: httpx.Response) -> float | None:
    document = read_token_answer(response.content)[0]
    value = document.get("interval") if isinstance(document, dict) else None
    try:
        return _number(value, "interval")
    except LoginFailed:
        return None


def _checked_id_token(
    tokens: TokenSet, metadata: ServerMetadata, client_id: str, now: float
) -> TokenSet:
    if tokens.id_token is not None:
        try:
            claims = tokens.id_claims()
        except TokenResponseError as error:
            raise LoginFailed("invalid_id_token", str(error)) from None
        check_id_token_claims(
            claims, issuer=metadata.issuer, client_id=client_id, nonce=None, now=now
        )
    return tokens


def device_login(
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
    sleep: Callable[[float], object] = time.sleep,
) -> TokenSet:
    """Log in on a device without a browser (RFC 8628): ``on_prompt`` shows the user where
    to go and which code to enter; then the token endpoint is polled every ``interval``
    seconds (5 more after each ``slow_down``) until the user approves, denies, or the code
    expires. With ``dpop`` every poll carries a proof of that key and the tokens are bound to
    it (RFC 9449). ``sleep`` and ``clock`` are for tests."""
    metadata = metadata_of(issuer, verify=verify, allow_insecure_http=allow_insecure_http)
    client = client_for(
        metadata, client_id, client_secret, auth_method=auth_method, private_key=private_key
    )
    return device_with(
        metadata,
        client,
        scope=scope,
        on_prompt=on_prompt,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        clock=clock,
        dpop=dpop,
        sleep=sleep,
    )


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
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
) -> TokenSet:
    """[`device_login()`][device_login] for async code; ``on_prompt`` may be async."""
    metadata = await ametadata_of(issuer, verify=verify, allow_insecure_http=allow_insecure_http)
    client = client_for(
        metadata, client_id, client_secret, auth_method=auth_method, private_key=private_key
    )
    return await adevice_with(
        metadata,
        client,
        scope=scope,
        on_prompt=on_prompt,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        clock=clock,
        dpop=dpop,
        sleep=sleep,
    )


def device_with(
    metadata: ServerMetadata,
    client: ClientAuth,
    *,
    scope: str | None = None,
    on_prompt: Callable[[DevicePrompt], object] = print_prompt,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
    sleep: Callable[[float], object] = time.sleep,
) -> TokenSet:
    """device_login with a ready client authentication."""
    flow = DeviceAuthorization(metadata, client, scope, dpop=dpop)
    prompt = flow.prompt_flow(clock=clock, allow_insecure_http=allow_insecure_http)
    on_prompt(drive(prompt, verify=verify))
    return drive(flow.poll_flow(clock=clock), verify=verify, sleep=sleep)


async def adevice_with(
    metadata: ServerMetadata,
    client: ClientAuth,
    *,
    scope: str | None = None,
    on_prompt: Callable[[DevicePrompt], object] = print_prompt,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
) -> TokenSet:
    """adevice_login with a ready client authentication."""
    flow = DeviceAuthorization(metadata, client, scope, dpop=dpop)
    prompt = flow.prompt_flow(clock=clock, allow_insecure_http=allow_insecure_http)
    shown = on_prompt(await adrive(prompt, verify=verify))
    if inspect.isawaitable(shown):
        await shown
    return await adrive(flow.poll_flow(clock=clock), verify=verify, sleep=sleep)


# -- password, client credentials, JSON ---------------------------------------------------------


def _endpoint(
    token_url: str | None, issuer: str | ServerMetadata | None, verify: Verify, insecure: bool
) -> tuple[str, ServerMetadata | None]:
    if (token_url is None) == (issuer is None):
        raise ValueError("give either a token_url or an issuer")
    if token_url is not None:
        return token_url, None
    assert issuer is not None
    metadata = metadata_of(issuer, verify=verify, allow_insecure_http=insecure)
    return _token_endpoint(metadata), metadata


async def _aendpoint(
    token_url: str | None, issuer: str | ServerMetadata | None, verify: Verify, insecure: bool
) -> tuple[str, ServerMetadata | None]:
    if (token_url is None) == (issuer is None):
        raise ValueError("give either a token_url or an issuer")
    if token_url is not None:
        return token_url, None
    assert issuer is not None
    metadata = await ametadata_of(issuer, verify=verify, allow_insecure_http=insecure)
    return _token_endpoint(metadata), metadata


def _password_request(
    token_url: str, client: ClientAuth, username: str, password: str, scope: str | None
) -> httpx.Request:
    form = {"grant_type": "password", "username": username, "password": password}
    if scope:
        form["scope"] = scope
    return client.request(token_url, form, {})


def _client_credentials_request(
    token_url: str, client: ClientAuth, scope: str | None
) -> httpx.Request:
    if client.method == "none":
        raise ValueError("the client_credentials grant needs a client_secret or a private_key")
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    return client.request(token_url, form, {})


def _password_flow(  # noqa: PLR0917 - private, called twice
    metadata: ServerMetadata | None,
    token_url: str,
    client: ClientAuth,
    username: str,
    password: str,
    scope: str | None,
    clock: Clock,
    allow_insecure_http: bool,
    dpop: DPoPKey | None = None,
) -> Flow[TokenSet]:
    _require_grant(metadata, "password", "password")
    return (
        yield from token_flow(
            _password_request(token_url, client, username, password, scope),
            clock=clock,
            secrets=(password, *client.secrets()),
            allow_insecure_http=allow_insecure_http,
            dpop=dpop,
        )
    )


def _client_credentials_flow(  # noqa: PLR0917 - private, called twice
    metadata: ServerMetadata | None,
    token_url: str,
    client: ClientAuth,
    scope: str | None,
    clock: Clock,
    allow_insecure_http: bool,
    dpop: DPoPKey | None = None,
) -> Flow[TokenSet]:
    _require_grant(metadata, "client_credentials", "client credentials")
    return (
        yield from token_flow(
            _client_credentials_request(token_url, client, scope),
            clock=clock,
            secrets=client.secrets(),
            allow_insecure_http=allow_insecure_http,
            dpop=dpop,
        )
    )


def password_with(
    metadata: ServerMetadata | None,
    token_url: str,
    client: ClientAuth,
    *,
    username: str,
    password: str,
    scope: str | None = None,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
) -> TokenSet:
    """password_login with a ready client authentication."""
    flow = _password_flow(
        metadata, token_url, client, username, password, scope, clock, allow_insecure_http, dpop
    )
    return drive(flow, verify=verify)


async def apassword_with(
    metadata: ServerMetadata | None,
    token_url: str,
    client: ClientAuth,
    *,
    username: str,
    password: str,
    scope: str | None = None,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
) -> TokenSet:
    """apassword_login with a ready client authentication."""
    flow = _password_flow(
        metadata, token_url, client, username, password, scope, clock, allow_insecure_http, dpop
    )
    return await adrive(flow, verify=verify)


def client_credentials_with(
    metadata: ServerMetadata | None,
    token_url: str,
    client: ClientAuth,
    *,
    scope: str | None = None,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
) -> TokenSet:
    """client_credentials_login with a ready client authentication."""
    flow = _client_credentials_flow(
        metadata, token_url, client, scope, clock, allow_insecure_http, dpop
    )
    return drive(flow, verify=verify)


async def aclient_credentials_with(
    metadata: ServerMetadata | None,
    token_url: str,
    client: ClientAuth,
    *,
    scope: str | None = None,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
    dpop: DPoPKey | None = None,
) -> TokenSet:
    """aclient_credentials_login with a ready client authentication."""
    flow = _client_credentials_flow(
        metadata, token_url, client, scope, clock, allow_insecure_http, dpop
    )
    return await adrive(flow, verify=verify)


def password_login(
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
    ``LoginFailed("invalid_grant")``. OAuth 2.1 drops this grant: prefer
    [`browser_login()`][browser_login]. With ``dpop`` the tokens are bound to that DPoP key from the
    first (RFC 9449)."""
    url, metadata = _endpoint(token_url, issuer, verify, allow_insecure_http)
    client = client_for(
        metadata, client_id, client_secret, auth_method=auth_method, private_key=private_key
    )
    return password_with(
        metadata,
        url,
        client,
        username=username,
        password=password,
        scope=scope,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        clock=clock,
        dpop=dpop,
    )


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
    """[`password_login()`][password_login] for async code."""
    url, metadata = await _aendpoint(token_url, issuer, verify, allow_insecure_http)
    client = client_for(
        metadata, client_id, client_secret, auth_method=auth_method, private_key=private_key
    )
    return await apassword_with(
        metadata,
        url,
        client,
        username=username,
        password=password,
        scope=scope,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        clock=clock,
        dpop=dpop,
    )


def client_credentials_login(
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
    url, metadata = _endpoint(token_url, issuer, verify, allow_insecure_http)
    client = client_for(
        metadata, client_id, client_secret, auth_method=auth_method, private_key=private_key
    )
    return client_credentials_with(
        metadata,
        url,
        client,
        scope=scope,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        clock=clock,
        dpop=dpop,
    )


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
    """[`client_credentials_login()`][client_credentials_login] for async code."""
    url, metadata = await _aendpoint(token_url, issuer, verify, allow_insecure_http)
    client = client_for(
        metadata, client_id, client_secret, auth_method=auth_method, private_key=private_key
    )
    return await aclient_credentials_with(
        metadata,
        url,
        client,
        scope=scope,
        verify=verify,
        allow_insecure_http=allow_insecure_http,
        clock=clock,
        dpop=dpop,
    )


def _json_request(url: str, body: Mapping[str, Any]) -> tuple[httpx.Request, tuple[str, ...]]:
    request = httpx.Request("POST", url, json=dict(body), headers={"Accept": "application/json"})
    # Which fields are secret is unknown: none of the body's strings may come back in an error.
    secrets = tuple(value for value in body.values() if isinstance(value, str))
    return request, secrets


def json_login(
    url: str,
    body: Mapping[str, Any],
    *,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
) -> TokenSet:
    """First tokens from an in-house JSON login endpoint (``POST url`` with ``body``)."""
    request, secrets = _json_request(url, body)
    flow = token_flow(
        request, clock=clock, secrets=secrets, allow_insecure_http=allow_insecure_http
    )
    return drive(flow, verify=verify)


async def ajson_login(
    url: str,
    body: Mapping[str, Any],
    *,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    clock: Clock = system_clock,
) -> TokenSet:
    """[`json_login()`][json_login] for async code."""
    request, secrets = _json_request(url, body)
    flow = token_flow(
        request, clock=clock, secrets=secrets, allow_insecure_http=allow_insecure_http
    )
    return await adrive(flow, verify=verify)


# -- a refresher's own logins -------------------------------------------------------------------


class LoginMethods:
    """Logins with the client settings an [`OAuth2Refresher`][freshtoken.OAuth2Refresher] already
    has (its client id and authentication, scope, TLS settings, and for browser and device
    logins the server's metadata, which [`from_issuer()`][freshtoken.OAuth2Refresher.from_issuer]
    keeps). Hand the result to the manager: ``manager.set_tokens(refresher.browser_login())``.
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

    def browser_login(
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
        """[`freshtoken.browser_login()`][freshtoken.browser_login] as this refresher's client."""
        _check_timeout(timeout)
        return browser_with(
            self._login_metadata("browser"),
            self.client,
            scope=scope or self.scope,
            open_browser=open_browser,
            timeout=timeout,
            redirect_uri=redirect_uri,
            params=authorization_params,
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
            clock=clock,
            dpop=dpop,
        )

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
        """[`freshtoken.abrowser_login()`][freshtoken.abrowser_login] as this refresher's client."""
        _check_timeout(timeout)
        return await abrowser_with(
            self._login_metadata("browser"),
            self.client,
            scope=scope or self.scope,
            open_browser=open_browser,
            timeout=timeout,
            redirect_uri=redirect_uri,
            params=authorization_params,
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
            clock=clock,
            dpop=dpop,
        )

    def device_login(
        self,
        *,
        scope: str | None = None,
        on_prompt: Callable[[DevicePrompt], object] = print_prompt,
        clock: Clock = system_clock,
        dpop: DPoPKey | None = None,
        sleep: Callable[[float], object] = time.sleep,
    ) -> TokenSet:
        """[`freshtoken.device_login()`][freshtoken.device_login] as this refresher's client."""
        return device_with(
            self._login_metadata("device"),
            self.client,
            scope=scope or self.scope,
            on_prompt=on_prompt,
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
            clock=clock,
            dpop=dpop,
            sleep=sleep,
        )

    async def adevice_login(
        self,
        *,
        scope: str | None = None,
        on_prompt: Callable[[DevicePrompt], object] = print_prompt,
        clock: Clock = system_clock,
        dpop: DPoPKey | None = None,
        sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    ) -> TokenSet:
        """[`freshtoken.adevice_login()`][freshtoken.adevice_login] as this refresher's client."""
        return await adevice_with(
            self._login_metadata("device"),
            self.client,
            scope=scope or self.scope,
            on_prompt=on_prompt,
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
            clock=clock,
            dpop=dpop,
            sleep=sleep,
        )

    def password_login(
        self,
        *,
        username: str,
        password: str,
        scope: str | None = None,
        clock: Clock = system_clock,
        dpop: DPoPKey | None = None,
    ) -> TokenSet:
        """[`freshtoken.password_login()`][freshtoken.password_login] at this refresher's token
        endpoint."""
        return password_with(
            self.metadata,
            self.url,
            self.client,
            username=username,
            password=password,
            scope=scope or self.scope,
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
            clock=clock,
            dpop=dpop,
        )

    async def apassword_login(
        self,
        *,
        username: str,
        password: str,
        scope: str | None = None,
        clock: Clock = system_clock,
        dpop: DPoPKey | None = None,
    ) -> TokenSet:
        """[`freshtoken.apassword_login()`][freshtoken.apassword_login] at this refresher's token
        endpoint."""
        return await apassword_with(
            self.metadata,
            self.url,
            self.client,
            username=username,
            password=password,
            scope=scope or self.scope,
            verify=self.verify,
            allow_insecure_http=self.allow_insecure_http,
            clock=clock,
            dpop=dpop,
        )
