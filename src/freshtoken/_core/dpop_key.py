"""A DPoP key pair (RFC 9449): a value that signs proofs, stored with the tokens bound to it.

The key is part of the tokens (``TokenSet.dpop_key``), so it lives with them in the core; the
proofs' exchange with servers (nonces, retries) is the wire's, in ``_oauth/dpop.py``. Its repr
and its errors show the algorithm and the RFC 7638 thumbprint, never the private key.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any, Literal, TypeAlias, cast, get_args
from urllib.parse import urlsplit

from .policy import default_port, read_json

__all__ = [
    "ALGORITHMS",
    "DPoPAlgorithm",
    "DPoPKey",
    "access_token_hash",
    "target_uri",
    "thumbprint_of",
]

DPoPAlgorithm: TypeAlias = Literal["ES256", "EdDSA", "RS256"]
ALGORITHMS: tuple[str, ...] = get_args(DPoPAlgorithm)

_RSA_BITS = 2048
_EXTRA = "pip install 'freshtoken[crypto]'"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def _algorithms() -> Any:
    try:
        import cryptography  # noqa: F401 - PyJWT signs with it
        from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"DPoP needs the cryptography library: {_EXTRA}", name=error.name
        ) from error
    return ECAlgorithm, OKPAlgorithm, RSAAlgorithm


def access_token_hash(access_token: str) -> str:
    """The ``ath`` claim: base64url of the SHA-256 of the access token (RFC 9449 4.2)."""
    return _b64(hashlib.sha256(access_token.encode("ascii")).digest())


@functools.lru_cache(maxsize=1024)
def target_uri(url: str) -> str:
    """The ``htu`` claim for ``url``: scheme, host, port and path; no user, query or
    fragment (RFC 9449 4.2), the scheme and host lower-cased and a default port left out."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == default_port(scheme) else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


