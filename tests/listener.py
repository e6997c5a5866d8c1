"""A real HTTP listener whose answers a test writes: hostile token endpoints, odd APIs.

``Listener(answer)`` serves on a free loopback port over real TCP (``http.server``) until
closed; ``answer`` gets each request as a :class:`Received` and returns an :class:`Answer`,
sent byte for byte as given (repeated headers stay separate lines). Every request is kept in
``received``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["Answer", "Listener", "Received", "json_answer"]


@dataclasses.dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last line
    body: bytes


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""


def json_answer(
    document: Any, status: int = 200, headers: Sequence[tuple[str, str]] = ()
) -> Answer:
    return Answer(
        status, (("Content-Type", "application/json"), *headers), json.dumps(document).encode()
    )


class Listener:
    def __init__(self, answer: Callable[[Received], Answer]) -> None:
        self.answer = answer
        self.received: list[Received] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                received = Received(
                    self.command,
                    self.path,
                    {name.lower(): value for name, value in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                listener.received.append(received)
                reply = listener.answer(received)
                self.send_response(reply.status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the tests read `received` instead

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll: shutdown() waits for it, and tests open many listeners.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Listener:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
