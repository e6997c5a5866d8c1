"""TokenManager: single flight, stale-while-revalidate, failures, hooks, cancellation.

The refresher here is a FunctionRefresher (a public component) over ``Endpoint``, a token
endpoint kept in memory that rotates refresh tokens and, like a server with reuse detection,
records any refresh token presented twice. Behaviour over real HTTP against the reference
server is proven by tests/behaviour for every integration.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import filelock
import pytest

from freshtoken import (
    FileStore,
    FlightObserver,
    FunctionRefresher,
    LockTimeout,
    ManualClock,
    MemoryStore,
    RefreshFailed,
    RefreshObserver,
    RetryPolicy,
    SessionExpired,
    StoredTokens,
    StoreError,
    TokenManager,
    TokenSet,
    TokenStore,
    Trigger,
)

FAST_RETRY = RetryPolicy(attempts=3, initial=0.001, maximum=0.005)


class Endpoint:
    """An in-memory token endpoint with rotation and reuse detection."""

    def __init__(self, clock: ManualClock, lifetime: float = 60.0) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.lock = threading.Lock()
        self.calls = 0
        self.current_refresh = "r0"
        self.reused: list[str] = []
        self.failures: list[BaseException] = []  # raised by the next calls, in order
        self.gate: threading.Event | None = None  # when set, calls wait for it
        self.entered = threading.Event()

    def issue(self) -> dict[str, Any]:
        with self.lock:
            self.calls += 1
            n = self.calls
            self.current_refresh = f"r{n}"
        return {"access_token": f"a{n}", "refresh_token": f"r{n}", "expires_in": self.lifetime}

    def __call__(self, current: TokenSet | None) -> dict[str, Any]:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        with self.lock:
            if self.failures:
                self.calls += 1
                raise self.failures.pop(0)
            presented = None if current is None else current.refresh_token
            if presented != self.current_refresh:
                self.reused.append(str(presented))
        return self.issue()

    def initial_tokens(self) -> TokenSet:
        return TokenSet.from_response(
            {"access_token": "a0", "refresh_token": "r0", "expires_in": self.lifetime},
            sent_at=self.clock(),
        )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000_000.0)


@pytest.fixture
def endpoint(clock: ManualClock) -> Endpoint:
    return Endpoint(clock)


def make_manager(
    endpoint: Endpoint, clock: ManualClock, store: TokenStore | None = None, **options: Any
) -> TokenManager:
    options.setdefault("retry", FAST_RETRY)
    manager = TokenManager(FunctionRefresher(endpoint), store, clock=clock, **options)
    if store is None:
        manager.set_tokens(endpoint.initial_tokens())
    return manager


@pytest.fixture
def manager(endpoint: Endpoint, clock: ManualClock) -> TokenManager:
    return make_manager(endpoint, clock)


def access(tokens: TokenSet | None) -> str | None:
    return None if tokens is None else tokens.access_token


def run_threads(count: int, target: Callable[[], object]) -> list[object]:
    results: list[object] = [None] * count
    barrier = threading.Barrier(count)

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except Exception as error:  # noqa: BLE001 - the test inspects what each thread got
            results[i] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_fresh_tokens_are_served_from_cache_without_refreshing(
    manager: TokenManager, endpoint: Endpoint
) -> None:
    assert manager.get_tokens().access_token == "a0"
    assert endpoint.calls == 0


def test_sixty_four_threads_on_an_expired_token_cause_one_refresh(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    clock.advance(61)
    results = run_threads(64, lambda: manager.get_tokens().access_token)
    assert results == ["a1"] * 64
    assert endpoint.calls == 1
    assert endpoint.reused == []
    assert manager.stats.snapshot()["refreshes"] == 1


@pytest.mark.anyio
async def test_a_thousand_tasks_on_an_expired_token_cause_one_refresh(
    endpoint: Endpoint, clock: ManualClock
) -> None:
    started = 0

    async def slow_endpoint(current: TokenSet | None) -> dict[str, Any]:
        while started < 1000:  # hold the flight open until every task has asked
            await anyio.sleep(0)
        return endpoint(current)

    manager = TokenManager(FunctionRefresher(slow_endpoint), clock=clock, retry=FAST_RETRY)
    await manager.aset_tokens(endpoint.initial_tokens())
    clock.advance(61)
    results: list[str] = []

    async def ask() -> None:
        nonlocal started
        started += 1
        results.append((await manager.aget_tokens()).access_token)

    async with anyio.create_task_group() as group:
        for _ in range(1000):
            group.start_soon(ask)
    assert results == ["a1"] * 1000
    assert endpoint.calls == 1


def test_threads_and_several_event_loops_share_one_refresh(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    """Waiting tasks on other loops are woken by whichever thread lands the refresh."""
    clock.advance(61)
    endpoint.gate = threading.Event()

    async def loop_storm() -> list[str]:
        tokens = await asyncio.gather(*(manager.aget_tokens() for _ in range(50)))
        return [t.access_token for t in tokens]

    def in_new_loop() -> object:
        return asyncio.run(loop_storm())

    def in_trio() -> object:
        import trio

        async def storm() -> list[str]:
            seen: list[str] = []

            async def one() -> None:
                seen.append((await manager.aget_tokens()).access_token)

            async with trio.open_nursery() as nursery:
                for _ in range(50):
                    nursery.start_soon(one)
            return seen

        return trio.run(storm)

    def plain() -> object:
        return manager.get_tokens().access_token

    def opener() -> object:
        assert endpoint.entered.wait(10)
        endpoint.gate.set()  # type: ignore[union-attr]
        return "opener"

    jobs = [in_new_loop, in_new_loop, in_trio, plain, plain, plain, opener]
    results: list[object] = []
    errors: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        try:
            results.append(job())
        except BaseException as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert not errors
    flat = [x for r in results for x in (r if isinstance(r, list) else [r])]
    assert set(flat) == {"a1", "opener"}
    assert len(flat) == 50 * 3 + 3 + 1
    assert endpoint.calls == 1


def test_managers_on_one_store_share_the_flight_and_the_cache(
    endpoint: Endpoint, clock: ManualClock
) -> None:
    """Single flight is keyed by the credential (the store), not by the manager object."""
    store = MemoryStore(endpoint.initial_tokens())
    clock.advance(61)
    results = run_threads(
        32, lambda: make_manager(endpoint, clock, store).get_tokens().access_token
    )
    assert results == ["a1"] * 32
    assert endpoint.calls == 1


def test_while_the_token_is_still_valid_nobody_waits_for_the_refresh(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    """STALE: the refresh runs in the background; every caller, the first included, goes on
    with the old token at once."""
    clock.advance(50)  # inside the refresh window (due at 45 s), not expired (60 s)
    endpoint.gate = threading.Event()
    assert manager.get_tokens().access_token == "a0"  # started the refresh, did not wait
    assert endpoint.entered.wait(10)
    # The refresh is in flight and blocked; callers go on with the old token.
    assert [manager.get_tokens().access_token for _ in range(5)] == ["a0"] * 5
    endpoint.gate.set()
    assert manager.wait_idle(10)
    assert manager.get_tokens().access_token == "a1"
    assert endpoint.calls == 1


def test_once_expired_every_caller_waits_for_the_refresh(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    clock.advance(61)
    endpoint.gate = threading.Event()
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(manager.get_tokens().access_token))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    assert endpoint.entered.wait(10)
    assert results == []  # nobody got the expired token
    endpoint.gate.set()
    for thread in threads:
        thread.join(10)
    assert results == ["a1"] * 4


def test_rotation_uses_each_refresh_token_once(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    for expected in ("a1", "a2", "a3"):
        clock.advance(61)
        assert manager.get_tokens().access_token == expected
    assert endpoint.reused == []
    assert manager.store.load() is not None


def test_a_refresh_answer_without_refresh_token_keeps_the_old_one(clock: ManualClock) -> None:
    manager = TokenManager(
        FunctionRefresher(lambda current: {"access_token": "new", "expires_in": 60}), clock=clock
    )
    manager.set_tokens(TokenSet("old", refresh_token="keep-me", expires_at=clock() - 1))
    assert manager.get_tokens().refresh_token == "keep-me"


def test_a_rejected_token_is_refreshed_once_and_a_stale_rejection_is_not(
    manager: TokenManager, endpoint: Endpoint
) -> None:
    old = manager.get_tokens()
    assert access(manager.handle_rejection(old)) == "a1"
    # A second 401 for the same old token (another request in flight): no new refresh.
    assert access(manager.handle_rejection(old)) == "a1"
    assert endpoint.calls == 1
    assert manager.stats.snapshot()["retries"] == 2


def test_rejections_from_many_threads_cause_one_refresh(
    manager: TokenManager, endpoint: Endpoint
) -> None:
    old = manager.get_tokens()
    results = run_threads(64, lambda: access(manager.handle_rejection(old)))
    assert results == ["a1"] * 64
    assert endpoint.calls == 1


def test_session_expiry_clears_tokens_calls_the_hook_once_and_tells_everyone(
    endpoint: Endpoint, clock: ManualClock
) -> None:
    expired: list[SessionExpired] = []
    manager = make_manager(endpoint, clock, on_session_expired=expired.append)
    endpoint.failures = [SessionExpired("invalid_grant", "refresh token revoked", status=400)]
    endpoint.gate = threading.Event()
    clock.advance(61)

    def open_later() -> None:
        assert endpoint.entered.wait(10)
        endpoint.gate.set()  # type: ignore[union-attr]

    opener = threading.Thread(target=open_later)
    opener.start()
    results = run_threads(16, manager.get_tokens)
    opener.join()
    assert all(isinstance(r, SessionExpired) for r in results)
    assert len({id(r) for r in results}) == 16  # each caller gets its own instance
    # Callers that arrived after the flight landed find no tokens: the same verdict.
    assert {r.error for r in results if isinstance(r, SessionExpired)} <= {
        "invalid_grant",
        "no_tokens",
    }
    assert len(expired) == 1
    assert manager.store.load() is None
    with pytest.raises(SessionExpired) as again:
        manager.get_tokens()
    assert again.value.error == "no_tokens"
    assert len(expired) == 1  # still once
    assert endpoint.calls == 1


@pytest.mark.anyio
async def test_every_waiting_task_gets_the_leaders_error(
    endpoint: Endpoint, clock: ManualClock
) -> None:
    started = 0

    async def failing(current: TokenSet | None) -> dict[str, Any]:
        while started < 100:
            await anyio.sleep(0)
        raise SessionExpired("invalid_grant", "revoked", status=400)

    expired: list[SessionExpired] = []
    manager = TokenManager(
        FunctionRefresher(failing), clock=clock, on_session_expired=expired.append
    )
    await manager.aset_tokens(endpoint.initial_tokens())
    clock.advance(61)
    errors: list[str] = []

    async def ask() -> None:
        nonlocal started
        started += 1
        try:
            await manager.aget_tokens()
        except SessionExpired as error:
            errors.append(error.error)

    async with anyio.create_task_group() as group:
        for _ in range(100):
            group.start_soon(ask)
    assert errors == ["invalid_grant"] * 100
    assert len(expired) == 1
    assert manager.store.load() is None


@pytest.mark.anyio
async def test_async_hooks_are_awaited(endpoint: Endpoint, clock: ManualClock) -> None:
    refreshed: list[TokenSet] = []
    expired: list[SessionExpired] = []

    async def on_refresh(tokens: TokenSet) -> None:
        await anyio.sleep(0)
        refreshed.append(tokens)

    async def on_expired(error: SessionExpired) -> None:
        await anyio.sleep(0)
        expired.append(error)

    manager = make_manager(endpoint, clock, on_refresh=on_refresh, on_session_expired=on_expired)
    clock.advance(61)
    await manager.aget_tokens()
    assert [t.access_token for t in refreshed] == ["a1"]
    endpoint.failures = [SessionExpired("invalid_grant")]
    clock.advance(61)
    with pytest.raises(SessionExpired):
        await manager.aget_tokens()
    assert len(expired) == 1


def test_sync_path_runs_async_hooks_too(endpoint: Endpoint, clock: ManualClock) -> None:
    seen: list[str] = []

    async def on_refresh(tokens: TokenSet) -> None:
        seen.append(tokens.access_token)

    manager = make_manager(endpoint, clock, on_refresh=on_refresh)
    clock.advance(61)
    manager.get_tokens()
    assert seen == ["a1"]


def test_transient_failures_are_retried_with_backoff_then_succeed(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    endpoint.failures = [RefreshFailed("server_error", status=503)] * 2
    clock.advance(61)
    assert manager.get_tokens().access_token == "a3"
    assert manager.stats.snapshot()["refresh_attempts"] == 3
    assert endpoint.reused == []  # the same refresh token was offered again: never consumed


def test_persistent_transient_failure_raises_keeps_tokens_and_is_throttled(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    endpoint.failures = [RefreshFailed("server_error", status=500)] * 3
    clock.advance(61)
    with pytest.raises(RefreshFailed) as first:
        manager.get_tokens()
    assert first.value.status == 500
    assert endpoint.calls == 3
    stored = manager.store.load()
    assert stored is not None
    assert stored.tokens.refresh_token == "r0"  # kept
    # Throttled: the next caller gets the same error without another request.
    with pytest.raises(RefreshFailed):
        manager.get_tokens()
    assert endpoint.calls == 3
    clock.advance(60)  # past the backoff: tried again, and it works now
    assert manager.get_tokens().access_token == "a4"


def test_a_failed_refresh_while_still_valid_keeps_using_the_old_token(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    endpoint.failures = [RefreshFailed("server_error", status=503)] * 5
    clock.advance(50)  # stale, still valid
    assert manager.get_tokens().access_token == "a0"
    assert manager.wait_idle(10)  # the background flight runs on the host: let it land
    assert endpoint.calls == 1  # one attempt, no retry storm while the token still works
    assert manager.get_tokens().access_token == "a0"
    assert endpoint.calls == 1  # throttled


def test_a_lost_answer_is_retried_at_once_with_the_same_refresh_token(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    presented: list[str | None] = []
    inner = endpoint.__call__

    def recording(current: TokenSet | None) -> dict[str, Any]:
        presented.append(None if current is None else current.refresh_token)
        return inner(current)

    manager.refresher = FunctionRefresher(recording)
    endpoint.failures = [RefreshFailed("network_error", answer_lost=True)]
    clock.advance(61)
    assert manager.get_tokens().access_token == "a2"
    assert presented == ["r0", "r0"]


def test_an_unexpected_refresher_error_keeps_tokens_and_is_not_retried(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    endpoint.failures = [KeyError("bug")]
    clock.advance(61)
    with pytest.raises(RefreshFailed) as caught:
        manager.get_tokens()
    assert caught.value.error == "refresher_error"
    assert isinstance(caught.value.__cause__, KeyError)
    assert endpoint.calls == 1
    assert manager.store.load() is not None


@pytest.mark.anyio
async def test_a_cancelled_leader_still_saves_the_refreshed_tokens(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    """Cancelling the caller that started a refresh must not lose the rotated refresh token
    the server already issued: the flight is not the caller's to cancel."""
    endpoint.gate = threading.Event()
    clock.advance(61)
    async with anyio.create_task_group() as group:
        group.start_soon(manager.aget_tokens)
        assert await anyio.to_thread.run_sync(endpoint.entered.wait, 10)
        group.cancel_scope.cancel()
    endpoint.gate.set()
    assert await anyio.to_thread.run_sync(manager.wait_idle, 10)
    stored = manager.store.load()
    assert stored is not None
    assert stored.tokens.access_token == "a1"
    assert (await manager.aget_tokens()).access_token == "a1"
    assert endpoint.calls == 1
    assert endpoint.reused == []


