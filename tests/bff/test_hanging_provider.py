"""A token endpoint that hangs (accepts, reads, never answers): every proxied call whose token
has expired still answers 503 within ``refresh_wait``, the first call and every later one,
while the hung refreshes stay in the air."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from freshtoken import ManualClock

from .bff_support import CSRF, DeploymentFactory

WAIT = 0.5  # refresh_wait
MARGIN = 1.0  # what a loaded machine may add to it
SESSIONS = 12  # more than the per-issuer cap of token requests in the air (8)
ROUNDS = 3


class HangingEndpoint:
    """A TCP listener that reads whatever it is sent and never answers."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/oauth/token"
        self._held: list[socket.socket] = []
        self._accepted = threading.Condition()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._accepted:
                self._held.append(connection)  # kept open, never answered
                self._accepted.notify_all()

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> bool:
        with self._accepted:
            return self._accepted.wait_for(lambda: len(self._held) >= count, timeout)

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._accepted:
            held, self._held = self._held, []
        for connection in held:
            connection.close()
        self._thread.join(5)


@pytest.fixture
def hanging() -> Iterator[HangingEndpoint]:
    endpoint = HangingEndpoint()
    yield endpoint
    endpoint.close()


def test_calls_with_expired_tokens_answer_503_within_refresh_wait_while_refreshes_hang(
    deploy: DeploymentFactory, clock: ManualClock, hanging: HangingEndpoint
) -> None:
    """Background refreshes start (tokens within the leeway: 200s) and hang; then the tokens
    expire: each call, in three rounds over more sessions than the issuer's cap of requests
    in the air (so some refreshes queue for a place), is a 503 within refresh_wait."""
    deployment = deploy(
        issuer=None, token_url=hanging.url, allow_insecure_http=True, refresh_wait=WAIT
    )
    sessions = [deployment.login() for _ in range(SESSIONS)]

    def call(session: str) -> tuple[int, float]:
        with httpx.Client(base_url=deployment.url, timeout=30.0) as http:
            started = time.monotonic()
            response = http.get("/api/me", headers={**CSRF, **deployment.cookie(session)})
            return response.status_code, time.monotonic() - started

    seen: list[tuple[int, int, float]] = []
    with concurrent.futures.ThreadPoolExecutor(SESSIONS) as pool:
        clock.advance(297)  # within the leeway: background refreshes start, and hang
        assert {status for status, _ in pool.map(call, sessions)} == {200}
        clock.advance(10)  # past the 300 s access tokens: every call needs a refresh
        for round_ in range(ROUNDS):
            for status, waited in pool.map(call, sessions):
                seen.append((round_, status, waited))
    assert hanging.wait_for_connections(1)  # the refreshes did reach the endpoint
    slow = [(round_, round(waited, 2)) for round_, _, waited in seen if waited > WAIT + MARGIN]
    assert slow == []
    assert [status for _, status, _ in seen] == [503] * (SESSIONS * ROUNDS)
