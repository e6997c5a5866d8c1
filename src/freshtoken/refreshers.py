"""Refreshers turn the current tokens into new ones.

* [`OAuth2Refresher`][]: the ``refresh_token`` grant of RFC 6749 section 6.
* [`JSONRefresher`][]: in-house ``POST /auth/refresh`` APIs that take and give JSON.
* [`ClientCredentials`][]: re-acquires with the ``client_credentials`` grant (no refresh
  token exists; a new access token is simply asked for).
* [`FunctionRefresher`][]: any function of yours, plain or async.

The HTTP refreshers build an ``httpx.Request`` and read an ``httpx.Response`` without doing
I/O themselves (``build_request``, ``parse_response``); ``refresh`` and ``arefresh`` only send.
Token endpoint calls go through their own client with no auth attached, so they never pass
through [`freshtoken.httpx.TokenAuth`][] (no recursion) and carry nothing from the request
that triggered them. Redirects are not followed: credentials stay with the configured URL.

The grant refreshers authenticate as the client ([`ClientAuth`][]: secret, private key or
none); [`OAuth2Refresher.from_issuer()`][OAuth2Refresher.from_issuer] finds the token endpoint and
the method through discovery, and such a refresher logs in with the same settings
(``browser_login``, ``device_login``, ``password_login``). The first-token functions
([`password_login()`][password_login]...) live in `freshtoken._logins.flows` and are
re-exported here.

A grant refresher describes itself ([`OAuth2Refresher.describe()`][OAuth2Refresher.describe]): its
settings, none of them secret, and apart from them its client secret or private key, a
[`RefresherSettings`][] that [`rebuild()`][RefresherSettings.rebuild] turns back into the same
refresher. A [`FileStore`][freshtoken.FileStore] keeps that description with a profile, so that a
profile saved from Python can be refreshed by ``freshtoken token`` and the other way round.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar
from urllib.parse import parse_qsl

import anyio
import httpx

from ._core.clock import Clock, system_clock
from ._core.policy import (
    LARGEST_ANSWER,
    check_transport,
    interpret_token_response,
    origin_of,
    parse_retry_after,
)
from ._core.quirks import Quirks
from ._core.tokens import TokenResponseError, TokenSet
from ._engine import connections
from ._engine.connections import DEFAULT_CONCURRENCY
from ._engine.refresher import Refresher
from ._logins.flows import (
    LoginMethods,
    client_credentials_login,
    client_for,
    json_login,
    password_login,
)
from ._oauth.client_auth import ClientAuth, ClientAuthMethod, PrivateKey, Signer
from ._oauth.discovery import ServerMetadata, metadata_of
from ._oauth.http import run_blocking, ssl_context
from .errors import DPoPError, LoginFailed, RefreshFailed, SessionExpired

if TYPE_CHECKING:
    from ._engine.manager import TokenManager
    from ._oauth.dpop import DPoP, DPoPKey
    from .providers import Provider

__all__ = [
    "ClientAuth",
    "ClientAuthMethod",
    "ClientCredentials",
    "FunctionRefresher",
    "HTTPRefresher",
    "JSONRefresher",
    "JWTBearer",
    "OAuth2Refresher",
    "Refresher",
    "RefresherSettings",
    "TokenExchange",
    "client_credentials_login",
    "json_login",
    "password_login",
    "token_type",
]

T = TypeVar("T")
_Grant = TypeVar("_Grant", bound="_GrantRefresher")
DEFAULT_TIMEOUT = httpx.Timeout(10.0)
_MOST_WRAPPERS = 4


class HTTPRefresher:
    """Shared sending logic: subclasses say what to send and how to read the answer.

    When a [`TokenManager`][freshtoken.TokenManager] refreshes, the request goes out on the
    library's flight host over a kept-alive connection shared with the other refreshers of that
    TLS configuration, and at most ``concurrency`` token requests to one issuer origin are in
    the air at once (the others queue briefly, then fail as a transient ``RefreshFailed("busy")``
    that was never sent, and are retried after the usual backoff).
    """

    can_acquire = False
    quirks = Quirks()
    # Set once an answer replaced the refresh token presented: the server rotates them.
    _seen_rotation = False

    def __init__(
        self,
        url: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
        headers: Mapping[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self.url = url
        self._origin = origin_of(url)
        self.allow_insecure_http = allow_insecure_http
        self.timeout = timeout
        self.verify = verify
        self.headers = dict(headers or {})
        if not (isinstance(concurrency, int) and concurrency >= 1):
            raise ValueError("concurrency must be a whole number >= 1")
        self.concurrency = concurrency
        self._ssl_context: ssl.SSLContext | None = None

    @property
    def ssl_context(self) -> ssl.SSLContext:
        # Built once: loading the CA bundle costs ~25-100 ms, more than a refresh round trip.
        if self._ssl_context is None:
            self._ssl_context = ssl_context(self.verify)
        return self._ssl_context

    def _tls(self) -> ssl.SSLContext | bool:
        # Plain HTTP (loopback, or allowed insecure) needs no TLS: loading the CA bundle
        # would cost the first refresh ~0.1-0.3 s of CPU for nothing.
        return self.ssl_context if self._origin.scheme == "https" else False

    def build_request(self, current: TokenSet | None) -> httpx.Request:
        raise NotImplementedError

    def parse_response(
        self,
        response: httpx.Response,
        *,
        sent_at: float,
        current: TokenSet | None,
        sent_secrets: tuple[str, ...] = (),
        dpop_key: DPoPKey | None = None,
    ) -> TokenSet:
        """Read a token endpoint's answer; ``sent_secrets`` (a password...) are cut out of
        any error text, as are the current tokens and the client's own secret. Whatever the
        answer holds, this raises SessionExpired, RefreshFailed or DPoPError, nothing else.
        ``dpop_key`` is the key the request was signed with: ``DPoP`` tokens are accepted,
        bound to it."""
        retry_after = parse_retry_after(response.headers.get("Retry-After"), sent_at)
        secrets = sent_secrets + self.secrets()
        if current is not None:
            secrets += (current.refresh_token or "", current.access_token)
        # A 2xx the server sent may carry a rotated refresh token we cannot read: call the
        # answer lost, so that the retry comes at once (a reuse grace period may save it).
        success = 200 <= response.status_code < 300
        try:
            document = interpret_token_response(
                response.status_code, response.content, retry_after=retry_after, secrets=secrets
            )
        except RefreshFailed as error:
            error.answer_lost = success and error.error == "malformed_response"
            if error.answer_lost:
                self._check_not_spent(current, error)
            if dpop_key is not None and error.error == "use_dpop_nonce":
                # Asked again after the retry with its nonce: retrying later would not help.
                raise DPoPError(
                    "use_dpop_nonce",
                    "the token endpoint demanded a new DPoP nonce again after one retry with "
                    "the nonce it gave (or gave none that can be used)",
                    status=error.status,
                ) from None
            raise
        try:
            tokens = TokenSet.from_response(
                self.translate(document),
                sent_at=sent_at,
                date_header=response.headers.get("Date"),
                previous=current,
                token_types=("Bearer",) if dpop_key is None else ("Bearer", "DPoP"),
                dpop_key=dpop_key,
                default_lifetime=self.quirks.default_lifetime,
                keep_alive=self.quirks.keep_alive,
            )
        except TokenResponseError as error:
            failure = RefreshFailed(
                error.error, str(error), status=response.status_code, answer_lost=success
            )
            self._check_not_spent(current, failure)
            raise failure from None
        if dpop_key is not None:
            _check_confirmation(tokens, dpop_key, response.status_code)
        if current is not None and current.refresh_token not in (None, tokens.refresh_token):
            self._seen_rotation = True
        return tokens

    def _check_not_spent(self, current: TokenSet | None, failure: RefreshFailed) -> None:
        """A 2xx answer means the server spent the refresh token (DESIGN invariant 14): when
        it rotates, presenting that token again is a replay that revokes the grant, so the
        session ends here instead of at the server's reuse detection."""
        if self.can_acquire or current is None or current.refresh_token is None:
            return
        reuse = self.quirks.reused_refresh_token
        if reuse == "refused" or (reuse == "unknown" and self._seen_rotation):
            raise SessionExpired(
                "refresh_token_spent",
                "the token endpoint accepted the refresh but its answer cannot be read "
                f"({failure.description}); the refresh token it spent cannot be presented "
                "again: log in again",
                status=failure.status,
            ) from None

    def translate(self, document: Mapping[str, Any]) -> Mapping[str, Any]:
        """Map the endpoint's field names onto RFC 6749's; identity by default."""
        return document

    def secrets(self) -> tuple[str, ...]:
        """This refresher's own credentials, never to be repeated in an error."""
        return ()

    def refresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
        dpop: DPoP | None = None,
    ) -> TokenSet:
        """One attempt, ended by ``deadline`` (monotonic) whatever the server does. With
        ``dpop`` the request carries a proof (and is sent again once with the server's new
        nonce if it demands one)."""
        return run_blocking(self.arefresh(current, clock, deadline=deadline, dpop=dpop))

    async def arefresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
        dpop: DPoP | None = None,
    ) -> TokenSet:
        request = await self._request_for(current, deadline)
        sent = self._sent_secrets(request)
        if dpop is None:
            sent_at = clock()
            response = await exchange(request, self.timeout, self._tls(), deadline, cap=self._cap())
            return self.parse_response(
                response, sent_at=sent_at, current=current, sent_secrets=sent
            )
        key = dpop.key_for(current)
        flow = dpop.token_request(request, key, clock)
        step = next(flow)
        while True:
            sent_at = clock()
            response = await exchange(step, self.timeout, self._tls(), deadline, cap=self._cap())
            try:
                step = flow.send(response)
            except StopIteration as done:
                response = done.value
                break
        return self.parse_response(
            response, sent_at=sent_at, current=current, sent_secrets=sent, dpop_key=key
        )

    def close(self) -> None:
        """Nothing to release: the connections are the flight host's (kept for symmetry)."""

    def _cap(self) -> tuple[str, int]:
        origin = self._origin
        return f"{origin.scheme}://{origin.host}:{origin.port}", self.concurrency

    # Form fields whose values are credentials of their own (an assertion, a subject token):
    # cut out of any error text, as the refresh token is.
    _secret_fields: tuple[str, ...] = ()

    async def _request_for(self, current: TokenSet | None, deadline: float | None) -> httpx.Request:
        """The request of one attempt; refreshers that must first fetch something (a subject
        token) do it here, by ``deadline``."""
        return self._checked_request(current)

    def _sent_secrets(self, request: httpx.Request) -> tuple[str, ...]:
        if not self._secret_fields:
            return ()
        form = parse_qsl(request.content.decode("utf-8", "replace"))
        return tuple(value for name, value in form if name in self._secret_fields)

    def _checked_request(self, current: TokenSet | None) -> httpx.Request:
        check_transport(
            self._origin, allow_insecure_http=self.allow_insecure_http, what="a refresh token"
        )
        return self.build_request(current)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class _GrantRefresher(HTTPRefresher):
    """A token endpoint grant made by an authenticated OAuth2 client (RFC 6749 section 2.3)."""

    def __init__(
        self,
        token_url: str,
        *,
        client_id: str,
        client_secret: str | None = None,
        private_key: PrivateKey | None = None,
        auth_method: ClientAuthMethod | None = None,
        scope: str | None = None,
        extra_params: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
        headers: Mapping[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        quirks: Quirks | None = None,
    ) -> None:
        super().__init__(
            token_url,
            timeout=timeout,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
            headers=headers,
            concurrency=concurrency,
        )
        if quirks is not None:
            self.quirks = quirks
        if self.can_acquire and not client_secret and private_key is None:
            raise ValueError("the client_credentials grant needs a client_secret or a private_key")
        self.client = ClientAuth(client_id, client_secret, auth_method, private_key=private_key)
        self.scope = scope
        self.extra_params = dict(extra_params or {})
        self.metadata: ServerMetadata | None = None
        self.issuer: str | None = None  # set by from_issuer, and by a rebuilt description
        self.provider: str | None = None  # the preset's name, likewise
        self._private_key = private_key  # kept only to describe the refresher (describe())
        self._private_key_file: str | None = None  # where a rebuilt refresher read its key

    @classmethod
    def from_issuer(
        cls: type[_Grant],
        issuer: str | ServerMetadata | Provider,
        *,
        client_id: str,
        client_secret: str | None = None,
        private_key: PrivateKey | None = None,
        auth_method: ClientAuthMethod | None = None,
        scope: str | None = None,
        extra_params: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
        headers: Mapping[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        quirks: Quirks | None = None,
    ) -> _Grant:
        """A refresher for the token endpoint of ``issuer`` (discovered, cached; or pass its
        [`ServerMetadata`][freshtoken.ServerMetadata], e.g. from
        [`adiscover()`][freshtoken.adiscover] in async code, or a
        [`Provider`][freshtoken.Provider]). Without ``auth_method``, the client
        authentication is chosen from the metadata; without ``quirks``, a provider's are used.
        The refresher keeps the metadata, so it can also log in (``browser_login``...)."""
        metadata = metadata_of(issuer, verify=verify, allow_insecure_http=allow_insecure_http)
        if metadata.token_endpoint is None:
            raise LoginFailed("discovery_failed", f"{metadata.issuer} names no token_endpoint")
        client = client_for(
            metadata, client_id, client_secret, auth_method=auth_method, private_key=private_key
        )
        refresher = cls(
            metadata.token_endpoint,
            client_id=client_id,
            client_secret=client_secret,
            private_key=private_key,
            auth_method=client.method,
            scope=scope,
            extra_params=extra_params,
            timeout=timeout,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
            headers=headers,
            concurrency=concurrency,
            quirks=quirks if quirks is not None else metadata.quirks,
        )
        refresher.client = client  # the same, with the token endpoint as assertion audience
        # Its logins take the same quirks as its refreshes (a default lifetime, say).
        refresher.metadata = dataclasses.replace(metadata, quirks=refresher.quirks)
        refresher.issuer = metadata.issuer
        refresher.provider = metadata.provider
        return refresher

    def secrets(self) -> tuple[str, ...]:
        return self.client.secrets()

    def describe(self) -> RefresherSettings:
        """What rebuilds this refresher: settings with no secret in them (``settings``, fit
        to be stored in clear) and, apart, the client secret or private key.

        Not described: ``timeout``, ``headers`` (they may carry an API key) and a ``verify``
        that is an ``ssl.SSLContext``; a rebuilt refresher has the defaults.
        """
        settings: dict[str, Any] = {
            "refresher": "client_credentials" if self.can_acquire else "oauth2",
            "token_url": self.url,
            "client_id": self.client.client_id,
            "auth_method": self.client.method,
            "allow_insecure_http": self.allow_insecure_http,
        }
        key_file = self._private_key_file
        optional = {
            "private_key_file": key_file,
            "issuer": self.issuer,
            "scope": self.scope,
            "extra_params": self.extra_params or None,
            "provider": self.provider,
            "quirks": self.quirks.to_settings() or None,
            "key_id": self.client.key_id,
            "verify": self.verify if isinstance(self.verify, str) or self.verify is False else None,
        }
        settings.update((name, value) for name, value in optional.items() if value is not None)
        return RefresherSettings(
            settings,
            client_secret=self.client.client_secret,
            private_key=(
                None if self._private_key is None or key_file else _key_text(self._private_key)
            ),
        )

    def _grant(self, form: dict[str, str]) -> httpx.Request:
        if self.scope:
            form["scope"] = self.scope
        return self.client.request(self.url, {**self.extra_params, **form}, self.headers)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r}, client_id={self.client.client_id!r})"


