"""AgentRefresher: a TokenManager's refresher that asks the local agent instead of a server.

The process using it never holds a refresh token: the agent does, and answers with access
tokens only. The manager in front of it caches the access token as usual and asks the agent
again when the token falls due (the agent says when, in ``refresh_at``) or when an API
rejected it (the agent then refreshes, once, whoever else asks).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import anyio.to_thread
import httpcore
import httpx

from .._core.clock import Clock, system_clock
from .._core.policy import parse_retry_after, read_json
from .._core.tokens import TokenResponseError, TokenSet
from ..errors import RefreshFailed, SessionExpired
from ._paths import AgentPathError, check_peer, check_socket, socket_path
from ._protocol import token_id, tokens_from_document

__all__ = ["AgentRefresher", "agent_client", "start_agent"]

_BASE_URL = "http://freshtoken-agent"
_START_TIMEOUT = 20.0


class _CheckedBackend(httpcore.NetworkBackend):
    """Connects to the agent socket only if it is this user's (see ``_paths``), and keeps
    the connection only if this user's process serves it: before a byte is sent."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        real = check_socket(Path(path))
        stream = self._backend.connect_unix_socket(os.fspath(real), timeout, socket_options)
        try:
            check_peer(stream.get_extra_info("socket"), real)
        except BaseException:
            stream.close()
            raise
        return stream

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _AsyncCheckedBackend(httpcore.AsyncNetworkBackend):
    """`_CheckedBackend` for asyncio and trio."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        real = check_socket(Path(path))
        stream = await self._backend.connect_unix_socket(os.fspath(real), timeout, socket_options)
        try:
            check_peer(stream.get_extra_info("socket"), real)
        except BaseException:
            await stream.aclose()
            raise
        return stream

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _AgentTransport(httpx.HTTPTransport):
    def __init__(self, path: str) -> None:
        super().__init__(uds=path)
        # httpx has no parameter for a network backend; the pool it wraps does.
        self._pool = httpcore.ConnectionPool(uds=path, network_backend=_CheckedBackend())


class _AsyncAgentTransport(httpx.AsyncHTTPTransport):
    def __init__(self, path: str) -> None:
        super().__init__(uds=path)
        self._pool = httpcore.AsyncConnectionPool(uds=path, network_backend=_AsyncCheckedBackend())


def agent_client(path: os.PathLike[str] | str, timeout: float) -> httpx.Client:
    """An httpx client whose every request goes to the agent socket at ``path``, once the
    socket and the process serving it are found to be this user's (else AgentPathError)."""
    transport = _AgentTransport(os.fspath(path))
    return httpx.Client(transport=transport, base_url=_BASE_URL, timeout=timeout, trust_env=False)


def start_agent(path: os.PathLike[str] | str, *, store: str | None, timeout: float) -> None:
    """Start an agent on ``path`` in the background (``freshtoken agent start``); returns
    once it accepts connections, or at once if one already does."""
    command = [
        sys.executable,
        "-m",
        "freshtoken.cli",
        "agent",
        "start",
        "--socket",
        os.fspath(path),
    ]
    if store is not None:
        command += ["--store", store]
    try:
        finished = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RefreshFailed(
            "agent_unavailable", f"the agent did not start within {timeout:.0f} s"
        ) from None
    if finished.returncode != 0:
        reason = (finished.stderr.strip().splitlines() or ["no reason given"])[-1]
        raise RefreshFailed("agent_unavailable", f"could not start the agent: {reason}")


