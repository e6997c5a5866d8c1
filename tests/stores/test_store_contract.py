"""The TokenStore contract, proven once for every store: MemoryStore, FileStore, KeyringStore
(on ``file_keyring.FileKeyring``, a test backend: this machine has no OS keychain) and
RedisStore (on a real redis-server; encrypted; on a 3-node Redis Cluster, through the cluster
clients, sync and async; on a Sentinel-managed master, through Sentinel's clients).

What each store must do: load what was saved; fence saves on the generation (0: expect the
store empty; N: expect generation N; None: write whatever is there); give out generations that
never repeat, across clears and across a backing wiped behind its back; keep a refresh that was
in flight across a logout and a new login from overwriting that login; lock exclusively
between threads; behave the same through the async twins; close twice without harm. What is
particular to one store (formats, permissions, leases, pub/sub) is tested in its own file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from file_keyring import file_keyring_selected
from redis_fixture import RedisCluster, RedisSentinel

from freshtoken import FunctionRefresher, LockTimeout, TokenManager, TokenSet
from freshtoken.stores import (
    FileStore,
    GenerationConflict,
    KeyringStore,
    MemoryStore,
    RedisStore,
    TokenStore,
)

SERVICE, USER = "freshtoken-contract", "demo"


def tokens(name: str, *, lifetime: float = 3600.0) -> TokenSet:
    now = time.time()
    return TokenSet(
        access_token=f"access-SECRET-{name}",
        refresh_token=f"refresh-SECRET-{name}",
        expires_at=now + lifetime,
        obtained_at=now,
    )


@dataclasses.dataclass
class Backing:
    """Where one store keeps its tokens, and how to reach it again."""

    kind: str
    store: TokenStore
    # Another store object on the same backing: another process, as far as the backing can
    # tell. A MemoryStore has no backing but itself, so it gives itself.
    open_another: Callable[[], TokenStore]
    # Deletes the backing behind the stores' backs (rm, keyring del, DEL or a Redis lost
    # without persistence); None when there is nothing to delete.
    wipe: Callable[[], None] | None


@pytest.fixture(
    params=[
        "memory",
        "file",
        "keyring",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-encrypted", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
        pytest.param("redis-sentinel", marks=pytest.mark.redis),
    ]
)
def backing(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backing]:
    """A fresh, empty store of each kind."""
    kind: str = request.param
    opened: list[TokenStore] = []

    def keep(store: TokenStore) -> TokenStore:
        opened.append(store)
        return store

    selection = contextlib.ExitStack()
    if kind == "memory":
        memory = MemoryStore()
        made = Backing(kind, memory, lambda: memory, None)
    elif kind == "file":
        path = tmp_path / "tokens.json"

        def open_file() -> TokenStore:
            return keep(FileStore(path, watch_interval=None))

        made = Backing(kind, open_file(), open_file, path.unlink)
    elif kind == "keyring":
        backend = selection.enter_context(file_keyring_selected(tmp_path / "keychain.json"))
        lock_path = tmp_path / "locks" / "refresh.lock"

        def open_keyring() -> TokenStore:
            return keep(KeyringStore(SERVICE, USER, lock_path=lock_path))

        made = Backing(
            kind,
            open_keyring(),
            open_keyring,
            lambda: backend.delete_password(SERVICE, USER),
        )
    elif kind in ("redis", "redis-encrypted"):
        server = request.getfixturevalue("shared_redis_server")
        key = f"freshtoken:contract:{uuid.uuid4().hex}"
        secret = "contract passphrase" if kind == "redis-encrypted" else None

        def open_redis() -> TokenStore:
            return keep(RedisStore(server.url, key, lease=2.0, encryption_key=secret))

        def delete_key() -> None:
            server.client().delete(key)

        made = Backing(kind, open_redis(), open_redis, delete_key)
    elif kind == "redis-cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        key = f"freshtoken:contract:{uuid.uuid4().hex}"
        admin = selection.enter_context(contextlib.closing(cluster.client()))

        def open_cluster() -> TokenStore:
            client = cluster.client()
            async_client = cluster.async_client()
            store = RedisStore(client, key, lease=2.0, async_client=async_client)
            selection.callback(client.close)
            return keep(store)

        def delete_cluster_key() -> None:
            admin.delete(f"{{{key}}}")

        made = Backing(kind, open_cluster(), open_cluster, delete_cluster_key)
    else:
        sentinel: RedisSentinel = request.getfixturevalue("shared_redis_sentinel")
        key = f"freshtoken:contract:{uuid.uuid4().hex}"

        def open_sentinel() -> TokenStore:
            client = sentinel.master_client()
            selection.callback(client.close)
            return keep(
                RedisStore(client, key, lease=2.0, async_client=sentinel.async_master_client())
            )

        def delete_sentinel_key() -> None:
            with contextlib.closing(sentinel.master_client()) as admin:
                admin.delete(key)

        made = Backing(kind, open_sentinel(), open_sentinel, delete_sentinel_key)
    try:
        yield made
    finally:
        for store in opened:
            store.close()
        selection.close()


# -- load, save, fences -----------------------------------------------------------------------


def test_an_empty_store_loads_none(backing: Backing) -> None:
    """Nothing saved yet: load() is None, from any store object on the backing."""
    assert backing.store.load() is None
    assert backing.open_another().load() is None


def test_load_gives_back_what_save_returned(backing: Backing) -> None:
    """save() returns the tokens with a positive generation; load() gives back exactly that."""
    given = tokens("1")
    saved = backing.store.save(given, expected_generation=0)
    assert saved.tokens == given
    assert saved.generation > 0
    assert backing.store.load() == saved
    assert backing.open_another().load() == saved


def test_every_save_takes_a_larger_generation(backing: Backing) -> None:
    """Fenced and unconditional saves alike move the generation up."""
    generations = [backing.store.save(tokens("0"), expected_generation=0).generation]
    for n in range(1, 4):
        generations.append(
            backing.store.save(tokens(str(n)), expected_generation=generations[-1]).generation
        )
    generations.append(backing.store.save(tokens("x"), expected_generation=None).generation)
    assert generations == sorted(set(generations))


def test_expected_zero_writes_only_into_an_empty_store(backing: Backing) -> None:
    """expected_generation=0 means "expect the store empty": refused once tokens are there."""
    saved = backing.store.save(tokens("1"), expected_generation=0)
    with pytest.raises(GenerationConflict):
        backing.open_another().save(tokens("2"), expected_generation=0)
    assert backing.store.load() == saved


def test_a_save_fenced_on_an_old_generation_writes_nothing(backing: Backing) -> None:
    """expected_generation=N writes only over generation N; a refused save changes nothing."""
    first = backing.store.save(tokens("1"), expected_generation=0)
    second = backing.open_another().save(tokens("2"), expected_generation=first.generation)
    with pytest.raises(GenerationConflict) as caught:
        backing.store.save(tokens("3"), expected_generation=first.generation)
    assert "SECRET" not in str(caught.value)
    assert backing.store.load() == second


def test_an_unconditional_save_replaces_whatever_is_there(backing: Backing) -> None:
    """expected_generation=None (a login) writes over any generation, and over nothing."""
    backing.store.save(tokens("1"), expected_generation=None)
    backing.store.save(tokens("2"), expected_generation=None)
    saved = backing.open_another().save(tokens("3"), expected_generation=None)
    assert backing.store.load() == saved


# -- generations never repeat -----------------------------------------------------------------


def test_clear_forgets_the_tokens_and_moves_the_generation(backing: Backing) -> None:
    """After clear() the store is empty for fences (0 matches) and the old generation is dead."""
    before = backing.store.save(tokens("1"), expected_generation=0)
    backing.store.clear()
    assert backing.store.load() is None
    with pytest.raises(GenerationConflict):
        backing.store.save(tokens("2"), expected_generation=before.generation)
    after = backing.store.save(tokens("3"), expected_generation=0)
    assert after.generation > before.generation + 1  # the clear took one


def test_generations_never_repeat_across_saves_and_clears(backing: Backing) -> None:
    """Logins, refreshes and logouts, over and over: no generation is ever given out twice."""
    given: list[int] = []
    for round_ in range(4):
        login = backing.store.save(tokens(f"{round_}-login"), expected_generation=None)
        refreshed = backing.open_another().save(
            tokens(f"{round_}-refresh"), expected_generation=login.generation
        )
        given += [login.generation, refreshed.generation]
        backing.store.clear()
        backing.store.clear()  # clearing an empty store changes nothing
    assert given == sorted(set(given))


def test_clearing_an_empty_store_is_harmless(backing: Backing) -> None:
    """clear() on a store that never held tokens neither fails nor blocks a first save."""
    backing.store.clear()
    backing.open_another().clear()
    assert backing.store.load() is None
    assert backing.store.save(tokens("1"), expected_generation=0).generation > 0


def test_a_refresh_in_flight_across_logout_and_login_cannot_overwrite_the_login(
    backing: Backing,
) -> None:
    """A refresh reads generation N under the lock; meanwhile the user logs out and in again.
    The refresh's save fenced on N is refused, and the new login's tokens stay."""
    backing.store.save(tokens("old-session"), expected_generation=None)
    with backing.store.lock(5):
        read = backing.store.load()
        assert read is not None
        elsewhere = backing.open_another()
        elsewhere.clear()  # logout
        login = elsewhere.save(tokens("new-session"), expected_generation=None)  # login
        with pytest.raises(GenerationConflict):
            backing.store.save(tokens("old-session-refreshed"), expected_generation=read.generation)
    assert backing.store.load() == login


def test_a_manager_refreshing_across_logout_and_login_keeps_the_new_login(
    backing: Backing,
) -> None:
    """The same race through TokenManager: its refresh lands after clear() + set_tokens(new);
    the store keeps the new login, and the manager hands out the new login's token."""
    backing.store.save(tokens("old-session", lifetime=-10.0), expected_generation=None)
    inside, release = threading.Event(), threading.Event()

    def slow_refresh(current: TokenSet | None) -> TokenSet:
        inside.set()
        assert release.wait(10)
        return tokens("old-session-refreshed")

    refreshing = TokenManager(FunctionRefresher(slow_refresh), backing.store)
    results: list[TokenSet] = []
    worker = threading.Thread(target=lambda: results.append(refreshing.get_tokens()))
    worker.start()
    try:
        assert inside.wait(10)
        other = TokenManager(FunctionRefresher(slow_refresh), backing.open_another())
        other.clear()
        other.set_tokens(tokens("new-session"))
    finally:
        release.set()
        worker.join(10)
    stored = backing.store.load()
    assert stored is not None
    assert stored.tokens.access_token == "access-SECRET-new-session"
    assert [result.access_token for result in results] == ["access-SECRET-new-session"]


