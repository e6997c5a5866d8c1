"""The memory session store's refresh locks: one per session, made while a refresh holds or
awaits it and dropped after, so a refresh that hangs (a provider that never answers) keeps no
other session waiting, and an idle session costs no lock. Waiters are served in turn, from
threads and event loops alike, and one that gives up or is cancelled leaves nothing behind."""

from __future__ import annotations

import threading

import anyio
import anyio.to_thread
import pytest

from freshtoken import LockTimeout
from freshtoken.bff import MemorySessionStore
from freshtoken.bff._sessions import handle_of, new_session_id

IDLE, ABSOLUTE = 600.0, 3600.0
WAIT = 10.0


async def sessions(count: int) -> tuple[MemorySessionStore, list[str]]:
    store = MemorySessionStore()
    handles = [handle_of(new_session_id()) for _ in range(count)]
    for made in handles:
        await store.create(made, {}, now=0, idle=IDLE, absolute=ABSOLUTE)
    return store, handles


@pytest.mark.anyio
async def test_a_held_refresh_lock_never_makes_another_session_wait() -> None:
    """With one session's lock held (its refresh hanging), each of 1,000 other sessions takes
    its own at once (256 shared stripes made a quarter of sessions wait behind some other)."""
    store, handles = await sessions(1001)
    hanging, others = handles[0], handles[1:]
    async with store.token_store(hanging).alock(WAIT):
        for other in others:
            async with store.token_store(other).alock(0.0):
                pass
            with store.token_store(other).lock(0.0):
                pass
        with pytest.raises(LockTimeout):
            async with store.token_store(hanging).alock(0.0):
                pass
        assert store.refresh_locks == 1
    assert store.refresh_locks == 0  # no lock kept for an idle session


@pytest.mark.anyio
async def test_waiters_get_the_lock_in_turn_when_it_is_released() -> None:
    """Two tasks queued for one session's lock get it one after the other, in their order."""
    store, (made,) = await sessions(1)
    tokens = store.token_store(made)
    order: list[str] = []
    queued = [anyio.Event(), anyio.Event()]

    async def waiter(name: str, index: int) -> None:
        queued[index].set()
        async with tokens.alock(WAIT):
            order.append(name)

    async with anyio.create_task_group() as group, tokens.alock(WAIT):
        group.start_soon(waiter, "first", 0)
        await queued[0].wait()
        await anyio.wait_all_tasks_blocked()
        group.start_soon(waiter, "second", 1)
        await queued[1].wait()
        await anyio.wait_all_tasks_blocked()
        assert order == []
    assert order == ["first", "second"]
    assert store.refresh_locks == 0


@pytest.mark.anyio
async def test_a_waiter_that_gives_up_or_is_cancelled_leaves_nothing_behind() -> None:
    """A waiter whose timeout passes gets LockTimeout, a cancelled one its cancellation; the
    lock, once released, is dropped, and the next caller takes it at once."""
    store, (made,) = await sessions(1)
    tokens = store.token_store(made)
    async with tokens.alock(WAIT):
        with pytest.raises(LockTimeout):
            async with tokens.alock(0.01):
                pass
        with anyio.CancelScope() as scope:
            scope.cancel()
            async with tokens.alock(WAIT):
                pytest.fail("a cancelled waiter got the lock")
        assert scope.cancelled_caught
    assert store.refresh_locks == 0
    async with tokens.alock(0.0):
        assert store.refresh_locks == 1


@pytest.mark.anyio
async def test_a_thread_waiting_gets_the_lock_an_event_loop_releases() -> None:
    """The lock is one for threads and tasks: a thread queued behind a task's refresh gets it
    when the task releases it."""
    store, (made,) = await sessions(1)
    tokens = store.token_store(made)
    got = threading.Event()

    def in_thread() -> None:
        with tokens.lock(WAIT):
            got.set()

    async with anyio.create_task_group() as group, tokens.alock(WAIT):
        group.start_soon(anyio.to_thread.run_sync, in_thread)
        while not store._locks[made].waiters:  # the thread has queued
            await anyio.sleep(0)
        assert not got.is_set()
    assert got.is_set()
    assert store.refresh_locks == 0
