"""The reference server set up for a BFF: a confidential client whose redirect URIs are the
BFF's callback on loopback (any port), for the demo, the example SPA and the tests."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import BFF

__all__ = ["BFF_CLIENT_ID", "BFF_CLIENT_SECRET", "bff_server_config", "demo_bff"]

BFF_CLIENT_ID = "bff-demo"
BFF_CLIENT_SECRET = "bff-demo-secret"  # the reference server's demo client; not a secret


def bff_server_config(prefix: str = "/bff", **changes: Any) -> Any:
    """A [`ServerConfig`][freshtoken.server.ServerConfig] with the demo clients and users plus the
    BFF's client (``bff-demo``), and ``changes`` applied."""
    from ..server._config import ALL_GRANTS, DEMO_CLIENTS, Client, ServerConfig

    callback = f"{prefix}/callback"
    client = Client(
        BFF_CLIENT_ID,
        BFF_CLIENT_SECRET,
        ALL_GRANTS,
        redirect_uris=tuple(
            f"http://{host}{callback}" for host in ("127.0.0.1", "localhost", "[::1]")
        ),
    )
    return ServerConfig(admin=True, clients=(*DEMO_CLIENTS, client)).replace(**changes)


def demo_bff(server_url: str, *, app: Any, leeway: float) -> BFF:
    """The demo's BFF in front of the reference server at ``server_url`` (set up with
    [`bff_server_config()`][bff_server_config]): its client, a new random key, sessions in memory,
    ``/api/`` routed to the server's API, and ``app`` (the page) behind it."""
    from ._app import BFF

    return BFF(
        issuer=server_url,
        client_id=BFF_CLIENT_ID,
        client_secret=BFF_CLIENT_SECRET,
        secret_key=secrets.token_bytes(32),
        routes={"/api/": f"{server_url}/api/"},
        scope="openid read write",
        app=app,
        leeway=leeway,
    )
