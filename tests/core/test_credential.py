"""The credential's state machine, stepped by hand: decisions and landings, no I/O, no threads.

Each test states one rule of ``freshtoken._core.credential`` (its module docstring numbers them)
and walks the state through it with explicit wall and monotonic times.
"""

from __future__ import annotations

import dataclasses

import pytest

from freshtoken import RefreshFailed, RefreshPolicy, RetryPolicy, SessionExpired, TokenSet
from freshtoken._core.credential import (
    BUSY_RETRY,
    FRESH,
    Adopted,
    Busy,
    Cleared,
    CredentialState,
    Expired,
    Fail,
    Failed,
    Force,
    Job,
    Loaded,
    Pass,
    Refreshed,
    Replace,
    Rules,
    Use,
    View,
    Wait,
)
from freshtoken._engine.flight import Flight
from freshtoken.errors import StoreError
from freshtoken.stores import StoredTokens

NOW = 1_000_000.0
RULES = Rules(
    RefreshPolicy(leeway=30, window_fraction=0.25, min_interval=1.0),
    RetryPolicy(attempts=3, initial=1.0, multiplier=2.0, maximum=10.0, jitter=0.0),
    can_acquire=False,
    lock_timeout=30.0,
)
ACQUIRING = Rules(RULES.refresh, RULES.retry, can_acquire=True, lock_timeout=30.0)


def tokens(name: str, lifetime: float = 60.0, at: float = NOW) -> TokenSet:
    return TokenSet(name, refresh_token=f"r-{name}", expires_at=at + lifetime, obtained_at=at)


def stored(name: str, generation: int = 1, **options: float) -> StoredTokens:
    return StoredTokens(tokens(name, **options), generation)


def known(name: str = "a0", **options: float) -> CredentialState:
    state = CredentialState(Flight)
    state.set_tokens(tokens(name, **options), RULES)
    return state


def fast_of(state: CredentialState) -> View | None:
    """Read through a call, so that mypy does not keep an earlier narrowing of the field."""
    return state.fast


def started(decision: object) -> Job:
    assert isinstance(decision, (Use, Wait))
    assert decision.start is not None
    return decision.start


def test_fresh_tokens_are_used_and_published_for_the_lock_free_path() -> None:
    """Rule 2: FRESH tokens are used; ``fast`` carries them with their schedule."""
    state = known()
    decision = state.decide(FRESH, RULES, NOW + 10, 0.0)
    assert decision == Use(state.view.tokens)  # type: ignore[union-attr]
    assert state.fast is state.view
    assert state.fast is not None
    assert state.fast.due_at == NOW + 45


def test_stale_tokens_are_used_while_one_background_flight_starts() -> None:
    """Rule 3: the first caller on a STALE token starts a background flight and goes on."""
    state = known()
    first = state.decide(FRESH, RULES, NOW + 50, 0.0)
    job = started(first)
    assert isinstance(first, Use)
    assert first.tokens.access_token == "a0"
    assert job.background
    assert not job.reload_only
    again = state.decide(FRESH, RULES, NOW + 50, 0.0)
    assert again == Use(first.tokens)  # no second flight, no waiting


def test_expired_tokens_make_callers_wait_for_one_flight() -> None:
    """Rule 4: EXPIRED: the first caller starts a flight, the next ones wait for the same."""
    state = known()
    first = state.decide(FRESH, RULES, NOW + 61, 0.0)
    job = started(first)
    assert isinstance(first, Wait)
    assert not job.background
    second = state.decide(FRESH, RULES, NOW + 61, 0.0)
    assert second == Wait(first.flight)
    result, error = state.land(job, Refreshed(stored("a1", 2, at=NOW + 61)), RULES, 0.0)
    assert error is None
    assert result is not None
    assert result.access_token == "a1"
    assert state.flight is None
    assert state.decide(FRESH, RULES, NOW + 62, 0.5) == Use(result)


def test_the_floor_keeps_an_instantly_expiring_token_in_use() -> None:
    """Rule 2: ``expires_in: 0`` is refreshed once per min_interval, not once per request."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 61, 10.0))
    state.land(job, Refreshed(stored("a1", 2, lifetime=0, at=NOW + 61)), RULES, 10.0)
    assert state.decide(FRESH, RULES, NOW + 61.5, 10.5) == Use(state.view.tokens)  # type: ignore[union-attr]
    after_floor = state.decide(FRESH, RULES, NOW + 62, 11.0)
    assert isinstance(after_floor, Wait)
    assert after_floor.start is not None


def test_a_failure_while_stale_keeps_the_old_token_and_throttles_background_flights() -> None:
    """Rule 3: after a failed background attempt, no new one before the backoff ends."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 50, 0.0))
    _, error = state.land(job, Failed(RefreshFailed("server_error"), gave_up=False), RULES, 0.0)
    assert isinstance(error, RefreshFailed)
    assert state.decide(FRESH, RULES, NOW + 50, 0.5) == Use(state.view.tokens)  # type: ignore[union-attr]
    assert started(state.decide(FRESH, RULES, NOW + 50, 1.0)).background


