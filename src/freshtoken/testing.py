"""freshtoken's pytest plugin, registered through the ``pytest11`` entry point.

Fixtures
--------
``oauth_server``
    A started [`ReferenceServer`][freshtoken.server.ReferenceServer] on a free loopback port, with
    the ``/admin`` routes on and a [`ManualClock`][freshtoken.ManualClock] (``oauth_server.clock``)
    that only [`advance()`][freshtoken.server.ReferenceServer.advance] moves. Stopped after the
    test.
``oauth_server_factory``
    Makes more servers, each with its own configuration:
    ``oauth_server_factory(access_ttl=1, reuse_grace=2)``. All are stopped after the test.
    ``as_="github"`` makes the server answer as that provider does (its personality, with
    the provider's lifetimes and rules; other changes apply on top).

The plugin imports nothing beyond pytest until a fixture is used, so it loads even without
the ``server`` extra; the fixtures then fail with ``pip install 'freshtoken[server]'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from ._core.clock import Clock, ManualClock

if TYPE_CHECKING:
    from .server import ReferenceServer, ServerConfig

__all__ = ["ServerFactory", "oauth_server", "oauth_server_factory"]


# -- the reference OAuth2 server ---------------------------------------------------------


class ServerFactory(Protocol):
    def __call__(
        self, config: ServerConfig | None = None, *, clock: Clock | None = None, **changes: Any
    ) -> ReferenceServer:
        """A started server: ``config`` (default: the demo one, admin on) with ``changes``
        applied; ``clock`` defaults to a new ManualClock at the current time."""
        ...


def _start_server(
    config: ServerConfig | None, clock: Clock | None, **changes: Any
) -> ReferenceServer:
    try:
        from .server import ReferenceServer, ServerConfig
    except ModuleNotFoundError as exc:
        missing = (exc.name or "?").partition(".")[0]
        raise ModuleNotFoundError(
            f"freshtoken's oauth_server fixtures need the server extra ({missing} is missing):"
            " pip install 'freshtoken[server]'",
            name=exc.name,
        ) from exc
    base = config if config is not None else ServerConfig(admin=True)
    provider = changes.pop("as_", None)
    if provider is not None:
        base = base.as_provider(provider)
    server = ReferenceServer(base.replace(**changes), clock=clock or ManualClock())
    return server.start()


@pytest.fixture
def oauth_server_factory() -> Iterator[ServerFactory]:
    """Start reference servers with ServerConfig changes; every one is stopped at teardown."""
    started: list[ReferenceServer] = []

    def factory(
        config: ServerConfig | None = None, *, clock: Clock | None = None, **changes: Any
    ) -> ReferenceServer:
        server = _start_server(config, clock, **changes)
        started.append(server)
        return server

    yield factory
    for server in reversed(started):
        server.stop(wait=False)


@pytest.fixture
def oauth_server(oauth_server_factory: ServerFactory) -> ReferenceServer:
    """A reference OAuth2 server with the demo credentials, admin routes and a ManualClock."""
    return oauth_server_factory()