class DPoPKey:
    """A DPoP key pair. ``DPoPKey.generate("ES256")`` (also ``"EdDSA"``, ``"RS256"``) makes
    one; [`private_jwk()`][private_jwk] and [`from_jwk()`][from_jwk] carry it to disk and back
    (stores do this themselves: the key is stored with the tokens bound to it).

    Its repr shows the algorithm and the thumbprint (``jkt``, RFC 7638), which are public; the
    private key appears in no repr, log line or error.
    """

    __slots__ = ("_algorithm", "_header", "_private", "_signer", "_thumbprint")

    def __init__(self, private_key: Any, algorithm: DPoPAlgorithm) -> None:
        """Use [`generate()`][generate] or [`from_jwk()`][from_jwk]; ``private_key`` is a
        cryptography key."""
        ec_alg, okp_alg, rsa_alg = _algorithms()
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        if algorithm == "ES256":
            if not (
                isinstance(private_key, ec.EllipticCurvePrivateKey)
                and isinstance(private_key.curve, ec.SECP256R1)
            ):
                raise ValueError("an ES256 DPoP key must be a P-256 private key")
            signer = ec_alg(ec_alg.SHA256)
        elif algorithm == "EdDSA":
            if not isinstance(private_key, ed25519.Ed25519PrivateKey):
                raise ValueError("an EdDSA DPoP key must be an Ed25519 private key")
            signer = okp_alg()
        elif algorithm == "RS256":
            if not isinstance(private_key, rsa.RSAPrivateKey):
                raise ValueError("an RS256 DPoP key must be an RSA private key")
            if private_key.key_size < _RSA_BITS:
                raise ValueError(f"an RS256 DPoP key needs at least {_RSA_BITS} bits")
            signer = rsa_alg(rsa_alg.SHA256)
        else:
            raise ValueError(f"DPoP algorithm must be one of {', '.join(ALGORITHMS)}")
        self._algorithm: DPoPAlgorithm = algorithm
        self._private = private_key
        self._signer = signer
        public = dict(signer.to_jwk(private_key.public_key(), as_dict=True))
        self._thumbprint = _thumbprint(public)
        # The protected header never changes: encoded once, it makes each proof cheaper.
        header = {"alg": algorithm, "jwk": public, "typ": "dpop+jwt"}
        self._header = _b64(_compact_json(header)) + "."

    @classmethod
    def generate(cls, algorithm: DPoPAlgorithm = "ES256") -> DPoPKey:
        """A new key pair for ``algorithm``: ES256 (P-256, the default), EdDSA (Ed25519) or
        RS256 (RSA 2048)."""
        _algorithms()
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        if algorithm == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()), "ES256")
        if algorithm == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate(), "EdDSA")
        if algorithm == "RS256":
            return cls(rsa.generate_private_key(65537, _RSA_BITS), "RS256")
        raise ValueError(f"DPoP algorithm must be one of {', '.join(ALGORITHMS)}")

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any] | str) -> DPoPKey:
        """The key of a private JWK (a dict or its JSON), as [`private_jwk()`][private_jwk] writes
        it.

        Raises ValueError, naming what is wrong and quoting nothing of the key.
        """
        ec_alg, okp_alg, rsa_alg = _algorithms()
        if isinstance(jwk, str):
            jwk, problem = read_json(jwk.encode("utf-8", "surrogateescape"))
            if problem is not None:
                raise ValueError(f"a DPoP key must be a JWK (JSON object); this one {problem}")
        if not isinstance(jwk, Mapping):
            raise ValueError("a DPoP key must be a JWK (JSON object)")  # noqa: TRY004 - one kind for every bad key
        kty = jwk.get("kty")
        algorithm = jwk.get("alg") or {"EC": "ES256", "OKP": "EdDSA", "RSA": "RS256"}.get(
            kty if isinstance(kty, str) else "", ""
        )
        if algorithm not in ALGORITHMS:
            raise ValueError(f"a DPoP key's alg must be one of {', '.join(ALGORITHMS)}")
        if "d" not in jwk:
            raise ValueError("a DPoP key must be a private JWK (it has no 'd')")
        algorithm = cast("DPoPAlgorithm", algorithm)
        reader = {"ES256": ec_alg, "EdDSA": okp_alg, "RS256": rsa_alg}[algorithm]
        fields = {name: value for name, value in jwk.items() if name != "alg"}
        try:
            private = reader.from_jwk(fields)
        except Exception:  # noqa: BLE001 - PyJWT and cryptography raise many kinds; none is shown
            raise ValueError(f"the {algorithm} DPoP key's JWK is malformed") from None
        return cls(private, algorithm)

    @property
    def algorithm(self) -> DPoPAlgorithm:
        return self._algorithm

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint: what a server binds tokens to (``cnf.jkt``)."""
        return self._thumbprint

    @property
    def public_jwk(self) -> dict[str, Any]:
        return dict(self._signer.to_jwk(self._private.public_key(), as_dict=True))

    def private_jwk(self) -> dict[str, Any]:
        """The private key as a JWK, with its ``alg``: a secret, for stores only."""
        jwk: dict[str, Any] = dict(self._signer.to_jwk(self._private, as_dict=True))
        jwk["alg"] = self._algorithm
        return jwk

    def proof(
        self,
        method: str,
        url: str,
        *,
        now: float,
        nonce: str | None = None,
        ath: str | None = None,
    ) -> str:
        """A new DPoP proof (a fresh ``jti``) for ``method url`` at ``now`` (epoch seconds).

        ``ath`` (`access_token_hash()` of the access token) is for resource requests;
        ``nonce`` is the server's last ``DPoP-Nonce``.
        """
        claims: dict[str, Any] = {
            "htm": method,
            "htu": target_uri(url),
            "iat": int(now),
            "jti": secrets.token_urlsafe(16),
        }
        if nonce is not None:
            claims["nonce"] = nonce
        if ath is not None:
            claims["ath"] = ath
        signing_input = self._header + _b64(_compact_json(claims))
        signature = self._signer.sign(signing_input.encode("ascii"), self._private)
        return signing_input + "." + _b64(signature)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DPoPKey):
            return NotImplemented
        return self._algorithm == other._algorithm and self._thumbprint == other._thumbprint

    def __hash__(self) -> int:
        return hash((self._algorithm, self._thumbprint))

    def __repr__(self) -> str:
        return f"DPoPKey({self._algorithm}, jkt={self._thumbprint!r})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling (multiprocessing) goes through the JWK, not the cryptography object.
        return (DPoPKey.from_jwk, (self.private_jwk(),))


_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}


def _thumbprint(public_jwk: Mapping[str, Any]) -> str:
    """RFC 7638: SHA-256 over the required members, sorted, with no whitespace."""
    members = _THUMBPRINT_MEMBERS[public_jwk["kty"]]
    canonical = json.dumps(
        {name: public_jwk[name] for name in members}, separators=(",", ":"), sort_keys=True
    )
    return _b64(hashlib.sha256(canonical.encode()).digest())


def thumbprint_of(public_jwk: Mapping[str, Any]) -> str | None:
    """The RFC 7638 thumbprint of a public JWK, or None when it is not one we can read."""
    kty = public_jwk.get("kty")
    members = _THUMBPRINT_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None or not all(isinstance(public_jwk.get(name), str) for name in members):
        return None
    return _thumbprint(public_jwk)
