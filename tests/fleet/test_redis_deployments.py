"""RedisStore on Redis as deployed: a Redis Cluster, a Sentinel-managed master that fails over,
replicas confirmed with WAIT, and tokens encrypted at rest.

The TokenStore contract runs on every one of these in tests/stores/test_store_contract.py;
this file holds what only these deployments do.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
from redis_fixture import RedisCluster, RedisSentinel, RedisServer

from freshtoken import (
    FunctionRefresher,
    RefreshPolicy,
    StoredTokens,
    StoreError,
    TokenManager,
    TokenSet,
)
from freshtoken.stores.redis import RedisStore

pytestmark = pytest.mark.redis


def tokens(n: int, *, lifetime: float = 3600.0) -> TokenSet:
    now = time.time()
    return TokenSet(
        access_token=f"access-SECRET-{n}",
        refresh_token=f"refresh-SECRET-{n}",
        expires_at=now + lifetime,
        obtained_at=now,
    )


def unique(prefix: str = "freshtoken:deploy") -> str:
    return f"{prefix}:{uuid.uuid4().hex}"


@pytest.fixture
def closing() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as stack:
        yield stack


# -- Redis Cluster ----------------------------------------------------------------------------


def test_a_cluster_store_hash_tags_its_keys_into_one_slot(
    redis_cluster: RedisCluster, closing: contextlib.ExitStack
) -> None:
    """On a cluster the hash, the lock and the channel share a slot: {K}, {K}:lock, {K}:changed."""
    client = closing.enter_context(contextlib.closing(redis_cluster.client()))
    key = unique()
    store = RedisStore(client, key)
    closing.callback(store.close)
    assert store.redis_key == f"{{{key}}}"
    names = (store.redis_key, f"{store.redis_key}:lock", key)
    slots = {client.keyslot(name) for name in names}  # type: ignore[no-untyped-call, unused-ignore]
    assert len(slots) == 1
    saved = store.save(tokens(1), expected_generation=0)
    assert client.hget(store.redis_key, "generation") == str(saved.generation).encode()
    with store.lock(1.0):
        assert client.exists(f"{store.redis_key}:lock")


def test_a_key_with_its_own_hash_tag_is_kept_on_a_cluster(
    redis_cluster: RedisCluster, closing: contextlib.ExitStack
) -> None:
    """A key that names its slot already ({app}:alice) is used as it is."""
    client = closing.enter_context(contextlib.closing(redis_cluster.client()))
    store = RedisStore(client, "{app}:alice")
    closing.callback(store.close)
    assert store.redis_key == "{app}:alice"


def test_a_plain_redis_keeps_the_key_untagged(redis_server: RedisServer) -> None:
    """Outside a cluster the key is used as given, as before."""
    store = RedisStore(redis_server.url, "freshtoken:plain")
    try:
        assert store.redis_key == "freshtoken:plain"
    finally:
        store.close()


def test_the_watcher_hears_saves_through_a_cluster(
    redis_cluster: RedisCluster, closing: contextlib.ExitStack
) -> None:
    """Pub/sub on a cluster: another store's save and clear reach this store's watcher."""
    key = unique()
    mine = RedisStore(closing.enter_context(contextlib.closing(redis_cluster.client())), key)
    theirs = RedisStore(closing.enter_context(contextlib.closing(redis_cluster.client())), key)
    closing.callback(mine.close)
    closing.callback(theirs.close)
    heard = threading.Semaphore(0)
    mine.watch(heard.release)
    theirs.save(tokens(1), expected_generation=0)
    assert heard.acquire(timeout=5.0)
    theirs.clear()
    assert heard.acquire(timeout=5.0)


def test_managers_on_two_cluster_clients_refresh_once(
    redis_cluster: RedisCluster, closing: contextlib.ExitStack
) -> None:
    """Two processes' worth of managers on one cluster: an expiry costs one refresh."""
    key = unique()
    calls: list[TokenSet | None] = []
    gate = threading.Lock()

    def refresh(current: TokenSet | None) -> TokenSet:
        with gate:
            calls.append(current)
        time.sleep(0.05)  # the refresh takes a while: the others arrive while it runs
        return tokens(2)

    managers = []
    for _ in range(2):
        store = RedisStore(closing.enter_context(contextlib.closing(redis_cluster.client())), key)
        closing.callback(store.close)
        managers.append(
            TokenManager(FunctionRefresher(refresh), store, policy=RefreshPolicy(leeway=0))
        )
    managers[0].store.save(tokens(1, lifetime=-1), expected_generation=None)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda m=m: results.append(m.get_tokens().access_token))
        for m in managers * 4
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results == ["access-SECRET-2"] * 8


