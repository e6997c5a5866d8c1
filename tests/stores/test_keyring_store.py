"""KeyringStore: the OS secret store, with lock files for cross-process single flight.

The TokenStore contract is proven for every store in test_store_contract.py; this file holds
what only KeyringStore does.

The OS keychain is replaced by ``file_keyring.FileKeyring`` (a test-only backend keeping
entries in a file): this machine has no keychain service, and keyrings.alt is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import keyring
import keyring.errors
import pytest
from file_keyring import FileKeyring, file_keyring_selected
from keyring.backend import KeyringBackend

from freshtoken import FunctionRefresher, StoreError, TokenManager, TokenSet
from freshtoken.errors import LockTimeout
from freshtoken.server import ReferenceServer
from freshtoken.stores import KeyringStore

HERE = Path(__file__).parent
WORKER = HERE / "store_worker.py"
SERVICE, USER = "freshtoken-test", "demo"


def tokens(n: int = 1, *, expires_at: float = 4_000_000_000.0) -> TokenSet:
    return TokenSet(
        access_token=f"access-SECRET-{n}",
        refresh_token=f"refresh-SECRET-{n}",
        expires_at=expires_at,
        obtained_at=expires_at - 300,
    )


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[FileKeyring]:
    """A file-backed keyring (this machine has no OS keychain), selected for the test."""
    with file_keyring_selected(tmp_path / "keychain.json") as chosen:
        yield chosen


@pytest.fixture
def store(backend: FileKeyring, tmp_path: Path) -> KeyringStore:
    return KeyringStore(SERVICE, USER, lock_path=tmp_path / "locks" / "refresh.lock")


def test_one_entry_holds_the_tokens_and_their_generation(
    store: KeyringStore, backend: FileKeyring
) -> None:
    """Tokens go into one keychain entry, a JSON document that carries the generation."""
    first = store.save(tokens(1), expected_generation=0)
    second = store.save(tokens(2), expected_generation=first.generation)
    entry = json.loads(backend.get_password(SERVICE, USER) or "")
    assert entry["format"] == "freshtoken/1"
    assert entry["generation"] == second.generation
    other = KeyringStore(SERVICE, USER, lock_path=store.lock_path)
    assert other.key == store.key == ("keyring", SERVICE, USER)


def test_clear_leaves_a_tombstone_without_secrets(
    store: KeyringStore, backend: FileKeyring
) -> None:
    """clear() replaces the secret with an entry that keeps only the generation counter."""
    saved = store.save(tokens(), expected_generation=0)
    store.clear()
    left = backend.get_password(SERVICE, USER) or ""
    assert "SECRET" not in left
    assert json.loads(left) == {
        "format": "freshtoken/1",
        "generation": saved.generation + 1,
        "tokens": None,
    }
    store.clear()
    assert backend.get_password(SERVICE, USER) == left
    assert store.load() is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("hunter2", "not valid JSON"),
        ('{"tokens": {}}', "not a freshtoken entry"),
        ('{"format": "freshtoken/9", "generation": 1}', "newer than this freshtoken"),
        ('{"format": "freshtoken/1", "generation": 0, "tokens": {}}', "bad generation"),
        ('{"format": "freshtoken/1", "generation": 1, "tokens": {"x": 1}}', "is corrupt"),
    ],
)
def test_foreign_or_damaged_entries_are_refused_and_kept(
    store: KeyringStore, backend: FileKeyring, entry: str, message: str
) -> None:
    """An entry that is not ours is never overwritten: StoreError naming service and user."""
    backend.set_password(SERVICE, USER, entry)
    with pytest.raises(StoreError, match=message) as caught:
        store.load()
    assert f"{SERVICE!r}/{USER!r}" in str(caught.value)
    with pytest.raises(StoreError):
        store.save(tokens(), expected_generation=None)
    assert backend.get_password(SERVICE, USER) == entry


class BrokenKeyring(KeyringBackend):
    priority = 0

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def get_password(self, service: str, username: str) -> str | None:
        raise keyring.errors.KeyringLocked("locked; secret-in-message-SECRET")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise keyring.errors.PasswordSetError(f"cannot store {password}")

    def delete_password(self, service: str, username: str) -> None:
        raise keyring.errors.KeyringError("boom")


def test_backend_failures_become_store_errors_without_secrets(tmp_path: Path) -> None:
    """A locked or failing keychain raises StoreError naming the entry, never the secret."""
    previous = keyring.get_keyring()
    keyring.set_keyring(BrokenKeyring())
    try:
        store = KeyringStore(SERVICE, USER, lock_path=tmp_path / "refresh.lock")
        for attempt in (
            store.load,
            lambda: store.save(tokens(), expected_generation=None),
            store.clear,
        ):
            with pytest.raises(StoreError) as caught:
                attempt()
            assert "SECRET" not in str(caught.value)
            assert SERVICE in str(caught.value)
    finally:
        keyring.set_keyring(previous)


def test_missing_keyring_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without the keyring package the error says which pip install fixes it."""
    monkeypatch.setitem(sys.modules, "keyring", None)
    with pytest.raises(StoreError, match=r"pip install 'freshtoken\[keyring\]'"):
        KeyringStore(SERVICE, USER, lock_path=tmp_path / "refresh.lock")


