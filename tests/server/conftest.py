"""Shared by the server tests (the server fixtures themselves come from freshtoken.testing)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain-HTTP client; verify=False skips loading CA certificates (~50 ms a client)."""
    with httpx.Client(verify=False, timeout=10.0) as client:
        yield client