class AgentRefresher:
    """Gets access tokens for ``profile`` from the freshtoken agent on this machine.

    ``socket`` defaults to ``$FRESHTOKEN_AGENT_SOCKET``, else the agent's default path;
    ``profile`` to ``$FRESHTOKEN_PROFILE``, else ``"default"``. With ``autostart`` (the
    default) an agent is started in the background when none listens, serving the token file
    ``store`` (default: the usual one). ``timeout`` bounds each request to the agent.

    Failures: the agent has no such profile, or the session is over: ``SessionExpired``; the
    agent cannot be reached or its token endpoint failed: ``RefreshFailed``; the socket, its
    directory or the process serving it is not this user's: ``RefreshFailed`` with the code
    ``agent_untrusted`` (nothing is sent to it).
    """

    def __init__(
        self,
        profile: str | None = None,
        *,
        socket: str | os.PathLike[str] | None = None,
        autostart: bool = True,
        store: str | os.PathLike[str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.profile = profile or os.environ.get("FRESHTOKEN_PROFILE") or "default"
        try:
            self.socket_path = socket_path(socket)
        except AgentPathError as error:
            raise ValueError(str(error)) from None
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError("timeout must be a positive number of seconds")
        self.autostart = autostart
        self.store = None if store is None else os.fspath(store)
        self.timeout = timeout
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    @property
    def can_acquire(self) -> bool:
        return True  # the agent gets tokens; this side never needs a refresh token

    def __repr__(self) -> str:
        return f"AgentRefresher(profile={self.profile!r}, socket={str(self.socket_path)!r})"

    def refresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
    ) -> TokenSet:
        timeout = self._time_left(deadline)
        params = self._params(current, timeout)
        try:
            try:
                response = self._sync_client().get("/v1/token", params=params, timeout=timeout)
            except httpx.ConnectError:
                self._start_or_fail(self._time_left(deadline))
                timeout = self._time_left(deadline)
                response = self._sync_client().get("/v1/token", params=params, timeout=timeout)
        except httpx.TransportError as error:
            raise self._unreachable(error) from None
        except AgentPathError as error:
            raise _untrusted(error) from None
        return _read_answer(response)

    async def arefresh(
        self,
        current: TokenSet | None,
        clock: Clock = system_clock,
        *,
        deadline: float | None = None,
    ) -> TokenSet:
        timeout = self._time_left(deadline)
        params = self._params(current, timeout)
        transport = _AsyncAgentTransport(os.fspath(self.socket_path))
        async with httpx.AsyncClient(
            transport=transport, base_url=_BASE_URL, timeout=timeout, trust_env=False
        ) as client:
            try:
                try:
                    response = await client.get("/v1/token", params=params)
                except httpx.ConnectError:
                    await anyio.to_thread.run_sync(self._start_or_fail, self._time_left(deadline))
                    response = await client.get(
                        "/v1/token", params=params, timeout=self._time_left(deadline)
                    )
            except httpx.TransportError as error:
                raise self._unreachable(error) from None
            except AgentPathError as error:
                raise _untrusted(error) from None
        return _read_answer(response)

    def close(self) -> None:
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- internals ----------------------------------------------------------------------------

    def _sync_client(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                # Shared by threads (httpx.Client is thread-safe): connections are kept alive.
                self._client = agent_client(self.socket_path, self.timeout)
            return self._client

    def _time_left(self, deadline: float | None) -> float:
        if deadline is None:
            return self.timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise RefreshFailed("deadline_exceeded", "the refresh deadline passed")
        return min(self.timeout, left)

    def _params(self, current: TokenSet | None, timeout: float) -> dict[str, str]:
        # The agent answers well before our own timeout (half of it: a busy machine may be
        # slow to hand the answer over), so a slow refresh is a clear 504, not a read timeout.
        params = {"profile": self.profile, "wait": f"{max(0.01, timeout * 0.5):.3f}"}
        if current is not None:
            params["stale"] = token_id(current.access_token)
        return params

    def _start_or_fail(self, timeout: float) -> None:
        if not self.autostart:
            raise RefreshFailed(
                "agent_unavailable",
                f"no agent listens on {self.socket_path}: run `freshtoken agent start`",
            )
        start_agent(self.socket_path, store=self.store, timeout=max(timeout, _START_TIMEOUT))

    def _unreachable(self, error: httpx.TransportError) -> RefreshFailed:
        return RefreshFailed(
            "agent_unreachable",
            f"the agent on {self.socket_path} did not answer ({type(error).__name__})",
        )


def _untrusted(error: AgentPathError) -> RefreshFailed:
    return RefreshFailed("agent_untrusted", str(error))


def _read_answer(response: httpx.Response) -> TokenSet:
    document, problem = read_json(response.content)
    if response.status_code == 200 and problem is not None:
        raise RefreshFailed("malformed_response", f"the agent's answer {problem}", status=200)
    if response.status_code == 200:
        try:
            return tokens_from_document(document)
        except TokenResponseError as error:
            raise RefreshFailed("malformed_response", str(error), status=200) from None
    if not isinstance(document, dict):
        document = {}
    kind = document.get("error")
    reason = document.get("reason")
    description = document.get("reason_description") or document.get("error_description")
    code = reason if isinstance(reason, str) and reason else kind
    code = code if isinstance(code, str) and code else "agent_error"
    text = description if isinstance(description, str) else None
    status = response.status_code
    if status in (404, 409) and kind in ("unknown_profile", "session_expired"):
        raise SessionExpired(code, text, status=status)
    retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
    raise RefreshFailed(code, text, status=status, retry_after=retry_after)
