"""Discovery: an issuer's URL in, its endpoints and capabilities out.

Where the metadata is looked for, in order (the first document that names this issuer wins):

1. RFC 8414 section 3.1: ``/.well-known/oauth-authorization-server`` inserted between the
   host and the issuer's path (``https://host/.well-known/oauth-authorization-server/tenant``);
2. OpenID Connect Discovery 1.0 section 4.1: ``/.well-known/openid-configuration`` appended
   to the issuer (``https://host/tenant/.well-known/openid-configuration``);
3. for an issuer with a path, the two other spellings servers use in practice (RFC 8414
   section 5's ``openid-configuration`` inserted, and the suffix ``oauth-authorization-server``
   appended, as Okta serves it).

A document counts only if its ``issuer`` is the one asked for (RFC 8414 section 3.3): a
trailing slash may differ, and the server's spelling is kept, since ID tokens carry it. Every
endpoint must be https (plain http only to loopback, or with ``allow_insecure_http``). Answers
are cached per issuer for an hour; [`discover()`][discover] and [`adiscover()`][adiscover] drive one
sans-I/O flow.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from .._core.policy import check_transport, origin_of, read_json
from .._core.quirks import Quirks
from ..errors import InsecureTransportError, LoginFailed
from .http import Flow, Verify, adrive, drive

__all__ = [
    "ServerMetadata",
    "adiscover",
    "ametadata_of",
    "discover",
    "metadata_of",
    "metadata_urls",
]

CACHE_SECONDS = 3600.0

_ENDPOINTS = (
    "authorization_endpoint",
    "token_endpoint",
    "device_authorization_endpoint",
    "revocation_endpoint",
    "introspection_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "end_session_endpoint",
)
_LISTS = (
    "grant_types_supported",
    "response_types_supported",
    "token_endpoint_auth_methods_supported",
    "token_endpoint_auth_signing_alg_values_supported",
    "revocation_endpoint_auth_methods_supported",
    "code_challenge_methods_supported",
    "id_token_signing_alg_values_supported",
    "scopes_supported",
)


@dataclasses.dataclass(frozen=True, slots=True)
class ServerMetadata:
    """An authorization server's metadata (RFC 8414, OpenID Connect Discovery), validated.

    Absent lists are ``None`` (the server did not say), except where the RFC defines a
    default: ``grant_types_supported`` is then ``("authorization_code", "implicit")`` and
    ``token_endpoint_auth_methods_supported`` ``("client_secret_basic",)``. ``raw`` is the
    whole document, for fields not modelled here. ``quirks`` and ``provider`` are set when the
    metadata comes from a [`Provider`][freshtoken.Provider]: refreshers and logins made from it
    take its quirks.

    A multi-tenant issuer may name itself with a ``{tenantid}`` placeholder (Microsoft Entra's
    ``common``, ``organizations`` and ``consumers``): the document counts for any tenant, and
    an ID token's ``iss`` is checked with its ``tid`` put in the placeholder.
    """

    issuer: str
    token_endpoint: str | None = None
    authorization_endpoint: str | None = None
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    userinfo_endpoint: str | None = None
    jwks_uri: str | None = None
    end_session_endpoint: str | None = None
    grant_types_supported: tuple[str, ...] = ("authorization_code", "implicit")
    response_types_supported: tuple[str, ...] | None = None
    token_endpoint_auth_methods_supported: tuple[str, ...] = ("client_secret_basic",)
    token_endpoint_auth_signing_alg_values_supported: tuple[str, ...] | None = None
    revocation_endpoint_auth_methods_supported: tuple[str, ...] | None = None
    code_challenge_methods_supported: tuple[str, ...] | None = None
    id_token_signing_alg_values_supported: tuple[str, ...] | None = None
    scopes_supported: tuple[str, ...] | None = None
    authorization_response_iss_parameter_supported: bool = False
    raw: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    quirks: Quirks | None = dataclasses.field(default=None, compare=False)
    provider: str | None = None

    @classmethod
    def from_document(
        cls, document: Mapping[str, Any], *, issuer: str, allow_insecure_http: bool = False
    ) -> ServerMetadata:
        """Validate a metadata document fetched for ``issuer``; raises LoginFailed."""
        named = document.get("issuer")
        if not isinstance(named, str) or not issuer_matches(named, issuer):
            raise LoginFailed(
                "issuer_mismatch",
                f"the metadata names issuer {_shown(named)}, not {issuer!r}",
            )
        values: dict[str, Any] = {"issuer": named, "raw": dict(document)}
        for name in _ENDPOINTS:
            url = document.get(name)
            if url is None:
                continue
            if not isinstance(url, str):
                raise LoginFailed("discovery_failed", f"{name} is not a URL string")
            try:
                check_transport(
                    origin_of(url), allow_insecure_http=allow_insecure_http, what=f"the {name}"
                )
            except ValueError:
                raise LoginFailed("discovery_failed", f"{name} is not an http(s) URL") from None
            except InsecureTransportError as error:
                raise LoginFailed("discovery_failed", str(error)) from None
            values[name] = url
        for name in _LISTS:
            items = document.get(name)
            if items is None:
                continue
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise LoginFailed("discovery_failed", f"{name} is not a list of strings")
            values[name] = tuple(items)
        flag = document.get("authorization_response_iss_parameter_supported", False)
        if not isinstance(flag, bool):
            raise LoginFailed(
                "discovery_failed", "authorization_response_iss_parameter_supported is no boolean"
            )
        values["authorization_response_iss_parameter_supported"] = flag
        return cls(**values)

    def supports_grant(self, grant: str) -> bool:
        return grant in self.grant_types_supported


class MetadataSource(Protocol):
    """What gives its own metadata in place of an issuer URL: a
    [`Provider`][freshtoken.Provider] (discovered, or written in the preset). The wire knows
    only this shape, so that presets sit above it."""

    def metadata(self, *, verify: Verify = ..., allow_insecure_http: bool = ...) -> ServerMetadata:
        """The metadata, found or written."""
        ...

    async def ametadata(
        self, *, verify: Verify = ..., allow_insecure_http: bool = ...
    ) -> ServerMetadata:
        """[`metadata()`][freshtoken.Provider.metadata] for async code."""
        ...


TENANT_PLACEHOLDER = "{tenantid}"


def issuer_matches(named: str, issuer: str) -> bool:
    """Whether a document naming ``named`` is the metadata of ``issuer``: the same, a trailing
    slash aside, or a ``{tenantid}`` template of which ``issuer`` is one tenant's spelling
    (https://learn.microsoft.com/entra/identity-platform/v2-protocols-oidc#find-your-apps-openid-configuration-document-uri)."""
    named, issuer = named.rstrip("/"), issuer.rstrip("/")
    if TENANT_PLACEHOLDER not in named:
        return named == issuer
    pattern = re.escape(named).replace(re.escape(TENANT_PLACEHOLDER), "[^/?#]+")
    return re.fullmatch(pattern, issuer) is not None


def metadata_urls(issuer: str) -> list[str]:
    """Where the metadata of ``issuer`` may be, in the order they are tried."""
    parts = urlsplit(issuer)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    urls = [
        f"{origin}/.well-known/oauth-authorization-server{path}",
        f"{origin}{path}/.well-known/openid-configuration",
    ]
    if path:
        urls += [
            f"{origin}/.well-known/openid-configuration{path}",
            f"{origin}{path}/.well-known/oauth-authorization-server",
        ]
    return urls


def discover(
    issuer: str | MetadataSource,
    *,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    cache: bool = True,
) -> ServerMetadata:
    """The metadata of ``issuer``; raises [`LoginFailed`][freshtoken.LoginFailed] when there is none
    (``discovery_failed``, ``issuer_mismatch``) or the server cannot be reached. A
    [`Provider`][freshtoken.Provider] gives its own (discovered, or written in the preset)."""
    if not isinstance(issuer, str):
        return issuer.metadata(verify=verify, allow_insecure_http=allow_insecure_http)
    key = _cache_key(issuer, verify, allow_insecure_http)
    if cache and (cached := _CACHE.get(key)) is not None:
        return cached
    metadata = drive(_discovery(issuer, allow_insecure_http), verify=verify)
    if cache:
        _CACHE.put(key, metadata)
    return metadata


async def adiscover(
    issuer: str | MetadataSource,
    *,
    verify: Verify = True,
    allow_insecure_http: bool = False,
    cache: bool = True,
) -> ServerMetadata:
    """[`discover()`][discover] for async code (asyncio or trio)."""
    if not isinstance(issuer, str):
        return await issuer.ametadata(verify=verify, allow_insecure_http=allow_insecure_http)
    key = _cache_key(issuer, verify, allow_insecure_http)
    if cache and (cached := _CACHE.get(key)) is not None:
        return cached
    metadata = await adrive(_discovery(issuer, allow_insecure_http), verify=verify)
    if cache:
        _CACHE.put(key, metadata)
    return metadata


def _discovery(issuer: str, allow_insecure_http: bool) -> Flow[ServerMetadata]:
    """Yields the requests to send; returns the first valid metadata of ``issuer``."""
    _check_issuer(issuer, allow_insecure_http)
    problems: list[str] = []
    mismatch = False
    for url in metadata_urls(issuer):
        response = yield httpx.Request("GET", url, headers={"Accept": "application/json"})
        if response.status_code != 200:
            problems.append(f"HTTP {response.status_code} from {url}")
            continue
        document = _json_object(response)
        if document is None:
            problems.append(f"{url} is not a JSON object")
            continue
        try:
            return ServerMetadata.from_document(
                document, issuer=issuer, allow_insecure_http=allow_insecure_http
            )
        except LoginFailed as refused:
            if refused.error != "issuer_mismatch":
                raise
            mismatch = True
            problems.append(f"{url}: {refused.description}")
    raise LoginFailed(
        "issuer_mismatch" if mismatch else "discovery_failed",
        f"no metadata for issuer {issuer}: " + "; ".join(problems),
    )


def _check_issuer(issuer: str, allow_insecure_http: bool) -> None:
    try:
        origin = origin_of(issuer)
    except ValueError:
        raise LoginFailed(
            "discovery_failed", f"the issuer {issuer!r} is not an http(s) URL"
        ) from None
    parts = urlsplit(issuer)
    if parts.query or parts.fragment:
        # RFC 8414 section 2: an issuer has no query and no fragment.
        raise LoginFailed("discovery_failed", "an issuer URL has no query or fragment")
    try:
        check_transport(origin, allow_insecure_http=allow_insecure_http, what="a login")
    except InsecureTransportError as error:
        raise LoginFailed("discovery_failed", str(error)) from None


def _json_object(response: httpx.Response) -> dict[str, Any] | None:
    document = read_json(response.content)[0]
    return document if isinstance(document, dict) else None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _cache_key(issuer: str, verify: Verify, allow_insecure_http: bool) -> tuple[Any, ...]:
    # Metadata fetched without TLS verification must never serve a call that verifies.
    verified = verify if isinstance(verify, (bool, str)) else id(verify)
    return (issuer, verified, allow_insecure_http)


class _Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Any, ...], tuple[float, ServerMetadata]] = {}

    def get(self, key: tuple[Any, ...]) -> ServerMetadata | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] > CACHE_SECONDS:
            return None
        return entry[1]

    def put(self, key: tuple[Any, ...], metadata: ServerMetadata) -> None:
        with self._lock:
            if len(self._entries) >= 256:
                self._entries.clear()
            self._entries[key] = (time.monotonic(), metadata)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_CACHE = _Cache()


def metadata_of(
    issuer: str | ServerMetadata | MetadataSource,
    *,
    verify: Verify = True,
    allow_insecure_http: bool = False,
) -> ServerMetadata:
    """``issuer``'s metadata: discovered (and cached) from its URL, as given, or a
    [`Provider`][freshtoken.Provider]'s (discovered or written in the preset)."""
    if isinstance(issuer, ServerMetadata):
        return issuer
    if not isinstance(issuer, str):
        return issuer.metadata(verify=verify, allow_insecure_http=allow_insecure_http)
    return discover(issuer, verify=verify, allow_insecure_http=allow_insecure_http)


async def ametadata_of(
    issuer: str | ServerMetadata | MetadataSource,
    *,
    verify: Verify = True,
    allow_insecure_http: bool = False,
) -> ServerMetadata:
    """[`metadata_of()`][metadata_of] for async code."""
    if isinstance(issuer, ServerMetadata):
        return issuer
    if not isinstance(issuer, str):
        return await issuer.ametadata(verify=verify, allow_insecure_http=allow_insecure_http)
    return await adiscover(issuer, verify=verify, allow_insecure_http=allow_insecure_http)
