"""One resource request's auth decisions, answer by answer, for Bearer and DPoP alike. No I/O.

Every integration (httpx, requests, aiohttp, the BFF proxy) is a thin loop over a
[`ResourceCall`][]: it asks the manager for tokens, sends what [`ResourceCall.first()`][] says,
hands each answer to [`ResourceCall.answer()`][], and does what comes back:

    Attempt(tokens, authorization, proof)   send the request (again) with these headers
    Rejected(tokens)                        the API rejected these tokens: ask the manager
                                            (``handle_rejection``) and give its answer to
                                            ``replaced()``, which says what to send, if anything
    None                                    the answer is the caller's

The rules (DESIGN.md invariants 4 and 5), in order:

1. An answer that does not reject the token is the caller's: 2xx, a redirect, a 403
   ``insufficient_scope``, a 401 whose challenges are another scheme's or name another error.
2. DPoP (RFC 9449 section 9): a 401 ``use_dpop_nonce`` with a nonce the proof did not carry is
   sent again with a new proof that carries it, once per request. It is not a rejection of the
   token: no refresh, and it is not counted among the token sends. A redirect hop the library
   followed with the first request's proof shares that one extra send.
3. A rejection of the token sent goes to the manager, which decides (``_core/credential.py``,
   rule 6): a token it already replaced (another request refreshed while this one was in
   flight) is answered with the newest token, without a refresh; only a rejection of the
   current token starts (or joins) a refresh; a young token rejected again while the
   rejection backoff runs is passed back.
4. A retry never carries a token this request already sent, and a request sends at most
   ``MOST_SENDS`` tokens in all: a later rejection is the caller's answer. So a retry that
   waited in a connection pool until its token expired, and whose token was replaced
   meanwhile, goes once more with the newest one, and nothing loops.
5. A Bearer request's first attempt is its tokens' ``authorization`` and nothing else, so a
   driver may send it before it makes the call, and make the call (``first()`` with the same
   tokens) only when an answer is not settled ([`bearer_settled()`][bearer_settled]): the hot
   path then builds no call at all. A DPoP request's call signs its first proof: it comes first.
6. A driver that can see the moment a Bearer retry leaves its connection pool (httpx's async
   flow does) may put the newest tokens in it then ([`ResourceCall.swapped()`][]): the same
   send, with tokens that did not age in the queue.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

from .._core.challenges import HeaderValues
from .._core.tokens import TokenSet
from .._oauth.dpop import DPoP, OriginKey, access_token_hash, nonce_demanded, origin_key

__all__ = ["MOST_SENDS", "Attempt", "CallRules", "Rejected", "ResourceCall", "bearer_settled"]

MOST_SENDS = 3
"""Tokens one request sends at most: the first, and two retries with newer tokens."""


class Attempt(NamedTuple):
    """Send the request with ``authorization`` (and the ``DPoP`` header ``proof``, or none)."""

    tokens: TokenSet
    authorization: str
    proof: str | None


_new_tuple = tuple.__new__  # an Attempt without NamedTuple's __new__: the hot path makes one


class Rejected(NamedTuple):
    """The API rejected ``tokens``: ask the manager what to retry with."""

    tokens: TokenSet


class CallRules(Protocol):
    """What a call reads of its manager (a [`TokenManager`][freshtoken.TokenManager])."""

    @property
    def refresh_statuses(self) -> frozenset[int]: ...

    @property
    def dpop(self) -> DPoP | None: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    def wants_refresh(self, status: int, www_authenticate: HeaderValues) -> bool: ...


class ResourceCall:
    """What one request to a resource server sends, and what each of its answers leads to.

    Made by [`TokenManager.call()`][freshtoken.TokenManager.call] once per request; not shared
    between requests (a request's attempts are sequential, so it needs no lock). ``rules`` is
    the manager: its ``refresh_statuses`` and ``wants_refresh()`` say which answers reject the
    token, its ``dpop`` signs proofs and keeps the servers' nonces.
    """

    __slots__ = (
        "_ath",
        "_dpop",
        "_origin",
        "_proof_retried",
        "_rules",
        "_sent",
        "_sent_nonce",
        "_url",
        "method",
        "tokens",
    )

    def __init__(self, method: str, url: object, rules: CallRules) -> None:
        self.method = method
        self._url = url  # a str, or a URL object whose str() is one: read only when needed
        self._rules = rules
        self._sent: tuple[str, ...] = ()  # access tokens sent, in order: never one twice
        self.tokens: TokenSet | None = None
        self._dpop = rules.dpop
        if self._dpop is not None:  # set only for DPoP: a Bearer call is made per request, cheaply
            self._url = url = str(url)
            self._origin: OriginKey = origin_key(url)
            self._proof_retried = False
            self._sent_nonce: str | None = None
            self._ath: str | None = None

    @property
    def url(self) -> str:
        """The URL the proofs name: the request's, or the redirect hop's after ``hop()``."""
        return str(self._url)

    @property
    def sends(self) -> int:
        """How many tokens this request sent (nonce and redirect-hop re-sends not counted)."""
        return len(self._sent)

    @property
    def authorization(self) -> str | None:
        """The Authorization value of the tokens sent last (None before the first)."""
        return None if self.tokens is None else self.tokens.authorization

    def first(self, tokens: TokenSet) -> Attempt:
        """The first attempt, with the tokens the manager handed out."""
        if self._sent:
            raise RuntimeError("ResourceCall.first() was called twice: one call per request")
        if self._dpop is None:  # the hot path: two tuples
            self.tokens = tokens
            self._sent = (tokens.access_token,)
            return _new_tuple(Attempt, (tokens, tokens.authorization, None))
        return self._send(tokens)

    def settled(self, status: int) -> bool:
        """Whether an answer with ``status`` is the caller's whatever its headers say (a
        driver may then skip reading them). Never for DPoP: every answer may carry a nonce."""
        return self._dpop is None and bearer_settled(self._rules, status)

    def answer(
        self, status: int, www_authenticate: HeaderValues, nonce: str | None = None
    ) -> Attempt | Rejected | None:
        """What an answer to the last attempt leads to: its status, every ``WWW-Authenticate``
        line and its ``DPoP-Nonce``."""
        tokens = self.tokens
        if tokens is None:
            raise RuntimeError("ResourceCall.answer() before first()")
        if self._dpop is not None:
            given = self._learn(nonce)
            if nonce_demanded(status, www_authenticate):
                # Another nonce than the proof carried (a concurrent request may have taught
                # it to the cache already): one retry with it. The same one: no use retrying.
                if given is not None and given != self._sent_nonce and self._retry_proof():
                    return self._sign(tokens)
                return None
        rules = self._rules
        if status not in rules.refresh_statuses or not rules.wants_refresh(
            status, www_authenticate
        ):
            return None
        if len(self._sent) >= MOST_SENDS:
            return None
        return Rejected(tokens)

    def replaced(self, tokens: TokenSet | None) -> Attempt | None:
        """The manager's answer to [`Rejected`][]: the attempt to send, or None when the
        rejection is the caller's (the manager passed it back, or those tokens were sent)."""
        if tokens is None or tokens.access_token in self._sent or len(self._sent) >= MOST_SENDS:
            return None
        return self._send(tokens)

    def swapped(self, tokens: TokenSet) -> Attempt | None:
        """A Bearer retry that waited to be sent (in a connection pool) while its tokens were
        replaced: ``tokens`` go in their place, as the same send. None when ``tokens`` were sent
        already, or for DPoP (the proof names its token; a driver signs no proof late)."""
        if self._dpop is not None or not self._sent or tokens.access_token in self._sent:
            return None
        self._sent = (*self._sent[:-1], tokens.access_token)
        self.tokens = tokens
        return Attempt(tokens, tokens.authorization, None)

    def hop(self, method: str, url: str, status: int, nonce: str | None = None) -> Attempt | None:
        """A redirect hop of the same origin that the HTTP library followed with our token but
        with the first request's proof (or none) answered ``status``: sign for the hop from now
        on and send it again with a proof of its own, once. Bearer requests: None."""
        if self._dpop is None or self.tokens is None or status != 401:
            return None
        if not self._retry_proof():
            return None
        self.method = method
        self._url = url
        self._origin = origin_key(url)
        self._learn(nonce)
        return self._sign(self.tokens)

    def _send(self, tokens: TokenSet) -> Attempt:
        self._sent += (tokens.access_token,)
        if self.tokens is None or tokens.access_token != self.tokens.access_token:
            self._ath = None
        self.tokens = tokens
        return self._sign(tokens)

    def _sign(self, tokens: TokenSet) -> Attempt:
        """Headers for an attempt: a new proof each time, none for a token the server issued
        as a Bearer token (or without DPoP)."""
        key = tokens.dpop_key
        if self._dpop is None or key is None or tokens.token_type.lower() != "dpop":
            return Attempt(tokens, tokens.authorization, None)
        if self._ath is None:
            self._ath = access_token_hash(tokens.access_token)
        self._sent_nonce = nonce = self._dpop.nonces.get(self._origin)
        now = self._rules.clock()
        proof = key.proof(self.method, str(self._url), now=now, nonce=nonce, ath=self._ath)
        return Attempt(tokens, tokens.authorization, proof)

    def _learn(self, nonce: str | None) -> str | None:
        assert self._dpop is not None
        return self._dpop.nonces.learn(self._origin, nonce)

    def _retry_proof(self) -> bool:
        if self._proof_retried:
            return False
        self._proof_retried = True
        return True

    def __repr__(self) -> str:
        scheme, host, port = origin_key(self.url)  # no path, query or user: nothing secret
        kind = "Bearer" if self._dpop is None else "DPoP"
        return f"ResourceCall({self.method} {scheme}://{host}:{port}, {kind}, sends={self.sends})"


def bearer_settled(rules: CallRules, status: int) -> bool:
    """[`ResourceCall.settled()`][ResourceCall.settled] of a Bearer request (``rules.dpop`` is
    None) before its call is made: a driver that sent the tokens' ``authorization`` on its own
    makes the call only for an answer this is False for (rule 5)."""
    return status not in rules.refresh_statuses
