"""The agent in a thread of the test process, serving the ``logged_in`` profile on the
reference server's ManualClock (tests move time instead of sleeping), and ways to talk to it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from profile_fixture import LoggedIn

from freshtoken import RetryPolicy
from freshtoken.agent import Agent, AgentLimits


class RunningAgent:
    """``agent`` serving on ``socket_path`` from a background thread."""

    def __init__(self, agent: Agent, socket_path: Path) -> None:
        self.agent = agent
        self.socket_path = socket_path
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(socket_path))
        os.chmod(socket_path, 0o600)
        listener.listen(128)
        ready = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(agent.serve(listener, ready=ready.set)),
            name="test-agent",
            daemon=True,
        )
        self._thread.start()
        assert ready.wait(10), "the agent did not start"
        self.http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(socket_path)), base_url="http://agent"
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def exchange(self, data: bytes, *, timeout: float = 10.0) -> bytes:
        """Send raw bytes on a new connection; everything the agent sends until it closes."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout)
            conn.connect(str(self.socket_path))
            conn.sendall(data)
            received = b""
            while chunk := conn.recv(65536):
                received += chunk
            return received

    def stop(self) -> None:
        self.http.close()
        self.agent.stop()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the agent did not stop"


class FakeAgent:
    """A listener on ``path`` (this user's) that answers every request with ``response``,
    byte for byte: an agent answering what a test wants, such as a malformed answer."""

    def __init__(self, path: Path, response: bytes) -> None:
        self.response = response
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(8)
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, name="fake-agent", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):  # closed by close()
            while True:
                conn, _ = self.listener.accept()
                self.connections += 1
                with conn:
                    conn.recv(65536)
                    conn.sendall(self.response)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=5)


def http_answer(status: int, body: bytes) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection."""
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


@pytest.fixture
def agent_dir() -> Iterator[Path]:
    """A private directory with a short path (a socket address holds ~100 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="ft-", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def agent_limits() -> AgentLimits:
    return AgentLimits()


@pytest.fixture
def running_agent(
    logged_in: LoggedIn, agent_dir: Path, agent_limits: AgentLimits
) -> Iterator[RunningAgent]:
    """An in-thread agent on the profile's token file and the server's ManualClock, one
    refresh attempt per flight (no backoff sleeps in tests)."""
    agent = Agent(
        logged_in.store,
        clock=logged_in.server.clock,
        limits=agent_limits,
        retry=RetryPolicy(attempts=1),
    )
    running = RunningAgent(agent, agent_dir / "agent.sock")
    yield running
    running.stop()
