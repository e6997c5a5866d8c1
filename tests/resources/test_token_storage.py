"""freshtoken.mcp.TokenStorage: the MCP SDK's TokenStorage over freshtoken stores."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp")

from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

from freshtoken import FileStore, ManualClock, MemoryStore
from freshtoken.mcp import TokenStorage


def test_tokens_keep_an_absolute_expiry_across_processes(tmp_path: Path) -> None:
    """Saved with expires_in 300 at t, read back at t+100 by another storage: 200 left."""
    clock = ManualClock(1_000_000.0)
    path = tmp_path / "tokens.json"
    writer = TokenStorage(FileStore(path, profile="sdk"), clock=clock)
    token = OAuthToken(access_token="a1", expires_in=300, refresh_token="r1", scope="read")
    anyio.run(writer.set_tokens, token)
    clock.advance(100)
    reader = TokenStorage(FileStore(path, profile="sdk"), clock=clock)
    read = anyio.run(reader.get_tokens)
    assert (read.access_token, read.refresh_token, read.scope) == ("a1", "r1", "read")
    assert read.expires_in == 200
    clock.advance(500)
    assert anyio.run(reader.get_tokens).expires_in == 0


def test_the_client_registration_is_kept_beside_the_tokens(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    storage = TokenStorage(FileStore(path, profile="sdk"))
    assert anyio.run(storage.get_client_info) is None
    info = OAuthClientInformationFull(
        client_id="c-1",
        client_secret="s3cr3t",
        token_endpoint_auth_method="client_secret_post",
        redirect_uris=["http://127.0.0.1/callback"],  # type: ignore[list-item]
    )
    anyio.run(storage.set_client_info, info)
    again = anyio.run(TokenStorage(FileStore(path, profile="sdk")).get_client_info)
    assert (again.client_id, again.client_secret) == ("c-1", "s3cr3t")
    assert again.token_endpoint_auth_method == "client_secret_post"
    assert anyio.run(TokenStorage(MemoryStore()).get_tokens) is None
