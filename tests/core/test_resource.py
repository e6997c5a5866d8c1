"""ResourceCall: what one resource request sends, and what each answer leads to. No network.

Each test steps a call by hand, as an integration does: ``first()``, then ``answer()`` per
answer, and the manager's answer to a ``Rejected`` given to ``replaced()``. The manager is a
real TokenManager over a FunctionRefresher on a manual clock, so that whether a rejection
refreshes is the manager's own rule. Every integration drives the same object over real HTTP
in tests/behaviour.
"""

from __future__ import annotations

import itertools
from typing import Any

import jwt
import pytest

from freshtoken import Clock, DPoPKey, FunctionRefresher, ManualClock, TokenManager, TokenSet
from freshtoken._engine.resource import MOST_SENDS, Attempt, Rejected, ResourceCall
from freshtoken._oauth.dpop import DPoP

URL = "https://api.example/items?secret-query=1"
INVALID = 'Bearer error="invalid_token"'
NONCE_401 = 'DPoP error="use_dpop_nonce", error_description="new nonce"'
DPOP_INVALID = 'DPoP error="invalid_token"'


class Counting:
    """A refresher's function that issues a1, a2, ... and counts its calls."""

    def __init__(self, clock: ManualClock, token_type: str = "Bearer") -> None:
        self.clock = clock
        self.calls = 0
        self.token_type = token_type
        self._numbers = itertools.count(1)

    def __call__(self, current: TokenSet | None) -> dict[str, Any]:
        self.calls += 1
        return {
            "access_token": f"a{next(self._numbers)}",
            "token_type": self.token_type,
            "expires_in": 300,
            "refresh_token": "r",
        }


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000_000.0)


@pytest.fixture
def endpoint(clock: ManualClock) -> Counting:
    return Counting(clock)


@pytest.fixture
def manager(clock: ManualClock, endpoint: Counting) -> TokenManager:
    made = TokenManager(FunctionRefresher(endpoint), clock=clock)
    # Half-way through its life: a rejection of it is not "suspect" (rule 6's young tokens).
    made.set_tokens(
        TokenSet("a0", refresh_token="r", expires_at=clock() + 150, obtained_at=clock() - 150)
    )
    return made


def access(attempt: Attempt | Rejected | None) -> str:
    assert isinstance(attempt, Attempt), attempt
    return attempt.tokens.access_token


def rejection(call: ResourceCall, manager: TokenManager) -> Attempt | None:
    """A 401 invalid_token for the last attempt, answered as a driver does."""
    decision = call.answer(401, INVALID)
    if not isinstance(decision, Rejected):
        assert decision is None, decision
        return None
    return call.replaced(manager.handle_rejection(decision.tokens))


def test_the_first_attempt_sends_the_tokens_handed_out(manager: TokenManager) -> None:
    """The first attempt carries the manager's tokens as they are; no proof without DPoP."""
    call = manager.call("GET", URL)
    attempt = call.first(manager.get_tokens())
    assert attempt == Attempt(manager.get_tokens(), "Bearer a0", None)
    assert call.sends == 1
    assert call.authorization == "Bearer a0"
    with pytest.raises(RuntimeError):
        call.first(manager.get_tokens())


@pytest.mark.parametrize(
    ("status", "challenge"),
    [
        (200, None),
        (204, INVALID),  # a challenge on a success says nothing
        (302, None),
        (403, 'Bearer error="insufficient_scope", scope="admin"'),
        (404, None),
        (500, None),
        (401, 'Bearer error="invalid_request"'),
        (401, 'Bearer error="insufficient_scope"'),
    ],
)
def test_answers_that_do_not_reject_the_token_are_the_callers(
    manager: TokenManager, endpoint: Counting, status: int, challenge: str | None
) -> None:
    """Successes, redirects, other errors, 403 insufficient_scope and a 401 naming another
    error are passed on untouched: no retry, nothing asked of the manager."""
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    assert call.answer(status, challenge) is None
    assert call.sends == 1
    assert endpoint.calls == 0
    assert manager.stats.snapshot()["retries"] == 0


