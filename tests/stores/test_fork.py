"""Stores in the child of a real ``os.fork()`` (multiprocessing's 'fork' context).

Only the forking thread lives on in a child: the parent's watcher threads are gone, and a lock
another thread held at the fork stays held there unless the store renews it. Each child reports
through a pipe; the parent never sleeps to wait for it.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from redis_fixture import RedisServer

from freshtoken import LockTimeout, TokenSet
from freshtoken.stores import FileStore, MemoryStore, RedisStore, TokenStore

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    # Python 3.12+ warns that forking a process with threads may deadlock: preventing that is
    # what these tests prove.
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

TIMEOUT = 10.0


def tokens(n: int) -> TokenSet:
    return TokenSet(f"access-SECRET-{n}", refresh_token=f"refresh-SECRET-{n}")


def in_child(target: Callable[[Connection], None]) -> tuple[Connection, Callable[[], int]]:
    """Fork a child running ``target(pipe)``; return the parent's end and a join returning
    the child's exit code."""
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=target, args=(child_end,), daemon=True)
    child.start()
    child_end.close()

    def join() -> int:
        child.join(TIMEOUT)
        if child.exitcode is None:
            child.kill()
            child.join()
        return -1 if child.exitcode is None else child.exitcode

    return parent_end, join


def receive(pipe: Connection) -> object:
    assert pipe.poll(TIMEOUT), "the child did not answer"
    return pipe.recv()


def watch_in_child(store: TokenStore, pipe: Connection) -> None:
    """The child's side: watch, say so, report whether a change arrived, then save."""
    changed = threading.Event()
    store.watch(changed.set)
    pipe.send("watching")
    pipe.send("changed" if changed.wait(TIMEOUT) else "no change heard")
    assert pipe.recv() == "your turn"
    store.save(tokens(3), expected_generation=None)
    pipe.send("saved")


def save_for_a_watching_child(store: TokenStore) -> Callable[[], int]:
    """Fork a child that watches ``store``; save, check the child heard it, let it save in
    turn; return the child's join."""
    pipe, join = in_child(lambda pipe: watch_in_child(store, pipe))
    assert receive(pipe) == "watching"
    store.save(tokens(2), expected_generation=None)
    assert receive(pipe) == "changed"
    pipe.send("your turn")
    assert receive(pipe) == "saved"
    return join


@pytest.fixture
def redis_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    store = RedisStore(redis_server.url, "freshtoken:fork")
    yield store
    store.close()


@pytest.mark.redis
def test_a_forked_childs_redis_watcher_hears_the_parent_and_the_parent_hears_the_child(
    redis_store: RedisStore,
) -> None:
    """The parent watches, then forks: watch() in the child starts a working watcher (the
    parent's thread is not there), and the two processes hear each other's saves through the
    same store object (the child has an origin of its own)."""
    heard_by_parent = threading.Semaphore(0)
    redis_store.watch(heard_by_parent.release)
    join = save_for_a_watching_child(redis_store)
    assert heard_by_parent.acquire(timeout=TIMEOUT), "the parent did not hear the child's save"
    assert join() == 0


def test_a_forked_childs_file_watcher_hears_the_parent(tmp_path: Path) -> None:
    """The parent watches a token file, then forks: watch() in the child starts a working
    watcher that sees the parent's next save."""
    store = FileStore(tmp_path / "tokens.json", watch_interval=0.02)
    store.save(tokens(1), expected_generation=None)
    store.watch(lambda: None)
    try:
        join = save_for_a_watching_child(store)
        assert join() == 0
        loaded = store.load()
        assert loaded is not None
        assert loaded.tokens == tokens(3)
    finally:
        store.close()


def lock_in_child(store: TokenStore, pipe: Connection) -> None:
    """The child's side: try the lock at once, then again once the parent let go of it."""
    try:
        with store.lock(0.2):
            pipe.send("free")
    except LockTimeout:
        pipe.send("busy")
    assert pipe.recv() == "released"
    try:
        with store.lock(5):
            pipe.send("locked")
    except LockTimeout:
        pipe.send("still locked in the child")


@pytest.mark.parametrize(
    ("kind", "in_the_child"),
    [
        # A memory store in the child is the child's own copy: no parent thread holds it.
        ("memory", "free"),
        # A file lock is shared: the parent's holder keeps it across the fork.
        ("file", "busy"),
    ],
)
def test_a_lock_held_by_another_thread_at_the_fork_is_not_held_forever_in_the_child(
    tmp_path: Path, kind: str, in_the_child: str
) -> None:
    """A parent thread holds the refresh lock when the process forks. The child does not find
    it held for ever by a thread that does not exist there: it gets it once nobody holds it."""
    store: TokenStore = MemoryStore() if kind == "memory" else FileStore(tmp_path / "t.json")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.lock(5):
            holding.set()
            release.wait(TIMEOUT)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(TIMEOUT)
    try:
        pipe, join = in_child(lambda pipe: lock_in_child(store, pipe))
        assert receive(pipe) == in_the_child
    finally:
        release.set()
        holder.join()
    pipe.send("released")
    assert receive(pipe) == "locked"
    assert join() == 0
    started = time.monotonic()
    with store.lock(5):  # the child's exit left nothing held in the parent
        assert time.monotonic() - started < 1.0
