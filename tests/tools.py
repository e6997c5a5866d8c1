"""Programs some tests drive for real (kubectl, git, chromium...): found, or a clear verdict.

Where a program is missing, a developer's run skips the test and says which package brings it;
CI sets ``FRESHTOKEN_REQUIRE_TOOLS=1``, which turns that skip into a failure, so a missing
install step cannot hide behind a green run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator

import pytest

__all__ = ["refused_port", "require"]

ENV_REQUIRE = "FRESHTOKEN_REQUIRE_TOOLS"


def require(program: str, package: str | None = None) -> str:
    """The path of ``program``; skips (or, under FRESHTOKEN_REQUIRE_TOOLS=1, fails) if absent."""
    path = shutil.which(program)
    if path is not None:
        return path
    reason = f"{program} is not installed (Debian package: {package or program})"
    if os.environ.get(ENV_REQUIRE) == "1":
        pytest.fail(f"{reason}, and {ENV_REQUIRE}=1 says every tool must be there")
    pytest.skip(reason)


@contextlib.contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port where connections are refused, for as long as the block runs: it is
    bound but not listening, so no server of another test (they run in parallel) can take it
    meanwhile, as it could a port merely found free and released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        yield int(probe.getsockname()[1])