def test_settled_says_when_the_headers_need_no_reading(manager: TokenManager) -> None:
    """A driver may skip reading challenges for a status that cannot reject the token."""
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    assert call.settled(200)
    assert call.settled(403)
    assert not call.settled(401)


def test_a_rejection_of_the_current_token_refreshes_then_retries(
    manager: TokenManager, endpoint: Counting
) -> None:
    """401 invalid_token for the current token: the manager refreshes, the request goes
    again with the new token."""
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    decision = call.answer(401, INVALID)
    assert decision == Rejected(call.tokens)  # type: ignore[arg-type]
    assert access(call.replaced(manager.handle_rejection(decision.tokens))) == "a1"
    assert endpoint.calls == 1
    assert call.sends == 2


def test_a_401_without_error_code_rejects_too(manager: TokenManager) -> None:
    """RFC 6750: a challenge with no error code (no credentials seen) rejects the token."""
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    assert isinstance(call.answer(401, 'Bearer realm="api"'), Rejected)


def test_a_401_for_a_replaced_token_retries_with_the_newest_without_a_refresh(
    manager: TokenManager, endpoint: Counting
) -> None:
    """The token was replaced while the request was in flight (another request refreshed):
    the retry carries the newest token and nothing is refreshed for it."""
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    manager.refresh()  # another request's refresh lands meanwhile: a1
    assert endpoint.calls == 1
    assert access(rejection(call, manager)) == "a1"
    assert endpoint.calls == 1
    assert manager.stats.snapshot()["retries"] == 1


def test_a_retry_rejected_after_its_token_was_replaced_goes_once_more_with_the_newest(
    manager: TokenManager, endpoint: Counting, clock: ManualClock
) -> None:
    """The storm case: the retry waited (in a pool) until its token was replaced too; it goes
    a third time with the newest token, and only the first rejection refreshed."""
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    assert access(rejection(call, manager)) == "a1"
    clock.advance(200)
    manager.refresh()  # a2 replaces a1 while the retry waits
    assert access(rejection(call, manager)) == "a2"
    assert endpoint.calls == 2  # the rejection's refresh and the one that landed meanwhile
    assert call.sends == MOST_SENDS


def test_a_request_sends_at_most_three_tokens(
    manager: TokenManager, endpoint: Counting, clock: ManualClock
) -> None:
    """Each rejection of the current token may refresh, but the request sends at most
    MOST_SENDS tokens: the last rejection is the caller's, and nothing is asked for it."""
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    assert access(rejection(call, manager)) == "a1"
    clock.advance(200)  # a1 is no longer young: its rejection is not suspect
    assert access(rejection(call, manager)) == "a2"
    clock.advance(200)
    assert rejection(call, manager) is None
    assert call.sends == MOST_SENDS == 3
    assert endpoint.calls == 2


def test_a_retry_still_queued_when_its_token_is_replaced_leaves_with_the_newest(
    manager: TokenManager, endpoint: Counting, clock: ManualClock
) -> None:
    """swapped(): the retry's tokens were replaced before it left the pool: the newest go in
    their place as the same send (no send more), and a rejection of them names them."""
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    assert access(rejection(call, manager)) == "a1"
    clock.advance(200)
    newest = manager.refresh()  # a2 replaces a1 while the retry waits in the pool
    swapped = call.swapped(newest)
    assert access(swapped) == "a2"
    assert call.sends == 2
    assert call.authorization == "Bearer a2"
    assert call.swapped(newest) is None  # a token sent already never goes in again
    assert call.swapped(TokenSet("a0")) is None
    decision = call.answer(401, INVALID)
    assert isinstance(decision, Rejected)
    assert decision.tokens.access_token == "a2"
    assert endpoint.calls == 2


def test_a_token_is_never_sent_twice(manager: TokenManager) -> None:
    """Whatever the manager answers, a token this request already sent is not sent again."""
    call = manager.call("GET", URL)
    first = call.first(manager.get_tokens())
    assert call.replaced(first.tokens) is None
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    assert isinstance(call.answer(401, INVALID), Rejected)
    assert access(call.replaced(TokenSet("b1"))) == "b1"
    assert call.replaced(TokenSet("a0")) is None
    assert call.replaced(TokenSet("b1")) is None


