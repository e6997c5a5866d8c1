"""A flight's steps, driven by hand: each effect is answered (or failed) by the test, no I/O."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from freshtoken import (
    GenerationConflict,
    LockTimeout,
    ManualClock,
    RefreshFailed,
    RefreshPolicy,
    RetryPolicy,
    SessionExpired,
    StoreError,
    TokenSet,
)
from freshtoken._core.credential import (
    BUSY_RETRY,
    FRESH,
    Adopted,
    Busy,
    Cleared,
    Expired,
    Failed,
    Job,
    Loaded,
    Refreshed,
    Replace,
    Rules,
)
from freshtoken._engine.flight import Flight
from freshtoken._engine.steps import (
    Clear,
    Load,
    Lock,
    Refresh,
    Save,
    Sleep,
    Unlock,
    classify,
    flight_steps,
)
from freshtoken.stores import StoredTokens

RETRY = RetryPolicy(attempts=3, initial=1.0, maximum=10.0, jitter=0.0, timeout=30.0)
RULES = Rules(RefreshPolicy(), RETRY, can_acquire=False, lock_timeout=5.0)
CLOCK = ManualClock(1_000_000.0)


def tokens(name: str, lifetime: float = 60.0) -> TokenSet:
    now = CLOCK()
    return TokenSet(name, refresh_token=f"r-{name}", expires_at=now + lifetime, obtained_at=now)


def job(demand: Any = FRESH, **options: Any) -> Job:
    return Job(Flight(60.0), demand, version=1, **options)


Steps = Generator[Any, Any, Any]


def finish(steps: Steps, value: Any = None) -> Any:
    with pytest.raises(StopIteration) as stop:
        steps.send(value)
    return stop.value.value


def test_a_waiting_refresh_rereads_under_the_lock_then_refreshes_and_saves_fenced() -> None:
    """Load, Lock, Load, Refresh, Save(expected generation): the happy path."""
    expired = StoredTokens(tokens("a0", lifetime=-1), 4)
    steps = flight_steps(job(), RULES, CLOCK)
    assert next(steps) == Load()
    assert steps.send(expired) == Lock(5.0)
    assert steps.send(None) == Load()
    assert steps.send(expired) == Refresh(expired.tokens, 30.0)
    fresh = tokens("a1")
    assert steps.send(fresh) == Save(fresh, 4)
    assert finish(steps, StoredTokens(fresh, 5)) == Refreshed(StoredTokens(fresh, 5))


def test_tokens_another_process_saved_are_adopted_without_the_lock() -> None:
    """The first, lock-free read settles a rejection that someone else already answered."""
    newer = StoredTokens(tokens("a1"), 9)
    steps = flight_steps(job(Replace(tokens("a0"))), RULES, CLOCK)
    assert next(steps) == Load()
    assert finish(steps, newer) == Adopted(newer)


def test_a_background_flight_tries_the_lock_once_and_gives_way() -> None:
    """Background: Lock(0); a busy lock ends the flight with Busy (old token kept)."""
    now = CLOCK()
    stale = StoredTokens(TokenSet("a0", expires_at=now + 5, obtained_at=now - 55), 4)
    steps = flight_steps(job(background=True), RULES, CLOCK)
    next(steps)
    assert steps.send(stale) == Lock(0.0)
    with pytest.raises(StopIteration) as stop:
        steps.throw(LockTimeout("busy"))
    assert stop.value.value == Busy()


def test_a_permanent_failure_clears_the_store() -> None:
    """SessionExpired from the refresher: Clear, then Expired."""
    expired = StoredTokens(tokens("a0", lifetime=-1), 4)
    steps = flight_steps(job(), RULES, CLOCK)
    next(steps)
    steps.send(expired)
    steps.send(None)
    steps.send(expired)
    refused = SessionExpired("invalid_grant")
    assert steps.throw(refused) == Clear()
    assert finish(steps) == Expired(refused)


def backoff(steps: Steps, failure: BaseException, seconds: float) -> None:
    """The lock is let go for the backoff, then taken again and the store re-read."""
    assert steps.throw(failure) == Unlock()
    assert steps.send(None) == Sleep(seconds)
    assert steps.send(None) == Lock(5.0)
    assert steps.send(None) == Load()


def test_transient_failures_sleep_the_backoff_between_attempts() -> None:
    """Three attempts with 1 s and 2 s between them, then Failed(gave_up); the refresh lock is
    not held through the sleeps, and each retry presents what the store holds then."""
    expired = StoredTokens(tokens("a0", lifetime=-1), 4)
    steps = flight_steps(job(), RULES, CLOCK)
    next(steps)
    steps.send(expired)
    steps.send(None)
    steps.send(expired)
    failure = RefreshFailed("server_error", status=503)
    backoff(steps, failure, 1.0)
    assert steps.send(expired) == Refresh(expired.tokens, 30.0)
    backoff(steps, failure, 2.0)
    assert steps.send(expired) == Refresh(expired.tokens, 30.0)
    with pytest.raises(StopIteration) as stop:
        steps.throw(failure)
    assert stop.value.value == Failed(failure, gave_up=True)


def test_tokens_another_process_saved_during_the_backoff_are_adopted() -> None:
    """Re-read after the backoff: the other process's refresh answers us; nothing is sent."""
    expired = StoredTokens(tokens("a0", lifetime=-1), 4)
    steps = flight_steps(job(), RULES, CLOCK)
    next(steps)
    steps.send(expired)
    steps.send(None)
    steps.send(expired)
    backoff(steps, RefreshFailed("server_error", status=503), 1.0)
    theirs = StoredTokens(tokens("b1"), 5)
    assert finish(steps, theirs) == Adopted(theirs)


