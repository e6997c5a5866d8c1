"""Serving an ASGI app with uvicorn: the pieces the reference server and the BFF share.

A socket bound before anything starts (so a busy port is one clear error and the URL is known
before the app is built), a quiet uvicorn configuration, and [`ReadyServer`][], a uvicorn
server that says when it accepts connections and stops promptly. Neither package reaches into
the other for these: both import them from here.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn

__all__ = ["ReadyServer", "base_url", "bind_socket", "uvicorn_config"]


class ReadyServer(uvicorn.Server):
    """A uvicorn server that sets ``ready`` once started and notices ``should_exit`` fast."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        # uvicorn looks at should_exit every 0.1 s; test suites start and stop a server per
        # test, so look ten times as often (on_tick's once-a-second chores then run 10/s).
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            await asyncio.sleep(0.01)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket bound now, so that the port (and the issuer URL) is known."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not the default 0: asyncio sets TCP_NODELAY only on accepted sockets
    # whose proto says TCP, and without it every answer stalls 40 ms on delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_config(app: Any, *, http: Any = "h11") -> uvicorn.Config:
    """uvicorn's configuration for an app served in the background: no logs, no lifespan, no
    headers of uvicorn's own. ``http``: the protocol (a class, for the reference server's
    fault injection)."""
    return uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        # No dictConfig per server: it resets uvicorn's loggers to INFO for a moment, and a
        # server of the same process shutting down then prints "INFO: Shutting down" into
        # whatever test is running (seen in a CLI test that reads stderr).
        log_config=None,
        access_log=False,
        http=http,
        ws="none",
        server_header=False,
        date_header=False,  # the app sends the date of the server's own (maybe skewed) clock
    )
