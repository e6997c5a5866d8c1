"""The server's keys: its own ES256 signing keys, published as a JWKS, and its clients' public
keys for private_key_jwt (RFC 7523)."""

from __future__ import annotations

import functools
import re
import secrets
import threading
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import ECAlgorithm

__all__ = ["SigningKey", "client_key"]

# Three base64url segments. Anything else is refused before PyJWT sees it, and the cache
# below is never filled with arbitrary header garbage longer than this.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_JWT_LENGTH = 4096


def looks_like_jwt(token: str) -> bool:
    return len(token) <= _MAX_JWT_LENGTH and _JWT_SHAPE.fullmatch(token) is not None


class SigningKey:
    """The current ES256 key signs; every key made so far still verifies and stays in the
    JWKS, so that [`rotate()`][rotate] changes the ``kid`` of new tokens without breaking old
    ones."""

    algorithm = "ES256"

    def __init__(self, *, issuer: str, audience: str) -> None:
        self._lock = threading.Lock()
        self._public: dict[str, ec.EllipticCurvePublicKey] = {}
        self.issuer = issuer
        self.audience = audience
        self.rotate()
        # Verifying ES256 costs ~100 us; the protected API sees the same few tokens over and
        # over, so remember verdicts. Only signature, issuer and audience are decided here:
        # expiry and revocation change with time and are checked on every request.
        self.verified_jti = functools.lru_cache(maxsize=4096)(self._verified_jti)

    def rotate(self) -> str:
        """Sign with a new key from now on; returns its ``kid``."""
        private = ec.generate_private_key(ec.SECP256R1())
        kid = secrets.token_urlsafe(8)
        with self._lock:
            self._private, self.kid = private, kid
            self._public[kid] = private.public_key()
        return kid

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            public = list(self._public.items())
        keys = []
        for kid, key in reversed(public):  # the current key first
            jwk: dict[str, Any] = ECAlgorithm.to_jwk(key, as_dict=True)
            jwk.update(kid=kid, use="sig", alg=self.algorithm)
            keys.append(jwk)
        return {"keys": keys}

    def sign(self, claims: dict[str, Any]) -> str:
        with self._lock:
            private, kid = self._private, self.kid
        return jwt.encode(claims, private, algorithm=self.algorithm, headers={"kid": kid})

    def _verified_jti(self, token: str) -> str | None:
        """The token's ``jti`` if we signed it for our audience, else ``None``."""
        if not looks_like_jwt(token):
            return None
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            with self._lock:
                key = self._public.get(kid) if isinstance(kid, str) else None
            if key is None:
                return None
            claims = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                # Time is the server's clock, not PyJWT's: see ServerState.authenticate.
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            return None
        jti = claims.get("jti")
        return jti if isinstance(jti, str) else None


@functools.lru_cache(maxsize=64)
def client_key(pem: str) -> tuple[Any, tuple[str, ...]]:
    """A client's PEM public key, loaded, with the JWS algorithms it may sign with."""
    try:
        key = load_pem_public_key(pem.encode())
    except UnsupportedAlgorithm as exc:
        raise ValueError(str(exc)) from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        algorithm = by_curve.get(key.curve.name)
        if algorithm is None:
            raise ValueError(f"unsupported curve {key.curve.name}")
        return key, (algorithm,)
    if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return key, ("EdDSA",)
    raise ValueError(f"unsupported key type {type(key).__name__}")
