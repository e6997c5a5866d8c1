"""The reference server's DPoP (RFC 9449): proofs checked, nonces issued and rotated.

A proof is accepted when (section 4.3): it is the one ``DPoP`` header of the request, a JWT
whose header has ``typ: dpop+jwt``, an asymmetric ``alg`` the server allows and a public
``jwk`` that verifies its signature; its ``htm`` and ``htu`` are the request's method and URL
(query and fragment ignored, scheme and host compared without case, default ports elided);
its ``iat`` is within ``iat_window`` seconds of the server's clock; its ``jti`` was not seen
in an accepted proof within that window (a replay); its ``ath`` is the hash of the access
token presented (resource requests); and, with nonces on, its ``nonce`` is the current one.

Nonces (sections 8 and 9) are one per server, shared by the token endpoint and the API (they
are one origin). The current nonce is replaced every ``nonce_ttl`` seconds of the server's
clock, on demand ([`DPoPVerifier.rotate_nonce()`][DPoPVerifier.rotate_nonce]), and by the fault "the
next ``count`` proofs are told to use a new nonce"
([`DPoPVerifier.demand_new_nonce()`][DPoPVerifier.demand_new_nonce]). Every answer carries the
current nonce in ``DPoP-Nonce`` while nonces are on.

Like the rest of the server's state, every method takes one lock and does no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._config import DPoPConfig

__all__ = ["DPoPRefused", "DPoPVerifier", "NonceHeader", "Proof", "access_token_hash"]

_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_LONGEST_PROOF = 8192  # bytes: an RSA-4096 proof is under 2 KiB
_LONGEST_JTI = 256
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "RSA": ("e", "kty", "n"),
}
_MOST_REMEMBERED = 100_000  # jti values in the replay cache; older ones go first


class DPoPRefused(Exception):
    """A proof the server does not accept: ``invalid_dpop_proof`` or ``use_dpop_nonce``."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Proof:
    """An accepted proof: the thumbprint of its key (what tokens are bound to)."""

    jkt: str
    jti: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(token: str) -> str:
    return _b64(hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest())


def thumbprint(jwk: dict[str, Any]) -> str:
    members = _THUMBPRINT_MEMBERS[jwk["kty"]]
    if not all(isinstance(jwk.get(name), str) for name in members):
        raise DPoPRefused("invalid_dpop_proof", "the proof's jwk lacks required members")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode()).digest())


