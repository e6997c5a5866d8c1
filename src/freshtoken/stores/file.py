"""FileStore: tokens in a JSON file that several processes share, safely.

The document, one file holding several named profiles, is drawn in
`freshtoken.stores._file_document`, which reads and checks it. What is left here (some 500
lines) is one job, read in one sitting: the store's locks, reads and writes of that document.

Two kinds of lock file sit beside the store (or at ``lock_path``): ``<base>.lock`` orders
writers of the file and is held only for a read-modify-write; ``<base>.<profile>.lock`` is
the profile's refresh lock ([`FileStore.lock()`][FileStore.lock]), held across a whole refresh. A
refresh of one profile therefore never blocks the others, and a save made under the refresh lock
takes the write lock inside it, always in that order, so they cannot deadlock. Reading never creates
a lock file, and a profile's refresh lock file is removed when the profile is: by
[`FileStore.remove_profile()`][FileStore.remove_profile] if it can take the lock at once, else by
whoever holds it, when they let go.

``path`` is used as given: a symbolic link where the file should be is refused (linked
directories above it are fine).

A profile is usable from both sides. A [`TokenManager`][freshtoken.TokenManager] over a FileStore
tells it its refresher; when that refresher can describe itself (``OAuth2Refresher``,
``ClientCredentials``, see [`RefresherSettings`][freshtoken.refreshers.RefresherSettings]) every
save records the description: the settings in ``meta``, the client secret or private key with the
tokens. ``freshtoken token``, ``status`` and ``logout`` then refresh and revoke the profile,
and [`freshtoken.profiles.open_manager()`][freshtoken.profiles.open_manager] rebuilds a manager
from any profile, ``freshtoken login``'s included. A save without a ``expected_generation`` (a
login: ``set_tokens``) or into an empty profile stamps ``logged_in_at``; a fenced save over
tokens (a refresh) ``refreshed_at``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._core.tokens import TokenSet
from .._deprecation import warn
from ..errors import LockTimeout, StoreError
from ._base import BlockingTokenStore, GenerationConflict, StoredTokens
from ._documents import parse_json, too_deep
from ._file_document import (
    FIX,
    FORMAT,
    PROFILE_RE,
    SETTING_NAMES,
    Description,
    Secrets,
    copy_document,
    described_meta,
    dump,
    empty_document,
    number_or_none,
    parse_document,
    parse_secrets,
    record_entry,
    stamp,
    updated_at,
)
from ._files import (
    canonical_path,
    config_dir,
    process_lock,
    read_private_file,
    watch_file,
    write_atomically,
)
from ._files import remove_stale_temporaries as _remove_stale_temporaries
from ._forks import renew_after_fork
from ._sealing import ENV_KEY, Sealer, resolve_key

if TYPE_CHECKING:
    from .._engine.manager import TokenManager
    from ..refreshers._oauth2 import RefresherSettings

__all__ = ["FORMAT", "SETTING_NAMES", "FileStore", "Profile", "ProfileInfo", "default_path"]

ENV_STORE = "FRESHTOKEN_STORE"
_WRITE_LOCK_TIMEOUT = 30.0


def default_path() -> Path:
    """``$FRESHTOKEN_STORE``, else ``$XDG_CONFIG_HOME/freshtoken/tokens.json`` (~/.config)."""
    configured = os.environ.get(ENV_STORE)
    return Path(configured).expanduser() if configured else config_dir() / "tokens.json"


@dataclasses.dataclass(frozen=True, slots=True)
class ProfileInfo:
    """What may be shown about a profile without its secrets (or its encryption key)."""

    name: str
    meta: Mapping[str, Any]
    has_tokens: bool
    encrypted: bool
    updated_at: float | None
    expires_at: float | None
    obtained_at: float | None
    scope: str | None
    has_refresh_token: bool
    logged_in_at: float | None = None
    refreshed_at: float | None = None  # None: never refreshed since the login


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Profile:
    """A profile with its secrets opened. Its repr names no secret."""

    name: str
    meta: Mapping[str, Any]
    tokens: TokenSet | None
    generation: int
    client_secret: str | None
    private_key: str | None = None

    def __repr__(self) -> str:
        return (
            f"Profile({self.name!r}, meta={dict(self.meta)!r}, tokens={self.tokens!r}, "
            f"generation={self.generation}, has_client_secret={self.client_secret is not None},"
            f" has_private_key={self.private_key is not None})"
        )

    def refresher_settings(self) -> RefresherSettings:
        """Deprecated (until 0.2.0): use
        [`settings_of(profile)`][freshtoken.profiles.settings_of] of ``freshtoken.profiles``."""
        from ..profiles import settings_of  # a deprecated path, kept until 0.2.0

        warn("Profile.refresher_settings()", "freshtoken.profiles.settings_of(profile)")
        return settings_of(self)


class FileStore(BlockingTokenStore):
    """One profile of a JSON token file, shared safely between threads and processes.

    The file is created owner-only (0600, in a 0700 directory created if missing), replaced
    atomically on every save, and refused if others may read or write it. With an
    ``encryption_key`` (or ``$FRESHTOKEN_ENCRYPTION_KEY``) the secrets are sealed with
    AES-256-GCM: a 32-byte key (bytes or url-safe base64) is used as is, any other string is a
    passphrase stretched with scrypt. Without a ``path``, the file is ``$FRESHTOKEN_STORE`` or
    ``~/.config/freshtoken/tokens.json``.

    Managers on this store learn of another process's save within ``watch_interval`` seconds
    (one ``stat`` per interval, in a background thread; ``None`` turns it off, and they then
    re-read only when a refresh falls due or after a 401).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        profile: str = "default",
        encryption_key: bytes | str | None = None,
        lock_path: str | os.PathLike[str] | None = None,
        watch_interval: float | None = 1.0,
    ) -> None:
        if not PROFILE_RE.fullmatch(profile):
            raise ValueError(
                f"invalid profile name {profile!r}: 1-64 letters, digits and _.@- "
                "starting with a letter or digit"
            )
        given = Path(path).expanduser() if path is not None else default_path()
        self.path = Path(os.path.abspath(given))  # not resolved: a link here is refused
        self.profile = profile
        key = resolve_key(encryption_key)
        self._sealer = None if key is None else Sealer(key)
        lock_base = self.path if lock_path is None else Path(lock_path).expanduser().absolute()
        self.write_lock_path = Path(f"{lock_base}.lock")
        self.lock_path = Path(f"{lock_base}.{profile}.lock")
        self._write_lock = process_lock(self.write_lock_path)
        self._refresh_lock = process_lock(self.lock_path)
        self._key = ("file", str(canonical_path(self.path)), profile)
        # The last bytes parsed and what they held: a re-read of an unchanged file (the common
        # case under the lock) costs one read and one comparison, no parse and no decryption.
        self._parsed: tuple[bytes, dict[str, Any]] | None = None
        self._secrets_cache: tuple[str, Secrets] | None = None
        if watch_interval is not None and not watch_interval > 0:
            raise ValueError("watch_interval must be a positive number of seconds, or None")
        self.watch_interval = watch_interval
        self._closed = False
        # One stop event per watch() call, with its callback: unwatch() stops that one thread.
        self._watchers: list[tuple[Callable[[], None], threading.Event]] = []
        self._watchers_mutex = threading.Lock()
        self._described: Description | None = None
        renew_after_fork(self)

    @property
    def key(self) -> Hashable:
        return self._key

    @property
    def encrypted(self) -> bool:
        """Whether this store seals the secrets it writes."""
        return self._sealer is not None

    def __repr__(self) -> str:
        return (
            f"FileStore({str(self.path)!r}, profile={self.profile!r}, encrypted={self.encrypted})"
        )

    # -- the TokenStore protocol --------------------------------------------------------------

    def watch(self, on_change: Callable[[], None]) -> None:
        if self.watch_interval is None:
            return
        stop = threading.Event()
        with self._watchers_mutex:
            if self._closed:
                return
            self._watchers.append((on_change, stop))
        threading.Thread(
            target=watch_file,
            args=(weakref.ref(self), self.path, self.watch_interval, on_change, stop),
            name=f"freshtoken-watch-{self.path.name}",
            daemon=True,
        ).start()

    def unwatch(self, on_change: Callable[[], None]) -> None:
        with self._watchers_mutex:
            for index, (callback, stop) in enumerate(self._watchers):
                if callback == on_change:
                    del self._watchers[index]
                    stop.set()
                    return

    def close(self) -> None:
        with self._watchers_mutex:
            self._closed = True
            watchers, self._watchers = self._watchers, []
        for _, stop in watchers:
            stop.set()

    def remember_refresher(self, refresher: object) -> None:
        """Record ``refresher``'s description (if it has one) with every save from now on."""
        describe = getattr(refresher, "describe", None)
        self._described = describe() if callable(describe) else None

    def _after_fork_in_child(self) -> None:
        # The watcher threads are not in the child, and their mutex may have been held by one
        # of them. watch() in the child starts new ones.
        self._watchers_mutex = threading.Lock()
        self._watchers = []

    def load(self) -> StoredTokens | None:
        document = self._read()
        record = self._record(document)
        if record is None:
            return None
        secrets = self._open(record)
        if secrets.tokens is None:
            return None
        return StoredTokens(secrets.tokens, record["generation"])

    def save(self, tokens: TokenSet, *, expected_generation: int | None) -> StoredTokens:
        with self._writing() as document:
            record = self._record(document)
            secrets = Secrets(None, None) if record is None else self._open(record)
            current = 0 if record is None or secrets.tokens is None else record["generation"]
            if expected_generation is not None and current != expected_generation:
                raise GenerationConflict(
                    f"token store {self.path}, profile {self.profile!r}: the tokens changed "
                    f"since they were read (generation {current}, expected {expected_generation})"
                )
            meta = {} if record is None else record["meta"]
            kept = Secrets(tokens, secrets.client_secret, secrets.private_key)
            described = self._described
            if described is not None:
                meta = described_meta(meta, described)
                kept = Secrets(tokens, described.client_secret, described.private_key)
            login = expected_generation is None or current == 0
            generation = self._put(document, record, meta, kept, login=login)
        return StoredTokens(tokens, generation)

    def clear(self) -> None:
        """Forget the tokens; the profile's settings and client secret stay (see remove)."""
        with self._writing() as document:
            record = self._record(document)
            if record is None:
                raise _Unchanged
            secrets = self._open(record)
            if secrets.tokens is None:
                raise _Unchanged
            self._put(document, record, record["meta"], dataclasses.replace(secrets, tokens=None))

    @contextlib.contextmanager
    def lock(self, timeout: float) -> Iterator[None]:
        with self._refresh_lock.hold(timeout, f"refresh ({self.profile!r})"):
            try:
                yield
            finally:
                if self._profile_gone():
                    self._refresh_lock.remove_file()

    def _profile_gone(self) -> bool:
        """Whether the file certainly has no such profile (its lock file may then go)."""
        try:
            return self._record(self._read()) is None
        except StoreError:
            # Unreadable: whether the profile exists is unknown, so its lock file stays. The
            # error itself reaches whoever reads the store next.
            return False

    # -- profiles (what the CLI needs beyond the protocol) ------------------------------------

    def profiles(self) -> dict[str, ProfileInfo]:
        """Every profile in the file, described without opening any secret."""
        document = self._read()
        return {name: _info(name, record) for name, record in sorted(document["profiles"].items())}

    def load_profile(self) -> Profile | None:
        """This profile with its secrets, or None if the file has no such profile."""
        document = self._read()
        record = self._record(document)
        if record is None:
            return None
        secrets = self._open(record)
        generation = record["generation"] if secrets.tokens is not None else 0
        return Profile(
            self.profile,
            dict(record["meta"]),
            secrets.tokens,
            generation,
            secrets.client_secret,
            secrets.private_key,
        )

    def manager(self, **options: Any) -> TokenManager:
        """Deprecated (until 0.2.0): use
        [`open_manager(store, **options)`][freshtoken.profiles.open_manager] of
        ``freshtoken.profiles`` (the store keeps the profiles; making a manager of one is the
        profiles' job)."""
        from ..profiles import open_manager  # a deprecated path, kept until 0.2.0

        warn("FileStore.manager()", "freshtoken.profiles.open_manager(store)")
        return open_manager(self, **options)

    def save_profile(
        self,
        tokens: TokenSet,
        *,
        meta: Mapping[str, Any],
        client_secret: str | None = None,
        drop_encryption: bool = False,
    ) -> StoredTokens:
        """Create or replace this profile (a login): tokens, settings and client secret.

        ``meta`` must hold no secret: it is stored in clear even when the store encrypts.
        ``client_secret`` is kept with the tokens, under the same protection. Replacing an
        encrypted profile through a store without a key raises [`StoreError`][] rather than
        write its secrets in plaintext, unless ``drop_encryption=True`` says that is wanted.
        """
        meta = dict(meta)
        if too_deep(meta):
            raise ValueError("profile meta nests too deeply to be stored")
        try:
            json.dumps(meta)
        except (TypeError, ValueError) as error:
            raise ValueError(f"profile meta must be JSON-ready: {error}") from None
        with self._writing() as document:
            record = self._record(document)
            if record is not None and "sealed" in record and self._sealer is None:
                if not drop_encryption:
                    raise StoreError(
                        f"{self._where} is encrypted, and this store has no key: saving would "
                        f"write its secrets in plaintext. Pass encryption_key= or set ${ENV_KEY}"
                        " to keep it encrypted, or drop_encryption=True to store it unencrypted"
                    )
                record = None  # not resealed: nothing of the sealed record is kept
            generation = self._put(
                document, record, meta, Secrets(tokens, client_secret), login=True
            )
        return StoredTokens(tokens, generation)

    def remove_profile(self) -> bool:
        """Delete this profile, secrets and settings, and its refresh lock file; False if
        there was none.

        The lock file goes now if the lock is free; if anyone holds it, in this process or
        another, it goes when they let go.
        """
        removed = False
        with self._writing() as document:
            removed = document["profiles"].pop(self.profile, None) is not None
            if not removed:
                raise _Unchanged
        with (
            contextlib.suppress(LockTimeout),  # held: its holder removes it (see lock)
            self._refresh_lock.hold(0, f"refresh ({self.profile!r})"),
        ):
            self._refresh_lock.remove_file()
        return removed

    # -- reading ------------------------------------------------------------------------------

    def _read(self) -> dict[str, Any]:
        data = read_private_file(self.path)
        if data is None:
            return empty_document()
        parsed = self._parsed
        if parsed is not None and parsed[0] == data:
            return parsed[1]
        document = parse_document(self.path, data)
        self._parsed = (data, document)
        return document

    def _record(self, document: Mapping[str, Any]) -> dict[str, Any] | None:
        record: dict[str, Any] | None = document["profiles"].get(self.profile)
        return record

    @property
    def _where(self) -> str:
        return f"token store {self.path}, profile {self.profile!r}"

    def _open(self, record: Mapping[str, Any]) -> Secrets:
        where = self._where
        if "sealed" in record:
            fingerprint = json.dumps(record["sealed"], sort_keys=True)  # at most MAX_DEPTH deep
            cached = self._secrets_cache
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            if self._sealer is None:
                raise StoreError(
                    f"{where} is encrypted, and this store has no key to read or write it: "
                    f"pass encryption_key= or set ${ENV_KEY}"
                )
            plaintext = self._sealer.open(record["sealed"], context=self._context, where=where)
            inner = parse_json(plaintext, f"{where} (decrypted)", FIX)
            secrets = parse_secrets(inner, where)
            self._secrets_cache = (fingerprint, secrets)
            return secrets
        return parse_secrets(record["secrets"], where)

    @property
    def _context(self) -> str:
        return f"{FORMAT} profile={self.profile}"

    # -- writing ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write under the write lock; the body edits the document it is given.

        Raising `_Unchanged` in the body leaves the file as it was.
        """
        with self._write_lock.hold(_WRITE_LOCK_TIMEOUT, "write"):
            _remove_stale_temporaries(self.path)
            document = copy_document(self._read())
            try:
                yield document
            except _Unchanged:
                return
            data = dump(document)
            write_atomically(self.path, data)
            self._parsed = (data, document)

    def _put(
        self,
        document: dict[str, Any],
        record: Mapping[str, Any] | None,
        meta: Mapping[str, Any],
        secrets: Secrets,
        *,
        login: bool = False,
    ) -> int:
        serial = document["serial"] + 1
        document["serial"] = serial
        generation = serial if secrets.tokens is not None else 0
        entry, plain = record_entry(record, meta, secrets, generation, login=login)
        if self._sealer is not None:
            salt = Sealer.salt_of(record.get("sealed")) if record is not None else None
            entry["sealed"] = self._sealer.seal(
                json.dumps(plain).encode(), context=self._context, salt=salt
            )
        else:
            entry["secrets"] = plain
        document["profiles"][self.profile] = entry
        return generation


class _Unchanged(Exception):
    """Raised inside FileStore._writing to leave the file untouched."""


def _info(name: str, record: Mapping[str, Any]) -> ProfileInfo:
    summary = record.get("summary") or {}
    return ProfileInfo(
        name=name,
        meta=dict(record["meta"]),
        has_tokens=record["generation"] > 0,
        encrypted="sealed" in record,
        updated_at=updated_at(record),
        expires_at=number_or_none(summary.get("expires_at")),
        obtained_at=number_or_none(summary.get("obtained_at")),
        scope=summary.get("scope") if isinstance(summary.get("scope"), str) else None,
        has_refresh_token=bool(summary.get("has_refresh_token")),
        logged_in_at=stamp(record, "logged_in_at")
        or number_or_none(
            record["meta"].get("logged_in_at")  # written by logins before the record had it
        ),
        refreshed_at=stamp(record, "refreshed_at"),
    )
