"""TokenManager.close(): watchers released when the credential's last manager closes, a refresh
in flight completes and is saved, a closed manager refuses to serve, and the context managers.

The file store here is real (its watcher is a thread polling the file); the Redis side of the
watcher is proven in tests/fleet/test_manager_close_redis.py against a real redis-server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from freshtoken import (
    FileStore,
    FunctionRefresher,
    MemoryStore,
    TokenManager,
    TokenSet,
)


def tokens(name: str, lifetime: float = 3600.0) -> TokenSet:
    return TokenSet(name, refresh_token=f"refresh-{name}", expires_at=time.time() + lifetime)


def never(current: TokenSet | None) -> TokenSet:
    raise AssertionError("no refresh is due in this test")


def watcher_threads(path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"freshtoken-watch-{path.name}"]


def wait_until_heard(manager: TokenManager, access_token: str) -> None:
    deadline = time.monotonic() + 5
    while manager.get_tokens().access_token != access_token:
        assert time.monotonic() < deadline, "the watcher never reported the change"
        time.sleep(0.01)  # polling an observable condition with a deadline


def save_elsewhere(path: Path, new: TokenSet) -> None:
    """Another process's save: a store object no manager of this test watches through."""
    other = FileStore(path, watch_interval=None)
    current = other.load()
    other.save(new, expected_generation=None if current is None else current.generation)


def test_closing_twice_is_harmless_and_a_closed_manager_refuses_every_use() -> None:
    """Each way of asking for, storing or clearing tokens raises one clear RuntimeError."""
    manager = TokenManager(FunctionRefresher(never), MemoryStore(tokens("a")))
    assert manager.get_tokens().access_token == "a"
    manager.close()
    manager.close()
    assert manager.closed
    assert "closed" in repr(manager)
    calls: list[Callable[[], object]] = [
        manager.get_tokens,
        manager.refresh,
        manager.clear,
        lambda: manager.set_tokens(tokens("b")),
        lambda: manager.handle_rejection(tokens("a")),
        lambda: manager.login(lambda: tokens("c")),
    ]
    for call in calls:
        with pytest.raises(RuntimeError, match="was closed: make a new TokenManager"):
            call()
    assert manager.cached_tokens() is None
    # The store is the caller's: it still holds the tokens, and a new manager serves them.
    assert TokenManager(FunctionRefresher(never), manager.store).get_tokens().access_token == "a"


@pytest.mark.anyio
async def test_a_closed_manager_refuses_async_callers_too() -> None:
    manager = TokenManager(FunctionRefresher(never), MemoryStore(tokens("a")))
    await manager.aclose()
    await manager.aclose()
    for call in (manager.aget_tokens, manager.arefresh, manager.aclear):
        with pytest.raises(RuntimeError, match="closed"):
            await call()
    with pytest.raises(RuntimeError, match="closed"):
        await manager.ahandle_rejection(tokens("a"))
    with pytest.raises(RuntimeError, match="closed"):
        await manager.aset_tokens(tokens("b"))


def test_with_closes_the_manager_and_a_closed_one_cannot_be_entered() -> None:
    with TokenManager(FunctionRefresher(never), MemoryStore(tokens("a"))) as manager:
        assert manager.get_tokens().access_token == "a"
    assert manager.closed
    with pytest.raises(RuntimeError, match="closed"), manager:
        pass


@pytest.mark.anyio
async def test_async_with_closes_the_manager() -> None:
    async with TokenManager(FunctionRefresher(never), MemoryStore(tokens("a"))) as manager:
        assert (await manager.aget_tokens()).access_token == "a"
    assert manager.closed
    with pytest.raises(RuntimeError, match="closed"):
        await manager.aget_tokens()