def test_repr_shows_no_secret(store: KeyringStore) -> None:
    store.save(tokens(), expected_generation=0)
    assert "SECRET" not in repr(store) + repr(store.load())


def test_default_lock_file_lives_in_the_cache_dir(
    backend: FileKeyring, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without lock_path the lock goes to $XDG_CACHE_HOME/freshtoken/locks, one per entry."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    a = KeyringStore(SERVICE, USER)
    b = KeyringStore(SERVICE, "someone-else")
    assert a.lock_path.parent == tmp_path / "cache" / "freshtoken" / "locks"
    assert a.lock_path != b.lock_path
    with a.lock(1), b.lock(1):
        pass


def test_manager_on_a_keyring_store_refreshes_and_saves(store: KeyringStore) -> None:
    """The manager refreshes an expired token under the lock and saves it in the keychain."""
    store.save(tokens(1, expires_at=time.time() - 10), expected_generation=0)
    calls: list[TokenSet | None] = []

    def refresh(current: TokenSet | None) -> TokenSet:
        calls.append(current)
        return tokens(2)

    manager = TokenManager(FunctionRefresher(refresh), store)
    assert manager.get_tokens() == tokens(2)
    assert len(calls) == 1
    loaded = KeyringStore(SERVICE, USER, lock_path=store.lock_path).load()
    assert loaded is not None
    assert loaded.tokens == tokens(2)


def child_env(backend: FileKeyring) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "PYTHON_KEYRING_BACKEND": "file_keyring.FileKeyring",
        "FILE_KEYRING_PATH": str(backend.path),
    }


def test_lock_is_exclusive_between_processes(store: KeyringStore, backend: FileKeyring) -> None:
    """While another process holds the refresh lock, this one times out clearly."""
    spec = f"keyring:{SERVICE}:{USER}:{store.lock_path}"
    holder = subprocess.Popen(
        [sys.executable, str(WORKER), "hold-lock", spec],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=child_env(backend),
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockTimeout, match="keyring refresh"), store.lock(0.2):
            pass
    finally:
        holder.kill()
        holder.wait()
    with store.lock(5):
        pass


@pytest.mark.slow
def test_storm_of_processes_on_a_keyring_store_refreshes_once(
    oauth_server: ReferenceServer, store: KeyringStore, backend: FileKeyring
) -> None:
    """4 processes x 6 threads on one expired keychain token: 1 refresh, 0 reuse, 0 failures."""
    response = oauth_server.login()
    store.save(
        TokenSet.from_response(response, sent_at=time.time() - 10_000), expected_generation=None
    )
    oauth_server.expire_access_tokens()
    oauth_server.reset_stats()
    spec = f"keyring:{SERVICE}:{USER}:{store.lock_path}"
    argv = [
        sys.executable, str(WORKER), "storm", spec, oauth_server.token_url,
        f"{oauth_server.url}/api/me", "6", "4",
    ]  # fmt: skip
    children = [
        subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(backend),
        )
        for _ in range(4)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.close()
        reports = []
        for child in children:
            assert child.stdout is not None
            output = child.stdout.read()
            assert child.wait(60) == 0
            reports.append(json.loads(output.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    stats = oauth_server.stats()
    assert stats["refreshes"] == 1, reports
    assert stats["reuse_detections"] == 0
    assert sum(r["failed"] for r in reports) == 0, [r["errors"] for r in reports]
    assert sum(r["ok"] for r in reports) == 4 * 6 * 4
