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
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import h11

from .._core.clock import Clock, rfc3339, system_clock
from .._core.policy import Freshness, RetryPolicy
from .._core.tokens import TokenSet
from .._engine.manager import TokenManager
from ..errors import AuthError, RefreshFailed, SessionExpired, StoreError
from ..profiles import close_refresher, refresher_of
from ..refreshers import Refresher
from ..stores.file import FileStore, default_path
from ._peer import peer_uid
from ._protocol import token_document, token_id

__all__ = ["Agent", "AgentLimits"]

logger = logging.getLogger("freshtoken.agent")

_READ_CHUNK = 16 * 1024
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


class _Reply:
    __slots__ = ("document", "headers", "status")

    def __init__(
        self, status: int, document: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.status = status
        self.document = document
        self.headers = headers


def _error(status: int, error: str, description: str, **extra: Any) -> _Reply:
    return _Reply(status, {"error": error, "error_description": description, **extra})


class _Profile:
    """The agent's state for one profile: its store, its manager, what was last served."""

    __slots__ = ("changed", "last", "manager", "served", "settings", "store", "watched")

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.manager: TokenManager | None = None  # None while the profile is logged out
        self.settings = ""
        self.changed = True  # set from the store's watch thread; read on the loop
        self.watched = False
        self.served = 0
        self.last: TokenSet | None = None  # the last tokens served, for status

    def mark_changed(self) -> None:
        self.changed = True


class _Timeout(Exception):
    def __init__(self, started: bool) -> None:
        self.started = started


class _TooLarge(Exception):
    pass


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
        self._profiles: dict[str, _Profile] = {}
        self._profile_locks: dict[str, asyncio.Lock] = {}
        self._retired: list[Refresher] = []  # replaced while they may still be refreshing
        self._handlers: set[asyncio.Task[Any]] = set()
        self._busy: set[asyncio.Task[Any]] = set()  # handlers with a request under way
        self._fetches: set[asyncio.Task[TokenSet]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._stop_requested = threading.Event()
        self._last_activity = 0.0
        self._routes: dict[str, tuple[str, Callable[[str], Awaitable[_Reply]]]] = {
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
            self._close_profiles()

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

    def _close_profiles(self) -> None:
        for profile in self._profiles.values():
            if profile.manager is not None:
                close_refresher(profile.manager.refresher)
            profile.store.close()
        for refresher in self._retired:
            close_refresher(refresher)
        self._profiles.clear()
        self._retired.clear()

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
                request = await self._read_request(connection, reader)
            except _Timeout as timeout:
                self.counters.timeouts += 1
                if timeout.started:
                    reply = _error(408, "timeout", "the request took too long to arrive")
                    await self._send(connection, writer, reply, close=True)
                return
            except _TooLarge:
                self.counters.bad_requests += 1
                reply = _error(
                    413, "too_large", f"bodies are limited to {self.limits.max_body_bytes} bytes"
                )
                await self._send(connection, writer, reply, close=True)
                return
            except h11.RemoteProtocolError as error:
                self.counters.bad_requests += 1
                reply = _error(error.error_status_hint, "invalid_request", "malformed HTTP request")
                await self._send(connection, writer, reply, close=True)
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
                await self._send(connection, writer, reply, close=self._stopping.is_set())
            finally:
                self._busy.discard(task)
            self._last_activity = self._loop.time()
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()

    async def _read_request(
        self, connection: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request, bytes] | None:
        assert self._loop is not None
        loop = self._loop
        started = False
        deadline = loop.time() + self.limits.idle_timeout
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise _Timeout(started)
                try:
                    data = await asyncio.wait_for(reader.read(_READ_CHUNK), remaining)
                except asyncio.TimeoutError:
                    raise _Timeout(started) from None
                if data and not started:
                    started = True
                    deadline = loop.time() + self.limits.request_timeout
                connection.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
                length = dict(event.headers).get(b"content-length")
                if length is not None and int(length) > self.limits.max_body_bytes:
                    raise _TooLarge
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.limits.max_body_bytes:
                    raise _TooLarge
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            else:  # ConnectionClosed, or PAUSED after a close: nothing more will come
                return None

    async def _send(
        self,
        connection: h11.Connection,
        writer: asyncio.StreamWriter,
        reply: _Reply,
        *,
        close: bool,
    ) -> None:
        if connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = json.dumps(reply.document).encode()
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
            *reply.headers,
        ]
        if close:
            headers.append(("connection", "close"))
        try:
            head = h11.Response(
                status_code=reply.status, headers=headers, reason=HTTPStatus(reply.status).phrase
            )
            data = connection.send(head)
            data += connection.send(h11.Data(data=body))
            data += connection.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return  # the request was too broken to answer in HTTP at all
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.limits.request_timeout)

    async def _refuse(self, writer: asyncio.StreamWriter) -> None:
        """403 to another user, before reading a byte of what it sent."""
        writer.write(_FORBIDDEN)
        await asyncio.wait_for(writer.drain(), self.limits.request_timeout)

    # -- routes -------------------------------------------------------------------------------

    async def _route(self, request: h11.Request, body: bytes) -> _Reply:
        target = request.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        method = request.method.decode("ascii", "replace")
        route = self._routes.get(path)
        if route is None:
            return _error(404, "not_found", "no such route: see GET /v1/status")
        allowed, handler = route
        if method != allowed:
            reply = _error(405, "method_not_allowed", f"{path} takes {allowed}")
            reply.headers = (("allow", allowed),)
            return reply
        try:
            result = await handler(query)
        except Exception:
            self.counters.errors += 1
            logger.exception("the agent failed to answer %s", path)
            return _error(500, "internal_error", "the agent failed; see its log")
        return result

    async def _health(self, query: str) -> _Reply:
        return _Reply(200, {"ok": True, "pid": os.getpid()})

    async def _stop_route(self, query: str) -> _Reply:
        self.stop()
        return _Reply(202, {"stopping": True, "pid": os.getpid()})

    async def _status(self, query: str) -> _Reply:
        from .._version import __version__

        now = self.clock()
        profiles = []
        for name, profile in sorted(self._profiles.items()):
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
        return _Reply(
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

    async def _token(self, query: str) -> _Reply:
        try:
            params = dict(
                parse_qsl(query, keep_blank_values=True, strict_parsing=False, max_num_fields=8)
            )
        except ValueError:
            return _error(400, "invalid_request", "too many query parameters")
        name = params.get("profile") or "default"
        stale = params.get("stale") or None
        if stale is not None and (
            len(stale) != 32 or not all(c in "0123456789abcdef" for c in stale)
        ):
            return _error(400, "invalid_request", "stale must be a token_id (32 hex digits)")
        wait = self.limits.max_wait
        if params.get("wait"):
            try:
                asked = float(params["wait"])
            except ValueError:
                asked = math.nan
            if not (math.isfinite(asked) and asked > 0):
                return _error(400, "invalid_request", "wait must be a positive number of seconds")
            wait = min(wait, asked)
        try:
            profile = await self._profile(name)
        except ValueError as error:  # a profile name FileStore refuses
            return _error(400, "invalid_request", str(error))
        except StoreError as error:
            return _error(500, "store_error", str(error))
        if profile is None or profile.manager is None:
            return _error(
                404,
                "unknown_profile",
                f"no profile {name!r} in {self.store_path}: "
                f"run `freshtoken login --profile {name}`",
            )
        fetch = self._start_fetch(profile.manager, stale)
        try:
            tokens = await asyncio.wait_for(asyncio.shield(fetch), wait)
        except asyncio.TimeoutError:
            return _error(504, "refresh_pending", "the refresh is still running: ask again")
        except SessionExpired as error:
            return _error(
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
            reply = _error(
                502,
                "refresh_failed",
                str(error),
                reason=error.error,
                reason_description=error.description,
            )
            reply.headers = headers
            return reply
        except StoreError as error:
            return _error(500, "store_error", str(error))
        except AuthError as error:
            return _error(500, "auth_error", str(error))
        self.counters.tokens_served += 1
        profile.served += 1
        profile.last = tokens
        document = token_document(
            name,
            tokens,
            now=self.clock(),
            refresh_due_at=profile.manager.policy.refresh_due_at(tokens),
        )
        return _Reply(200, document)

    # -- profiles and refreshes ---------------------------------------------------------------

    async def _profile(self, name: str) -> _Profile | None:
        """The profile's state, its manager rebuilt if ``freshtoken login`` changed it."""
        profile = self._profiles.get(name)
        if profile is not None and not profile.changed:
            return profile
        lock = self._profile_locks.setdefault(name, asyncio.Lock())
        async with lock:
            profile = self._profiles.get(name)
            if profile is not None and not profile.changed:
                return profile
            if profile is None:
                store = FileStore(self.store_path, profile=name)  # ValueError for a bad name
                profile = _Profile(store)
            profile.changed = False  # before reading: a change during the read is not lost
            loaded = await asyncio.to_thread(profile.store.load_profile)
            if loaded is None:  # logged out, or never logged in
                if profile.manager is not None:
                    self._retired.append(profile.manager.refresher)
                    profile.manager = None
                return None
            settings = hashlib.sha256(
                json.dumps(
                    [dict(loaded.meta), loaded.client_secret, loaded.private_key], sort_keys=True
                ).encode()
            ).hexdigest()
            if profile.manager is not None and profile.settings == settings:
                return profile
            refresher = refresher_of(profile.store, loaded)
            if profile.manager is not None:
                self._retired.append(profile.manager.refresher)
            if not profile.watched:
                profile.store.watch(profile.mark_changed)
                profile.watched = True
            profile.manager = TokenManager(
                refresher,
                profile.store,
                clock=self.clock,
                lock_timeout=self.lock_timeout,
                retry=self.retry,
            )
            profile.settings = settings
            self._profiles[name] = profile
            return profile

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


def _forbidden() -> bytes:
    body = json.dumps({"error": "forbidden", "error_description": "this agent serves another user"})
    head = (
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
    )
    return (head + body).encode()


_FORBIDDEN = _forbidden()
