"""The pytest plugin itself: fixtures, their teardown, and a missing extra."""

from __future__ import annotations

import sys

import pytest

from freshtoken._core.clock import ManualClock
from freshtoken.server import ServerConfig
from freshtoken.testing import ServerFactory, _start_server


def test_fixture_server_is_ready_with_a_manual_clock(oauth_server_factory: ServerFactory) -> None:
    """The factory applies changes to the demo config, keeps admin on, and shares the clock."""
    clock = ManualClock(1_000_000.0)
    server = oauth_server_factory(clock=clock, access_ttl=5)
    assert server.clock is clock
    assert server.config.access_ttl == 5
    assert server.config.admin
    assert server.now() == 1_000_000.0
    assert server.login()["expires_in"] == 5


def test_factory_takes_a_whole_config(oauth_server_factory: ServerFactory) -> None:
    server = oauth_server_factory(ServerConfig(rotation=False), clock_offset=10)
    assert not server.config.rotation
    assert not server.config.admin
    assert server.now() == server.clock() + 10


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the server extra, the fixture says which pip install fixes it."""
    monkeypatch.setitem(sys.modules, "freshtoken.server._runner", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'freshtoken\[server\]'"):
        _start_server(None, None)
