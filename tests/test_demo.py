"""`freshtoken demo`: the workload survives faults and a forced expiry with zero failures."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from freshtoken.cli.demo import run_demo


@pytest.mark.slow
def test_a_short_demo_run_fails_no_request_and_reuses_no_refresh_token() -> None:
    result = asyncio.run(run_demo(duration=4.0, concurrency=12, ttl=1.5, pause=0.05))
    assert result.requests > 100
    assert result.failed == 0, result.failures
    assert result.server["reuse_detections"] == 0
    assert 1 <= result.client["refresh_failures"] <= 3  # injected: 503, dropped connection, 429
    assert 0 < result.refreshes_per_expiry <= 1
    assert result.ok


def test_bad_demo_arguments_are_one_clear_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "freshtoken.cli", "demo", "--concurrency", "lots"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "not a whole number: 'lots'" in done.stderr
    assert "Traceback" not in done.stderr
