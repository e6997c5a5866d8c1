"""The providers' test bed: a reference server answering as a provider, and its preset."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

import freshtoken
from freshtoken import Provider, providers
from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory


def preset_for(name: str, server: ReferenceServer) -> Provider:
    """The preset ``name`` pointed at ``server`` (``base_url=``, as for a sovereign cloud)."""
    url = server.url
    made: dict[str, Callable[[], Provider]] = {
        "okta": lambda: providers.okta(
            "example.okta.com", authorization_server="default", base_url=url
        ),
        "auth0": lambda: providers.auth0("example.auth0.com", base_url=url),
        "keycloak": lambda: providers.keycloak(url, "demo"),
        "hydra": lambda: providers.hydra("https://hydra.example", base_url=url),
    }
    return made.get(name, lambda: providers.get(name, base_url=url))()


@dataclasses.dataclass
class Bed:
    """A server answering as ``name``, its preset, and a refresher made from the preset."""

    name: str
    server: ReferenceServer
    provider: Provider

    def refresher(self, **options: Any) -> freshtoken.OAuth2Refresher:
        return freshtoken.OAuth2Refresher.from_issuer(
            self.provider, client_id="demo", client_secret="demo-secret", **options
        )

    def login(self, refresher: freshtoken.OAuth2Refresher | None = None) -> freshtoken.TokenSet:
        """A browser login as a person would do it, through the preset."""
        made = refresher or self.refresher()
        return made.browser_login(
            open_browser=self.server.browser(), scope="openid read write", clock=self.server.clock
        )


BedFactory = Callable[..., Bed]


@pytest.fixture
def bed(oauth_server_factory: ServerFactory) -> BedFactory:
    def make(name: str, **changes: Any) -> Bed:
        server = oauth_server_factory(as_=name, **changes)
        return Bed(name, server, preset_for(name, server))

    return make
