"""Start worker processes (fleet_worker.py) and release them together through a Redis barrier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from redis_fixture import RedisServer

from freshtoken import TokenSet
from freshtoken.stores.redis import RedisStore

WORKER = Path(__file__).with_name("fleet_worker.py")
ROOT = Path(__file__).resolve().parents[2]


class Fleet:
    """``size`` worker processes sharing ``key``; ``go()`` releases them all at once."""

    def __init__(self, redis_server: RedisServer, key: str, **config: Any) -> None:
        self.redis = redis_server.client(socket_timeout=120)
        self.key = key
        self.config = {"redis": redis_server.url, "key": key} | config
        self.processes: list[subprocess.Popen[str]] = []

    def spawn(self, count: int = 1, **changes: Any) -> list[subprocess.Popen[str]]:
        """Start ``count`` workers and return once each has announced itself ready."""
        config = json.dumps(self.config | changes)
        started = [
            subprocess.Popen(
                [sys.executable, str(WORKER), config],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
            )
            for _ in range(count)
        ]
        self.processes += started
        for _ in started:
            if self.redis.blpop([f"{self.key}:ready"], timeout=60) is None:
                raise RuntimeError(f"workers did not start: {self._stderr()}")
        return started

    def go(self, count: int | None = None) -> None:
        """Release ``count`` waiting workers (default: all spawned)."""
        n = len(self.processes) if count is None else count
        self.redis.rpush(f"{self.key}:go", *["go"] * n)

    def results(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Wait for every live worker; return their reports (killed ones report nothing)."""
        reports = []
        for process in self.processes:
            stdout, stderr = process.communicate(timeout=timeout)
            if process.returncode < 0:
                continue  # killed by the test
            if process.returncode != 0:
                raise AssertionError(f"worker {process.pid} failed:\n{stderr[-3000:]}")
            reports.append(json.loads(stdout.strip().splitlines()[-1]) | {"stderr": stderr})
        return reports

    def _stderr(self) -> str:
        texts = []
        for process in self.processes:
            if process.poll() is not None and process.stderr is not None:
                texts.append(process.stderr.read()[-2000:])
        return "\n".join(texts)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.communicate()


def seed(redis_server: RedisServer, key: str, tokens: TokenSet) -> None:
    """Store ``tokens`` under ``key`` before the fleet starts."""
    store = RedisStore(redis_server.url, key)
    try:
        store.save(tokens, expected_generation=None)
    finally:
        store.close()


def total(reports: list[dict[str, Any]], status: str) -> int:
    return sum(int(report["statuses"].get(status, 0)) for report in reports)


def failures(reports: list[dict[str, Any]]) -> int:
    return sum(
        int(count)
        for report in reports
        for status, count in report["statuses"].items()
        if status != "200"
    )
