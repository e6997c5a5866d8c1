"""What the benchmarks share: a reference server in its own process, so that server and
client never compete for one GIL, and its admin counters over HTTP."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx


@contextlib.contextmanager
def server_process(*flags: str) -> Iterator[str]:
    """``freshtoken serve --port 0 --admin`` plus ``flags`` in a subprocess; yields its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "freshtoken.cli", "serve", "--port", "0", "--admin", *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        if " on " not in first_line:
            raise SystemExit(f"the reference server did not start: {first_line!r}")
        yield first_line.split(" on ")[1].strip()
    finally:
        process.terminate()  # the server stops cleanly on SIGTERM
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def stats(url: str) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(url + "/admin/stats").json()
    return document


def login(url: str) -> dict[str, Any]:
    form = {
        "grant_type": "password",
        "username": "demo",
        "password": "demo",
        "client_id": "demo",
        "client_secret": "demo-secret",
    }
    response = httpx.post(url + "/oauth/token", data=form)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document