def normalized_uri(url: str) -> str | None:
    """Scheme, host, port and path of ``url``, compared as RFC 9449 section 4.3 says."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if port == {"http": 80, "https": 443}.get(scheme):
        port = None
    netloc = host if port is None else f"{host}:{port}"
    return f"{scheme}://{netloc}{parts.path or '/'}"


class DPoPVerifier:
    """Checks proofs against the server's clock and remembers what replay checks need."""

    def __init__(self, config: Callable[[], DPoPConfig], now: Callable[[], float]) -> None:
        self._config = config
        self._now = now
        self._lock = threading.Lock()
        self._nonce = secrets.token_urlsafe(16)
        self._nonce_made_at = now()
        self._demands = 0
        self._seen: dict[str, float] = {}  # jti -> iat, in insertion order
        self._stats = {
            "dpop_proofs": 0,
            "dpop_invalid_proofs": 0,
            "dpop_replays": 0,
            "dpop_nonce_demands": 0,
            "dpop_nonce_rotations": 0,
        }

    # -- nonces --------------------------------------------------------------------------

    def nonce(self) -> str | None:
        """The nonce to give out now, or None when nonces are off."""
        if not self._config().nonces:
            return None
        with self._lock:
            return self._current_nonce()

    def current_nonce(self) -> str:
        """The nonce a ``use_dpop_nonce`` answer hands out (nonces on or off)."""
        with self._lock:
            return self._current_nonce()

    def rotate_nonce(self) -> str:
        with self._lock:
            return self._rotate()

    def demand_new_nonce(self, count: int = 1) -> None:
        """The next ``count`` proofs (whatever they carry) are answered ``use_dpop_nonce`` with
        a nonce made for the occasion: a fault, and how a server demanding a new nonce every
        time looks (a large count)."""
        if not isinstance(count, int) or count < 0:
            raise ValueError("count is a number of proofs >= 0")
        with self._lock:
            self._demands = count

    def _current_nonce(self) -> str:
        if self._now() - self._nonce_made_at >= self._config().nonce_ttl:
            self._rotate()
        return self._nonce

    def _rotate(self) -> str:
        self._nonce = secrets.token_urlsafe(16)
        self._nonce_made_at = self._now()
        self._stats["dpop_nonce_rotations"] += 1
        return self._nonce

    # -- proofs --------------------------------------------------------------------------

    def check(
        self, headers: list[str], method: str, url: str, *, access_token: str | None = None
    ) -> Proof:
        """The accepted proof among ``headers`` (every ``DPoP`` line), or DPoPRefused."""
        try:
            return self._check(headers, method, url, access_token)
        except DPoPRefused as refused:
            with self._lock:
                counter = "dpop_nonce_demands" if refused.error == "use_dpop_nonce" else None
                self._stats[counter or "dpop_invalid_proofs"] += 1
            raise

    def _check(self, headers: list[str], method: str, url: str, access_token: str | None) -> Proof:
        config = self._config()
        if len(headers) != 1:
            raise _invalid("a request carries exactly one DPoP header")
        proof = headers[0].strip()
        if len(proof) > _LONGEST_PROOF or not _JWT_SHAPE.fullmatch(proof):
            raise _invalid("the DPoP header is not a JWT")
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError:
            raise _invalid("the proof's header is not readable") from None
        if header.get("typ") != "dpop+jwt":
            raise _invalid("the proof's typ must be dpop+jwt")
        algorithm = header.get("alg")
        if algorithm not in config.algorithms:
            raise _invalid(f"the proof's alg must be one of {', '.join(config.algorithms)}")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or jwk.get("kty") not in _THUMBPRINT_MEMBERS:
            raise _invalid("the proof's header needs a public jwk")
        if _PRIVATE_MEMBERS & set(jwk):
            raise _invalid("the proof's jwk holds a private key")
        try:
            key = jwt.PyJWK(jwk, algorithm=algorithm).key
            claims = jwt.decode(
                proof,
                key,
                algorithms=[algorithm],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _invalid("the proof's signature does not verify with its jwk") from None
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > _LONGEST_JTI:
            raise _invalid("the proof needs a jti")
        if claims.get("htm") != method:
            raise _invalid("the proof's htm is not this request's method")
        htu = claims.get("htu")
        if not isinstance(htu, str) or normalized_uri(htu) != normalized_uri(url):
            raise _invalid("the proof's htu is not this request's URL")
        iat = claims.get("iat")
        now = self._now()
        if isinstance(iat, bool) or not isinstance(iat, (int, float)):
            raise _invalid("the proof needs a numeric iat")
        if abs(now - iat) > config.iat_window:
            raise _invalid("the proof's iat is too far from the server's clock")
        if access_token is not None and claims.get("ath") != access_token_hash(access_token):
            raise _invalid("the proof's ath is not the hash of this access token")
        jkt = thumbprint(jwk)
        with self._lock:
            if config.nonces or self._demands:
                if self._demands:
                    self._demands -= 1
                    self._rotate()
                    raise DPoPRefused("use_dpop_nonce", "use the nonce given in DPoP-Nonce")
                if claims.get("nonce") != self._current_nonce():
                    raise DPoPRefused("use_dpop_nonce", "use the nonce given in DPoP-Nonce")
            if jti in self._seen:
                self._stats["dpop_replays"] += 1
                raise _invalid("the proof was used before (its jti is spent)")
            self._remember(jti, now, config.iat_window)
            self._stats["dpop_proofs"] += 1
        return Proof(jkt, jti)

    def _remember(self, jti: str, now: float, window: float) -> None:
        # Proofs older than the window are refused on their iat: their jti may be forgotten.
        seen = self._seen
        while seen:
            oldest, at = next(iter(seen.items()))
            if at >= now - 2 * window and len(seen) < _MOST_REMEMBERED:
                break
            del seen[oldest]
        seen[jti] = now

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def reset_stats(self) -> None:
        with self._lock:
            for name in self._stats:
                self._stats[name] = 0


def _invalid(description: str) -> DPoPRefused:
    return DPoPRefused("invalid_dpop_proof", description)


class NonceHeader:
    """Adds the current ``DPoP-Nonce`` to every answer while nonces are on (RFC 9449 8.2 and
    9: a server may hand out its next nonce in any answer)."""

    def __init__(self, app: ASGIApp, verifier: DPoPVerifier) -> None:
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_nonce(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                nonce = self.verifier.nonce()
                if nonce is not None and not any(name == b"dpop-nonce" for name, _ in headers):
                    headers.append((b"dpop-nonce", nonce.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_nonce)
