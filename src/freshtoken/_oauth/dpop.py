"""DPoP (RFC 9449): the client's key, its proofs, and the servers' nonces. No I/O.

Where the key lives. A DPoP-bound access token (and a public client's refresh token) works
only with the key it was bound to, so the key is *part of the tokens*: ``TokenSet.dpop_key``,
stored with them by every store, read back by every process that shares the store. A fleet
therefore signs with one key without being told it, and a refresh always presents the key
the refresh token was bound to. ``TokenManager(dpop=...)`` says which key new tokens are
bound to (a [`DPoPKey`][], or an algorithm name: "whatever key is stored, or a new one of
this algorithm"); a manager given a key refuses to refresh tokens bound to another.

What the pieces do:

* [`DPoPKey`][] signs proofs (ES256, EdDSA or RS256). Its repr and its errors show the
  algorithm and the RFC 7638 thumbprint, never the private key.
* [`Nonces`][] remembers the last ``DPoP-Nonce`` of each origin (authorization server and
  resource servers alike), refusing values that are not RFC 9449 nonces.
* [`DPoP`][] is a manager's DPoP configuration: the key policy and the nonce cache.
  [`DPoP.token_request()`][DPoP.token_request] is the token endpoint exchange (sign, send, on
  ``use_dpop_nonce`` sign again with the new nonce, once) as a sans-I/O generator. What a
  resource request sends and how it answers a nonce demand is the request's ``ResourceCall``
  (``freshtoken/_engine/resource.py``), for Bearer and DPoP alike.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, TypeAlias
from urllib.parse import urlsplit

from .._core.challenges import HeaderValues, parse_challenges
from .._core.dpop_key import (
    ALGORITHMS,
    DPoPAlgorithm,
    DPoPKey,
    _algorithms,
    access_token_hash,
    target_uri,
)
from .._core.policy import default_port, read_json
from ..errors import DPoPError

if TYPE_CHECKING:
    import httpx

    from .._core.tokens import TokenSet

__all__ = [
    "ALGORITHMS",
    "DPoP",
    "DPoPAlgorithm",
    "DPoPKey",
    "Nonces",
    "access_token_hash",
    "nonce_demanded",
    "target_uri",
]

# RFC 9449 section 8.1: nonce = 1*NQCHAR, printable ASCII less the space, '"' and '\'.
_NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
LONGEST_NONCE = 512  # characters; nonces are a few dozen: more is a broken or hostile server


# -- nonces ---------------------------------------------------------------------------------

OriginKey: TypeAlias = tuple[str, str, int]


@functools.lru_cache(maxsize=1024)
def origin_key(url: str) -> OriginKey:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or default_port(scheme)


class Nonces:
    """The last ``DPoP-Nonce`` each origin gave, for the proofs sent there next.

    A value that is not an RFC 9449 nonce (empty, over ``LONGEST_NONCE`` characters, a space,
    a quote, a control character, non-ASCII) is not remembered: it would go out in every proof
    to that origin. Bounded: a client of many origins forgets all of them now and then.
    """

    __slots__ = ("_by_origin",)

    def __init__(self) -> None:
        self._by_origin: dict[OriginKey, str] = {}

    def get(self, origin: OriginKey) -> str | None:
        return self._by_origin.get(origin)

    def learn(self, origin: OriginKey, value: str | None) -> str | None:
        """Remember ``value`` (a response's ``DPoP-Nonce``) for ``origin``; the nonce, or
        None when it is not a usable one."""
        if value is None or not is_nonce(value):
            return None
        if self._by_origin.get(origin) != value:
            if len(self._by_origin) >= 1024:
                self._by_origin.clear()
            self._by_origin[origin] = value  # one dict store: atomic for the sharing threads
        return value

    def __repr__(self) -> str:
        return f"Nonces(origins={len(self._by_origin)})"


def is_nonce(value: str) -> bool:
    return len(value) <= LONGEST_NONCE and _NONCE.fullmatch(value) is not None


def nonce_demanded(status: int, www_authenticate: HeaderValues) -> bool:
    """Is this resource response RFC 9449 section 9's "use this nonce" (401 with a DPoP
    challenge whose error is ``use_dpop_nonce``)?"""
    return status == 401 and any(
        challenge.scheme == "dpop" and challenge.param("error") == "use_dpop_nonce"
        for challenge in parse_challenges(www_authenticate)
    )


def _token_endpoint_demands_nonce(response: httpx.Response) -> bool:
    # RFC 9449 section 8: 400 with error use_dpop_nonce; some servers say it with a 401.
    if response.status_code not in (400, 401):
        return False
    document, _ = read_json(response.content)
    return isinstance(document, dict) and document.get("error") == "use_dpop_nonce"


# -- a manager's configuration --------------------------------------------------------------


class DPoP:
    """A manager's DPoP: which key new tokens are bound to, and the servers' nonces.

    ``key`` is a [`DPoPKey`][] (tokens must be bound to it) or an algorithm name (tokens
    keep the key stored with them; a key of that algorithm is made for tokens acquired from
    nothing, once per manager).
    """

    __slots__ = ("_generated", "_mutex", "algorithm", "key", "nonces")

    def __init__(self, key: DPoPKey | DPoPAlgorithm) -> None:
        if isinstance(key, DPoPKey):
            self.key: DPoPKey | None = key
            self.algorithm: DPoPAlgorithm = key.algorithm
        elif key in ALGORITHMS:
            _algorithms()  # fail now, not at the first refresh, when cryptography is missing
            self.key = None
            self.algorithm = key
        else:
            raise ValueError(
                f"dpop must be a DPoPKey or one of {', '.join(ALGORITHMS)}, not {key!r}"
            )
        self.nonces = Nonces()
        self._generated: DPoPKey | None = None
        self._mutex = threading.Lock()

    def key_for(self, current: TokenSet | None) -> DPoPKey:
        """The key a token request for ``current`` must be signed with."""
        bound = None if current is None else current.dpop_key
        if bound is not None:
            self.check(bound)
            return bound
        if self.key is not None:
            return self.key
        with self._mutex:
            if self._generated is None:
                self._generated = DPoPKey.generate(self.algorithm)
            return self._generated

    def check(self, bound: DPoPKey | None) -> None:
        """Refuse tokens bound to another key than the one this manager was given."""
        if bound is not None and self.key is not None and bound != self.key:
            raise DPoPError(
                "dpop_key_mismatch",
                f"the stored tokens are bound to DPoP key {bound.thumbprint}, but this manager "
                f"was given {self.key.thumbprint}: pass the key they were bound to, or "
                f"dpop={self.algorithm!r} to use whichever key is stored, or log in again",
            )

    def token_request(
        self, request: httpx.Request, key: DPoPKey, clock: Callable[[], float]
    ) -> Generator[httpx.Request, httpx.Response, httpx.Response]:
        """Send ``request`` (to a token endpoint) with a proof; when the server answers
        ``use_dpop_nonce`` with a new nonce, once more with a new proof carrying it. Returns
        the last answer, which the caller reads as any token answer."""
        url = str(request.url)
        origin = origin_key(url)
        for attempt in (1, 2):
            sent = self.nonces.get(origin)
            request.headers["DPoP"] = key.proof(request.method, url, now=clock(), nonce=sent)
            response: httpx.Response = yield request
            given = self.nonces.learn(origin, response.headers.get("DPoP-Nonce"))
            new_nonce = given is not None and given != sent
            if not (attempt == 1 and new_nonce and _token_endpoint_demands_nonce(response)):
                return response
        raise AssertionError("unreachable")  # pragma: no cover

    def __repr__(self) -> str:
        key = self.key if self.key is not None else f"stored or new {self.algorithm}"
        return f"DPoP({key}, {self.nonces!r})"