RefresherKind = Literal["oauth2", "client_credentials"]


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class RefresherSettings:
    """A grant refresher described: ``settings`` (JSON-ready, nothing secret: token endpoint,
    client id and authentication method, scope, issuer...) and its secrets, kept apart.

    ``settings["private_key_file"]`` names a PEM file to read the key from (profiles made by
    ``freshtoken login --private-key``) when ``private_key`` is not given.
    """

    settings: Mapping[str, Any]
    client_secret: str | None = None
    private_key: str | None = None

    def rebuild(self) -> OAuth2Refresher | ClientCredentials:
        """The refresher these settings describe. ValueError says what is missing or wrong."""
        settings = self.settings
        token_url = settings.get("token_url")
        client_id = settings.get("client_id")
        if not isinstance(token_url, str) or not isinstance(client_id, str):
            raise ValueError("the settings name no token_url or client_id")  # noqa: TRY004
        kind = settings.get("refresher")
        if kind is None:  # profiles saved by `freshtoken login` before descriptions existed
            kind = "client_credentials" if settings.get("grant") == "client_credentials" else None
        cls: type[OAuth2Refresher | ClientCredentials] = (
            ClientCredentials if kind == "client_credentials" else OAuth2Refresher
        )
        method = settings.get("auth_method")
        if method not in (None, *_AUTH_METHODS):
            raise ValueError(f"unknown client authentication method {str(method)[:40]!r}")
        private_key = self.private_key
        key_file = settings.get("private_key_file")
        if private_key is None and isinstance(key_file, str):
            try:
                private_key = Path(key_file).read_text()
            except (OSError, UnicodeDecodeError) as error:
                raise ValueError(
                    f"the private key file {key_file} cannot be read ({error}): restore it"
                ) from None
        extra = settings.get("extra_params")
        verify = settings.get("verify")
        quirks = settings.get("quirks")
        refresher = cls(
            token_url,
            client_id=client_id,
            client_secret=self.client_secret,
            private_key=private_key,
            auth_method=method,
            scope=_text_or_none(settings.get("scope")),
            extra_params=(
                {str(k): str(v) for k, v in extra.items()} if isinstance(extra, Mapping) else None
            ),
            verify=verify if isinstance(verify, str) or verify is False else True,
            allow_insecure_http=settings.get("allow_insecure_http") is True,
            quirks=None if quirks is None else Quirks.from_settings(quirks),
        )
        refresher.provider = _text_or_none(settings.get("provider"))
        refresher.client = ClientAuth(
            client_id,
            self.client_secret,
            refresher.client.method,
            private_key=private_key,
            key_id=_text_or_none(settings.get("key_id")),
            audience=token_url,
        )
        refresher.issuer = _text_or_none(settings.get("issuer"))
        if self.private_key is None and isinstance(key_file, str):
            refresher._private_key_file = key_file  # described as the file, not its contents
        return refresher

    def __repr__(self) -> str:
        return (
            f"RefresherSettings({dict(self.settings)!r}, "
            f"has_client_secret={self.client_secret is not None}, "
            f"has_private_key={self.private_key is not None})"
        )