def test_expired_callers_wait_out_the_rest_of_a_background_failures_backoff() -> None:
    """Rule 4: the next flight starts with the backoff left, and callers wait for it."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 50, 0.0))
    state.land(job, Failed(RefreshFailed("server_error"), gave_up=False), RULES, 0.0)
    decision = state.decide(FRESH, RULES, NOW + 61, 0.25)
    assert isinstance(decision, Wait)
    assert started(decision).delay == pytest.approx(0.75)


def test_after_a_flight_that_gave_up_callers_fail_at_once_until_the_backoff_ends() -> None:
    """Rule 4: no request per caller while the token endpoint is failing."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 61, 0.0))
    failure = RefreshFailed("server_error", status=500)
    state.land(job, Failed(failure, gave_up=True), RULES, 0.0)
    decision = state.decide(FRESH, RULES, NOW + 61, 0.5)
    assert isinstance(decision, Fail)
    assert decision.error is not failure
    assert str(decision.error) == str(failure)
    assert isinstance(state.decide(FRESH, RULES, NOW + 61, 1.0), Wait)


def test_a_retry_after_beyond_the_maximum_fails_fast_until_it_has_passed() -> None:
    """Rule 4: Retry-After: 3600 is honoured without anyone sleeping through it."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 61, 0.0))
    slow_down = RefreshFailed("slow_down", status=429, retry_after=3600)
    state.land(job, Failed(slow_down, gave_up=True), RULES, 0.0)
    assert isinstance(state.decide(FRESH, RULES, NOW + 61, 3599.0), Fail)
    assert isinstance(state.decide(FRESH, RULES, NOW + 61, 3600.0), Wait)


def test_backoff_runs_on_the_monotonic_clock_whatever_the_wall_clock_does() -> None:
    """A wall clock stepped back an hour does not stretch a one-second backoff."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 61, 0.0))
    state.land(job, Failed(RefreshFailed("server_error"), gave_up=True), RULES, 0.0)
    stepped_back = NOW + 61 - 3600 + 3601  # wall: back an hour, then on; still expired
    assert isinstance(state.decide(FRESH, RULES, stepped_back, 1.0), Wait)


def test_a_rejection_of_an_older_token_is_answered_with_the_current_one() -> None:
    """Rule 6 (invariant 5): no refresh for a 401 that an older token got."""
    state = known("a1")
    decision = state.decide(Replace(tokens("a0")), RULES, NOW, 0.0)
    assert isinstance(decision, Use)
    assert decision.tokens.access_token == "a1"
    assert decision.start is None


def test_rejections_of_fresh_tokens_back_off_and_are_passed_to_the_caller() -> None:
    """Rule 6: an API that rejects every token gets a few refreshes, not one per request."""
    state = known("a0")
    refreshes = 0
    mono = 0.0
    for step in range(200):  # a rejected request every 0.1 s for 20 s
        mono = step * 0.1
        current = state.view.tokens  # type: ignore[union-attr]
        decision = state.decide(Replace(current), RULES, NOW, mono)
        if isinstance(decision, Pass):
            continue
        job = started(decision)
        refreshes += 1
        state.land(job, Refreshed(stored(f"a{refreshes}", refreshes + 1)), RULES, mono)
    # Backoffs of 1, 2, 4, 8 s after the first: refreshes at 0, 1, 3, 7, 15 s.
    assert refreshes == 5


def test_a_quiet_spell_resets_the_rejection_backoff() -> None:
    """Rule 6: a token that worked for a while is refreshed at once when it is rejected."""
    state = known("a0")
    job = started(state.decide(Replace(tokens("a0")), RULES, NOW, 0.0))
    state.land(job, Refreshed(stored("a1", 2)), RULES, 0.0)
    assert isinstance(state.decide(Replace(tokens("a1")), RULES, NOW, 0.5), Pass)
    later = state.decide(Replace(tokens("a1")), RULES, NOW, 2.0)
    assert isinstance(later, Wait)
    assert later.start is not None
    assert state.rejections == 0


