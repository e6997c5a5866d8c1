"""A TokenManager in the child of a real fork (Celery prefork, gunicorn): a flight that was in
progress in the parent, and the parent's watcher threads, did not come along."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import pytest
from redis_fixture import RedisServer

from freshtoken import FunctionRefresher, ManualClock, RedisStore, TokenManager, TokenSet

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
    pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning"),
]

TIMEOUT = 10.0


def forked(target: Callable[[Connection], None]) -> object:
    """Run ``target(pipe)`` in a forked child; return what it sent."""
    context = multiprocessing.get_context("fork")
    parent_end, child_end = context.Pipe()
    child = context.Process(target=target, args=(child_end,), daemon=True)
    child.start()
    child_end.close()
    try:
        assert parent_end.poll(TIMEOUT), "the child did not answer"
        return parent_end.recv()
    finally:
        child.join(TIMEOUT)
        if child.exitcode is None:
            child.kill()
            child.join()


def test_a_child_forked_during_a_refresh_is_not_stuck_waiting_for_it() -> None:
    """The parent's flight is blocked when the fork happens; the child refreshes on its own."""
    clock = ManualClock(1_000_000.0)
    gate = threading.Event()
    entered = threading.Event()

    def endpoint(current: TokenSet | None) -> dict[str, Any]:
        if os.getpid() == parent:
            entered.set()
            assert gate.wait(TIMEOUT)
            return {"access_token": "parent", "refresh_token": "r-parent", "expires_in": 60}
        return {"access_token": "child", "refresh_token": "r-child", "expires_in": 60}

    parent = os.getpid()
    manager = TokenManager(FunctionRefresher(endpoint), clock=clock)
    manager.set_tokens(TokenSet("a0", refresh_token="r0", expires_at=clock() - 1))
    waiter = threading.Thread(target=manager.get_tokens)
    waiter.start()
    assert entered.wait(TIMEOUT)

    def child(pipe: Connection) -> None:
        pipe.send(manager.get_tokens(timeout=5).access_token)

    try:
        assert forked(child) == "child"
    finally:
        gate.set()
        waiter.join(TIMEOUT)
    assert manager.get_tokens().access_token == "parent"


def test_a_child_hears_of_saves_made_by_the_parent(redis_server: RedisServer) -> None:
    """The manager re-subscribes to the store's changes in the child (a new watcher)."""
    store = RedisStore(redis_server.url, "freshtoken:fork-manager")
    try:
        store.save(TokenSet("first", refresh_token="r1"), expected_generation=None)
        manager = TokenManager(FunctionRefresher(lambda current: {}), store)
        assert manager.get_tokens().access_token == "first"

        def child(pipe: Connection) -> None:
            manager.get_tokens()  # the first slow-path call re-subscribes...
            manager.wait_idle(TIMEOUT)  # ...and re-reads "first" in the background
            heard = threading.Event()
            store.watch(heard.set)  # called after the manager's own callback
            pipe.send("subscribed")
            assert pipe.poll(TIMEOUT)
            pipe.recv()  # the parent has saved
            assert heard.wait(TIMEOUT)
            manager.get_tokens()  # starts the re-read the invalidation asked for
            manager.wait_idle(TIMEOUT)
            pipe.send(manager.get_tokens().access_token)

        context = multiprocessing.get_context("fork")
        parent_end, child_end = context.Pipe()
        process = context.Process(target=child, args=(child_end,), daemon=True)
        manager._state.invalidate()  # so that the child's first call takes the slow path
        process.start()
        child_end.close()
        assert parent_end.poll(TIMEOUT)
        assert parent_end.recv() == "subscribed"
        store.save(TokenSet("second", refresh_token="r2"), expected_generation=None)
        parent_end.send("saved")
        assert parent_end.poll(TIMEOUT)
        assert parent_end.recv() == "second"
        process.join(TIMEOUT)
    finally:
        store.close()
