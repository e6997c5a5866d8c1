"""The flight host: one event loop, in one daemon thread, on which every refresh runs.

Core v2 gave each flight a thread of its own. That was correct (no caller's cancellation
reaches a thread) and costly: a thread, an event loop, an HTTP client and a TLS handshake per
refresh, and during a provider outage one parked thread per credential in backoff. The host
keeps what made it correct and pays for it once per process:

* One asyncio loop in one daemon thread, ``freshtoken-host``, started at the first flight.
  Flights are tasks on it. Nobody but the host holds a flight's task, so no caller can cancel
  it: asyncio's ``wait_for`` and ``task.cancel()``, trio's and anyio's cancel scopes, a loop
  that closes, a thread that stops waiting; callers wait on the flight's own handle
  ([`Flight`][freshtoken._engine.flight.Flight]), which works from any thread and any loop.
* A task starts with an empty ``contextvars.Context``: nothing of the caller that happened to
  start it (a request id, an OpenTelemetry span, a trio token) leaks into it.
* Blocking work (sync stores, sync refreshers, sync hooks) goes to a bounded pool of
  ``WORKERS`` daemon threads; async stores and refreshers run natively on the loop. A backoff
  is a timer on the loop, not a parked thread: the thread count stays bounded whatever the
  number of credentials in trouble.
* At interpreter exit the host waits for the flights in progress (so an answer that is on its
  way is saved, and its rotated refresh token not lost), for at most ``DRAIN_LIMIT`` seconds;
  backoff sleeps are cut short meanwhile. Then it gives up with a warning.
* After ``os.fork`` the child's host is a new one, started at its first flight: the parent's
  thread did not come along.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = [
    "DRAIN_LIMIT",
    "THREAD_NAME",
    "WORKERS",
    "FlightHost",
    "flights_in_progress",
    "host",
    "in_host_thread",
]

logger = logging.getLogger("freshtoken")

T = TypeVar("T")

THREAD_NAME = "freshtoken-host"
WORKER_NAME = "freshtoken-host-worker"
WORKERS = 8  # blocking calls (sync stores, refreshers, hooks) at once, in all
DRAIN_LIMIT = 60.0  # seconds the interpreter's exit waits for flights in progress
_WORKER_IDLE = 30.0  # seconds an idle worker thread lives


class _Workers:
    """A bounded pool of daemon threads for blocking calls, started as needed.

    Not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined at interpreter exit
    before ``atexit`` handlers run, and it refuses work afterwards, which would fail the
    flights the exit drain is waiting for.
    """

    def __init__(self, most: int) -> None:
        self.most = most
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._mutex = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._pending = 0

    def put(self, job: Callable[[], None]) -> None:
        with self._mutex:
            self._pending += 1
            start = self._idle < self._pending and self._threads < self.most
            if start:
                self._threads += 1
        self._jobs.put(job)
        if start:
            thread = threading.Thread(target=self._work, name=WORKER_NAME, daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't start new thread": the job waits for another worker
                with self._mutex:
                    self._threads -= 1
                    alone = self._threads == 0
                if alone:
                    raise

    def _work(self) -> None:
        while True:
            with self._mutex:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=_WORKER_IDLE)
            except queue.Empty:
                with self._mutex:
                    self._idle -= 1
                    if self._pending == 0:
                        self._threads -= 1
                        return
                continue
            with self._mutex:
                self._idle -= 1
                self._pending -= 1
            job()


class FlightHost:
    """The loop, its thread, its workers. Use [`host()`][host]: one per process."""

    def __init__(self, workers: int = WORKERS) -> None:
        self._mutex = threading.Lock()
        self._idle = threading.Condition(self._mutex)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # touched on the loop only
        self._sleepers: set[asyncio.Future[None]] = set()  # touched on the loop only
        self._flights = 0  # submitted and not yet ended (guarded by _mutex)
        self._exiting = False
        self._workers = _Workers(workers)

    # -- from any thread ----------------------------------------------------------------------

    def submit(self, flight: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``flight()`` as a task of the host loop, in an empty context.

        Raises RuntimeError when the host cannot run it (the interpreter is exiting and the
        host has given up, or no thread can be started).
        """
        with self._mutex:
            loop = self._start()
            self._flights += 1
        try:
            loop.call_soon_threadsafe(self._create, flight, context=contextvars.Context())
        except RuntimeError:  # the loop was closed (after the exit drain)
            self._ended()
            raise

    def flights_in_progress(self) -> int:
        with self._mutex:
            return self._flights

    def in_host_thread(self) -> bool:
        thread = self._thread
        return thread is not None and thread is threading.current_thread()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no flight is in progress; False if some still are after ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._flights:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    # -- on the host loop ---------------------------------------------------------------------

    async def run_sync(self, function: Callable[..., T], *args: Any) -> T:
        """``function(*args)`` in a worker thread; the loop goes on meanwhile."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()

        def job() -> None:
            try:
                result = function(*args)
            except BaseException as error:  # noqa: BLE001 - handed to the awaiting task
                _settle_threadsafe(loop, done, None, error)
            else:
                _settle_threadsafe(loop, done, result, None)

        self._workers.put(job)
        return await done

    def track(self, task: asyncio.Task[Any]) -> None:
        """Count ``task`` (started on the loop by a flight, outliving it: a request still in
        the air) as work in progress until it ends, so that the exit drain waits for it."""
        with self._mutex:
            self._flights += 1
        task.add_done_callback(lambda _: self._ended())

    async def sleep(self, seconds: float) -> None:
        """A backoff: a timer on the loop, cut short when the interpreter exits."""
        if self._exiting or seconds <= 0:
            return
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _settle, woken, None, None)
        self._sleepers.add(woken)
        try:
            await woken
        finally:
            timer.cancel()
            self._sleepers.discard(woken)

    # -- internals ----------------------------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        """The running loop, started on first use (call under ``_mutex``)."""
        if self._loop is not None:
            return self._loop
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(loop, ready), name=THREAD_NAME, daemon=True
        )
        thread.start()  # RuntimeError at exit: the caller fails its flight
        ready.wait()
        self._loop, self._thread = loop, thread
        atexit.register(self._drain_at_exit)
        return loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def _create(self, flight: Callable[[], Coroutine[Any, Any, None]]) -> None:
        # This runs in the empty context submit() gave call_soon_threadsafe, and the task
        # copies the current context: the flight starts with nothing of its caller's.
        task = asyncio.get_running_loop().create_task(flight())
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("freshtoken: a flight failed unexpectedly", exc_info=task.exception())
        self._ended()

    def _ended(self) -> None:
        with self._idle:
            self._flights -= 1
            if not self._flights:
                self._idle.notify_all()

    def _wake_sleepers(self) -> None:
        for woken in list(self._sleepers):
            _settle(woken, None, None)

    def _drain_at_exit(self) -> None:
        with self._mutex:
            loop, self._exiting = self._loop, True
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._wake_sleepers)
        except RuntimeError:
            return
        if not self.wait_idle(DRAIN_LIMIT):
            logger.warning(
                "freshtoken: %d refresh(es) still in progress %g s after the interpreter "
                "began to exit: giving up on them (their tokens may not be saved)",
                self.flights_in_progress(),
                DRAIN_LIMIT,
            )
        loop.call_soon_threadsafe(loop.stop)


def _settle(future: asyncio.Future[T], result: T | None, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)  # type: ignore[arg-type]


def _settle_threadsafe(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[T],
    result: T | None,
    error: BaseException | None,
) -> None:
    # RuntimeError: the loop closed after the exit drain gave up: nobody awaits it.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, future, result, error)


_host = FlightHost()


def host() -> FlightHost:
    """This process's host (a new one in a forked child)."""
    return _host


def flights_in_progress() -> int:
    """Flights submitted to this process's host and not yet ended."""
    return _host.flights_in_progress()


def in_host_thread() -> bool:
    """Whether the calling thread is the host loop's (where blocking would stall every flight)."""
    return _host.in_host_thread()


def _after_fork_in_child() -> None:
    # The host's thread and workers are not in the child; its loop must never run there. A new
    # host starts at the child's first flight. The parent's atexit drain stays registered for
    # the old host: without its loop it returns at once.
    global _host
    parent = _host
    parent._loop, parent._thread, parent._exiting = None, None, True
    _host = FlightHost(parent._workers.most)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
