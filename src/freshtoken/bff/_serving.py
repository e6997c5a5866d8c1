"""Serving an ASGI app (the BFF, a test's upstream) with uvicorn: from a background thread
([`ServedApp`][]), or in the foreground on a socket bound beforehand (``freshtoken bff``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

__all__ = ["ServedApp", "listen", "serve_in_foreground"]

T = TypeVar("T")
_START_TIMEOUT = 10.0


class ServedApp:
    """``app`` on a free loopback port (or ``port``), served until [`stop()`][stop].

    [`call()`][call] runs a coroutine on the server's own event loop: what a test needs to reach
    the app's state that lives on that loop (redis.asyncio clients are bound to theirs).
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        from .._uvicorn import ReadyServer, base_url, bind_socket, uvicorn_config

        self.app = app
        self._socket = bind_socket(host, port)
        self.url = base_url(self._socket)
        self._loop: asyncio.AbstractEventLoop | None = None
        loop_ready = threading.Event()
        served = self

        class _Capturing(ReadyServer):
            async def startup(self, sockets: Any = None) -> None:
                served._loop = asyncio.get_running_loop()
                loop_ready.set()
                await super().startup(sockets)

        self._server = _Capturing(uvicorn_config(app))
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"freshtoken-served-{self.url}",
            daemon=True,
        )

    def start(self) -> ServedApp:
        self._thread.start()
        if not self._server.ready.wait(_START_TIMEOUT) or not self._server.started:
            self.stop()
            raise RuntimeError(f"the app at {self.url} failed to start")
        return self

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coroutine`` on the server's loop and return its result."""
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the app is not started")
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coroutine, self._loop
        )
        return future.result(timeout)

    def stop(self) -> None:
        """Stop serving; an app with an ``aclose()`` coroutine (a BFF) is closed on its loop
        first, as its lifespan's shutdown would (no lifespan here: a test's wrapped app may
        still be given exception handlers after the start)."""
        close = getattr(self.app, "aclose", None)
        if callable(close) and self._loop is not None and self._thread.is_alive():
            self.call(close())
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)
        self._socket.close()

    def __enter__(self) -> ServedApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"ServedApp({self.url})"


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` now (port 0: any free one), so that a busy port or a
    bad address is one clear error (OSError) before anything is announced or started."""
    from .._uvicorn import bind_socket

    try:
        return bind_socket(host, port)
    except OverflowError as error:  # a port over 65535 from a config file
        raise OSError(str(error)) from None


def serve_in_foreground(
    app: Any,
    sock: socket.socket,
    *,
    log_level: str = "info",
    lifespan: Literal["auto", "on", "off"] = "on",
) -> bool:
    """Serve ``app`` on ``sock`` until SIGINT or SIGTERM (uvicorn handles both and shuts down
    gracefully); False if it never started. The socket is closed afterwards."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan=lifespan,
        # A proxied answer carries the API's Date and Server: uvicorn's would make two of each.
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the SIGINT it handled once it has shut down cleanly
    finally:
        sock.close()
    return bool(server.started)
