"""A credential's token request that outlives its attempt's deadline: its answer is kept.

An attempt's deadline (``RetryPolicy.timeout``) bounds how long a flight waits for an answer,
not the request. Abandoning a request that went out is what loses sessions to a rotating
server: a hanging provider (or a proxy holding requests) may process it later, rotate the
refresh token, and answer nobody; the retry then presents the old token again, which a server
without a reuse grace interval takes for a replay and answers by revoking the whole session.

So a request whose deadline passes *lingers*: it stays in the air, on its connection and under
its issuer's cap, for up to ``LINGER`` more seconds (or until the refresher's own timeouts
end it). Meanwhile the credential sends no other request presenting the same tokens: the
retry waits for the lingering request's answer instead. When the answer comes:

* a flight is waiting for it (a retry): that flight takes the tokens and saves them;
* no flight is waiting (they all gave up): ``on_late`` is called, and the manager starts a
  flight that saves them (see ``Collect`` in ``steps``), so the rotated refresh token is kept;
* the request failed without an answer (the connection closed, a read timeout): the next
  attempt presents the tokens again, which servers with a reuse grace interval accept (Okta's
  grace period, Auth0's reuse interval, Hydra's rotation grace period); nothing else can
  recover a session whose answer is lost for good.

Used on the flight host's loop only: no locks.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeAlias

from .._core.tokens import TokenSet
from .._runtime import connections
from .._runtime.host import host
from ..errors import RefreshFailed

__all__ = ["LINGER", "Attempts"]

LINGER = 120.0  # seconds a request stays in the air after its attempt's deadline

Send: TypeAlias = Callable[[float], Coroutine[Any, Any, TokenSet]]


def _same(a: TokenSet | None, b: TokenSet | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.refresh_token == b.refresh_token and a.access_token == b.access_token


class _Lingering:
    __slots__ = ("awaited", "on_late", "presented", "queued", "task")

    def __init__(
        self,
        presented: TokenSet | None,
        task: asyncio.Task[TokenSet],
        on_late: Callable[[], None],
        queued: connections.Queued,
    ) -> None:
        self.presented = presented
        self.task = task
        self.on_late = on_late
        self.queued = queued
        self.awaited = 0  # flights waiting for it right now


class Attempts:
    """The request of one credential that may still be in the air."""

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: _Lingering | None = None

    async def attempt(
        self,
        current: TokenSet | None,
        deadline: float,
        send: Send,
        on_late: Callable[[], None],
        urgency: float = -math.inf,
    ) -> TokenSet:
        """One attempt for ``current`` by ``deadline`` (monotonic): the answer of the request
        still in the air for the same tokens, or a new request (``send(its deadline)``),
        queued for its issuer's cap by ``urgency`` (see ``connections.Queued``)."""
        pending = self._pending
        if pending is not None and _same(pending.presented, current):
            pending.on_late = on_late
            if pending.task.done():
                self._pending = None
                if _succeeded(pending.task):
                    return pending.task.result()  # a late answer nobody had taken yet
                pending = None  # it failed: its failure was reported; send afresh
        else:
            pending = None
        if pending is None:
            mark = connections.Queued(deadline, urgency)  # never sent past the deadline
            context = contextvars.copy_context()
            context.run(connections.queued.set, mark)
            # The task copies the context current at its creation (create_task(context=...)
            # is Python 3.11+).
            loop = asyncio.get_running_loop()
            task = context.run(loop.create_task, send(deadline + LINGER))
            pending = self._pending = _Lingering(current, task, on_late, mark)
            task.add_done_callback(self._landed)
            host().track(task)
        task = pending.task
        pending.awaited += 1
        try:
            done = await _finished_by(task, deadline)
        finally:
            pending.awaited -= 1
        if not done and not pending.queued.sent:
            # Still queued for a place under the cap: it went nowhere, and now never will.
            task.cancel()
            if self._pending is pending:
                self._pending = None
            raise connections.busy(pending.queued.origin, pending.queued.cap)
        if not done:
            raise RefreshFailed(
                "timeout",
                "no answer from the token endpoint by the attempt's deadline; the request "
                f"stays in the air up to {LINGER:g} s more and its answer is kept if it comes",
                answer_lost=True,
            )
        if self._pending is pending:
            self._pending = None
        return task.result()

    def collect(self, current: TokenSet | None) -> TokenSet | None:
        """The tokens of a late answer to a request that presented ``current``, taken once;
        None if there is none (nothing is sent)."""
        pending = self._pending
        if pending is None or not pending.task.done():
            return None
        self._pending = None  # taken, or answering tokens the store no longer holds: dropped
        if _succeeded(pending.task) and _same(pending.presented, current):
            return pending.task.result()
        return None

    def uncollected(self) -> bool:
        """Whether a late answer with tokens waits to be saved."""
        pending = self._pending
        return pending is not None and pending.task.done() and _succeeded(pending.task)

    def _landed(self, task: asyncio.Task[TokenSet]) -> None:
        pending = self._pending
        if pending is None or pending.task is not task:
            # Superseded (the stored tokens moved on meanwhile): its answer answers nothing.
            _succeeded(task)
            return
        if pending.awaited == 0 and _succeeded(task):
            pending.on_late()


async def _finished_by(task: asyncio.Task[TokenSet], deadline: float) -> bool:
    """Wait for ``task`` until ``deadline`` (monotonic) without cancelling it; whether it
    finished. (``asyncio.wait`` does the same at several times the cost per refresh.)"""
    if task.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    task.add_done_callback(wake)
    timer = loop.call_later(max(0.0, deadline - time.monotonic()), wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
    return task.done()


def _succeeded(task: asyncio.Task[TokenSet]) -> bool:
    """Whether the finished ``task`` has tokens (its failure, if any, is marked as seen)."""
    return not task.cancelled() and task.exception() is None