def test_no_tokens_and_no_way_to_acquire_fails_without_io() -> None:
    """Rule 5: SessionExpired("no_tokens"), no flight."""
    state = CredentialState(Flight)
    state.set_tokens(None, RULES)
    decision = state.decide(FRESH, RULES, NOW, 0.0)
    assert isinstance(decision, Fail)
    assert isinstance(decision.error, SessionExpired)
    assert decision.error.error == "no_tokens"
    assert state.flight is None


def test_a_refused_acquisition_is_not_retried_per_caller() -> None:
    """Rule 5: client credentials answered invalid_client: no token request per API call."""
    state = CredentialState(Flight)
    state.set_tokens(None, ACQUIRING)
    job = started(state.decide(FRESH, ACQUIRING, NOW, 0.0))
    refused = SessionExpired("invalid_client", status=401)
    _, error = state.land(job, Expired(refused), ACQUIRING, 0.0)
    assert error is refused
    for mono in (0.1, 0.5, 0.9):
        decision = state.decide(FRESH, ACQUIRING, NOW, mono)
        assert isinstance(decision, Fail)
        assert decision.error is not refused
    assert isinstance(state.decide(FRESH, ACQUIRING, NOW, 1.0), Wait)


def test_unknown_state_with_a_fresh_fallback_uses_it_while_one_reload_runs() -> None:
    """Rule 1: another process saved: re-read in the background, keep serving meanwhile."""
    state = known()
    state.invalidate()
    assert fast_of(state) is None
    decision = state.decide(FRESH, RULES, NOW + 10, 0.0)
    job = started(decision)
    assert isinstance(decision, Use)
    assert job.reload_only
    assert job.background
    assert state.decide(FRESH, RULES, NOW + 10, 0.0) == Use(decision.tokens)
    state.land(job, Loaded(stored("b1", 7)), RULES, 0.0)
    assert state.known
    fast = fast_of(state)
    assert fast is not None
    assert fast.tokens.access_token == "b1"


def test_a_landing_never_overwrites_what_the_application_saved_meanwhile() -> None:
    """Rule 8: set_tokens during a flight wins; the flight's waiters decide again."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 61, 0.0))
    state.set_tokens(tokens("login"), RULES)
    result, error = state.land(job, Refreshed(stored("a1", 2)), RULES, 0.0)
    assert (result, error) == (None, None)
    assert state.view is not None
    assert state.view.tokens.access_token == "login"


def test_a_busy_lock_holds_back_background_flights_briefly() -> None:
    """Rule 3: another process refreshes: keep the old token, look again shortly."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 50, 0.0))
    assert state.land(job, Busy(), RULES, 0.0) == (None, None)
    assert state.decide(FRESH, RULES, NOW + 50, 0.05).start is None  # type: ignore[union-attr]
    assert started(state.decide(FRESH, RULES, NOW + 50, 0.2)).background


def test_store_failures_are_retried_within_a_second() -> None:
    """A store outage (Redis down) backs off at most a second, whatever the retry policy."""
    slow = Rules(RULES.refresh, RetryPolicy(initial=30, maximum=60), False, 30.0)
    state = known()
    job = started(state.decide(FRESH, slow, NOW + 61, 0.0))
    state.land(job, Failed(StoreError("down"), gave_up=False), slow, 0.0)
    assert state.not_before <= 1.0


def test_a_forced_refresh_ignores_the_floor_and_joins_a_running_flight() -> None:
    """Rule 7."""
    state = known()
    current = state.view.tokens  # type: ignore[union-attr]
    decision = state.decide(Force(current), RULES, NOW, 0.0)
    job = started(decision)
    assert isinstance(decision, Wait)
    assert state.decide(Force(current), RULES, NOW, 0.0) == Wait(decision.flight)
    state.land(job, Adopted(stored("a1", 2)), RULES, 0.0)
    assert started(state.decide(Force(tokens("a1")), RULES, NOW, 0.1)).demand == Force(tokens("a1"))


