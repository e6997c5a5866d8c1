"""RedisStore against a real redis-server: the leased lock, pub/sub invalidation, garbage in
Redis, errors while Redis is down, and the async side on asyncio and trio.

The TokenStore contract (fences, generations, lock exclusivity, async twins) is proven for
every store in tests/stores/test_store_contract.py; this file holds what only RedisStore does."""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator

import anyio
import pytest
from redis_fixture import RedisServer

from freshtoken import (
    FunctionRefresher,
    GenerationConflict,
    LockTimeout,
    ManualClock,
    StoreError,
    TokenManager,
    TokenSet,
)
from freshtoken.stores.redis import RedisStore

pytestmark = pytest.mark.redis

SECRET_ACCESS = "access-SECRET-1"
SECRET_REFRESH = "refresh-SECRET-1"


def tokens(n: int = 1, *, lifetime: float = 3600.0) -> TokenSet:
    now = time.time()
    return TokenSet(
        access_token=f"access-SECRET-{n}",
        refresh_token=f"refresh-SECRET-{n}",
        expires_at=now + lifetime,
        obtained_at=now,
        scope="read",
    )


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisStore]:
    store = RedisStore(redis_server.url, "freshtoken:test", lease=1.0)
    yield store
    store.close()


@pytest.fixture
def other(redis_server: RedisServer) -> Iterator[RedisStore]:
    """A second store on the same key: another process, as far as Redis can tell."""
    store = RedisStore(redis_server.url, "freshtoken:test", lease=1.0)
    yield store
    store.close()


# -- values and fencing ---------------------------------------------------------------------


def test_unreadable_stored_data_is_a_store_error_without_content(
    store: RedisStore, redis_server: RedisServer
) -> None:
    """Garbage under the key is a StoreError that quotes nothing of it."""
    redis_server.client().hset(store.redis_key, mapping={"generation": 1, "tokens": "{SECRET"})
    with pytest.raises(StoreError, match="unreadable") as caught:
        store.load()
    assert "SECRET" not in str(caught.value)


def test_repr_and_errors_show_no_password_and_no_token(redis_server: RedisServer) -> None:
    """The URL's password and the tokens appear in no repr or error message."""
    store = RedisStore(f"redis://:hunter2@127.0.0.1:{redis_server.port}/0", "freshtoken:pw")
    try:
        assert "hunter2" not in repr(store)
        assert f"127.0.0.1:{redis_server.port}" in repr(store)
        redis_server.kill()
        with pytest.raises(StoreError) as caught:
            store.save(tokens(), expected_generation=None)
        text = str(caught.value) + repr(caught.value)
        assert "hunter2" not in text
        assert "SECRET" not in text
    finally:
        store.close()


# -- Redis down and back ----------------------------------------------------------------------


def test_every_operation_says_redis_is_unreachable(
    store: RedisStore, redis_server: RedisServer
) -> None:
    """Redis down: load, save, clear and lock raise StoreError naming host:port."""
    store.save(tokens(), expected_generation=0)
    redis_server.kill()
    where = f"Redis at 127.0.0.1:{redis_server.port} is unreachable"
    started = time.monotonic()
    with pytest.raises(StoreError, match=where):
        store.load()
    assert time.monotonic() - started < 3.0, "a dead Redis must fail fast"
    with pytest.raises(StoreError, match=where):
        store.save(tokens(), expected_generation=1)
    with pytest.raises(StoreError, match=where):
        store.clear()
    with pytest.raises(StoreError, match=where), store.lock(1.0):
        pass


def test_the_store_recovers_when_redis_restarts(
    store: RedisStore, redis_server: RedisServer
) -> None:
    """The same store object works again once Redis is back (its data kept on disk)."""
    saved = store.save(tokens(), expected_generation=0)
    redis_server.stop()
    with pytest.raises(StoreError):
        store.load()
    redis_server.start()
    assert store.load() == saved


# -- the lock -------------------------------------------------------------------------------


def test_a_held_lock_is_renewed_past_its_lease(
    redis_server: RedisServer, other: RedisStore
) -> None:
    """A holder that lives keeps the lock for longer than the lease (renewal)."""
    short = RedisStore(redis_server.url, "freshtoken:test", lease=0.3)
    try:
        with short.lock(1.0):
            with pytest.raises(LockTimeout), other.lock(0.9):
                pass  # three leases went by, still held
            ttl = redis_server.client().pttl("freshtoken:test:lock")
            assert 0 < ttl <= 300
    finally:
        short.close()


def test_a_dead_holders_lock_ends_with_its_lease(
    redis_server: RedisServer, store: RedisStore
) -> None:
    """A holder that died (no renewal) blocks others only until its lease runs out."""
    orphan = redis_server.client().lock("freshtoken:test:lock", timeout=0.3)
    assert orphan.acquire(blocking=False)
    started = time.monotonic()
    with store.lock(2.0):
        waited = time.monotonic() - started
    assert 0.1 < waited < 1.0


