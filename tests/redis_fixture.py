"""The ``redis_server`` fixture: a real ``redis-server`` process on a free loopback port.

Each test gets its own server (no persistence, a temporary directory), stopped afterwards, so
no test depends on a Redis someone left running. Without a ``redis-server`` binary the tests
that use it are skipped, unless ``FRESHTOKEN_REQUIRE_REDIS=1`` (set by CI): then they fail.
``FRESHTOKEN_REDIS_SERVER`` names another binary (a Valkey build, say).

``stop()`` shuts down cleanly and keeps the data (``SHUTDOWN SAVE``: what a Redis with
persistence does on a restart), ``kill()`` crashes it and loses everything; ``start()`` comes
back on the same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.backoff
import redis.retry

__all__ = ["RedisServer", "find_redis_server", "redis_server", "shared_redis_server"]

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


def find_redis_server() -> str | None:
    configured = os.environ.get("FRESHTOKEN_REDIS_SERVER")
    if configured:
        return configured
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process. ``url``, ``port``, ``client()``, ``stop()``, ``start()``."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []
        self._admin: redis.Redis | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def start(self) -> RedisServer:
        """Start (or restart, same port) and return once it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server on port {self.port} is already running")
        self._close_admin()
        log = self.directory / "redis.log"
        command = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            str(log),
            "--daemonize",
            "no",
        ]
        self._process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        probe = self._direct(timeout=0.5)
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            while True:  # poll start-up with a deadline: there is nothing to wait on instead
                if self._process.poll() is not None:
                    _, stderr = self._process.communicate()
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    raise RuntimeError(
                        f"redis-server exited with {self._process.returncode} on port "
                        f"{self.port}: {stderr.decode(errors='replace')}{tail}"
                    )
                try:
                    if probe.ping():
                        return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        self.kill()
                        raise RuntimeError(
                            f"redis-server did not answer on port {self.port} within "
                            f"{_START_TIMEOUT:g} s"
                        ) from None
                    time.sleep(0.01)
        finally:
            probe.close()

    def stop(self) -> None:
        """Shut down cleanly, saving the data to disk for the next ``start()``."""
        if not self.running:
            return
        with self._direct(timeout=_STOP_TIMEOUT) as admin:
            admin.shutdown(save=True)  # redis-py reads the closed connection as success
        self._wait()

    def kill(self) -> None:
        """Crash (SIGKILL): the data is lost, as in a Redis without persistence."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGKILL)
        self._wait()
        dump = self.directory / "dump.rdb"
        dump.unlink(missing_ok=True)

    def _direct(self, timeout: float) -> redis.Redis:
        """A client that does not retry: start-up probes and shutdown must not back off."""
        return redis.Redis(
            port=self.port,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
        )

    def _wait(self) -> None:
        assert self._process is not None
        try:
            self._process.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()

    def client(self, **options: object) -> redis.Redis:
        """A new client for this server, closed at teardown."""
        client = redis.Redis.from_url(self.url, **options)
        self._clients.append(client)
        return client

    def commands_processed(self) -> int:
        """INFO stats total_commands_processed, counting this INFO call (over a connection
        kept open, so that the connection handshake does not count)."""
        if self._admin is None:
            self._admin = self._direct(timeout=5.0)
        return int(self._admin.info("stats")["total_commands_processed"])

    def _close_admin(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def close(self) -> None:
        self._close_admin()
        for client in self._clients:
            client.close()
        self._clients.clear()
        self.kill()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running})"


def _started_server(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    binary = find_redis_server()
    if binary is None or not Path(binary).exists():
        message = (
            "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server; "
            "macOS: brew install redis), or set FRESHTOKEN_REDIS_SERVER to its path"
        )
        if os.environ.get("FRESHTOKEN_REQUIRE_REDIS") == "1":
            pytest.fail(f"FRESHTOKEN_REQUIRE_REDIS=1 but {message}", pytrace=False)
        pytest.skip(message)
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"))
    for attempt in range(3):
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
            server.port = _free_port()  # someone took the port between probe and bind
            server.url = f"redis://127.0.0.1:{server.port}/0"
    return server


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port, stopped after the test."""
    server = _started_server(tmp_path_factory)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def shared_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session, for tests that only need distinct keys.

    Tests that stop, kill or count commands on their server use ``redis_server`` instead.
    """
    server = _started_server(tmp_path_factory)
    try:
        yield server
    finally:
        server.close()
