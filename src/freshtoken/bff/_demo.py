"""The reference server set up for a BFF: a confidential client whose redirect URIs are the
BFF's callback on loopback (any port), for the demo, the example SPA and the tests."""

from __future__ import annotations

from typing import Any

__all__ = ["BFF_CLIENT_ID", "BFF_CLIENT_SECRET", "bff_server_config"]

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