def test_replicas_are_refused_on_a_cluster(
    redis_cluster: RedisCluster, closing: contextlib.ExitStack
) -> None:
    """WAIT cannot follow a cluster's scripts: asking for replicas there is a clear error."""
    client = closing.enter_context(contextlib.closing(redis_cluster.client()))
    with pytest.raises(ValueError, match="RedisCluster"):
        RedisStore(client, unique(), replicas=1)


# -- Sentinel -------------------------------------------------------------------------------

T = TypeVar("T")


def eventually(action: Callable[[], T], deadline: float) -> T:
    """``action()`` once it stops raising StoreError (polled: sentinels give no event)."""
    while True:
        try:
            return action()
        except StoreError:
            assert time.monotonic() < deadline, "still failing over at the deadline"
            time.sleep(0.1)


def test_the_store_keeps_working_after_a_sentinel_failover(
    redis_sentinel: RedisSentinel,
) -> None:
    """Kill the master: the store reports StoreErrors meanwhile, then works on the new master
    with the tokens it saved (replicas=1 waited for the replica), and refreshes go on."""
    key = unique()
    client = redis_sentinel.master_client()
    store = RedisStore(client, key, replicas=1, replica_timeout=0.5, lease=2.0)
    other = RedisStore(redis_sentinel.master_client(), key)
    refreshed = iter(range(2, 100))
    manager = TokenManager(FunctionRefresher(lambda current: tokens(next(refreshed))), store)
    try:
        manager.set_tokens(tokens(1))
        assert redis_sentinel.master_address() == ("127.0.0.1", redis_sentinel.master.port)
        redis_sentinel.master.kill()
        with pytest.raises(StoreError) as raised:
            store.load()
        assert "SECRET" not in str(raised.value)
        assert manager.get_tokens().access_token == "access-SECRET-1"  # cached: no Redis needed
        deadline = time.monotonic() + 30
        promoted = ("127.0.0.1", redis_sentinel.replica.port)
        while redis_sentinel.master_address() != promoted:  # polled: sentinels decide alone
            assert time.monotonic() < deadline, "no failover within 30 s"
            time.sleep(0.1)

        def locked_load() -> StoredTokens | None:
            with store.lock(1.0):  # a write: the promoted replica may refuse them for a moment
                return store.load()

        # Sentinels settle on their own after a failover (a lagging one may still say "no
        # master"): what a caller sees meanwhile is a StoreError, retried here until it passes.
        loaded = eventually(locked_load, deadline)
        assert loaded is not None
        assert loaded.tokens.access_token == "access-SECRET-1"
        assert manager.refresh().access_token == "access-SECRET-2"
        stored = eventually(other.load, deadline)
        assert stored is not None
        assert stored.tokens.refresh_token == "refresh-SECRET-2"
    finally:
        store.close()
        other.close()
        client.close()


def test_a_sentinel_store_names_the_service_not_a_host(
    shared_redis_sentinel: RedisSentinel,
) -> None:
    """Whose master moves: the repr and errors name the Sentinel service, no host guess."""
    client = shared_redis_sentinel.master_client()
    store = RedisStore(client, unique())
    try:
        assert f"sentinel:{shared_redis_sentinel.service}" in repr(store)
    finally:
        store.close()
        client.close()


def test_replicas_confirmed_saves_say_nothing(
    shared_redis_sentinel: RedisSentinel, caplog: pytest.LogCaptureFixture
) -> None:
    """With a replica connected, WAIT confirms each save and clear: no warning."""
    client = shared_redis_sentinel.master_client()
    store = RedisStore(client, unique(), replicas=1)
    try:
        with caplog.at_level(logging.WARNING, logger="freshtoken"):
            store.save(tokens(1), expected_generation=0)
            store.clear()
        assert not [r for r in caplog.records if "replicas confirmed" in r.getMessage()]
    finally:
        store.close()
        client.close()