def test_no_tokens_means_session_expired_without_a_request(
    endpoint: Endpoint, clock: ManualClock
) -> None:
    manager = TokenManager(FunctionRefresher(endpoint), clock=clock)
    with pytest.raises(SessionExpired) as caught:
        manager.get_tokens()
    assert caught.value.error == "no_tokens"
    assert endpoint.calls == 0


def test_a_source_that_can_acquire_fetches_the_first_token(
    endpoint: Endpoint, clock: ManualClock
) -> None:
    manager = TokenManager(FunctionRefresher(endpoint, can_acquire=True), clock=clock)
    assert manager.get_tokens().access_token == "a1"


def test_explicit_refresh_and_clear(manager: TokenManager, endpoint: Endpoint) -> None:
    assert manager.refresh().access_token == "a1"
    manager.clear()
    assert manager.store.load() is None
    with pytest.raises(SessionExpired):
        manager.get_tokens()


def test_after_a_failed_stale_refresh_expired_callers_wait_out_the_backoff_instead_of_failing(
    manager: TokenManager, endpoint: Endpoint, clock: ManualClock
) -> None:
    """A failure while the token still worked must not turn into errors once it expires."""
    endpoint.failures = [RefreshFailed("slow_down", status=429, retry_after=0.01)]
    clock.advance(50)
    assert manager.get_tokens().access_token == "a0"  # one failed attempt, old token kept
    assert manager.wait_idle(10)  # the background attempt failed, its backoff started
    clock.advance(11)  # expired, the backoff (0.01 s, monotonic) run out meanwhile
    assert manager.get_tokens().access_token == "a2"
    assert endpoint.calls == 2


