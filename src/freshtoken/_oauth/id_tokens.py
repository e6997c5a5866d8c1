"""OpenID Connect ID tokens: the claims every login checks, and full verification.

[`check_id_token_claims()`][check_id_token_claims] is what a login does with the ID token it got
straight from the token endpoint over TLS (OpenID Connect Core 3.1.3.7, which lets TLS stand in for
the signature there): issuer, audience, authorized party, expiry, nonce.
[`verify_id_token()`][verify_id_token] adds the signature, with the issuer's JWKS (from its
metadata, cached, fetched again once when a token names a key the cache lacks: keys rotate).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import jwt

from .._core.clock import Clock, system_clock
from .._core.policy import read_json
from ..errors import LoginFailed
from .discovery import TENANT_PLACEHOLDER, ServerMetadata, ametadata_of
from .http import Flow, Verify, adrive, blocking

__all__ = ["averify_id_token", "check_id_token_claims", "verify_id_token"]

# Asymmetric only: "none" proves nothing, and HS256 would make the client secret a signing key.
SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_LEEWAY = 60.0
JWKS_CACHE_SECONDS = 3600.0


def _invalid(description: str) -> LoginFailed:
    return LoginFailed("invalid_id_token", description)


def check_id_token_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
    leeway: float = DEFAULT_LEEWAY,
) -> None:
    """Raise ``LoginFailed("invalid_id_token")`` unless the claims are for this login."""
    tenant = claims.get("tid")
    if TENANT_PLACEHOLDER in issuer and isinstance(tenant, str) and tenant.isprintable():
        # A multi-tenant issuer: the token names its tenant (``tid``), the issuer must too.
        issuer = issuer.replace(TENANT_PLACEHOLDER, tenant)
    if claims.get("iss") != issuer:
        raise _invalid(f"issued by {claims.get('iss')!r}, not {issuer!r}")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise _invalid(f"not issued for the client {client_id!r}")
    authorized_party = claims.get("azp")
    if authorized_party is not None and authorized_party != client_id:
        raise _invalid(f"issued to the party {authorized_party!r}, not {client_id!r}")
    if len(audiences) > 1 and authorized_party is None:
        raise _invalid("several audiences and no azp claim")
    expires = claims.get("exp")
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise _invalid("no exp claim")
    if now >= expires + leeway:
        raise _invalid("expired")
    issued = claims.get("iat")
    if isinstance(issued, bool) or not isinstance(issued, (int, float)):
        raise _invalid("no iat claim")
    if nonce is not None:
        sent = claims.get("nonce")
        if not isinstance(sent, str) or not secrets.compare_digest(sent.encode(), nonce.encode()):
            raise _invalid("its nonce is not this login's (a replayed ID token?)")


async def averify_id_token(
    id_token: str,
    *,
    issuer: str | ServerMetadata,
    client_id: str,
    nonce: str | None = None,
    leeway: float = DEFAULT_LEEWAY,
    algorithms: Sequence[str] | None = None,
    clock: Clock = system_clock,
    verify: Verify = True,
    allow_insecure_http: bool = False,
) -> dict[str, Any]:
    """The claims of ``id_token`` once its signature (the issuer's JWKS), ``iss``, ``aud``
    (and ``azp``), ``exp`` (``leeway`` seconds of clock skew allowed) and, when given,
    ``nonce`` check out; raises ``LoginFailed("invalid_id_token")`` otherwise.

    ``issuer`` is the issuer URL (discovered, cached) or its [`ServerMetadata`][].
    ``algorithms`` defaults to the metadata's ``id_token_signing_alg_values_supported``,
    asymmetric ones only. Needs ``cryptography`` (``pip install 'freshtoken[crypto]'``).
    This is for async code (asyncio or trio); [`verify_id_token()`][verify_id_token] is the
    same from synchronous code.
    """
    metadata = await ametadata_of(issuer, verify=verify, allow_insecure_http=allow_insecure_http)
    flow = _verification(
        id_token,
        metadata,
        client_id=client_id,
        nonce=nonce,
        leeway=leeway,
        algorithms=algorithms,
        clock=clock,
        verify=verify,
    )
    return await adrive(flow, verify=verify)


verify_id_token = blocking(averify_id_token)
"""The claims of ``id_token`` once its signature, ``iss``, ``aud``, ``exp`` and ``nonce`` check
out: [`averify_id_token()`][averify_id_token] (which says what is checked, and how) from
synchronous code. Raises ``LoginFailed("invalid_id_token")`` otherwise."""


def _verification(
    id_token: str,
    metadata: ServerMetadata,
    *,
    client_id: str,
    nonce: str | None,
    leeway: float,
    algorithms: Sequence[str] | None,
    clock: Clock,
    verify: Verify,
) -> Flow[dict[str, Any]]:
    """Yields the JWKS requests to send (none when the cache has the key); returns claims."""
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        raise _invalid("not a JWT")
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError:
        raise _invalid("its header is not a JWT header") from None
    allowed = [
        a
        for a in (algorithms or metadata.id_token_signing_alg_values_supported or ["RS256"])
        if a in SIGNING_ALGORITHMS
    ]
    algorithm, kid = header.get("alg"), header.get("kid")
    if kid is None:
        # Keys named only by their certificate's thumbprint (RFC 7515 4.1.7; AD FS, older
        # Entra tokens): the JWKS names them so too (x5t), or by the same value as kid.
        kid = header.get("x5t")
    if algorithm not in allowed:
        raise _invalid(f"signed with {algorithm!r}; accepted: {', '.join(allowed) or 'none'}")
    if metadata.jwks_uri is None:
        raise _invalid(f"the issuer {metadata.issuer} publishes no jwks_uri")
    cache_key = (metadata.jwks_uri, verify if isinstance(verify, (bool, str)) else id(verify))
    key = _key_for(_JWKS.get(cache_key), kid, algorithm)
    if key is None:
        # Not cached, or a key the cached set lacks (rotation): fetch once more, no further.
        response = yield httpx.Request(
            "GET", metadata.jwks_uri, headers={"Accept": "application/json"}
        )
        keys = _parse_jwks(response, metadata.jwks_uri)
        _JWKS.put(cache_key, keys)
        key = _key_for(keys, kid, algorithm)
        if key is None:
            raise _invalid(f"no key {kid!r} for {algorithm} in {metadata.jwks_uri}")
    try:
        claims: dict[str, Any] = jwt.decode(
            id_token,
            key.key,
            algorithms=[algorithm],
            # Claims are checked below, on our clock, with our rules.
            options={
                "verify_aud": False,
                "verify_iss": False,
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.PyJWTError as error:
        raise _invalid(f"bad signature or encoding ({type(error).__name__})") from None
    check_id_token_claims(
        claims,
        issuer=metadata.issuer,
        client_id=client_id,
        nonce=nonce,
        now=clock(),
        leeway=leeway,
    )
    return claims


def _parse_jwks(response: httpx.Response, url: str) -> jwt.PyJWKSet:
    if response.status_code != 200:
        raise _invalid(f"the JWKS at {url} answered HTTP {response.status_code}")
    document, problem = read_json(response.content)
    if not isinstance(document, dict):
        raise _invalid(f"the JWKS at {url} {problem or 'is not a JSON object'}")
    try:
        return jwt.PyJWKSet.from_dict(document)
    except jwt.exceptions.MissingCryptographyError:
        raise ModuleNotFoundError(
            "verifying ID tokens needs cryptography: pip install 'freshtoken[crypto]'",
            name="cryptography",
        ) from None
    except (jwt.PyJWTError, KeyError, TypeError, ValueError) as error:
        raise _invalid(f"the JWKS at {url} has no usable key ({error})") from None


def _key_for(keys: jwt.PyJWKSet | None, kid: object, algorithm: str) -> jwt.PyJWK | None:
    if keys is None:
        return None
    for key in keys.keys:
        if key.public_key_use not in (None, "sig"):
            continue
        declared = key.algorithm_name if "alg" in key._jwk_data else None
        if declared is not None and declared != algorithm:
            continue
        if kid is None or kid in (key.key_id, key._jwk_data.get("x5t")):
            return key
    return None


class _JWKSCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sets: dict[tuple[Any, ...], tuple[float, jwt.PyJWKSet]] = {}

    def get(self, key: tuple[Any, ...]) -> jwt.PyJWKSet | None:
        with self._lock:
            entry = self._sets.get(key)
        if entry is None or time.monotonic() - entry[0] > JWKS_CACHE_SECONDS:
            return None
        return entry[1]

    def put(self, key: tuple[Any, ...], keys: jwt.PyJWKSet) -> None:
        with self._lock:
            if len(self._sets) >= 256:
                self._sets.clear()
            self._sets[key] = (time.monotonic(), keys)


_JWKS = _JWKSCache()
