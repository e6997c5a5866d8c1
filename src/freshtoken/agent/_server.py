"""The agent: an HTTP/1.1 server on a unix socket that hands out access tokens.

One asyncio loop serves every connection; h11 parses, so every request is bounded: its head
(``max_request_bytes``), its body (``max_body_bytes``), the time it may take to arrive once
it started (``request_timeout``), and the time an idle keep-alive connection is kept
(``idle_timeout``). A peer whose uid is not the agent's gets a 403 and nothing else. A client
that vanishes mid-request costs its connection only: the refresh it may have started is a
task of its own, shielded, which lands and is saved whoever waits for it, and shutdown waits
for those tasks.

Each profile of the token file gets one [`TokenManager`][freshtoken.TokenManager] over a
[`FileStore`][freshtoken.stores.FileStore], so the agent refreshes once per expiry however many
clients ask, and cooperates through the file's lock with any other process (``freshtoken
token``, a Python program) using the same profile. The profile's settings are re-read when
the file changes, so a new ``freshtoken login`` takes effect without a restart.

This module is the server: its life cycle, connections and routes. Reading and answering HTTP
is `freshtoken.agent._wire`; the profiles and their managers are `freshtoken.agent._profiles`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import h11

from .._core.clock import Clock, rfc3339, system_clock
from .._core.policy import Freshness, RetryPolicy
from .._core.tokens import TokenSet
from .._engine.manager import TokenManager
from ..errors import AuthError, RefreshFailed, SessionExpired, StoreError
from ..stores.file import default_path
from ._peer import peer_uid
from ._profiles import Profiles
from ._protocol import token_document, token_id
from ._wire import (
    FORBIDDEN,
    Reply,
    RequestTimeout,
    TooLarge,
    error_reply,
    read_request,
    send_reply,
)

__all__ = ["Agent", "AgentLimits"]

logger = logging.getLogger("freshtoken.agent")

_SHUTDOWN_GRACE = 2.0  # seconds handlers get to finish their answer when the agent stops
_REFRESH_DRAIN = 60.0  # seconds shutdown waits for refreshes in flight (each has a deadline)
# A client may say its token was rejected; the agent then refreshes, but not a token younger
# than this: a client that rejects every token would otherwise drive a refresh loop.
_FORCED_REFRESH_MIN_AGE = 1.0


@dataclasses.dataclass(frozen=True)
class AgentLimits:
    """What one client may cost the agent."""

    max_connections: int = 256
    max_request_bytes: int = 8 * 1024  # request line and headers
    max_body_bytes: int = 1024
    request_timeout: float = 5.0  # from a request's first byte to its last
    idle_timeout: float = 30.0  # a keep-alive connection with no request under way
    max_wait: float = 30.0  # the longest a token request waits for a refresh

    def __post_init__(self) -> None:
        for name in ("request_timeout", "idle_timeout", "max_wait"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")
        if self.max_connections < 1 or self.max_request_bytes < 256 or self.max_body_bytes < 0:
            raise ValueError(
                "need max_connections >= 1, max_request_bytes >= 256 and max_body_bytes >= 0"
            )


@dataclasses.dataclass
class _Counters:
    connections: int = 0
    requests: int = 0
    tokens_served: int = 0
    forced_refreshes: int = 0
    refused_peers: int = 0
    refused_busy: int = 0
    timeouts: int = 0
    bad_requests: int = 0
    disconnects: int = 0
    errors: int = 0


class Agent:
    """Serves tokens from the profiles of one token file over a listening unix socket.

    Each profile's manager has ``clock``, ``lock_timeout`` and ``retry``; ``idle_exit``
    stops the agent after that many seconds without a request. ``serve(listener)`` runs
    until [`stop()`][stop] (callable from any thread or a signal handler); it then stops
    accepting, lets answers in progress finish, waits for refreshes in flight to land, and
    closes its stores.
    """

    def __init__(
        self,
        store_path: str | os.PathLike[str] | None = None,
        *,
        clock: Clock = system_clock,
        limits: AgentLimits | None = None,
        lock_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        idle_exit: float | None = None,
    ) -> None:
        self.store_path = Path(store_path) if store_path is not None else default_path()
        self.clock = clock
        self.limits = limits or AgentLimits()
        self.lock_timeout = lock_timeout
        self.retry = retry
        if idle_exit is not None and not (math.isfinite(idle_exit) and idle_exit > 0):
            raise ValueError("idle_exit must be a positive number of seconds")
        self.idle_exit = idle_exit
        self.counters = _Counters()
        self.started_at = time.time()
        self.socket_path: str | None = None
        self._uid = os.geteuid()
        self._profiles = Profiles(self)
        self._handlers: set[asyncio.Task[Any]] = set()
        self._busy: set[asyncio.Task[Any]] = set()  # handlers with a request under way
        self._fetches: set[asyncio.Task[TokenSet]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._last_activity = 0.0
        self._routes: dict[str, tuple[str, Callable[[str], Awaitable[Reply]]]] = {
            "/v1/token": ("GET", self._token),
            "/v1/status": ("GET", self._status),
            "/v1/health": ("GET", self._health),
            "/v1/stop": ("POST", self._stop_route),
        }

    def __repr__(self) -> str:
        return f"Agent(store={str(self.store_path)!r}, socket={self.socket_path!r})"

    # -- life cycle ---------------------------------------------------------------------------

    async def serve(
        self, listener: socket.socket, *, ready: Callable[[], None] | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested.is_set():
            self._stopping.set()
        self._last_activity = self._loop.time()
        name = listener.getsockname()
        self.socket_path = name if isinstance(name, str) else os.fsdecode(name)
        server = await asyncio.start_unix_server(self._connection, sock=listener)
        idle = asyncio.ensure_future(self._exit_when_idle()) if self.idle_exit else None
        if ready is not None:
            ready()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            if idle is not None:
                idle.cancel()
            await self._drain()
            self._profiles.close()

    def stop(self) -> None:
        """Ask the agent to stop; safe from any thread and from signal handlers."""
        self._stop_requested.set()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: it stopped
                loop.call_soon_threadsafe(stopping.set)

    async def _drain(self) -> None:
        for task in self._handlers - self._busy:
            task.cancel()  # idle keep-alive connections: nothing to finish
        handlers = set(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=_SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        fetches = set(self._fetches)
        if fetches:
            # A rotated refresh token must be saved before the process ends.
            _, late = await asyncio.wait(fetches, timeout=_REFRESH_DRAIN)
            if late:
                logger.error("%d refresh(es) still running at shutdown were abandoned", len(late))

    async def _exit_when_idle(self) -> None:
        assert self._loop is not None
        assert self.idle_exit is not None
        while True:
            quiet = self._loop.time() - self._last_activity
            if quiet >= self.idle_exit and not self._busy and not self._fetches:
                logger.info("no request for %.0f s: stopping", quiet)
                self.stop()
                return
            await asyncio.sleep(max(0.05, self.idle_exit - quiet))

    # -- connections --------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.counters.connections += 1
        self._handlers.add(task)
        try:
            if len(self._handlers) > self.limits.max_connections:
                self.counters.refused_busy += 1
                return  # closing at once is the cheapest answer to a flood
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid != self._uid:
                self.counters.refused_peers += 1
                logger.warning(
                    "refused a connection from uid %d (the agent serves %d)", uid, self._uid
                )
                await self._refuse(writer)
                return
            await self._exchange(reader, writer)
        except asyncio.CancelledError:
            # Only shutdown cancels a handler; ending here keeps asyncio from logging it.
            return
        except (ConnectionError, TimeoutError, asyncio.TimeoutError):
            self.counters.disconnects += 1  # the client left or stopped reading: its loss
        except OSError as error:
            self.counters.disconnects += 1
            logger.info("connection dropped: %s", error.strerror or type(error).__name__)
        finally:
            self._handlers.discard(task)
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a client that does not read gets nothing more
            else:
                writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = h11.Connection(
            h11.SERVER, max_incomplete_event_size=self.limits.max_request_bytes
        )
        assert self._stopping is not None
        while not self._stopping.is_set():
            try:
                request = await read_request(connection, reader, self.limits)
            except RequestTimeout as timeout:
                self.counters.timeouts += 1
                if timeout.started:
                    reply = error_reply(408, "timeout", "the request took too long to arrive")
                    await send_reply(
                        connection, writer, reply, close=True, timeout=self.limits.request_timeout
                    )
                return
            except TooLarge:
                self.counters.bad_requests += 1
                reply = error_reply(
                    413, "too_large", f"bodies are limited to {self.limits.max_body_bytes} bytes"
                )
                await send_reply(
                    connection, writer, reply, close=True, timeout=self.limits.request_timeout
                )
                return
            except h11.RemoteProtocolError as error:
                self.counters.bad_requests += 1
                reply = error_reply(
                    error.error_status_hint, "invalid_request", "malformed HTTP request"
                )
                await send_reply(
                    connection, writer, reply, close=True, timeout=self.limits.request_timeout
                )
                return
            if request is None:
                return
            self.counters.requests += 1
            assert self._loop is not None
            task = asyncio.current_task()
            assert task is not None
            self._busy.add(task)
            self._last_activity = self._loop.time()
            try:
                reply = await self._route(*request)
                await send_reply(
                    connection,
                    writer,
                    reply,
                    close=self._stopping.is_set(),
                    timeout=self.limits.request_timeout,
                )
            finally:
                self._busy.discard(task)
            self._last_activity = self._loop.time()
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """403 to another user, before reading a byte of what it sent."""
        writer.write(FORBIDDEN)
        await asyncio.wait_for(writer.drain(), self.limits.request_timeout)

    # -- routes -------------------------------------------------------------------------------

    async def _route(self, request: h11.Request, body: bytes) -> Reply:
        target = request.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        method = request.method.decode("ascii", "replace")
        route = self._routes.get(path)
        if route is None:
            return error_reply(404, "not_found", "no such route: see GET /v1/status")
        allowed, handler = route
        if method != allowed:
            reply = error_reply(405, "method_not_allowed", f"{path} takes {allowed}")
            reply.headers = (("allow", allowed),)
            return reply
        try:
            result = await handler(query)
        except Exception:
            self.counters.errors += 1
            logger.exception("the agent failed to answer %s", path)
            return error_reply(500, "internal_error", "the agent failed; see its log")
        return result

    async def _health(self, query: str) -> Reply:
        return Reply(200, {"ok": True, "pid": os.getpid()})

    async def _stop_route(self, query: str) -> Reply:
        self.stop()
        return Reply(202, {"stopping": True, "pid": os.getpid()})

    async def _status(self, query: str) -> Reply:
        from .._version import __version__

        now = self.clock()
        profiles = []
        for name, profile in self._profiles.in_order():
            if profile.manager is None:
                continue
            tokens = profile.last
            profiles.append(
                {
                    "profile": name,
                    "expires_at": None
                    if tokens is None or tokens.expires_at is None
                    else rfc3339(tokens.expires_at),
                    "scope": None if tokens is None else tokens.scope,
                    "tokens_served": profile.served,
                    "refreshes": profile.manager.stats.snapshot()["refreshes"],
                }
            )
        return Reply(
            200,
            {
                "agent": "freshtoken",
                "version": __version__,
                "pid": os.getpid(),
                "uid": self._uid,
                "socket": self.socket_path,
                "store": str(self.store_path),
                "started_at": rfc3339(self.started_at),
                "uptime": round(time.time() - self.started_at, 3),
                "now": rfc3339(now),
                "counters": dataclasses.asdict(self.counters),
                "profiles": profiles,
            },
        )

    async def _token(self, query: str) -> Reply:
        try:
            params = dict(
                parse_qsl(query, keep_blank_values=True, strict_parsing=False, max_num_fields=8)
            )
        except ValueError:
            return error_reply(400, "invalid_request", "too many query parameters")
        name = params.get("profile") or "default"
        stale = params.get("stale") or None
        if stale is not None and (
            len(stale) != 32 or not all(c in "0123456789abcdef" for c in stale)
        ):
            return error_reply(400, "invalid_request", "stale must be a token_id (32 hex digits)")
        wait = self.limits.max_wait
        if params.get("wait"):
            try:
                asked = float(params["wait"])
            except ValueError:
                asked = math.nan
            if not (math.isfinite(asked) and asked > 0):
                return error_reply(
                    400, "invalid_request", "wait must be a positive number of seconds"
                )
            wait = min(wait, asked)
        try:
            profile = await self._profiles.get(name)
        except ValueError as error:  # a profile name FileStore refuses
            return error_reply(400, "invalid_request", str(error))
        except StoreError as error:
            return error_reply(500, "store_error", str(error))
        if profile is None or profile.manager is None:
            return error_reply(
                404,
                "unknown_profile",
                f"no profile {name!r} in {self.store_path}: "
                f"run `freshtoken login --profile {name}`",
            )
        fetch = self._start_fetch(profile.manager, stale)
        try:
            tokens = await asyncio.wait_for(asyncio.shield(fetch), wait)
        except asyncio.TimeoutError:
            return error_reply(504, "refresh_pending", "the refresh is still running: ask again")
        except SessionExpired as error:
            return error_reply(
                409,
                "session_expired",
                str(error),
                reason=error.error,
                reason_description=error.description,
            )
        except RefreshFailed as error:
            headers: tuple[tuple[str, str], ...] = ()
            if error.retry_after is not None:
                headers = (("retry-after", str(math.ceil(error.retry_after))),)
            reply = error_reply(
                502,
                "refresh_failed",
                str(error),
                reason=error.error,
                reason_description=error.description,
            )
            reply.headers = headers
            return reply
        except StoreError as error:
            return error_reply(500, "store_error", str(error))
        except AuthError as error:
            return error_reply(500, "auth_error", str(error))
        self.counters.tokens_served += 1
        profile.served += 1
        profile.last = tokens
        document = token_document(
            name,
            tokens,
            now=self.clock(),
            refresh_due_at=profile.manager.policy.refresh_due_at(tokens),
        )
        return Reply(200, document)

    # -- profiles and refreshes ---------------------------------------------------------------

    def _start_fetch(self, manager: TokenManager, stale: str | None) -> asyncio.Task[TokenSet]:
        task = asyncio.ensure_future(self._fetch(manager, stale))
        self._fetches.add(task)
        task.add_done_callback(self._fetch_done)
        return task

    def _fetch_done(self, task: asyncio.Task[TokenSet]) -> None:
        self._fetches.discard(task)
        if not task.cancelled():
            task.exception()  # its waiter reports it; a waiter that left has the agent's log

    async def _fetch(self, manager: TokenManager, stale: str | None) -> TokenSet:
        tokens = await manager.aget_tokens()
        if (
            stale is not None
            and stale == token_id(tokens.access_token)
            and self._may_force(manager, tokens)
        ):
            self.counters.forced_refreshes += 1
            # None: the manager is backing off rejections of fresh tokens; keep this one.
            tokens = await manager.ahandle_rejection(tokens) or tokens
        return tokens

    def _may_force(self, manager: TokenManager, tokens: TokenSet) -> bool:
        """A client's "rejected" is acted on only where the agent's own policy would not have
        refreshed already, and not for a token just obtained."""
        now = self.clock()
        if manager.policy.freshness(tokens, now) is not Freshness.FRESH:
            return False
        return tokens.obtained_at is None or now - tokens.obtained_at >= _FORCED_REFRESH_MIN_AGE
