"""The server's signing key: an ES256 key pair made at start-up, published as a JWKS."""

from __future__ import annotations

import functools
import re
import secrets
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

__all__ = ["SigningKey"]

# Three base64url segments. Anything else is refused before PyJWT sees it, and the cache
# below is never filled with arbitrary header garbage longer than this.
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_MAX_JWT_LENGTH = 4096


class SigningKey:
    algorithm = "ES256"

    def __init__(self, *, issuer: str, audience: str) -> None:
        self._private = ec.generate_private_key(ec.SECP256R1())
        self._public = self._private.public_key()
        self.kid = secrets.token_urlsafe(8)
        self.issuer = issuer
        self.audience = audience
        # Verifying ES256 costs ~100 us; the protected API sees the same few tokens over and
        # over, so remember verdicts. Only signature, issuer and audience are decided here:
        # expiry and revocation change with time and are checked on every request.
        self.verified_jti = functools.lru_cache(maxsize=4096)(self._verified_jti)

    def jwks(self) -> dict[str, Any]:
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(self._public, as_dict=True)
        jwk.update(kid=self.kid, use="sig", alg=self.algorithm)
        return {"keys": [jwk]}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims, self._private, algorithm=self.algorithm, headers={"kid": self.kid}
        )

    def _verified_jti(self, token: str) -> str | None:
        """The token's ``jti`` if we signed it for our audience, else ``None``."""
        if len(token) > _MAX_JWT_LENGTH or not _JWT_SHAPE.fullmatch(token):
            return None
        try:
            claims = jwt.decode(
                token,
                self._public,
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
