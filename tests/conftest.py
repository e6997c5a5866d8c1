"""Shared test configuration. Fixture modules are plugins so that each stays one page."""

from __future__ import annotations

import pytest

pytest_plugins: list[str] = [
    "tests.redis_fixture",
    "tests.profile_fixture",
    "tests.agent_fixture",
    "tests.cli_fixture",
    "tests.browser_fixture",
]


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Async tests run on asyncio and on trio."""
    return str(request.param)
