"""Sending the few requests of a login (discovery, JWKS, token endpoint), sync and async.

The logins are written once, as sans-I/O *flows*: generators that yield an ``httpx.Request``
to send (and receive its response) or a [`Pause`][] to wait out (and receive ``None``),
and return their result. [`drive()`][drive] and [`adrive()`][adrive] are their only I/O, as httpx's
``auth_flow`` is driven by its sync and async clients. A transport failure is thrown into the
flow as [`LoginFailed`][freshtoken.LoginFailed] (``cannot reach https://host/path: connection
refused``), so that a flow may decide to try again.

Each request goes through a client of its own (on the flight host: the host's kept-alive
client) and follows no redirect: credentials stay with the URL they were meant for.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import os
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Generic, ParamSpec, TypeVar

import anyio
import httpx
import sniffio

from .._core.policy import LARGEST_ANSWER
from .._runtime import connections
from ..errors import LoginFailed

__all__ = [
    "DEFAULT_TIMEOUT",
    "Flow",
    "Pause",
    "Verify",
    "adrive",
    "asend",
    "blocking",
    "drive",
    "run_blocking",
    "send",
    "ssl_context",
    "unreachable",
]

T = TypeVar("T")
P = ParamSpec("P")


@dataclasses.dataclass(frozen=True, slots=True)
class Pause:
    """A flow's request to wait ``seconds`` before its next step."""

    seconds: float


# The send type is Any: a flow that never pauses types what it receives as a Response.
Flow = Generator["httpx.Request | Pause", Any, T]

Verify = bool | str | ssl.SSLContext
DEFAULT_TIMEOUT = httpx.Timeout(10.0)
ANSWER_DEADLINE = 30.0


def ssl_context(verify: Verify) -> ssl.SSLContext:
    """``verify`` as a context: True (system CAs), False, a CA bundle path, or a context."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    return _cached_context(verify)


@functools.lru_cache(maxsize=8)
def _cached_context(verify: bool | str) -> ssl.SSLContext:
    # Loading the CA bundle costs ~25-100 ms: once per process is enough.
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return httpx.create_ssl_context(verify=verify)


def unreachable(url: str, error: httpx.TransportError) -> LoginFailed:
    return LoginFailed("network_error", f"cannot reach {_without_query(url)}: {_reason(error)}")


def send(
    request: httpx.Request, *, verify: Verify = True, timeout: httpx.Timeout | float | None = None
) -> httpx.Response:
    """[`asend()`][asend] from synchronous code (on a private event loop)."""
    return run_blocking(asend(request, verify=verify, timeout=timeout))


async def asend(
    request: httpx.Request, *, verify: Verify = True, timeout: httpx.Timeout | float | None = None
) -> httpx.Response:
    """Send ``request`` and read its whole answer, at most ``LARGEST_ANSWER`` bytes, within
    ``ANSWER_DEADLINE`` seconds: httpx's timeouts bound each read, not a server that drips."""
    url = str(request.url)
    try:
        with anyio.fail_after(ANSWER_DEADLINE):
            if connections.shared():
                # On the flight host: its kept-alive connections for this TLS configuration.
                status, raw, body = await connections.send(
                    request,
                    httpx.Timeout(timeout or DEFAULT_TIMEOUT),
                    ssl_context(verify),
                    LARGEST_ANSWER,
                )
            else:
                async with httpx.AsyncClient(
                    verify=ssl_context(verify),
                    timeout=timeout or DEFAULT_TIMEOUT,
                    follow_redirects=False,
                ) as own_client:
                    response = await own_client.send(request, stream=True)
                    status, raw = response.status_code, response.headers.raw
                    try:
                        body = await _read_capped(response, url)
                    finally:
                        await response.aclose()
    except TimeoutError:
        raise LoginFailed(
            "timeout", f"no complete answer from {_without_query(url)} in {ANSWER_DEADLINE:g} s"
        ) from None
    except httpx.TransportError as error:
        raise unreachable(url, error) from None
    except httpx.DecodingError:
        raise LoginFailed(
            "invalid_response", f"the answer of {_without_query(url)} could not be decoded"
        ) from None
    _check_length(body, url)
    headers = [(name, value) for name, value in raw if name.lower() not in _FRAMING]
    return httpx.Response(status, headers=headers, content=body, request=request)


# The body is handed on decoded and whole: the headers that described its transfer go.
_FRAMING = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


async def _read_capped(response: httpx.Response, url: str) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        _check_length(body, url)
    return bytes(body)


def _check_length(body: bytes | bytearray, url: str) -> None:
    if len(body) > LARGEST_ANSWER:
        raise LoginFailed(
            "invalid_response",
            f"the answer of {_without_query(url)} is over {LARGEST_ANSWER} bytes long",
        )


def drive(
    flow: Flow[T], *, verify: Verify = True, sleep: Callable[[float], object] = time.sleep
) -> T:
    """Run ``flow`` with blocking I/O."""
    try:
        step = next(flow)
        while True:
            try:
                if isinstance(step, Pause):
                    sleep(step.seconds)
                    reply: httpx.Response | None = None
                else:
                    reply = send(step, verify=verify)
            except LoginFailed as failure:
                step = flow.throw(failure)
                continue
            step = flow.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result