_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _key_text(key: PrivateKey) -> str:
    """A private key as text that [`ClientAuth`][] reads back: PEM, or a JWK's JSON."""
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return key.decode()
    if isinstance(key, Mapping):
        return json.dumps(dict(key))
    from cryptography.hazmat.primitives import serialization  # a key object of cryptography

    pem: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


class OAuth2Refresher(_GrantRefresher, LoginMethods):
    """The RFC 6749 ``refresh_token`` grant.

    ``auth_method`` defaults to ``private_key_jwt`` with a ``private_key`` (PEM or JWK),
    ``client_secret_basic`` with a secret and ``none`` (public client, ``client_id`` in the
    form) without. ``scope`` asks for a narrower scope; ``extra_params`` are added to the form
    (``audience``, ``resource``...). Made with [`from_issuer()`][OAuth2Refresher.from_issuer], it
    also logs in with the same client settings: [`browser_login()`][OAuth2Refresher.browser_login],
    [`device_login()`][OAuth2Refresher.device_login],
    [`password_login()`][OAuth2Refresher.password_login] and their async twins.
    """

    _scope_required = False  # learned from a server that refused a refresh without scope

    def build_request(self, current: TokenSet | None) -> httpx.Request:
        if current is None or current.refresh_token is None:
            raise SessionExpired("no_refresh_token", "no refresh token is stored: log in again")
        form = {"grant_type": "refresh_token", "refresh_token": current.refresh_token}
        if self._sends_scope() and not self.scope and current.scope:
            form["scope"] = current.scope  # _grant puts a configured scope instead
        return self._grant(form)

    def _sends_scope(self) -> bool:
        return self.quirks.refresh_sends_scope or self._scope_required

    async def arefresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
        dpop: DPoP | None = None,
    ) -> TokenSet:
        try:
            return await super().arefresh(current, clock, deadline=deadline, dpop=dpop)
        except RefreshFailed as refused:
            # An error answer spent nothing: the same refresh token goes once more, with the
            # scope the server asked for, and every later refresh carries it too.
            retry = refused.error == "scope_required" and not self._sends_scope()
            if not (retry and (self.scope or (current is not None and current.scope))):
                raise
            self._scope_required = True
        return await super().arefresh(current, clock, deadline=deadline, dpop=dpop)


