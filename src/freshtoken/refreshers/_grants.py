"""Grants that acquire tokens from nothing: ``JWTBearer`` (RFC 7523)
and ``TokenExchange`` (RFC 8693).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import anyio
import httpx

from .._core.policy import check_transport
from .._core.tokens import TokenSet
from .._oauth.client_auth import ClientAuth, ClientAuthMethod, PrivateKey, Signer
from .._runtime.connections import DEFAULT_CONCURRENCY
from ..errors import RefreshFailed, SessionExpired

if TYPE_CHECKING:
    from .._engine.manager import TokenManager

from ._http import DEFAULT_TIMEOUT, HTTPRefresher

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
            return httpx.Request("POST", self._parsed_url, data=form, headers=headers)
        return self.client.request(self.url, form, self.headers, parsed=self._parsed_url)

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