@pytest.mark.parametrize(
    "backing",
    [  # a memory store has no backing to delete behind its back
        "file",
        "keyring",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-encrypted", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
        pytest.param("redis-sentinel", marks=pytest.mark.redis),
    ],
    indirect=True,
)
def test_a_wiped_backing_does_not_give_out_old_generations_again(backing: Backing) -> None:
    """File deleted, keychain entry deleted, Redis key lost: a slow holder of a generation read
    before cannot match the generations given out after (they restart at a random point)."""
    assert backing.wipe is not None
    before = backing.store.save(tokens("1"), expected_generation=None)
    backing.wipe()
    assert backing.store.load() is None
    login = backing.open_another().save(tokens("2"), expected_generation=None)
    assert login.generation != before.generation
    with pytest.raises(GenerationConflict):
        backing.store.save(tokens("3"), expected_generation=before.generation)
    assert backing.store.load() == login


# -- the lock ---------------------------------------------------------------------------------


def test_the_lock_is_exclusive_between_threads(backing: Backing) -> None:
    """Threads sharing one store object take turns: never two inside at once."""
    inside = 0
    most = 0
    guard = threading.Lock()
    store = backing.store

    def enter() -> None:
        nonlocal inside, most
        for _ in range(15):
            with store.lock(10):
                with guard:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0)  # let another thread run while this one is inside
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=enter) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == 1