class ClientCredentials(_GrantRefresher):
    """Re-acquires a token with the ``client_credentials`` grant whenever one is needed.

    Takes the same arguments as [`OAuth2Refresher`][] (``from_issuer`` too); a
    ``client_secret`` or a ``private_key`` is required.
    """

    can_acquire = True

    def build_request(self, current: TokenSet | None) -> httpx.Request:
        return self._grant({"grant_type": "client_credentials"})


JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"  # RFC 7523 section 2.1
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693 2.1
_TOKEN_TYPE_PREFIX = "urn:ietf:params:oauth:token-type:"
_TOKEN_TYPE_NAMES = frozenset(
    {"access_token", "refresh_token", "id_token", "jwt", "saml1", "saml2"}
)
JWT_BEARER_LIFETIME = 60.0


def token_type(name: str) -> str:
    """A token type identifier of RFC 8693 section 3: ``access_token``, ``refresh_token``,
    ``id_token``, ``jwt``, ``saml1`` or ``saml2`` stand for their ``urn:ietf:params:oauth:
    token-type:`` URNs; any other absolute URI is taken as it is."""
    if name in _TOKEN_TYPE_NAMES:
        return _TOKEN_TYPE_PREFIX + name
    if ":" in name and name.isascii() and name.isprintable() and " " not in name:
        return name
    raise ValueError(
        f"unknown token type {name[:60]!r}: one of {', '.join(sorted(_TOKEN_TYPE_NAMES))}, or a URI"
    )