def test_a_passed_rejection_is_the_callers_answer(manager: TokenManager) -> None:
    """The manager passes the rejection back (None): the 401 is the caller's."""
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    assert isinstance(call.answer(401, INVALID), Rejected)
    assert call.replaced(None) is None
    assert call.sends == 1


def test_a_young_token_rejected_again_is_passed_back_not_refreshed(
    clock: ManualClock, endpoint: Counting
) -> None:
    """An API that rejects freshly issued tokens: the first request refreshes once and
    retries; the new token's rejection is passed back by the manager's rejection backoff."""
    manager = TokenManager(FunctionRefresher(endpoint), clock=clock)
    manager.set_tokens(
        TokenSet("a0", refresh_token="r", expires_at=clock() + 300, obtained_at=clock())
    )
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    assert access(rejection(call, manager)) == "a1"
    assert rejection(call, manager) is None
    assert call.sends == 2
    assert endpoint.calls == 1
    stats = manager.stats.snapshot()
    assert (stats["retries"], stats["passed_rejections"]) == (1, 1)


def test_a_bearer_call_has_no_hops_to_sign(manager: TokenManager) -> None:
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    assert call.hop("GET", "https://api.example/elsewhere", 401, "n1") is None


def test_its_repr_names_no_token_and_no_path(manager: TokenManager) -> None:
    call = manager.call("GET", URL)
    call.first(manager.get_tokens())
    shown = repr(call)
    assert "a0" not in shown
    assert "secret-query" not in shown
    assert "/items" not in shown
    assert "GET https://api.example:443" in shown


# -- DPoP ---------------------------------------------------------------------------------------


def _verified(proof: str | None) -> dict[str, Any]:
    assert proof is not None
    header = jwt.get_unverified_header(proof)
    key = jwt.PyJWK(header["jwk"], algorithm=header["alg"]).key
    claims: dict[str, Any] = jwt.decode(proof, key, algorithms=[header["alg"]])
    return claims


class DPoPIssuer:
    """A refresher that signs with the manager's DPoP key (as OAuth2Refresher does): d1, d2..."""

    can_acquire = False

    def __init__(self) -> None:
        self._numbers = itertools.count(1)

    def refresh(
        self,
        current: TokenSet | None,
        clock: Clock,
        *,
        deadline: float | None = None,
        dpop: DPoP | None = None,
    ) -> TokenSet:
        assert dpop is not None
        return TokenSet(
            f"d{next(self._numbers)}",
            token_type="DPoP",
            refresh_token="r",
            expires_at=clock() + 300,
            obtained_at=clock() - 150,  # not young: no rejection backoff in these tests
            dpop_key=dpop.key_for(current),
        )


@pytest.fixture
def dpop_manager(clock: ManualClock) -> TokenManager:
    key = DPoPKey.generate()
    made = TokenManager(DPoPIssuer(), clock=clock, dpop=key)
    made.set_tokens(
        TokenSet(
            "d0",
            token_type="DPoP",
            refresh_token="r",
            expires_at=clock() + 150,
            obtained_at=clock() - 150,
            dpop_key=key,
        )
    )
    return made


def test_each_dpop_attempt_carries_a_new_proof_for_its_request(
    dpop_manager: TokenManager, clock: ManualClock
) -> None:
    """A proof names the method and URL (without query), the token's hash and the time."""
    call = dpop_manager.call("POST", URL)
    attempt = call.first(dpop_manager.get_tokens())
    assert attempt.authorization == "DPoP d0"
    claims = _verified(attempt.proof)
    assert (claims["htm"], claims["htu"]) == ("POST", "https://api.example/items")
    assert claims["iat"] == int(clock())
    assert "ath" in claims
    assert "nonce" not in claims