def test_closing_does_not_interrupt_a_refresh_in_flight(tmp_path: Path) -> None:
    """Invariant 9: the manager closes while its refresh waits on the token endpoint; the
    refresh completes, its tokens are saved, and the caller already waiting gets them."""
    entered, release = threading.Event(), threading.Event()

    def slow(current: TokenSet | None) -> TokenSet:
        entered.set()
        assert release.wait(10)
        return tokens("fresh")

    store = FileStore(tmp_path / "tokens.json", watch_interval=None)
    manager = TokenManager(FunctionRefresher(slow, can_acquire=True), store)
    got: list[TokenSet] = []
    caller = threading.Thread(target=lambda: got.append(manager.get_tokens(timeout=10)))
    caller.start()
    assert entered.wait(10)
    manager.close()
    release.set()
    caller.join(10)
    assert [t.access_token for t in got] == ["fresh"]
    assert manager.wait_idle(10)
    saved = FileStore(tmp_path / "tokens.json", watch_interval=None).load()
    assert saved is not None
    assert saved.tokens.access_token == "fresh"


def test_the_watcher_stops_when_the_last_manager_of_the_credential_closes(
    tmp_path: Path,
) -> None:
    """Two managers (on two store objects of one file) share one credential and so one
    watcher: closing the first keeps it for the second; closing the second stops it."""
    path = tmp_path / "shared-watch.json"
    save_elsewhere(path, tokens("first"))
    first = TokenManager(FunctionRefresher(never), FileStore(path, watch_interval=0.01))
    second = TokenManager(FunctionRefresher(never), FileStore(path, watch_interval=0.01))
    (watcher,) = watcher_threads(path)
    first.close()
    assert watcher.is_alive()
    save_elsewhere(path, tokens("second"))
    wait_until_heard(second, "second")
    second.close()
    watcher.join(5)
    assert not watcher.is_alive()
    assert watcher_threads(path) == []


def test_a_manager_made_after_the_others_closed_watches_again(tmp_path: Path) -> None:
    """The credential outlives its closed managers (they still refer to it): a new manager
    of it starts a new watcher rather than finding the stopped one."""
    path = tmp_path / "rewatch.json"
    save_elsewhere(path, tokens("first"))
    store = FileStore(path, watch_interval=0.01)
    closed = TokenManager(FunctionRefresher(never), store)
    (stopped,) = watcher_threads(path)
    closed.close()
    stopped.join(5)
    assert not stopped.is_alive()
    again = TokenManager(FunctionRefresher(never), store)
    assert again.get_tokens().access_token == "first"
    save_elsewhere(path, tokens("second"))
    wait_until_heard(again, "second")
    again.close()
    store.close()


def test_closing_leaves_the_store_usable(tmp_path: Path) -> None:
    """close() stops watching, nothing more: the store still loads and saves."""
    path = tmp_path / "usable.json"
    store = FileStore(path, watch_interval=0.01)
    manager = TokenManager(FunctionRefresher(never), store)
    manager.set_tokens(tokens("a"))
    manager.close()
    stored = store.load()
    assert stored is not None
    store.save(tokens("b"), expected_generation=stored.generation)
    reloaded = store.load()
    assert reloaded is not None
    assert reloaded.tokens.access_token == "b"


def test_a_closed_manager_is_not_told_of_the_session_expiring() -> None:
    """Hooks belong to open managers: the session of a credential shared with a closed
    manager expires and only the open one's on_session_expired runs."""
    from freshtoken import SessionExpired

    def refused(current: TokenSet | None) -> TokenSet:
        raise SessionExpired("invalid_grant", "the session was revoked")

    store = MemoryStore(tokens("old", lifetime=-1))
    told: list[str] = []
    closed = TokenManager(
        FunctionRefresher(refused), store, on_session_expired=lambda e: told.append("closed")
    )
    open_one = TokenManager(
        FunctionRefresher(refused), store, on_session_expired=lambda e: told.append("open")
    )
    closed.close()
    with pytest.raises(SessionExpired):
        open_one.get_tokens()
    assert told == ["open"]
