"""A test-only keyring backend that keeps entries in a JSON file.

This machine is headless: it has no macOS Keychain, Windows Credential Locker or Secret
Service, and ``keyrings.alt`` is not installed. This backend stands in for the OS secret store
honestly enough for KeyringStore's proofs: entries survive the process, are shared between
processes (select it in a child with ``PYTHON_KEYRING_BACKEND=file_keyring.FileKeyring`` and
``FILE_KEYRING_PATH``), and each write replaces the file atomically, as a real keychain
commits an item. Without ``FILE_KEYRING_PATH`` it is not viable, so it is never chosen by
accident.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import keyring
from keyring.backend import KeyringBackend
from keyring.compat import properties
from keyring.errors import PasswordDeleteError

ENV_PATH = "FILE_KEYRING_PATH"


class FileKeyring(KeyringBackend):
    @properties.classproperty
    def priority(cls) -> float:
        if ENV_PATH not in os.environ:
            raise RuntimeError("test-only backend: select it explicitly")
        return 0.1

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.path = Path(path if path is not None else os.environ[ENV_PATH])

    def _entries(self) -> dict[str, str]:
        try:
            data: dict[str, str] = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        return data

    def _write(self, entries: dict[str, str]) -> None:
        fd, temporary = tempfile.mkstemp(dir=self.path.parent)
        with os.fdopen(fd, "w") as file:
            json.dump(entries, file)
        os.replace(temporary, self.path)

    @staticmethod
    def _key(service: str, username: str) -> str:
        return f"{service}\0{username}"

    def get_password(self, service: str, username: str) -> str | None:
        return self._entries().get(self._key(service, username))

    # The callers (KeyringStore) serialise writes with their own lock file, as they must with
    # any keychain; the backend itself only makes each write atomic.
    def set_password(self, service: str, username: str, password: str) -> None:
        entries = self._entries()
        entries[self._key(service, username)] = password
        self._write(entries)

    def delete_password(self, service: str, username: str) -> None:
        entries = self._entries()
        if entries.pop(self._key(service, username), None) is None:
            raise PasswordDeleteError("no such entry")
        self._write(entries)


@contextlib.contextmanager
def file_keyring_selected(path: Path) -> Iterator[FileKeyring]:
    """Select a FileKeyring on ``path`` as this process's keyring; restore the previous one."""
    previous = keyring.get_keyring()
    chosen = FileKeyring(path)
    keyring.set_keyring(chosen)
    try:
        yield chosen
    finally:
        keyring.set_keyring(previous)