class _AcquiringGrant(HTTPRefresher):
    """A grant that acquires tokens from nothing, each time it is asked (RFC 6749 4.5's
    extension grants); the client authenticates as for the other grants when ``client_id`` is
    given, and not at all without it."""

    can_acquire = True

    def __init__(
        self,
        token_url: str,
        *,
        client_id: str | None,
        client_secret: str | None,
        client_key: PrivateKey | None,
        auth_method: ClientAuthMethod | None,
        scope: str | None,
        extra_params: Mapping[str, str] | None,
        timeout: httpx.Timeout | float,
        verify: bool | str | ssl.SSLContext,
        allow_insecure_http: bool,
        headers: Mapping[str, str] | None,
        concurrency: int,
    ) -> None:
        super().__init__(
            token_url,
            timeout=timeout,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
            headers=headers,
            concurrency=concurrency,
        )
        if client_id is None and (client_secret or auth_method or client_key is not None):
            raise ValueError("client authentication needs a client_id")
        self.client = (
            None
            if client_id is None
            else ClientAuth(
                client_id, client_secret, auth_method, private_key=client_key, audience=token_url
            )
        )
        self.scope = scope
        self.extra_params = dict(extra_params or {})

    def _grant(self, form: dict[str, str | list[str]]) -> httpx.Request:
        if self.scope:
            form["scope"] = self.scope
        form = {**self.extra_params, **form}
        if self.client is None:
            headers = {"Accept": "application/json", **self.headers}
            return httpx.Request("POST", self.url, data=form, headers=headers)
        return self.client.request(self.url, form, self.headers)

    def secrets(self) -> tuple[str, ...]:
        return () if self.client is None else self.client.secrets()


