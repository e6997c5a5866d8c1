"""The grants of an authenticated OAuth2 client: ``OAuth2Refresher``
(``refresh_token``), ``ClientCredentials``, and the
``RefresherSettings`` that describe and rebuild them.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx

from .._core.clock import Clock, system_clock
from .._core.quirks import Quirks
from .._core.tokens import TokenSet
from .._logins.flows import client_for
from .._logins.methods import LoginMethods
from .._oauth.client_auth import ClientAuth, ClientAuthMethod, PrivateKey
from .._oauth.discovery import ServerMetadata, metadata_of
from .._runtime.connections import DEFAULT_CONCURRENCY
from ..errors import LoginFailed, RefreshFailed, SessionExpired

if TYPE_CHECKING:
    from .._oauth.dpop import DPoP
    from ..providers import Provider

from ._http import DEFAULT_TIMEOUT, HTTPRefresher

_Grant = TypeVar("_Grant", bound="_GrantRefresher")


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
        form = {**self.extra_params, **form}
        return self.client.request(self.url, form, self.headers, parsed=self._parsed_url)

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