def test_a_store_cleared_by_another_process_ends_the_waiters_session() -> None:
    """A logout elsewhere during the flight: no tokens, SessionExpired("no_tokens")."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 61, 0.0))
    result, error = state.land(job, Cleared(), RULES, 0.0)
    assert result is None
    assert isinstance(error, SessionExpired)
    assert state.known
    assert state.view is None


def test_a_rejection_late_in_a_tokens_life_is_refreshed_at_once_even_during_the_backoff() -> None:
    """Rule 6: a token past the middle of its life that is rejected was probably just slow
    to arrive (a busy machine): no backoff, whatever happened before."""
    state = known("a0")
    job = started(state.decide(Replace(tokens("a0")), RULES, NOW, 0.0))
    state.land(job, Refreshed(stored("a1", 2)), RULES, 0.0)
    assert isinstance(state.decide(Replace(tokens("a1")), RULES, NOW + 10, 0.1), Pass)
    late = state.decide(Replace(tokens("a1")), RULES, NOW + 40, 0.2)  # 40 s of 60 used
    assert isinstance(late, Wait)
    assert late.start is not None
    assert not late.start.suspect


def test_a_retry_does_not_go_out_with_a_token_that_is_due_itself() -> None:
    """Rule 6: the 401 was for an older token, but the current one is STALE: the retry is the
    request's last chance, so it waits for a refresh rather than go with a dying token."""
    state = known("a1")
    decision = state.decide(Replace(tokens("a0")), RULES, NOW + 50, 0.0)
    assert isinstance(decision, Wait)
    job = started(decision)
    assert not job.background
    assert not job.suspect
    state.land(job, Refreshed(stored("a2", 3, at=NOW + 50)), RULES, 0.0)
    assert state.rejections == 0  # not a sign of fresh tokens being rejected


def test_a_request_our_own_cap_held_back_does_not_lengthen_the_backoff() -> None:
    """Rule 4: "busy" (never sent: the issuer's cap had no place for it) leaves the failure
    count alone. After many of them the next flight may start within BUSY_RETRY, and a real
    failure then backs off as if none had happened (1 s after the first, 2 s after the
    second), not 10 s as five escalations would."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 61, 0.0))
    state.land(job, Failed(RefreshFailed("server_error", status=503), gave_up=True), RULES, 0.0)
    assert state.failures == 1
    assert isinstance(state.decide(FRESH, RULES, NOW + 61, 0.99), Fail)
    mono = 1.0
    for _ in range(5):
        job = started(state.decide(FRESH, RULES, NOW + 61, mono))
        busy = RefreshFailed("busy", "no place under the cap", answer_lost=False)
        _, error = state.land(job, Failed(busy, gave_up=True), RULES, mono)
        assert isinstance(error, RefreshFailed)
        assert error.error == "busy"
        assert state.failures == 1
        assert mono < state.not_before <= mono + BUSY_RETRY
        assert isinstance(state.decide(FRESH, RULES, NOW + 61, mono), Fail)  # promptly
        mono += BUSY_RETRY
    job = started(state.decide(FRESH, RULES, NOW + 61, mono))
    state.land(job, Failed(RefreshFailed("server_error", status=503), gave_up=True), RULES, mono)
    assert state.failures == 2
    assert state.not_before == pytest.approx(mono + 2.0)


def test_after_a_flight_that_gave_up_the_next_one_is_a_single_attempt_probe() -> None:
    """Rule 4: during an outage a caller waits for one answer, not for a flight's retries and
    backoffs; a success ends the outage and flights get their attempts again."""
    state = known()
    first = started(state.decide(FRESH, RULES, NOW + 61, 0.0))
    assert not first.probe
    state.land(first, Failed(RefreshFailed("server_error", status=503), gave_up=True), RULES, 0.0)
    probe = started(state.decide(FRESH, RULES, NOW + 61, 1.0))
    assert probe.probe
    state.land(probe, Refreshed(stored("a1", 2, at=NOW + 61)), RULES, 1.0)
    assert state.failures == 0
    later = started(state.decide(FRESH, RULES, NOW + 200, 100.0))
    assert not later.probe


def test_a_background_failure_does_not_make_a_probe() -> None:
    """One failed background attempt is a blip, not an outage: the waiting flight that follows
    has all its attempts."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 50, 0.0))
    state.land(job, Failed(RefreshFailed("server_error"), gave_up=False), RULES, 0.0)
    assert not started(state.decide(FRESH, RULES, NOW + 61, 1.0)).probe


def test_a_success_through_the_same_refresher_ends_the_backoff() -> None:
    """Rule 4: the provider is back (another credential sharing the refresher refreshed after
    this one failed): callers stop failing at once and a flight starts now."""
    state = known()
    job = started(state.decide(FRESH, RULES, NOW + 61, 0.0))
    state.land(job, Failed(RefreshFailed("server_error", status=503), gave_up=True), RULES, 5.0)
    assert isinstance(state.decide(FRESH, RULES, NOW + 61, 5.5), Fail)
    before = dataclasses.replace(RULES, recovered_at=4.0)  # a success before the failure
    assert isinstance(state.decide(FRESH, before, NOW + 61, 5.5), Fail)
    back = dataclasses.replace(RULES, recovered_at=5.2)
    decision = state.decide(FRESH, back, NOW + 61, 5.5)
    assert isinstance(decision, Wait)
    assert started(decision).delay == 0.0
