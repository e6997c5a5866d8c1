"""Many processes, one agent: exactly one refresh per expiry against a server with rotation
and reuse detection, and not one byte of a refresh token on the socket."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_fixture import RunningAgent
from profile_fixture import LoggedIn

WORKER = Path(__file__).with_name("agent_worker.py")
ROOT = Path(__file__).resolve().parents[2]
PROCESSES, THREADS, CALLS, ROUNDS = 8, 4, 5, 3


class RecordingProxy:
    """Listens on its own unix socket and relays every connection to the agent, keeping a
    copy of every byte the agent sends back."""

    def __init__(self, path: Path, target: Path) -> None:
        self.target = target
        self.received = bytearray()
        self._lock = threading.Lock()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(256)
        self.path = path
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(str(self.target))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record:
                    with self._lock:
                        self.received += data
                sink.sendall(data)
        except OSError:
            pass  # one side went away; the other is closed below
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):  # already closed by the other pump
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(running_agent: RunningAgent, agent_dir: Path) -> Iterator[RecordingProxy]:
    recording = RecordingProxy(agent_dir / "proxy.sock", running_agent.socket_path)
    yield recording
    recording.close()


def test_eight_processes_get_one_refresh_per_expiry_and_never_a_refresh_token(
    running_agent: RunningAgent, logged_in: LoggedIn, proxy: RecordingProxy
) -> None:
    """8 processes x 4 threads x 5 calls per round, 3 expiries: 3 refreshes, no reuse
    detected, every caller of a round holds the same working token, and the bytes the agent
    sent hold none of the session's refresh tokens."""
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(proxy.path), str(THREADS), str(CALLS)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=logged_in.env,
        )
        for _ in range(PROCESSES)
    ]
    refresh_tokens = {logged_in.tokens().refresh_token}
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready", worker.stderr
        for expiry in range(1, ROUNDS + 1):
            logged_in.server.advance(301)  # every token so far has expired
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            reports = []
            for worker in workers:
                assert worker.stdout is not None
                reports.append(json.loads(worker.stdout.readline()))
            assert [r["failures"] for r in reports] == [[]] * PROCESSES
            tokens = {token for report in reports for token in report["tokens"]}
            assert sum(len(r["tokens"]) for r in reports) == PROCESSES * THREADS * CALLS
            assert len(tokens) == 1, f"round {expiry}: {len(tokens)} different tokens"
            assert logged_in.api_status(tokens.pop()) == 200
            stats = logged_in.server.stats()
            assert stats["refreshes"] == expiry
            assert stats["reuse_detections"] == 0
            refresh_tokens.add(logged_in.tokens().refresh_token)
    finally:
        for worker in workers:
            if worker.stdin is not None:
                worker.stdin.close()
            worker.wait(timeout=30)
            for stream in (worker.stdout, worker.stderr):
                if stream is not None:
                    stream.close()
    assert len(refresh_tokens) == ROUNDS + 1
    assert len(proxy.received) > 0
    for secret in refresh_tokens:
        assert secret is not None
        assert secret.encode() not in proxy.received
    assert b"demo-secret" not in proxy.received
    counters = running_agent.get("/v1/status").json()["counters"]
    assert counters["tokens_served"] == ROUNDS * PROCESSES * THREADS * CALLS
