"""Every store keeps a token set's ID token (and the rest) through a save and a load."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backend import KeyringBackend
from redis_fixture import RedisServer

import freshtoken
from freshtoken import TokenSet

ID_TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJkZW1vIn0.c2lnbmF0dXJl"


class MemoryKeyring(KeyringBackend):
    """A keyring backend in a dict: this machine has no OS keychain (see the keyring tests)."""

    priority = 0.1

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.entries.pop((service, username), None)


@pytest.fixture
def memory_keyring() -> Iterator[MemoryKeyring]:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


def _file(tmp_path: Path, request: pytest.FixtureRequest) -> freshtoken.TokenStore:
    return freshtoken.FileStore(tmp_path / "tokens.json")


def _keyring(tmp_path: Path, request: pytest.FixtureRequest) -> freshtoken.TokenStore:
    request.getfixturevalue("memory_keyring")
    return freshtoken.KeyringStore("freshtoken-test", "demo", lock_path=tmp_path / "lock")


def _redis(tmp_path: Path, request: pytest.FixtureRequest) -> freshtoken.TokenStore:
    server: RedisServer = request.getfixturevalue("shared_redis_server")
    return freshtoken.RedisStore(server.url, key=f"freshtoken:{uuid.uuid4().hex}")


STORES: dict[str, Callable[[Path, pytest.FixtureRequest], freshtoken.TokenStore]] = {
    "memory": lambda tmp_path, request: freshtoken.MemoryStore(),
    "file": _file,
    "keyring": _keyring,
    "redis": _redis,
}


@pytest.mark.parametrize(
    "kind",
    [pytest.param(kind, marks=[pytest.mark.redis] if kind == "redis" else []) for kind in STORES],
)
def test_every_store_keeps_the_id_token(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Saved with an ID token, loaded back equal (the ID token included)."""
    store = STORES[kind](tmp_path, request)
    tokens = TokenSet(
        "access",
        refresh_token="refresh",
        expires_at=4_000_000_000.0,
        scope="openid read",
        id_token=ID_TOKEN,
    )
    try:
        store.save(tokens, expected_generation=0)
        loaded = store.load()
        assert loaded is not None
        assert loaded.tokens == tokens
        assert loaded.tokens.id_token == ID_TOKEN
    finally:
        store.close()