def test_a_rejection_during_a_proactive_refresh_joins_it(
    endpoint: Endpoint, clock: ManualClock
) -> None:
    """A 401 that arrives while a proactive refresh is in flight waits for it: one refresh."""
    store = MemoryStore(endpoint.initial_tokens())
    manager = make_manager(endpoint, clock, store)
    rejected = manager.get_tokens()
    clock.advance(50)  # stale: the next get_tokens starts a proactive flight
    endpoint.gate = threading.Event()
    assert manager.get_tokens().access_token == "a0"
    assert endpoint.entered.wait(10)
    results: list[str | None] = []
    waiter = threading.Thread(
        target=lambda: results.append(access(manager.handle_rejection(rejected)))
    )
    waiter.start()
    endpoint.gate.set()
    waiter.join(10)
    assert results == ["a1"]
    assert endpoint.calls == 1


class FlakyStore(MemoryStore):
    """A memory store that can be switched off, as a Redis that went away."""

    down = False

    def load(self) -> StoredTokens | None:
        if self.down:
            raise StoreError("store unreachable")
        return super().load()


def test_an_unreachable_store_keeps_valid_tokens_and_is_retried_soon_after(
    endpoint: Endpoint, clock: ManualClock
) -> None:
    store = FlakyStore(endpoint.initial_tokens())
    manager = make_manager(endpoint, clock, store)
    assert manager.get_tokens().access_token == "a0"  # cached from now on
    store.down = True
    clock.advance(50)  # refresh due, token still valid: keep it
    assert manager.get_tokens().access_token == "a0"
    clock.advance(11)  # expired: nothing valid to hand out
    with pytest.raises(StoreError):
        manager.get_tokens()
    store.down = False
    clock.advance(1.01)  # store backoff is capped at a second, not the refresh backoff
    assert manager.get_tokens().access_token == "a1"
    assert endpoint.calls == 1