def test_an_expired_lease_cannot_overwrite_the_new_holders_tokens(
    store: RedisStore,
    other: RedisStore,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Holder A's lease lapses mid-refresh; B refreshes and saves; A's late save is refused."""
    start = store.save(tokens(1), expected_generation=None)
    with store.lock(1.0):
        read_by_a = store.load()
        assert read_by_a == start
        redis_server.client().delete("freshtoken:test:lock")  # A stalled: its lease ran out
        with other.lock(0.5):
            read_by_b = other.load()
            assert read_by_b is not None
            other.save(tokens(2), expected_generation=read_by_b.generation)
        with pytest.raises(GenerationConflict):
            store.save(tokens(3), expected_generation=read_by_a.generation)
        caplog.set_level(logging.WARNING, logger="freshtoken")
    loaded = store.load()
    assert loaded is not None
    assert loaded.tokens.access_token == "access-SECRET-2"
    assert "lapsed" in caplog.text
    assert "SECRET" not in caplog.text


class _TwinStore(RedisStore):
    """A RedisStore that a manager in this process does not share with the others: how a
    second process looks to Redis, without starting one."""

    @property
    def key(self) -> tuple[object, ...]:
        return ("twin", id(self))


def test_a_manager_whose_lease_lapsed_adopts_the_newer_tokens(redis_server: RedisServer) -> None:
    """Manager A refreshes slowly past its lease; B refreshes meanwhile; A adopts B's tokens,
    and the store keeps B's (the one the server would consider current)."""
    store_a = _TwinStore(redis_server.url, "freshtoken:race", lease=0.3)
    store_b = _TwinStore(redis_server.url, "freshtoken:race", lease=0.3)
    store_a.save(tokens(1, lifetime=-1.0), expected_generation=None)  # expired: refresh due
    a_inside, a_release = threading.Event(), threading.Event()

    def slow_refresh(current: TokenSet | None) -> TokenSet:
        a_inside.set()
        assert a_release.wait(10)
        return tokens(10)

    manager_a = TokenManager(FunctionRefresher(slow_refresh), store_a)
    manager_b = TokenManager(FunctionRefresher(lambda current: tokens(20)), store_b)
    try:
        result: list[TokenSet] = []
        worker = threading.Thread(target=lambda: result.append(manager_a.get_tokens()))
        worker.start()
        assert a_inside.wait(10)
        redis_server.client().delete("freshtoken:race:lock")  # A stalled past its lease
        assert manager_b.get_tokens().access_token == "access-SECRET-20"
        a_release.set()
        worker.join(10)
        assert result[0].access_token == "access-SECRET-20"
        assert manager_a.stats.snapshot()["refreshes"] == 0
        loaded = store_a.load()
        assert loaded is not None
        assert loaded.tokens.access_token == "access-SECRET-20"
    finally:
        a_release.set()
        store_a.close()
        store_b.close()


# -- watching -------------------------------------------------------------------------------


def test_another_stores_save_and_clear_reach_the_watcher(
    store: RedisStore, other: RedisStore
) -> None:
    """watch() fires when another store saves or clears, not for the watcher's own saves."""
    changes = threading.Semaphore(0)
    store.watch(changes.release)
    first = store.save(tokens(1), expected_generation=0)
    other.save(tokens(2), expected_generation=first.generation)
    assert changes.acquire(timeout=5)
    other.clear()
    assert changes.acquire(timeout=5)
    assert not changes.acquire(timeout=0.3), "the store's own save must not notify it"


def test_the_watcher_survives_a_redis_restart(
    store: RedisStore, other: RedisStore, redis_server: RedisServer
) -> None:
    """After Redis restarts the watcher resubscribes and hears the next change."""
    changes = threading.Semaphore(0)
    store.watch(changes.release)
    redis_server.stop()
    redis_server.start()
    other.save(tokens(2), expected_generation=None)
    assert changes.acquire(timeout=10)


def test_the_watcher_survives_garbage_in_the_hash_and_on_the_channel(
    store: RedisStore,
    other: RedisStore,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A generation that is not a number (read when the watcher subscribes, and again when it
    resubscribes after a restart) and garbage messages on the channel neither stop the
    watcher nor notify it; the changes that follow still reach it."""
    caplog.set_level(logging.DEBUG, logger="freshtoken")
    raw = redis_server.client()
    raw.hset(store.redis_key, "generation", "garbage")
    changes = threading.Semaphore(0)
    store.watch(changes.release)
    channel = f"{store.redis_key}:changed"
    for garbage in [b"garbage", b"\xff\xfe\x00", "²³ x".encode(), b"9" * 5000, b"", b" x"]:
        raw.publish(channel, garbage)
    raw.publish(channel, b"17 another-origin")  # what another store publishes
    assert changes.acquire(timeout=5), "the watcher died on the garbage before it"
    assert not changes.acquire(timeout=0.3), "garbage must not notify"
    redis_server.stop()  # the hash, garbage included, survives the restart
    redis_server.start()
    deadline = time.monotonic() + 10
    while caplog.text.count("the stored generation is not a number") < 2:  # resubscribed
        assert time.monotonic() < deadline, "the watcher did not read the hash again"
        time.sleep(0.01)  # polling an observable condition with a deadline
    while changes.acquire(blocking=False):
        pass  # the resync may rightly report that the generation changed
    raw.delete(store.redis_key)
    other.save(tokens(2), expected_generation=None)
    assert changes.acquire(timeout=10), "the watcher died on the garbage read after a restart"
    assert "SECRET" not in caplog.text


def test_close_stops_the_watcher_thread(redis_server: RedisServer) -> None:
    """No watcher or renewal thread outlives close()."""
    before = {t.name for t in threading.enumerate()}
    store = RedisStore(redis_server.url, "freshtoken:threads")
    store.watch(lambda: None)
    with store.lock(1.0):
        pass
    store.close()
    leaked = {t.name for t in threading.enumerate()} - before
    assert not {name for name in leaked if name.startswith("freshtoken-")}


def test_a_manager_drops_its_cache_when_another_process_saves(redis_server: RedisServer) -> None:
    """Pub/sub invalidation: the manager re-reads the store (serving its still-fresh token
    while it does, as with any refresh) and then serves the other process's new token."""
    store_a = _TwinStore(redis_server.url, "freshtoken:cache")
    store_b = _TwinStore(redis_server.url, "freshtoken:cache")
    changed = threading.Event()
    try:
        store_a.save(tokens(1), expected_generation=None)
        manager = TokenManager(FunctionRefresher(lambda current: tokens(99)), store_a)
        store_a.watch(changed.set)  # a second callback, to know when the first has run
        assert manager.get_tokens().access_token == "access-SECRET-1"
        store_b.save(tokens(2), expected_generation=None)
        assert changed.wait(5)
        assert manager.get_tokens().access_token in {"access-SECRET-1", "access-SECRET-2"}
        assert manager.wait_idle(5)
        assert manager.get_tokens().access_token == "access-SECRET-2"
    finally:
        store_a.close()
        store_b.close()


def test_a_warm_manager_does_not_touch_redis(redis_server: RedisServer) -> None:
    """Fresh cached tokens: a thousand get_tokens() calls send no Redis command."""
    store = RedisStore(redis_server.url, "freshtoken:warm")
    try:
        store.save(tokens(1), expected_generation=None)
        manager = TokenManager(FunctionRefresher(lambda current: tokens(2)), store)
        manager.get_tokens()
        before = redis_server.commands_processed()
        for _ in range(1000):
            manager.get_tokens()
        assert redis_server.commands_processed() - before == 1  # the INFO call itself
    finally:
        store.close()


def test_a_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-py the error says which pip install fixes it."""
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'freshtoken\[redis\]'"):
        RedisStore("redis://127.0.0.1:1/0")


# -- async twins ----------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_an_async_held_lock_is_renewed_past_its_lease(redis_server: RedisServer) -> None:
    """alock renews its lease as lock does (asyncio: redis.asyncio; trio: a worker thread)."""
    store = RedisStore(redis_server.url, "freshtoken:async", lease=0.3)
    other = RedisStore(redis_server.url, "freshtoken:async", lease=0.3)
    try:
        async with store.alock(1.0):
            with anyio.fail_after(5):
                with pytest.raises(LockTimeout):
                    async with other.alock(0.8):  # past two leases: renewed
                        pass
        async with other.alock(0.5):
            pass
    finally:
        await store.aclose()
        await other.aclose()


@pytest.mark.anyio
async def test_async_operations_say_redis_is_unreachable(redis_server: RedisServer) -> None:
    """Redis down: the async twins raise the same clear StoreError."""
    store = RedisStore(redis_server.url, "freshtoken:async-down")
    try:
        await store.asave(tokens(1), expected_generation=0)
        redis_server.kill()
        with pytest.raises(StoreError, match="unreachable"):
            await store.aload()
        with pytest.raises(StoreError, match="unreachable"):
            async with store.alock(1.0):
                pass
    finally:
        await store.aclose()


def test_stale_but_valid_tokens_keep_working_while_redis_is_down(
    redis_server: RedisServer,
) -> None:
    """Refresh due, token still valid, Redis down: requests keep the cached token."""
    store = RedisStore(redis_server.url, "freshtoken:stale")
    clock = ManualClock()
    try:
        store.save(tokens(1, lifetime=20.0), expected_generation=None)
        manager = TokenManager(FunctionRefresher(lambda current: tokens(2)), store, clock=clock)
        assert manager.get_tokens().access_token == "access-SECRET-1"  # cached, fresh
        clock.advance(16.0)  # refresh due (last quarter of the lifetime), still valid
        redis_server.kill()
        assert manager.get_tokens().access_token == "access-SECRET-1"
    finally:
        store.close()