def test_a_retry_after_another_process_rotated_presents_its_refresh_token() -> None:
    """Re-read after the backoff finds newer tokens that are due too: those are refreshed,
    fenced on the new generation (the old refresh token is never presented again)."""
    expired = StoredTokens(tokens("a0", lifetime=-1), 4)
    steps = flight_steps(job(), RULES, CLOCK)
    next(steps)
    steps.send(expired)
    steps.send(None)
    steps.send(expired)
    backoff(steps, RefreshFailed("server_error", status=503), 1.0)
    rotated = StoredTokens(tokens("b1", lifetime=-1), 7)
    assert steps.send(rotated) == Refresh(rotated.tokens, 30.0)
    fresh = tokens("b2")
    assert steps.send(fresh) == Save(fresh, 7)


def test_a_retry_after_beyond_the_maximum_is_not_slept_through() -> None:
    """Retry-After: 3600 with maximum 10: the flight ends at once, carrying it."""
    expired = StoredTokens(tokens("a0", lifetime=-1), 4)
    steps = flight_steps(job(), RULES, CLOCK)
    next(steps)
    steps.send(expired)
    steps.send(None)
    steps.send(expired)
    slow_down = RefreshFailed("slow_down", status=429, retry_after=3600)
    with pytest.raises(StopIteration) as stop:
        steps.throw(slow_down)
    assert stop.value.value == Failed(slow_down, gave_up=True)


def test_a_lost_fenced_save_adopts_the_newer_tokens_or_sees_the_logout() -> None:
    """GenerationConflict: another writer won; read what it wrote."""
    expired = StoredTokens(tokens("a0", lifetime=-1), 4)
    for newer, outcome in (
        (StoredTokens(tokens("b"), 6), Adopted(StoredTokens(tokens("b"), 6))),
        (None, Cleared()),
    ):
        steps = flight_steps(job(), RULES, CLOCK)
        next(steps)
        steps.send(expired)
        steps.send(None)
        steps.send(expired)
        assert isinstance(steps.send(tokens("a1")), Save)
        assert steps.throw(GenerationConflict("moved")) == Load()
        assert finish(steps, newer) == outcome


def test_an_empty_store_without_a_way_to_acquire_ends_quietly() -> None:
    """Nothing stored and a refresher that cannot acquire: Loaded(None), no clear, no hook."""
    steps = flight_steps(job(), RULES, CLOCK)
    assert next(steps) == Load()
    assert finish(steps, None) == Loaded(None)


def test_a_store_that_fails_ends_the_flight_as_a_transient_failure() -> None:
    """Any StoreError on the way: Failed, tokens kept, nothing cleared; a waiting flight
    gives up (callers fail fast until the short store backoff ends), a background one not."""
    for background in (False, True):
        steps = flight_steps(job(background=background), RULES, CLOCK)
        next(steps)
        outage = StoreError("redis is down")
        with pytest.raises(StopIteration) as stop:
            steps.throw(outage)
        assert stop.value.value == Failed(outage, gave_up=not background)


def test_classify_turns_any_exception_into_one_of_ours() -> None:
    """A refresher bug is a transient failure that is not retried, its cause kept."""
    error, retryable = classify(KeyError("oops"))
    assert isinstance(error, RefreshFailed)
    assert error.error == "refresher_error"
    assert not retryable
    assert isinstance(error.__cause__, KeyError)
    transient = RefreshFailed("server_error")
    assert classify(transient) == (transient, True)
    expired = SessionExpired("invalid_grant")
    assert classify(expired) == (expired, False)


def test_a_request_the_cap_held_back_is_retried_soon_without_growing_the_backoff() -> None:
    """ "busy" (never sent): the retry comes within BUSY_RETRY, and a real failure after it
    backs off as the first one (1 s), not the second (2 s)."""
    expired = StoredTokens(tokens("a0", lifetime=-1), 4)
    steps = flight_steps(job(), RULES, CLOCK)
    next(steps)
    steps.send(expired)
    steps.send(None)
    steps.send(expired)
    assert steps.throw(RefreshFailed("busy", answer_lost=False)) == Unlock()
    sleep = steps.send(None)
    assert isinstance(sleep, Sleep)
    assert 0 <= sleep.seconds <= BUSY_RETRY
    assert steps.send(None) == Lock(5.0)
    assert steps.send(None) == Load()
    assert steps.send(expired) == Refresh(expired.tokens, 30.0)
    backoff(steps, RefreshFailed("server_error", status=503), 1.0)


def test_a_probe_makes_one_attempt() -> None:
    """A flight after one that gave up: one attempt, then Failed(gave_up)."""
    expired = StoredTokens(tokens("a0", lifetime=-1), 4)
    steps = flight_steps(job(probe=True), RULES, CLOCK)
    next(steps)
    steps.send(expired)
    steps.send(None)
    assert steps.send(expired) == Refresh(expired.tokens, 30.0)
    failure = RefreshFailed("server_error", status=503)
    with pytest.raises(StopIteration) as stop:
        steps.throw(failure)
    assert stop.value.value == Failed(failure, gave_up=True)
