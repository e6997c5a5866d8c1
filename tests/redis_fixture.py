"""The ``redis_server`` fixture: a real ``redis-server`` process on a free loopback port.

Each test gets its own server (no persistence, a temporary directory), stopped afterwards, so
no test depends on a Redis someone left running. Without a ``redis-server`` binary the tests
that use it are skipped, unless ``FRESHTOKEN_REQUIRE_REDIS=1`` (set by CI): then they fail.
``FRESHTOKEN_REDIS_SERVER`` names another binary (a Valkey build, say).

``stop()`` shuts down cleanly and keeps the data (``SHUTDOWN SAVE``: what a Redis with
persistence does on a restart), ``kill()`` crashes it and loses everything; ``start()`` comes
back on the same port.

Redis as deployed: ``redis_cluster`` is a 3-node Redis Cluster (``--cluster-enabled yes`` on
free ports, joined by ``redis-cli --cluster create``), shared by the session;
``redis_sentinel`` is a master, a replica and three sentinels watching them, per test (its
tests kill the master).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.backoff
import redis.cluster
import redis.retry
import redis.sentinel

__all__ = [
    "RedisCluster",
    "RedisSentinel",
    "RedisServer",
    "find_redis_server",
    "redis_cluster",
    "redis_sentinel",
    "redis_server",
    "shared_redis_sentinel",
    "shared_redis_server",
]

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

    def __init__(
        self, binary: str, directory: Path, extra: tuple[str, ...] = (), config: str | None = None
    ) -> None:
        self.binary = binary
        self.directory = directory
        self.extra = extra  # more command-line options (cluster mode, replicaof...)
        self.config = config  # a config file's text, for a sentinel (which rewrites it)
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
        command = [self.binary]
        if self.config is not None:
            config = self.directory / "sentinel.conf"
            if not config.exists():
                config.write_text(self.config)
            command += [str(config), "--sentinel"]
        command += [
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
            *self.extra,
        ]
        # Its working directory too is the temporary one: whatever it writes relative to it (a
        # snapshot, should a config or command ever move `dir`) stays out of the checkout.
        self._process = subprocess.Popen(
            command,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
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


def _binary() -> str:
    binary = find_redis_server()
    if binary is None or not Path(binary).exists():
        message = (
            "redis-server is not installed (Debian/Ubuntu: apt-get install redis-server; "
            "macOS: brew install redis), or set FRESHTOKEN_REDIS_SERVER to its path"
        )
        if os.environ.get("FRESHTOKEN_REQUIRE_REDIS") == "1":
            pytest.fail(f"FRESHTOKEN_REQUIRE_REDIS=1 but {message}", pytrace=False)
        pytest.skip(message)
    return binary


def _start_on_a_free_port(server: RedisServer) -> RedisServer:
    for attempt in range(3):
        try:
            return server.start()
        except RuntimeError:
            if attempt == 2:
                raise
            server.port = _free_port()  # someone took the port between probe and bind
            server.url = f"redis://127.0.0.1:{server.port}/0"
    raise AssertionError("unreachable")


def _started_server(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    return _start_on_a_free_port(RedisServer(_binary(), tmp_path_factory.mktemp("redis")))


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` (cluster and sentinel state has nothing to wait on but polling)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.05)


class RedisCluster:
    """Three redis-server nodes in cluster mode, every slot assigned, no replicas."""

    def __init__(self, binary: str, directory: Path, size: int = 3) -> None:
        self.nodes: list[RedisServer] = []
        for index in range(size):
            node_dir = directory / f"node{index}"
            node_dir.mkdir()
            options = (
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--cluster-port",  # the bus: port + 10000 may be taken or out of range
                str(_free_port()),
            )
            self.nodes.append(RedisServer(binary, node_dir, options))

    def start(self) -> RedisCluster:
        for node in self.nodes:
            _start_on_a_free_port(node)
        cli = shutil.which("redis-cli") or "redis-cli"
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        done = subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]!r}")
        for node in self.nodes:
            admin = node._direct(timeout=2.0)
            try:

                def ok(admin: redis.Redis = admin) -> bool:
                    return bool(admin.cluster("info")["cluster_state"] == "ok")

                _wait_until(ok, 30.0, f"cluster state ok on port {node.port}")
            finally:
                admin.close()
        return self

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    def client(self, **options: Any) -> redis.cluster.RedisCluster:
        """A new cluster client (the caller closes it)."""
        return redis.cluster.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, **options)

    def async_client(self, **options: Any) -> redis.asyncio.cluster.RedisCluster:
        return redis.asyncio.cluster.RedisCluster(
            host="127.0.0.1", port=self.nodes[0].port, **options
        )

    def close(self) -> None:
        for node in self.nodes:
            node.close()


class RedisSentinel:
    """A master, one replica and three sentinels (quorum 2) watching them as ``service``."""

    service = "freshtoken-master"

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        (directory / "master").mkdir()
        (directory / "replica").mkdir()
        # No 5 s pause before the replica's first sync (the default waits for more replicas).
        fast_sync = ("--repl-diskless-sync-delay", "0")
        self.master = _start_on_a_free_port(RedisServer(binary, directory / "master", fast_sync))
        self.replica = RedisServer(
            binary,
            directory / "replica",
            ("--replicaof", "127.0.0.1", str(self.master.port), *fast_sync),
        )
        _start_on_a_free_port(self.replica)
        self.sentinels: list[RedisServer] = []

    def start(self) -> RedisSentinel:
        probe = self.master._direct(timeout=2.0)
        try:
            _wait_until(
                lambda: "'state': 'online'" in str(probe.info("replication").get("slave0")),
                15.0,
                "the replica's sync with the master",
            )
        finally:
            probe.close()
        config = (
            f"sentinel monitor {self.service} 127.0.0.1 {self.master.port} 2\n"
            f"sentinel down-after-milliseconds {self.service} 400\n"
            f"sentinel failover-timeout {self.service} 3000\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        for index in range(3):
            where = self.directory / f"sentinel{index}"
            where.mkdir()
            self.sentinels.append(
                _start_on_a_free_port(RedisServer(self.binary, where, config=config))
            )
        # Every sentinel must know the replica and the other sentinels before a failover can
        # be voted on and can pick the replica.
        for sentinel in self.sentinels:
            admin = sentinel._direct(timeout=2.0)
            try:

                def ready(admin: redis.Redis = admin) -> bool:
                    state: Any = admin.sentinel_master(self.service)
                    return int(state["num-other-sentinels"]) == 2 and int(state["num-slaves"]) == 1

                _wait_until(ready, 30.0, f"sentinel on port {sentinel.port} seeing the others")
            finally:
                admin.close()
        return self

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    def manager(self, **options: Any) -> redis.sentinel.Sentinel:
        return redis.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            self.addresses, socket_timeout=1.0, **options
        )

    def master_client(self, **options: Any) -> redis.Redis:
        """A client of whichever server is the master now (Sentinel finds it)."""
        client: redis.Redis = self.manager().master_for(  # type: ignore[no-untyped-call, unused-ignore]
            self.service, socket_timeout=1.0, **options
        )
        return client

    def async_master_client(self, **options: Any) -> redis.asyncio.Redis:
        manager = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call, unused-ignore]
            self.addresses, socket_timeout=1.0
        )
        client: redis.asyncio.Redis = manager.master_for(
            self.service, socket_timeout=1.0, **options
        )
        return client

    def master_address(self) -> tuple[str, int] | None:
        """Where the sentinels say the master is now; None while none is (mid-failover)."""
        try:
            address = self.manager().discover_master(self.service)  # type: ignore[no-untyped-call, unused-ignore]
        except redis.sentinel.MasterNotFoundError:
            return None
        return (str(address[0]), int(address[1]))

    def close(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            server.close()


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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A 3-node Redis Cluster on free loopback ports, for the session (use distinct keys)."""
    cluster = RedisCluster(_binary(), tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster.start()
    finally:
        cluster.close()


@pytest.fixture
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    """A master, a replica and three sentinels, stopped after the test."""
    deployment = RedisSentinel(_binary(), tmp_path_factory.mktemp("sentinel"))
    try:
        yield deployment.start()
    finally:
        deployment.close()


@pytest.fixture(scope="session")
def shared_redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSentinel]:
    """One Sentinel deployment for the session, for tests that neither kill nor fail over."""
    deployment = RedisSentinel(_binary(), tmp_path_factory.mktemp("sentinel"))
    try:
        yield deployment.start()
    finally:
        deployment.close()