def test_while_another_process_refreshes_a_still_valid_token_is_used_without_waiting(
    endpoint: Endpoint, clock: ManualClock, tmp_path: Path
) -> None:
    """Cross-process stale-while-revalidate: a busy refresh lock is tried once, not waited on."""
    store = FileStore(tmp_path / "tokens.json")
    manager = make_manager(endpoint, clock, store, lock_timeout=0.2)
    manager.set_tokens(endpoint.initial_tokens())
    other_process = filelock.FileLock(tmp_path / "tokens.json.default.lock")
    with other_process:  # a separate open file: flock treats it as another holder
        clock.advance(50)  # stale, still valid
        assert manager.get_tokens().access_token == "a0"
        assert endpoint.calls == 0
        clock.advance(11)  # expired: now it must wait for the lock, and times out
        with pytest.raises(LockTimeout):
            manager.get_tokens()
    clock.advance(1.01)  # past the short backoff after a store failure
    assert manager.get_tokens().access_token == "a1"
    assert endpoint.calls == 1


def test_a_forced_refresh_on_a_new_manager_refreshes_what_the_store_holds(
    endpoint: Endpoint, clock: ManualClock
) -> None:
    """refresh() before anything was read: the stored (fresh) tokens are refreshed, not just
    adopted; a later refresh() through another manager of the same store refreshes again."""
    store = MemoryStore(endpoint.initial_tokens())
    assert make_manager(endpoint, clock, store).refresh().access_token == "a1"
    assert endpoint.calls == 1
    assert endpoint.reused == []
    assert make_manager(endpoint, clock, store).refresh().access_token == "a2"


