"""The loopback listener of a browser login (RFC 8252 sections 7.3 and 8.3).

It listens on 127.0.0.1 (or ``[::1]``), never on other interfaces, and waits for the one
request that answers the login: a GET of the callback path with this login's ``state``.
Everything else is a stray and leaves the login running: a favicon request, a port scanner,
a browser's speculative connection that sends nothing, a request without a state, with
another login's state (an old tab's, or a forgery any web page can send to the port it
guesses) or for another ``Host`` (a DNS-rebinding page). The answering request waits while
its code is exchanged, then gets a small page that says how it went ("signed in", or what
went wrong); then the listener closes. The same answer again meanwhile (a reload) gets a
409: a code is redeemed once. With this login's state, an ``iss`` that is not the issuer's
or an error from the server end the login at once with a clear
[`LoginFailed`][freshtoken.LoginFailed], as does the timeout.

[`CallbackJudge`][] decides and `_Connection` speaks HTTP/1.1 (h11), with no I/O;
[`LoopbackListener`][] (anyio: asyncio or trio) only moves bytes. There is one listener: a
blocking login runs the same coroutine on a private event loop (``run_blocking``), so a
timeout, a cancellation (Ctrl-C cancels that loop's task) and a flood of strays are handled
by one piece of code.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import ipaddress
import secrets
import threading
from collections.abc import Awaitable, Callable
from html import escape
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel
import h11

from ..errors import LoginFailed
from .authorization import AuthorizationRequest

__all__ = ["CallbackJudge", "LoopbackListener", "OpenBrowser", "Verdict", "check_redirect_uri"]

T = TypeVar("T")
OpenBrowser = Callable[[str], object]
SIGNED_IN = "You are signed in. You can close this tab and return to the application."
CONNECTION_TIMEOUT = 10.0  # a connection that sends no full request in this time is dropped
MAX_CONNECTIONS = 32  # beyond this, a new connection closes the oldest
_MAX_REQUEST = 16 * 1024
_READ = 16 * 1024
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """How to answer one request, and what it means for the login: the code, the login's
    failure, or ``None`` (a stray request: keep listening)."""

    status: int
    title: str
    message: str
    outcome: str | LoginFailed | None = None


class CallbackJudge:
    """Decides what a request to the loopback listener is (no I/O)."""

    def __init__(self, request: AuthorizationRequest, *, hosts: frozenset[str], path: str) -> None:
        self.request = request
        self.hosts = hosts
        self.path = path
        self.claimed = False  # the code was handed out

    def judge(self, method: bytes, target: bytes, host: bytes | None) -> Verdict:
        if method != b"GET":
            return Verdict(405, "Not here", "This address only receives sign-in answers.")
        if host is None or host.decode("latin-1").lower() not in self.hosts:
            return Verdict(400, "Not here", "This address only receives sign-in answers.")
        path, _, query = target.decode("latin-1").partition("?")
        if path != self.path:
            return Verdict(404, "Not found", "This address only receives sign-in answers.")
        try:
            parsed = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError:
            parsed = {}
        if any(len(values) > 1 for values in parsed.values()):
            return Verdict(400, "Not a sign-in answer", "A parameter is repeated.")
        params = {name: values[0] for name, values in parsed.items()}
        if "state" not in params or not ({"code", "error"} & set(params)):
            return Verdict(
                400, "Not a sign-in answer", "This address only receives sign-in answers."
            )
        if not secrets.compare_digest(params["state"].encode(), self.request.state.encode()):
            # Another login's answer, an old tab's, or a web page's forgery sent to the port
            # it guessed: refused, and the login goes on waiting for its own.
            return Verdict(
                400,
                "Not this sign-in",
                "This answer belongs to another sign-in. Finish the sign-in the application "
                "opened, or start it again.",
            )
        if self.claimed:
            # The browser sent the answer twice (a reload, a retry): the code is being
            # redeemed once already, and a second redemption would be refused (or revoke it).
            return Verdict(409, "Already answered", "This sign-in has its answer already.")
        try:
            code = self.request.code_from(params)
        except LoginFailed as failure:
            return Verdict(400, "Sign-in failed", f"{failure} You can close this tab.", failure)
        self.claimed = True
        return Verdict(200, "Signed in", SIGNED_IN, code)


def _page(verdict: Verdict) -> bytes:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{escape(verdict.title)}</title>\n</head>\n<body>\n"
        f"<h1>{escape(verdict.title)}</h1>\n<p>{escape(verdict.message)}</p>\n</body>\n</html>\n"
    ).encode()


class _Connection:
    """One HTTP connection to the listener: bytes in, one answer out, then closed."""

    def __init__(self, judge: CallbackJudge) -> None:
        self._judge = judge
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_REQUEST)

    def receive(self, data: bytes) -> tuple[bytes, Verdict | None] | None:
        """``None`` while the request is incomplete; else what to send (then close) and the
        verdict (``None`` for a broken request or a closed connection). The answer to the
        sign-in's code is not sent yet (empty): the page waits for the code's exchange, and
        [`respond()`][respond] renders it."""
        try:
            self._h11.receive_data(data)
            event = self._h11.next_event()
        except h11.RemoteProtocolError:
            return _BAD_REQUEST, None
        if event is h11.NEED_DATA:
            return (b"", None) if not data else None
        if not isinstance(event, h11.Request):
            return b"", None
        hosts = [value for name, value in event.headers if name == b"host"]
        verdict = self._judge.judge(
            event.method, event.target, hosts[0] if len(hosts) == 1 else None
        )
        if isinstance(verdict.outcome, str):
            return b"", verdict
        return self.respond(verdict), verdict

    def respond(self, verdict: Verdict) -> bytes:
        """The page that says ``verdict``, as bytes to send before closing."""
        body = _page(verdict)
        headers = [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("Referrer-Policy", "no-referrer"),
            ("Content-Security-Policy", "default-src 'none'"),
            ("Connection", "close"),
        ]
        answer = self._h11.send(h11.Response(status_code=verdict.status, headers=headers)) or b""
        answer += self._h11.send(h11.Data(data=body)) or b""
        answer += self._h11.send(h11.EndOfMessage()) or b""
        return answer


@dataclasses.dataclass(frozen=True)
class _Address:
    bind_host: str  # what the socket binds
    uri_host: str  # how the redirect URI spells it
    port: int
    path: str

    @classmethod
    def parse(cls, redirect_uri: str) -> _Address:
        parts = urlsplit(redirect_uri)
        try:
            port = parts.port or 0
        except ValueError:
            raise ValueError(f"bad port in redirect_uri {redirect_uri!r}") from None
        host = parts.hostname or ""
        if parts.scheme != "http" or parts.query or parts.fragment or not parts.path:
            raise ValueError(
                "redirect_uri must be http://127.0.0.1[:port]/path (RFC 8252),"
                f" not {redirect_uri!r}"
            )
        if host == "localhost":
            return cls("127.0.0.1", "localhost", port, parts.path)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is None or not address.is_loopback:
            raise ValueError(f"redirect_uri must be on a loopback address, not {host!r}")
        uri_host = f"[{host}]" if address.version == 6 else host
        return cls(host, uri_host, port, parts.path)

    def redirect_uri(self, port: int) -> str:
        return f"http://{self.uri_host}:{port}{self.path}"

    def hosts(self, port: int) -> frozenset[str]:
        names = {f"{self.uri_host}:{port}", f"localhost:{port}"}
        if self.bind_host == "127.0.0.1":
            names.add(f"127.0.0.1:{port}")
        return frozenset(names)


def check_redirect_uri(redirect_uri: str) -> None:
    """Raise ValueError unless ``redirect_uri`` is a loopback ``http`` URI a listener can use."""
    _Address.parse(redirect_uri)


def _browser_result(result: object) -> LoginFailed | None:
    if result is False:  # webbrowser.open's way of saying there is no browser
        return LoginFailed(
            "browser_unavailable",
            "no web browser could be opened: use a device login, or pass an open_browser "
            "that shows the URL (open_browser=print)",
        )
    return None


def _browser_failure(error: Exception) -> LoginFailed:
    return LoginFailed("browser_failed", f"open_browser raised {type(error).__name__}: {error}")


def _timeout(timeout: float) -> LoginFailed:
    return LoginFailed(
        "timeout", f"the browser did not come back within {timeout:g} s: start the login again"
    )


class LoopbackListener:
    """A listening socket on a loopback address for one browser login, in async code (asyncio
    or trio, through anyio); a blocking login runs it on a private event loop."""

    def __init__(self, redirect_uri: str = "http://127.0.0.1/callback") -> None:
        self._address = _Address.parse(redirect_uri)
        self._listener: anyio.abc.SocketListener | None = None
        self.port = 0
        self.redirect_uri = ""

    async def __aenter__(self) -> LoopbackListener:
        try:
            listeners = await anyio.create_tcp_listener(
                local_host=self._address.bind_host, local_port=self._address.port
            )
        except OSError as error:
            raise LoginFailed(
                "listener_failed",
                f"cannot listen on {self._address.redirect_uri(self._address.port)}:"
                f" {error.strerror or error}",
            ) from None
        # One host, so one listener; its accept() takes connections one at a time.
        listener = listeners.listeners[0]
        assert isinstance(listener, anyio.abc.SocketListener)
        self._listener = listener
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.redirect_uri = self._address.redirect_uri(self.port)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._listener is not None:
            await self._listener.aclose()
            self._listener = None

    async def sign_in(
        self,
        request: AuthorizationRequest,
        *,
        open_browser: OpenBrowser,
        timeout: float,
        redeem: Callable[[str], Awaitable[T]],
    ) -> T:
        """Open the browser at ``request.url``, serve until the answer comes or ``timeout``
        passes, and ``redeem`` its code; what ``redeem`` returns. The browser's tab waits for
        the redemption and says how it went: "signed in" only once it is true.
        ``open_browser`` may be async; a plain one runs in a worker thread. Cancelling the
        caller closes every connection (the listener closes with the context)."""
        listener = self._listener
        if listener is None:
            raise RuntimeError("use `async with LoopbackListener(...)` first")
        judge = CallbackJudge(
            request, hosts=self._address.hosts(self.port), path=self._address.path
        )
        outcome: list[T | BaseException] = []
        with anyio.move_on_after(timeout) as deadline_scope:
            async with anyio.create_task_group() as group:

                def finish(result: T | BaseException) -> None:
                    if not outcome:
                        outcome.append(result)
                    group.cancel_scope.cancel()

                # The open connections, oldest first. When all MAX_CONNECTIONS are taken, a new
                # one closes the oldest rather than waiting: silent clients holding every slot
                # (a flood, a slowloris) would otherwise lock the browser's answer out until
                # they time out, and could do so again and again.
                connections: list[anyio.CancelScope] = []

                async def serve(stream: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
                    try:
                        with scope:
                            async with stream:
                                connection = _Connection(judge)
                                with anyio.move_on_after(CONNECTION_TIMEOUT):
                                    result = await _serve_stream(stream, connection)
                                if not isinstance(result, str):
                                    if result is not None:
                                        finish(result)
                                    return
                                # The sign-in's answer: no flood may close it now.
                                if scope in connections:
                                    connections.remove(scope)
                                finish(await _redeemed(stream, connection, result, redeem))
                    finally:
                        if scope in connections:
                            connections.remove(scope)

                async def accept() -> None:
                    while True:
                        stream = await listener.accept()
                        if len(connections) >= MAX_CONNECTIONS:
                            connections.pop(0).cancel()
                        scope = anyio.CancelScope()
                        connections.append(scope)
                        group.start_soon(serve, stream, scope)

                async def browse() -> None:
                    try:
                        if _is_async(open_browser):
                            result = await open_browser(request.url)  # type: ignore[misc]
                        else:
                            result = await _in_daemon_thread(open_browser, request.url)
                    except Exception as error:  # noqa: BLE001 - any failure ends the login
                        finish(_browser_failure(error))
                        return
                    failure = _browser_result(result)
                    if failure is not None:
                        finish(failure)

                group.start_soon(accept)
                group.start_soon(browse)
        if deadline_scope.cancelled_caught and not outcome:
            raise _timeout(timeout)
        result = outcome[0]
        if isinstance(result, BaseException):
            raise result
        return result


async def _redeemed(
    stream: anyio.abc.SocketStream,
    connection: _Connection,
    code: str,
    redeem: Callable[[str], Awaitable[T]],
) -> T | BaseException:
    """``redeem(code)``, then the page that says how it went; its result or its failure."""
    try:
        result: T | BaseException = await redeem(code)
        verdict = Verdict(200, "Signed in", SIGNED_IN)
    except Exception as error:  # noqa: BLE001 - said on the page, then raised by the login
        result = error
        said = str(error) if isinstance(error, LoginFailed) else type(error).__name__
        verdict = Verdict(400, "Sign-in failed", f"{said}. You can close this tab.")
    with (
        anyio.move_on_after(CONNECTION_TIMEOUT),
        contextlib.suppress(anyio.BrokenResourceError, OSError),
    ):
        await stream.send(connection.respond(verdict))
    return result


async def _serve_stream(
    stream: anyio.abc.SocketStream, connection: _Connection
) -> str | LoginFailed | None:
    while True:
        try:
            data = await stream.receive(_READ)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            data = b""
        answered = connection.receive(data)
        if answered is None:
            continue
        answer, verdict = answered
        if answer:
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await stream.send(answer)
        return None if verdict is None else verdict.outcome


async def _in_daemon_thread(open_browser: OpenBrowser, url: str) -> object:
    """``open_browser(url)`` in a daemon thread of its own, its result (or error) awaited: a
    launcher that never returns (a console browser holding the terminal) holds neither the
    login, which ends with the answer or the timeout, nor the exit of the process."""
    token = anyio.lowlevel.current_token()
    finished = anyio.Event()
    outcome: list[tuple[object, Exception | None]] = []

    def run() -> None:
        try:
            outcome.append((open_browser(url), None))
        except Exception as error:  # noqa: BLE001 - re-raised in the login
            outcome.append((None, error))
        with contextlib.suppress(RuntimeError):  # the login and its loop are over: nobody waits
            anyio.from_thread.run_sync(finished.set, token=token)

    threading.Thread(target=run, name="freshtoken-open-browser", daemon=True).start()
    await finished.wait()
    result, error = outcome[0]
    if error is not None:
        raise error
    return result


def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - an async callable object
    )
