"""A flight: one refresh (or re-read) of a credential in progress, and the callers waiting for it.

A flight runs as a task on the flight host (see ``host``); the callers only wait, and any of
them may stop waiting at any time without touching the flight. Waiting works from threads (a
``threading.Event``) and from asyncio and trio tasks on any number of event loops at once: a
task registers a waker that its own loop runs, so the host that lands the flight never blocks
a loop, and a loop that has closed meanwhile is simply skipped.

Every wait is bounded: a flight carries ``bound``, the seconds after which nobody waits for it
any longer (the flight itself goes on, and its answer is still saved when it comes).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

import anyio
import sniffio

from .._core.credential import copy_error
from .._core.tokens import TokenSet

__all__ = ["Flight", "copy_error", "strip_tracebacks"]


class Flight:
    """One flight's outcome: tokens, an error, or neither (the waiters decide again)."""

    __slots__ = ("_mutex", "_wakers", "bound", "done", "error", "result", "started")

    def __init__(self, bound: float) -> None:
        self.bound = bound
        self.started = time.monotonic()
        self.done = threading.Event()
        self.result: TokenSet | None = None
        self.error: BaseException | None = None
        self._wakers: list[Callable[[], None]] = []
        self._mutex = threading.Lock()

    def land(self, result: TokenSet | None, error: BaseException | None) -> None:
        """Record the outcome and wake every waiter (from any thread, exactly once)."""
        with self._mutex:
            self.result, self.error = result, error
            self.done.set()
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            # RuntimeError: that waiter's event loop has closed; nobody is left to wake there.
            with contextlib.suppress(RuntimeError):
                wake()

    def outcome(self) -> TokenSet | None:
        """The tokens, or None to decide again; raises a fresh copy of the flight's error."""
        if self.error is not None:
            raise copy_error(self.error)
        return self.result

    def remaining(self, timeout: float | None = None) -> float:
        """Seconds a caller that started waiting now may wait: the flight's bound, or less."""
        left = self.bound - (time.monotonic() - self.started)
        return max(0.0, left if timeout is None else min(left, timeout))

    def wait(self, timeout: float | None = None) -> bool:
        """Block this thread until the flight lands; False if ``timeout`` or the bound passed."""
        return self.done.wait(self.remaining(timeout))

    async def wait_async(self) -> bool:
        """Wait without blocking the event loop; cancellable; False if the bound passed."""
        with anyio.move_on_after(self.remaining()):
            await self._landed()
        return self.done.is_set()

    async def _landed(self) -> None:
        if sniffio.current_async_library() == "trio":
            import trio

            trio_event = trio.Event()
            token = trio.lowlevel.current_trio_token()
            if self._add_waker(lambda: token.run_sync_soon(trio_event.set)):
                await trio_event.wait()
            return
        loop = asyncio.get_running_loop()
        event = asyncio.Event()

        def wake() -> None:
            loop.call_soon_threadsafe(event.set)

        if self._add_waker(wake):
            await event.wait()

    def _add_waker(self, wake: Callable[[], None]) -> bool:
        with self._mutex:
            if self.done.is_set():
                return False
            self._wakers.append(wake)
            return True

    def __repr__(self) -> str:
        state = "landed" if self.done.is_set() else "in flight"
        return f"Flight({state})"


def strip_tracebacks(error: BaseException) -> None:
    """Drop the tracebacks of ``error`` and of its causes and contexts, in place.

    A failure the credential keeps (its last error, its flight's) would otherwise keep every
    frame it went through alive: the flight's coroutine, its HTTP client and connection, the
    objects of the loop. Callers get copies raised afresh, with tracebacks of their own.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        current.__traceback__ = None
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