class CountingObserver(RefreshObserver):
    def __init__(self) -> None:
        self.triggers: list[str] = []

    def flight_started(self, trigger: Trigger) -> FlightObserver | None:
        self.triggers.append(trigger)
        return None


def test_a_store_held_in_memory_is_read_without_a_flight(
    endpoint: Endpoint, clock: ManualClock
) -> None:
    """First use of a MemoryStore (a BFF's per-session store too) reads it in the caller's
    thread: no refresh thread just to look at memory; a durable store's first read is a flight."""
    counting = CountingObserver()
    store = MemoryStore(endpoint.initial_tokens())
    manager = make_manager(endpoint, clock, store, observer=counting)
    assert manager.get_tokens().access_token == "a0"
    assert counting.triggers == []


def test_a_durable_stores_first_read_is_a_flight(
    endpoint: Endpoint, clock: ManualClock, tmp_path: Path
) -> None:
    """The same first use on a FileStore reads the file in a flight (I/O never blocks a loop)."""
    store = FileStore(tmp_path / "tokens.json", watch_interval=None)
    store.save(endpoint.initial_tokens(), expected_generation=None)
    counting = CountingObserver()
    manager = make_manager(endpoint, clock, store, observer=counting)
    assert manager.get_tokens().access_token == "a0"
    assert len(counting.triggers) == 1  # the read, in a flight of its own