@pytest.mark.anyio
async def test_async_saves_wait_for_replicas_too(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis with no replica cannot confirm: the async save lands, with a warning."""
    store = RedisStore(redis_server.url, unique(), replicas=1, replica_timeout=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="freshtoken"):
            saved = await store.asave(tokens(1), expected_generation=0)
        assert store.load() == saved
        assert any("0 of 1 replicas" in r.getMessage() for r in caplog.records)
    finally:
        await store.aclose()


def test_an_unconfirmed_save_is_kept_and_warned_about(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """replicas=1 on a Redis without replicas: the save lands, with a warning (no secret)."""
    store = RedisStore(redis_server.url, unique(), replicas=1, replica_timeout=0.05)
    try:
        with caplog.at_level(logging.WARNING, logger="freshtoken"):
            saved = store.save(tokens(1), expected_generation=0)
        assert store.load() == saved
        warnings = [r.getMessage() for r in caplog.records if "replicas" in r.getMessage()]
        assert warnings
        assert "0 of 1 replicas" in warnings[0]
        assert "SECRET" not in caplog.text
    finally:
        store.close()


# -- encryption at rest ---------------------------------------------------------------------

KEY = "a passphrase for the tests"


def test_encrypted_tokens_are_not_readable_in_redis(redis_server: RedisServer) -> None:
    """With an encryption key the hash holds a sealed record: no token in Redis."""
    store = RedisStore(redis_server.url, unique(), encryption_key=KEY)
    try:
        saved = store.save(tokens(1), expected_generation=0)
        raw = redis_server.client().hmget(store.redis_key, ["generation", "tokens"])
        assert isinstance(raw[1], bytes)
        assert b"SECRET" not in raw[1]
        assert b'"sealed"' in raw[1]
        assert store.encrypted
        assert store.load() == saved
        again = RedisStore(redis_server.url, store.redis_key, encryption_key=KEY)
        assert again.load() == saved  # another process with the same key opens it
        again.close()
    finally:
        store.close()


def test_a_sealed_record_copied_under_another_key_does_not_open(
    redis_server: RedisServer,
) -> None:
    """Records are bound to their key: one session's tokens pasted into another's are refused."""
    raw = redis_server.client()
    source = RedisStore(redis_server.url, unique(), encryption_key=KEY)
    target = RedisStore(redis_server.url, unique(), encryption_key=KEY)
    try:
        source.save(tokens(1), expected_generation=0)
        generation, sealed = raw.hmget(source.redis_key, ["generation", "tokens"])
        assert generation is not None
        assert sealed is not None
        raw.hset(target.redis_key, mapping={"generation": generation, "tokens": sealed})
        with pytest.raises(StoreError, match="wrong encryption key, or the record was altered"):
            target.load()
    finally:
        source.close()
        target.close()


@pytest.mark.parametrize(
    ("writer_key", "reader_key", "message"),
    [
        (None, KEY, "not encrypted, and this store expects them to be"),
        (KEY, None, "encrypted: pass encryption_key="),
        (KEY, "another passphrase", "wrong encryption key"),
    ],
)
def test_a_key_mismatch_is_a_clear_store_error(
    redis_server: RedisServer, writer_key: str | None, reader_key: str | None, message: str
) -> None:
    """No silent downgrade, no garbage: plaintext, sealed and wrongly keyed records each say so."""
    key = unique()
    writer = RedisStore(redis_server.url, key, encryption_key=writer_key)
    reader = RedisStore(redis_server.url, key, encryption_key=reader_key)
    try:
        writer.save(tokens(1), expected_generation=0)
        with pytest.raises(StoreError, match=message) as raised:
            reader.load()
        assert "SECRET" not in str(raised.value)
    finally:
        writer.close()
        reader.close()


def test_watch_false_starts_no_thread(redis_server: RedisServer) -> None:
    """A store made with watch=False subscribes to nothing: no thread per store."""
    before = threading.active_count()
    stores = [RedisStore(redis_server.url, unique(), watch=False) for _ in range(5)]
    try:
        managers = [TokenManager(FunctionRefresher(lambda c: tokens(2)), s) for s in stores]
        assert threading.active_count() == before
        assert len(managers) == 5
    finally:
        for store in stores:
            store.close()