async def adrive(
    flow: Flow[T],
    *,
    verify: Verify = True,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
) -> T:
    """Run ``flow`` in async code (asyncio or trio)."""
    try:
        step = next(flow)
        while True:
            try:
                if isinstance(step, Pause):
                    await sleep(step.seconds)
                    reply: httpx.Response | None = None
                else:
                    reply = await asend(step, verify=verify)
            except LoginFailed as failure:
                step = flow.throw(failure)
                continue
            step = flow.send(reply)
    except StopIteration as done:
        result: T = done.value
        return result


def _without_query(url: str) -> str:
    # A query may hold a code or a token; the host and path say where well enough.
    return url.split("?", 1)[0].split("#", 1)[0]


def _reason(error: BaseException) -> str:
    """The operating system's words for it ("connection refused"), else httpx's."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLError):
            detail = getattr(cause, "verify_message", None) or getattr(cause, "reason", None)
            detail = detail or "handshake failed"
            return f"TLS: {detail}"
        if isinstance(cause, OSError) and (cause.errno or cause.strerror):
            # asyncio words a refused connection "Connect call failed (...)": the errno says
            # it better. Resolver errors have negative codes: their own words then.
            code = cause.errno
            words = os.strerror(code) if isinstance(code, int) and code > 0 else str(cause.strerror)
            return words[:1].lower() + words[1:]
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    text = " ".join(str(error).split())
    return text[:200] if text else type(error).__name__


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion from synchronous code, on a private event loop.

    From a thread that already runs an event loop (a sync call made inside async code), the
    private loop runs in a helper thread: blocking that loop is what a sync call does anyway.
    Trio's counts too: anyio would take an asyncio loop in a trio thread for trio's.
    """
    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return asyncio.run(coroutine)
    return _HelperRun(coroutine).wait(_asyncio_task())


class _HelperRun(Generic[T]):
    """A coroutine run to its end on a private loop in a helper thread, for a caller whose own
    thread runs an event loop; the caller's Ctrl-C cancels it."""

    def __init__(self, coroutine: Coroutine[Any, Any, T]) -> None:
        self._coroutine = coroutine
        self._lock = threading.Lock()  # guards _task and _stopped
        self._task: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None
        self._stopped = False
        self._finished = threading.Event()
        self._outcome: tuple[T | None, BaseException | None] = (None, None)

    def wait(self, caller: asyncio.Task[Any] | None) -> T:
        helper = threading.Thread(target=self._run, name="freshtoken-blocking")
        helper.start()
        # Waited with an Event, not join(): Python < 3.13 takes a join() interrupted by Ctrl-C
        # for the thread's end (it releases the running thread's lock), so a second join()
        # would not wait.
        try:
            _wait_for(self._finished, caller)
        except BaseException:
            # Ctrl-C (KeyboardInterrupt raised in this thread, by trio's handler or Python's):
            # the helper's login ends with it, its listener closed, instead of listening on
            # until its own timeout behind a caller that has given up.
            self._stop()
            self._finished.wait()
            helper.join()
            raise
        helper.join()
        result, error = self._outcome
        if error is not None:
            raise error
        return result  # type: ignore[return-value]  # T itself may include None

    def _run(self) -> None:
        try:
            self._outcome = (asyncio.run(self._main()), None)
        except BaseException as error:  # noqa: BLE001 - re-raised in the calling thread
            self._outcome = (None, error)
        finally:
            self._finished.set()

    async def _main(self) -> T:
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            self._task = (asyncio.get_running_loop(), task)
            if self._stopped:
                self._coroutine.close()
                raise asyncio.CancelledError
        return await self._coroutine

    def _stop(self) -> None:
        with self._lock:
            self._stopped = True
            if self._task is not None:
                loop, task = self._task
                with contextlib.suppress(RuntimeError):  # its loop is closed: it is over
                    loop.call_soon_threadsafe(task.cancel)


_CANCEL_CHECK = 0.2  # seconds between looks at the asyncio caller's cancellation


def _wait_for(finished: threading.Event, caller: asyncio.Task[Any] | None) -> None:
    # From Python 3.11, asyncio's Ctrl-C handler raises nothing here: it cancels the caller's
    # task, which cannot run while this call blocks its loop. So look for that cancellation.
    # (3.10's asyncio.run has no handler: Ctrl-C raises KeyboardInterrupt in this wait.)
    cancelling: Callable[[], int] | None = getattr(caller, "cancelling", None)
    if cancelling is None:
        finished.wait()
        return
    while not finished.wait(_CANCEL_CHECK):
        if cancelling():
            raise asyncio.CancelledError


def _asyncio_task() -> asyncio.Task[Any] | None:
    """The asyncio task of the calling thread, if it runs one."""
    try:
        return asyncio.current_task()
    except RuntimeError:  # no asyncio loop in this thread (trio's, say)
        return None


def blocking(function: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
    """The blocking twin of the async ``function``, generated rather than written twice: the
    same coroutine run to completion by [`run_blocking()`][run_blocking], with the same
    parameters (``inspect.signature`` follows ``__wrapped__``). The twin's name drops the
    ``a`` prefix; give it a docstring of its own."""

    @functools.wraps(function)
    def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        return run_blocking(function(*args, **kwargs))

    twin.__name__ = function.__name__.removeprefix("a")
    owner, dot, _ = function.__qualname__.rpartition(".")
    twin.__qualname__ = owner + dot + twin.__name__
    return twin