def test_a_nonce_demand_is_retried_once_and_never_refreshes(dpop_manager: TokenManager) -> None:
    """use_dpop_nonce with a new nonce: one retry carrying it, the same token, not counted
    among the token sends; a second demand: the 401 is the answer."""
    call = dpop_manager.call("GET", URL)
    first = call.first(dpop_manager.get_tokens())
    retry = call.answer(401, NONCE_401, "n1")
    assert isinstance(retry, Attempt)
    assert retry.authorization == first.authorization
    assert _verified(retry.proof)["nonce"] == "n1"
    assert _verified(retry.proof)["jti"] != _verified(first.proof)["jti"]
    assert call.sends == 1
    assert call.answer(401, NONCE_401, "n2") is None
    assert dpop_manager.stats.snapshot()["retries"] == 0


def test_a_nonce_demand_without_a_new_nonce_is_not_retried(dpop_manager: TokenManager) -> None:
    """The nonce the proof carried, a hostile one, or none: nothing to retry with."""
    for given in (None, "bad nonce", "x" * 600):
        call = dpop_manager.call("GET", URL)
        call.first(dpop_manager.get_tokens())
        assert call.answer(401, NONCE_401, given) is None
    call = dpop_manager.call("GET", URL)
    call.first(dpop_manager.get_tokens())
    assert isinstance(call.answer(401, NONCE_401, "n1"), Attempt)
    again = dpop_manager.call("GET", URL)
    again.first(dpop_manager.get_tokens())  # carries n1, learnt from the other request
    assert again.answer(401, NONCE_401, "n1") is None


def test_a_nonce_on_any_answer_is_learnt_for_the_next_proofs(dpop_manager: TokenManager) -> None:
    call = dpop_manager.call("GET", URL)
    call.first(dpop_manager.get_tokens())
    assert call.answer(200, None, "n7") is None
    later = dpop_manager.call("GET", "https://api.example/other")
    assert _verified(later.first(dpop_manager.get_tokens()).proof)["nonce"] == "n7"


def test_a_rejected_dpop_token_is_replaced_after_a_nonce_retry(
    dpop_manager: TokenManager,
) -> None:
    """invalid_token after a nonce retry: the manager's new token, with a proof of its own
    (its own ``ath``); the nonce retry did not use up a token send."""
    call = dpop_manager.call("GET", URL)
    first = call.first(dpop_manager.get_tokens())
    assert isinstance(call.answer(401, NONCE_401, "n1"), Attempt)
    decision = call.answer(401, DPOP_INVALID)
    assert isinstance(decision, Rejected)
    retry = call.replaced(dpop_manager.handle_rejection(decision.tokens))
    assert access(retry) == "d1"
    assert retry is not None
    assert _verified(retry.proof)["ath"] != _verified(first.proof)["ath"]
    assert _verified(retry.proof)["nonce"] == "n1"


def test_a_dpop_proof_error_is_not_a_token_rejection(dpop_manager: TokenManager) -> None:
    call = dpop_manager.call("GET", URL)
    call.first(dpop_manager.get_tokens())
    assert call.answer(401, 'DPoP error="invalid_dpop_proof"') is None


def test_a_redirect_hop_is_signed_again_once(dpop_manager: TokenManager) -> None:
    """A hop of the same origin that got the first request's proof: one more send with a
    proof for the hop; a second hop's 401 is the answer. A hop's 200 sends nothing."""
    call = dpop_manager.call("GET", URL)
    call.first(dpop_manager.get_tokens())
    assert call.hop("GET", "https://api.example/moved", 200) is None
    hop = call.hop("GET", "https://api.example/moved", 401, "n3")
    assert isinstance(hop, Attempt)
    claims = _verified(hop.proof)
    assert (claims["htu"], claims["nonce"]) == ("https://api.example/moved", "n3")
    assert call.hop("GET", "https://api.example/again", 401, "n4") is None
    assert call.answer(401, NONCE_401, "n5") is None  # the one proof retry is spent


def test_a_bearer_token_in_a_dpop_manager_goes_without_a_proof(clock: ManualClock) -> None:
    """A server that answered Bearer despite the proof gets a Bearer request."""
    manager = TokenManager(DPoPIssuer(), clock=clock, dpop="ES256")
    manager.set_tokens(TokenSet("at", expires_at=clock() + 300, dpop_key=DPoPKey.generate()))
    attempt = manager.call("GET", URL).first(manager.get_tokens())
    assert (attempt.authorization, attempt.proof) == ("Bearer at", None)