def test_a_held_lock_times_out_another_taker(backing: Backing) -> None:
    """While the lock is held, another store object (or thread) waits, then gets LockTimeout;
    once released, the lock is taken at once."""
    other = backing.open_another()
    with backing.store.lock(5):
        started = time.monotonic()
        with pytest.raises(LockTimeout), other.lock(0.2):
            pass
        assert time.monotonic() - started >= 0.15
    with other.lock(0.2):
        pass


def test_close_twice_is_harmless(backing: Backing) -> None:
    """close() may be called more than once."""
    backing.store.save(tokens("1"), expected_generation=None)
    backing.store.close()
    backing.store.close()


# -- the async twins --------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_async_twins_keep_the_same_contract(backing: Backing) -> None:
    """aload / asave / aclear / alock, on asyncio and on trio, behave as their blocking twins."""
    store, other = backing.store, backing.open_another()
    assert await store.aload() is None
    first = await store.asave(tokens("1"), expected_generation=0)
    assert await other.aload() == first
    with pytest.raises(GenerationConflict):
        await other.asave(tokens("2"), expected_generation=0)
    second = await other.asave(tokens("2"), expected_generation=first.generation)
    with pytest.raises(GenerationConflict):
        await store.asave(tokens("3"), expected_generation=first.generation)
    await store.aclear()
    assert await other.aload() is None
    with pytest.raises(GenerationConflict):
        await store.asave(tokens("4"), expected_generation=second.generation)
    login = await other.asave(tokens("5"), expected_generation=None)
    assert login.generation > second.generation
    assert await store.aload() == login


@pytest.mark.anyio
async def test_the_async_lock_is_exclusive_and_times_out(backing: Backing) -> None:
    """Tasks take turns on alock; a task that cannot get it in time gets LockTimeout."""
    inside = 0
    most = 0

    async def enter() -> None:
        nonlocal inside, most
        for _ in range(5):
            async with backing.store.alock(10):
                inside += 1
                most = max(most, inside)
                await anyio.sleep(0)
                inside -= 1

    with anyio.fail_after(30):
        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(enter)
        assert most == 1
        async with backing.store.alock(5):
            with pytest.raises(LockTimeout):
                async with backing.open_another().alock(0.2):
                    pass
        async with backing.open_another().alock(0.2):
            pass