class JWTBearer(_AcquiringGrant):
    """The JWT bearer grant (RFC 7523 section 2.1): each acquisition signs a new assertion
    with ``private_key`` and trades it for an access token. Google service accounts
    ([`from_service_account_file()`][from_service_account_file]) and Salesforce's OAuth 2.0 JWT
    bearer flow use it.

    The assertion says ``iss`` = ``issuer``, ``sub`` = ``subject`` (left out when None, as
    Google's service accounts acting as themselves do), ``aud`` = ``audience`` (default: the
    token endpoint; Salesforce wants its login URL), a fresh ``jti``, ``iat`` and an ``exp``
    ``lifetime`` seconds later, plus ``claims`` (Google reads the ``scope`` from there).
    ``scope`` goes in the form (RFC 7523 section 2.1). ``private_key`` is PEM, a JWK or a key
    object of the ``cryptography`` package (``pip install 'freshtoken[crypto]'``), the
    algorithm chosen from it unless ``algorithm`` says; ``key_id`` is the JWS ``kid``.

    The client need not authenticate (RFC 7523 section 3.1): with ``client_id`` it does, with
    ``client_secret`` or, given ``auth_method="private_key_jwt"``, with the same key.
    """

    _secret_fields = ("assertion", "client_assertion")

    def __init__(
        self,
        token_url: str,
        *,
        private_key: PrivateKey,
        issuer: str,
        subject: str | None = None,
        audience: str | None = None,
        scope: str | None = None,
        claims: Mapping[str, Any] | None = None,
        key_id: str | None = None,
        algorithm: str | None = None,
        lifetime: float = JWT_BEARER_LIFETIME,
        client_id: str | None = None,
        client_secret: str | None = None,
        auth_method: ClientAuthMethod | None = None,
        extra_params: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
        headers: Mapping[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        super().__init__(
            token_url,
            client_id=client_id,
            client_secret=client_secret,
            client_key=private_key if auth_method == "private_key_jwt" else None,
            auth_method=auth_method,
            scope=scope,
            extra_params=extra_params,
            timeout=timeout,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
            headers=headers,
            concurrency=concurrency,
        )
        if not (math.isfinite(lifetime) and lifetime > 0):
            raise ValueError("lifetime must be a finite number of seconds > 0")
        self.signer = Signer(private_key, key_id, algorithm)
        self.issuer = issuer
        self.subject = subject
        self.audience = token_url if audience is None else audience
        self.claims = dict(claims or {})
        self.lifetime = lifetime
        reserved = {"iss", "sub", "aud", "exp", "iat", "jti"} & set(self.claims)
        if reserved:
            raise ValueError(
                f"claims may not set {', '.join(sorted(reserved))}: pass them as arguments"
            )

    @classmethod
    def from_service_account_info(
        cls,
        info: Mapping[str, Any],
        *,
        scopes: str | Iterable[str] = (),
        subject: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
    ) -> JWTBearer:
        """A refresher for a Google service account key (the JSON of a key file): the
        assertion's ``iss`` is its ``client_email``, ``aud`` its ``token_uri``, ``kid`` its
        ``private_key_id``; ``scopes`` go in the ``scope`` claim; ``subject`` is the user to
        act for (domain-wide delegation)."""
        fields = ("type", "client_email", "private_key", "token_uri")
        missing = [name for name in fields if not isinstance(info.get(name), str)]
        if missing:
            raise ValueError(f"not a service account key: no {', '.join(missing)}")
        if info["type"] != "service_account":
            raise ValueError(f"not a service account key: its type is {str(info['type'])[:40]!r}")
        scope = scopes if isinstance(scopes, str) else " ".join(scopes)
        key_id = info.get("private_key_id")
        return cls(
            info["token_uri"],
            private_key=info["private_key"],
            key_id=key_id if isinstance(key_id, str) else None,
            issuer=info["client_email"],
            subject=subject,
            claims={"scope": scope} if scope else None,
            timeout=timeout,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
        )

    @classmethod
    def from_service_account_file(
        cls,
        path: str | os.PathLike[str],
        *,
        scopes: str | Iterable[str] = (),
        subject: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
    ) -> JWTBearer:
        """[`from_service_account_info()`][from_service_account_info] for a key file."""
        try:
            info = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"cannot read the service account key {path}: {error}") from None
        except ValueError:
            raise ValueError(f"the service account key {path} is not JSON") from None
        if not isinstance(info, dict):
            raise ValueError(f"the service account key {path} is not a JSON object")  # noqa: TRY004
        return cls.from_service_account_info(
            info,
            scopes=scopes,
            subject=subject,
            timeout=timeout,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
        )

    def assertion(self, now: float | None = None) -> str:
        """A newly signed assertion (each one has its own ``jti``)."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            **self.claims,
            "iss": self.issuer,
            "aud": self.audience,
            "jti": secrets.token_urlsafe(24),
            "iat": issued,
            "exp": issued + math.ceil(self.lifetime),
        }
        if self.subject is not None:
            claims["sub"] = self.subject
        return self.signer.sign(claims)

    def build_request(self, current: TokenSet | None) -> httpx.Request:
        return self._grant({"grant_type": JWT_BEARER_GRANT, "assertion": self.assertion()})

    def __repr__(self) -> str:
        return f"JWTBearer({self.url!r}, issuer={self.issuer!r}, subject={self.subject!r})"


TokenSource: TypeAlias = (
    "str | TokenManager | Callable[[], str | TokenSet] | Callable[[], Awaitable[str | TokenSet]]"
)


class TokenExchange(_AcquiringGrant):
    """Token exchange (RFC 8693): trades a subject token (and an actor's) for a new token,
    for on-behalf-of calls and delegation (a service, or an agent, acting for a user).

    ``subject`` is where the subject token comes from, asked anew at each acquisition: a
    [`TokenManager`][freshtoken.TokenManager] (its current access token: the chain stays fresh, and
    its session ending ends this one), a function returning a token or a
    [`TokenSet`][freshtoken.TokenSet] (plain or async), or a fixed string. ``actor`` likewise
    for the actor token (the party acting: ``act`` in the issued token). Token types are
    RFC 8693's names (``access_token``, ``id_token``, ``jwt``...) or URIs.
    ``requested_token_type``, ``audience`` and ``resource`` (one or several each) and
    ``scope`` say what to issue. The client authenticates as for
    [`ClientCredentials`][] (``client_secret``, ``private_key`` or a public client).

    The issued token is used as an access token, so it must come back with ``token_type``
    Bearer (or DPoP); when it expires the exchange is made again with the subject's
    current token, and a ``refresh_token`` in the answer is not used.
    """

    _secret_fields = ("subject_token", "actor_token", "client_assertion")

    def __init__(
        self,
        token_url: str,
        *,
        subject: TokenSource,
        subject_token_type: str = "access_token",
        actor: TokenSource | None = None,
        actor_token_type: str = "access_token",
        requested_token_type: str | None = None,
        audience: str | Iterable[str] | None = None,
        resource: str | Iterable[str] | None = None,
        scope: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        private_key: PrivateKey | None = None,
        auth_method: ClientAuthMethod | None = None,
        extra_params: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
        headers: Mapping[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        super().__init__(
            token_url,
            client_id=client_id,
            client_secret=client_secret,
            client_key=private_key,
            auth_method=auth_method,
            scope=scope,
            extra_params=extra_params,
            timeout=timeout,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
            headers=headers,
            concurrency=concurrency,
        )
        self.subject = subject
        self.subject_token_type = token_type(subject_token_type)
        self.actor = actor
        self.actor_token_type = token_type(actor_token_type)
        self.requested_token_type = (
            None if requested_token_type is None else token_type(requested_token_type)
        )
        self.audience = _several(audience, "audience")
        self.resource = _several(resource, "resource")

    def build_exchange(self, subject_token: str, actor_token: str | None = None) -> httpx.Request:
        """The token exchange request for these tokens (no I/O)."""
        form: dict[str, str | list[str]] = {
            "grant_type": TOKEN_EXCHANGE_GRANT,
            "subject_token": subject_token,
            "subject_token_type": self.subject_token_type,
        }
        if actor_token is not None:
            form["actor_token"] = actor_token
            form["actor_token_type"] = self.actor_token_type
        if self.requested_token_type is not None:
            form["requested_token_type"] = self.requested_token_type
        if self.audience:
            form["audience"] = list(self.audience)
        if self.resource:
            form["resource"] = list(self.resource)
        return self._grant(form)

    def build_request(self, current: TokenSet | None) -> httpx.Request:
        """The request, when both tokens are fixed strings (else the refresh fetches them)."""
        if not isinstance(self.subject, str) or not (
            self.actor is None or isinstance(self.actor, str)
        ):
            raise TypeError("the subject or actor token must be fetched: use refresh()")
        return self.build_exchange(self.subject, self.actor)

    async def _request_for(self, current: TokenSet | None, deadline: float | None) -> httpx.Request:
        check_transport(
            self._origin, allow_insecure_http=self.allow_insecure_http, what="a subject token"
        )
        budget = math.inf if deadline is None else deadline - time.monotonic()
        try:
            with anyio.fail_after(max(budget, 0.0) if math.isfinite(budget) else None):
                subject = await _token_from(self.subject, "subject")
                actor = None if self.actor is None else await _token_from(self.actor, "actor")
        except TimeoutError:
            raise RefreshFailed(
                "timeout", "the subject or actor token did not come in time for the exchange"
            ) from None
        return self.build_exchange(subject, actor)

    def __repr__(self) -> str:
        client = None if self.client is None else self.client.client_id
        return f"TokenExchange({self.url!r}, client_id={client!r})"


def _several(value: str | Iterable[str] | None, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    values = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"{name} must be a non-empty string or strings")
    return values


async def _token_from(source: TokenSource, role: str) -> str:
    """The current token of ``source`` (see [`TokenExchange`][])."""
    if isinstance(source, str):
        return source
    try:
        aget_tokens = getattr(source, "aget_tokens", None)
        if aget_tokens is not None:
            result: object = await aget_tokens()
        else:
            assert callable(source)
            result = source()
            if inspect.isawaitable(result):
                result = await result
    except SessionExpired as error:
        raise SessionExpired(
            error.error,
            f"the {role} token's session is over: {error.description}",
            status=error.status,
        ) from None
    except RefreshFailed as error:
        raise RefreshFailed(
            error.error,
            f"no {role} token: {error.description}",
            status=error.status,
            retry_after=error.retry_after,
        ) from None
    if isinstance(result, TokenSet):
        return result.access_token
    if isinstance(result, str) and result:
        return result
    raise RefreshFailed(
        f"no_{role}_token",
        f"the {role} token source gave {type(result).__name__}, not a token (str or TokenSet)",
    )


class JSONRefresher(HTTPRefresher):
    """In-house refresh endpoints: ``POST url`` with ``{"refresh_token": ...}``.

    Field names are configurable both ways; ``expires_in`` may also be missing (the JWT's
    ``exp`` is then used).
    """

    def __init__(
        self,
        url: str,
        *,
        request_field: str = "refresh_token",
        access_token_field: str = "access_token",
        refresh_token_field: str = "refresh_token",
        expires_in_field: str = "expires_in",
        extra_body: Mapping[str, Any] | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        verify: bool | str | ssl.SSLContext = True,
        allow_insecure_http: bool = False,
        headers: Mapping[str, str] | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        super().__init__(
            url,
            timeout=timeout,
            verify=verify,
            allow_insecure_http=allow_insecure_http,
            headers=headers,
            concurrency=concurrency,
        )
        self.request_field = request_field
        self.fields = {
            access_token_field: "access_token",
            refresh_token_field: "refresh_token",
            expires_in_field: "expires_in",
        }
        self.extra_body = dict(extra_body or {})

    def build_request(self, current: TokenSet | None) -> httpx.Request:
        if current is None or current.refresh_token is None:
            raise SessionExpired("no_refresh_token", "no refresh token is stored: log in again")
        body = {**self.extra_body, self.request_field: current.refresh_token}
        return httpx.Request(
            "POST", self.url, json=body, headers={"Accept": "application/json", **self.headers}
        )

    def secrets(self) -> tuple[str, ...]:
        # The extra fields may hold an API key; which of them are secret is unknown.
        return tuple(value for value in self.extra_body.values() if isinstance(value, str))

    def translate(self, document: Mapping[str, Any]) -> Mapping[str, Any]:
        # In-house APIs often nest the answer: {"data": {...}} or {"tokens": {...}}, a level
        # or two deep; a hostile answer may nest a thousand, so unwrapping is a bounded loop.
        for _ in range(_MOST_WRAPPERS):
            renamed = {self.fields.get(name, name): value for name, value in document.items()}
            wrapped = (document.get(wrapper) for wrapper in ("data", "tokens", "token"))
            inner = next((value for value in wrapped if isinstance(value, Mapping)), None)
            if "access_token" in renamed or inner is None:
                break
            document = inner
        return renamed


class FunctionRefresher:
    """Wraps ``function(current) -> TokenSet | dict`` (plain or async) as a refresher.

    A dict is read as a token response. The function signals the end of the session by
    raising [`SessionExpired`][freshtoken.SessionExpired] and a passing failure with
    [`RefreshFailed`][freshtoken.RefreshFailed]; anything else it raises counts as a failure that
    keeps the tokens and is not retried.
    """

    def __init__(
        self,
        function: Callable[[TokenSet | None], TokenSet | Mapping[str, Any]]
        | Callable[[TokenSet | None], Awaitable[TokenSet | Mapping[str, Any]]],
        *,
        can_acquire: bool = False,
    ) -> None:
        self.function = function
        self._can_acquire = can_acquire

    @property
    def can_acquire(self) -> bool:
        return self._can_acquire

    def refresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
    ) -> TokenSet:
        """Call the function; an async one runs on a private event loop of this thread."""
        sent_at = clock()
        result = self.function(current)
        if inspect.isawaitable(result):
            result = run_blocking(_awaited(result))
        return self._tokens(result, sent_at, current)

    async def arefresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
    ) -> TokenSet:
        sent_at = clock()
        result = self.function(current)
        if inspect.isawaitable(result):
            result = await result
        return self._tokens(result, sent_at, current)

    @staticmethod
    def _tokens(result: object, sent_at: float, current: TokenSet | None) -> TokenSet:
        if isinstance(result, TokenSet):
            return result
        if isinstance(result, Mapping):
            return TokenSet.from_response(result, sent_at=sent_at, previous=current)
        raise TypeError(f"a refresher function must return a TokenSet or a dict, not {result!r}")

    def __repr__(self) -> str:
        return f"FunctionRefresher({getattr(self.function, '__name__', self.function)!r})"


async def exchange(
    request: httpx.Request,
    timeout: httpx.Timeout | float,
    verify: ssl.SSLContext | bool,
    deadline: float | None,
    *,
    cap: tuple[str, int] | None = None,
) -> httpx.Response:
    """Send ``request`` and read the answer (at most ``LARGEST_ANSWER``) by ``deadline``.

    httpx's timeouts bound each read, not the whole: a server that drips a byte at a time
    would hold an attempt for hours. Here the whole exchange (connect, headers, body) is
    cancelled at the deadline. Redirects are not followed: credentials stay with the URL.
    Every failure is a [`RefreshFailed`][] that says whether the answer may be lost.

    On the flight host the request takes one of ``cap`` = (origin, places) first, and goes
    out on the host's shared keep-alive client (see ``_engine.connections``).
    """
    if connections.shared() and cap is not None:
        async with connections.place_for(cap[0], cap[1], deadline):
            return await _exchange(request, timeout, verify, deadline)
    return await _exchange(request, timeout, verify, deadline)


async def _exchange(
    request: httpx.Request,
    timeout: httpx.Timeout | float,
    verify: ssl.SSLContext | bool,
    deadline: float | None,
) -> httpx.Response:
    budget = math.inf if deadline is None else deadline - time.monotonic()
    try:
        with anyio.fail_after(max(budget, 0.0) if math.isfinite(budget) else None):
            if connections.shared():
                request.extensions = {
                    **request.extensions,
                    "timeout": httpx.Timeout(timeout).as_dict(),
                }
                response = await connections.client_for(verify).send(request, stream=True)
                try:
                    body = await _read_capped(response)
                finally:
                    await response.aclose()
            else:
                async with httpx.AsyncClient(timeout=timeout, verify=verify) as client:
                    response = await client.send(request, stream=True)
                    try:
                        body = await _read_capped(response)
                    finally:
                        await response.aclose()
    except TimeoutError:
        raise RefreshFailed(
            "timeout",
            f"no complete answer from the token endpoint within {budget:.3g} s",
            answer_lost=True,
        ) from None
    except httpx.TransportError as error:
        raise _transport_failure(error) from None
    except httpx.DecodingError:
        raise RefreshFailed(
            "malformed_response",
            "the token endpoint's answer could not be decoded (corrupt compression)",
            status=response.status_code,
            answer_lost=True,
        ) from None
    headers = [
        (name, value) for name, value in response.headers.raw if name.lower() not in _BODY_FRAMING
    ]
    return httpx.Response(response.status_code, headers=headers, content=body, request=request)


# The body is handed on decoded and whole: the headers that described its transfer go.
_BODY_FRAMING = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > LARGEST_ANSWER:
            raise RefreshFailed(
                "malformed_response",
                f"the token endpoint's answer is over {LARGEST_ANSWER} bytes long, more than "
                "any token answer",
                status=response.status_code,
                answer_lost=True,
            )
    return bytes(body)


def _check_confirmation(tokens: TokenSet, key: DPoPKey, status: int) -> None:
    """A JWT access token that names its key (``cnf.jkt``, RFC 9449 6.1) must name ours: a
    token bound to another key would be refused everywhere, or be someone else's."""
    from ._core.tokens import _jwt_claims

    confirmation = _jwt_claims(tokens.access_token).get("cnf")
    jkt = confirmation.get("jkt") if isinstance(confirmation, dict) else None
    if jkt is not None and jkt != key.thumbprint:
        raise RefreshFailed(
            "invalid_dpop_binding",
            "the token endpoint bound the access token to another DPoP key than the one that "
            "signed the request",
            status=status,
        )


def _transport_failure(error: httpx.TransportError) -> RefreshFailed:
    # Connect errors never reached the server; anything later may have been processed there.
    lost = not isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
    return RefreshFailed(
        "network_error", f"{type(error).__name__} talking to the token endpoint", answer_lost=lost
    )


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
