"""TokenManager.close() over a RedisStore against a real redis-server: the pub/sub watcher
(a thread with its own connection) belongs to the credential and ends with its last manager;
the store stays usable, and a later manager subscribes again."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from redis_fixture import RedisServer

from freshtoken import FunctionRefresher, TokenManager, TokenSet
from freshtoken.stores.redis import RedisStore

pytestmark = pytest.mark.redis


def tokens(name: str) -> TokenSet:
    return TokenSet(name, refresh_token=f"refresh-{name}", expires_at=time.time() + 3600)


def never(current: TokenSet | None) -> TokenSet:
    raise AssertionError("no refresh is due in this test")


class _OtherProcess(RedisStore):
    """A RedisStore no manager of this process shares: how another process looks to Redis."""

    @property
    def key(self) -> tuple[object, ...]:
        return ("other-process", id(self))


@pytest.fixture
def redis_key() -> str:
    return f"freshtoken:close:{uuid.uuid4().hex}"


@pytest.fixture
def elsewhere(redis_server: RedisServer, redis_key: str) -> Iterator[RedisStore]:
    store = _OtherProcess(redis_server.url, redis_key)
    yield store
    store.close()


def watchers(redis_key: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"freshtoken-watch-{redis_key}"]


def save(store: RedisStore, new: TokenSet) -> None:
    current = store.load()
    store.save(new, expected_generation=None if current is None else current.generation)


def wait_until_heard(manager: TokenManager, access_token: str) -> None:
    deadline = time.monotonic() + 10
    while manager.get_tokens().access_token != access_token:
        assert time.monotonic() < deadline, "the pub/sub watcher never reported the change"
        time.sleep(0.01)  # polling an observable condition with a deadline


def test_the_pubsub_watcher_ends_with_the_last_manager_and_the_store_stays_usable(
    redis_server: RedisServer, redis_key: str, elsewhere: RedisStore
) -> None:
    save(elsewhere, tokens("first"))
    store = RedisStore(redis_server.url, redis_key)
    try:
        first = TokenManager(FunctionRefresher(never), store)
        second = TokenManager(FunctionRefresher(never), store)
        (watcher,) = watchers(redis_key)
        first.close()
        assert watcher.is_alive()
        save(elsewhere, tokens("second"))
        wait_until_heard(second, "second")
        second.close()
        watcher.join(5)
        assert not watcher.is_alive()
        stored = store.load()
        assert stored is not None
        assert stored.tokens.access_token == "second"
        # A new manager of the same credential subscribes again and hears the next save.
        with TokenManager(FunctionRefresher(never), store) as third:
            assert len(watchers(redis_key)) == 1
            save(elsewhere, tokens("third"))
            wait_until_heard(third, "third")
    finally:
        store.close()


def test_unwatch_of_one_callback_keeps_the_others(
    redis_server: RedisServer, redis_key: str, elsewhere: RedisStore
) -> None:
    """RedisStore.unwatch forgets one registration; the thread serves the rest."""
    store = RedisStore(redis_server.url, redis_key)
    try:
        kept, dropped, last = (threading.Semaphore(0) for _ in range(3))
        store.watch(kept.release)
        store.watch(dropped.release)
        store.watch(last.release)  # called after the others: when it has been, they have
        store.unwatch(dropped.release)
        store.unwatch(lambda: None)  # never registered: ignored
        save(elsewhere, tokens("a"))
        assert last.acquire(timeout=10)
        assert kept.acquire(blocking=False)
        assert not dropped.acquire(blocking=False)
        (watcher,) = watchers(redis_key)
        store.unwatch(kept.release)
        assert watcher.is_alive()
        store.unwatch(last.release)
        watcher.join(5)
        assert not watcher.is_alive()
    finally:
        store.close()
