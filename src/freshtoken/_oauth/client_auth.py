"""How an OAuth client proves who it is to a token, revocation or device endpoint.

* ``client_secret_basic`` (RFC 6749 section 2.3.1): HTTP Basic with the id and the secret each
  form-urlencoded *before* base64, as the RFC says (many libraries skip that step, and a
  secret with ``:``, ``%`` or ``+`` then fails).
* ``client_secret_post``: ``client_id`` and ``client_secret`` in the form.
* ``private_key_jwt`` (RFC 7523 section 2.2, OpenID Connect Core 9): a JWT signed with the
  client's private key, with a fresh ``jti``, ``aud`` the token endpoint and a one-minute life.
* ``none``: a public client sends only its ``client_id``.

With no method given, a private key means private_key_jwt, a secret the first of basic and
post that the server's metadata lists, and neither means none.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote

import httpx
import jwt

from .._core.policy import read_json

__all__ = [
    "JWT_BEARER",
    "ClientAuth",
    "ClientAuthMethod",
    "PrivateKey",
    "Signer",
    "choose_method",
]

ClientAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
# A PEM private key (str or bytes), a JWK (a mapping or its JSON text), or a key object of
# the cryptography package.
PrivateKey = str | bytes | Mapping[str, Any] | Any
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 60


def choose_method(
    supported: Sequence[str] | None, *, has_secret: bool, has_key: bool
) -> ClientAuthMethod:
    """The method to use when none is configured; ``supported`` is the server's list (RFC 8414
    ``token_endpoint_auth_methods_supported``; absent means client_secret_basic)."""
    if has_key:
        return "private_key_jwt"
    if not has_secret:
        return "none"
    if supported is not None and "client_secret_basic" not in supported:
        return "client_secret_post" if "client_secret_post" in supported else "client_secret_basic"
    return "client_secret_basic"


class ClientAuth:
    """Client authentication for requests to a token, revocation or device endpoint:
    ``request(url, form, headers)`` builds the authenticated POST.

    ``audience`` is the ``aud`` of private_key_jwt assertions: the token endpoint (RFC 7523
    section 3); without it, the URL each request goes to.
    """

    __slots__ = ("_signer", "audience", "client_id", "client_secret", "method")

    def __init__(
        self,
        client_id: str,
        client_secret: str | None = None,
        method: ClientAuthMethod | None = None,
        *,
        private_key: PrivateKey | None = None,
        key_id: str | None = None,
        algorithm: str | None = None,
        audience: str | None = None,
    ) -> None:
        if method is None:
            method = choose_method(
                None, has_secret=bool(client_secret), has_key=private_key is not None
            )
        if method in ("client_secret_basic", "client_secret_post") and not client_secret:
            raise ValueError(f"{method} needs a client_secret")
        if method == "private_key_jwt" and private_key is None:
            raise ValueError("private_key_jwt needs a private_key")
        if method != "private_key_jwt" and private_key is not None:
            raise ValueError(f"a private_key is for private_key_jwt, not {method}")
        self.client_id = client_id
        self.client_secret = client_secret
        self.method: ClientAuthMethod = method
        self.audience = audience
        self._signer = None if private_key is None else Signer(private_key, key_id, algorithm)

    def request(
        self,
        url: str,
        form: Mapping[str, str | Sequence[str]],
        headers: Mapping[str, str],
        *,
        parsed: httpx.URL | None = None,
    ) -> httpx.Request:
        """The POST of ``form`` (a field may repeat: give it a list) with this client's
        authentication added. ``parsed``: ``url`` already parsed (a refresher keeps it, which
        spares httpx parsing it again for every refresh)."""
        form = dict(form)
        sent_headers = {"Accept": "application/json", **headers}
        if self.method == "client_secret_basic":
            sent_headers["Authorization"] = "Basic " + self._basic_credentials()
        else:
            form["client_id"] = self.client_id
            if self.method == "client_secret_post":
                assert self.client_secret is not None
                form["client_secret"] = self.client_secret
            elif self._signer is not None:
                form["client_assertion_type"] = JWT_BEARER
                form["client_assertion"] = self._signer.assertion(
                    self.client_id, self.audience or url
                )
        return httpx.Request("POST", parsed or url, data=form, headers=sent_headers)

    @property
    def key_id(self) -> str | None:
        """The ``kid`` that private_key_jwt assertions name, if any."""
        return None if self._signer is None else self._signer.key_id

    def secrets(self) -> tuple[str, ...]:
        """What this authentication sends that no error text may repeat: the secret, and the
        Basic credentials that encode it."""
        if not self.client_secret:
            return ()
        return (self.client_secret, self._basic_credentials())

    def _basic_credentials(self) -> str:
        assert self.client_secret is not None
        # RFC 6749 2.3.1: form-encode id and secret before base64.
        pair = f"{quote(self.client_id, safe='')}:{quote(self.client_secret, safe='')}"
        return base64.b64encode(pair.encode()).decode()

    def __repr__(self) -> str:
        return f"ClientAuth({self.client_id!r}, method={self.method!r})"


class Signer:
    """Signs assertions with a private key (client assertions, the JWT bearer grant's); the key
    never leaves it, not even in repr."""

    __slots__ = ("_key", "algorithm", "key_id")

    def __init__(self, private_key: PrivateKey, key_id: str | None, algorithm: str | None) -> None:
        jwk: Mapping[str, Any] | None = None
        if isinstance(private_key, str) and private_key.lstrip().startswith("{"):
            jwk, problem = read_json(private_key.encode("utf-8", "surrogateescape"))
            if problem is not None:
                raise ValueError(f"private_key is neither a PEM key nor a JWK: it {problem}")
        elif isinstance(private_key, Mapping):
            jwk = private_key
        try:
            if jwk is not None:
                parsed = jwt.PyJWK(dict(jwk))
                self._key = parsed.key
                key_id = key_id or parsed.key_id
                algorithm = algorithm or jwk.get("alg")
            elif isinstance(private_key, (str, bytes)):
                self._key = _load_pem(private_key)
            else:
                self._key = private_key
        except jwt.PyJWTError as exc:
            raise ValueError(f"private_key is not a usable JWK: {exc}") from None
        self.algorithm = algorithm or _algorithm_for(self._key)
        self.key_id = key_id

    def assertion(self, client_id: str, audience: str) -> str:
        now = int(time.time())
        claims = {
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": secrets.token_urlsafe(24),
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME,
        }
        return self.sign(claims)

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A JWS of ``claims`` with this key (and its ``kid``, if it has one)."""
        headers = {"kid": self.key_id} if self.key_id else None
        return jwt.encode(dict(claims), self._key, algorithm=self.algorithm, headers=headers)

    def __repr__(self) -> str:
        return f"Signer(algorithm={self.algorithm!r}, key_id={self.key_id!r})"


def _load_pem(data: str | bytes) -> Any:
    try:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "signing with a private key (private_key_jwt, JWTBearer) needs cryptography: "
            "pip install 'freshtoken[crypto]'",
            name="cryptography",
        ) from None
    raw = data.encode() if isinstance(data, str) else data
    try:
        return load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        # The message names the problem, never the key.
        raise ValueError(f"private_key is not an unencrypted PEM private key: {exc}") from None


def _algorithm_for(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name in by_curve:
            return by_curve[key.curve.name]
        raise ValueError(f"no JWS algorithm for the curve {key.curve.name}")
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return "EdDSA"
    raise ValueError(
        f"private_key must be an RSA, EC or EdDSA private key, not {type(key).__name__}"
    )
