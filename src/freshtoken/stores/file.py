"""FileStore: tokens in a JSON file that several processes share, safely.

The document (one file may hold several named profiles):

    {
      "format": "freshtoken/1",
      "serial": 42,                     # grows on every save of any profile
      "profiles": {
        "default": {
          "generation": 42,             # the serial of this profile's last token save
          "updated_at": 1712345678.9,   # when its tokens were last saved
          "logged_in_at": 1712345000.0, # when tokens were last saved by a login (or null)
          "refreshed_at": 1712345678.9, # when a refresh last saved tokens (null: never)
          "meta": {...},                # non-secret settings: token_url, client_id...
          "summary": {...} | null,      # non-secret facts about the tokens: expiry, scope
          "secrets": {"tokens": {...} | null, "client_secret": "...", "private_key": "..."}
            or "sealed": {...}          # the same object, encrypted (AES-256-GCM)
        }
      }
    }

Generations come from the file-wide serial, which every save and every clear moves forward,
so a profile cleared, or removed and logged into again, never reuses a generation a slow
process may still hold. A new file's serial starts at a random point (see
`freshtoken.stores._base`): a file deleted and created again does not repeat them either.

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
import math
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

from .._core.tokens import TokenSet
from .._deprecation import warn
from ..errors import LockTimeout, StoreError
from ._base import BlockingTokenStore, GenerationConflict, StoredTokens, starting_generation
from ._documents import corrupt, parse_json, token_set, too_deep
from ._files import canonical_path, config_dir, process_lock, read_private_file, write_atomically
from ._files import remove_stale_temporaries as _remove_stale_temporaries
from ._forks import renew_after_fork
from ._sealing import ENV_KEY, Sealer, resolve_key, shape_problem

if TYPE_CHECKING:
    from .._engine.manager import TokenManager
    from ..refreshers._oauth2 import RefresherSettings

__all__ = ["FORMAT", "SETTING_NAMES", "FileStore", "Profile", "ProfileInfo", "default_path"]

# The meta entries a refresher's description owns: describing a refresher replaces all of them.
SETTING_NAMES = frozenset(
    {
        "refresher",
        "token_url",
        "client_id",
        "auth_method",
        "allow_insecure_http",
        "issuer",
        "scope",
        "extra_params",
        "provider",
        "quirks",
        "key_id",
        "verify",
        "private_key_file",
    }
)


class _Description(Protocol):
    """What a refresher's ``describe()`` returns (a RefresherSettings), as the store reads it."""

    @property
    def settings(self) -> Mapping[str, Any]: ...

    @property
    def client_secret(self) -> str | None: ...

    @property
    def private_key(self) -> str | None: ...


FORMAT = "freshtoken/1"
ENV_STORE = "FRESHTOKEN_STORE"
_FORMAT_RE = re.compile(r"freshtoken/([0-9]{1,9})")  # bounded: int() of 5000 digits raises
_PROFILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_WRITE_LOCK_TIMEOUT = 30.0
_FIX = "move it aside and log in again"
_FOREIGN = "give FileStore another path, or move the file aside"


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


@dataclasses.dataclass(frozen=True, slots=True)
class _Secrets:
    tokens: TokenSet | None
    client_secret: str | None
    private_key: str | None = None


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
        if not _PROFILE_RE.fullmatch(profile):
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
        self._secrets_cache: tuple[str, _Secrets] | None = None
        if watch_interval is not None and not watch_interval > 0:
            raise ValueError("watch_interval must be a positive number of seconds, or None")
        self.watch_interval = watch_interval
        self._closed = False
        # One stop event per watch() call, with its callback: unwatch() stops that one thread.
        self._watchers: list[tuple[Callable[[], None], threading.Event]] = []
        self._watchers_mutex = threading.Lock()
        self._described: _Description | None = None
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
            target=_watch_file,
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
            secrets = _Secrets(None, None) if record is None else self._open(record)
            current = 0 if record is None or secrets.tokens is None else record["generation"]
            if expected_generation is not None and current != expected_generation:
                raise GenerationConflict(
                    f"token store {self.path}, profile {self.profile!r}: the tokens changed "
                    f"since they were read (generation {current}, expected {expected_generation})"
                )
            meta = {} if record is None else record["meta"]
            kept = _Secrets(tokens, secrets.client_secret, secrets.private_key)
            described = self._described
            if described is not None:
                meta = _described_meta(meta, described)
                kept = _Secrets(tokens, described.client_secret, described.private_key)
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
                document, record, meta, _Secrets(tokens, client_secret), login=True
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
            return _empty_document()
        parsed = self._parsed
        if parsed is not None and parsed[0] == data:
            return parsed[1]
        document = _parse(self.path, data)
        self._parsed = (data, document)
        return document

    def _record(self, document: Mapping[str, Any]) -> dict[str, Any] | None:
        record: dict[str, Any] | None = document["profiles"].get(self.profile)
        return record

    @property
    def _where(self) -> str:
        return f"token store {self.path}, profile {self.profile!r}"

    def _open(self, record: Mapping[str, Any]) -> _Secrets:
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
            inner = parse_json(plaintext, f"{where} (decrypted)", _FIX)
            secrets = _parse_secrets(inner, where)
            self._secrets_cache = (fingerprint, secrets)
            return secrets
        return _parse_secrets(record["secrets"], where)

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
            document = _copy(self._read())
            try:
                yield document
            except _Unchanged:
                return
            data = _dump(document)
            write_atomically(self.path, data)
            self._parsed = (data, document)

    def _put(
        self,
        document: dict[str, Any],
        record: Mapping[str, Any] | None,
        meta: Mapping[str, Any],
        secrets: _Secrets,
        *,
        login: bool = False,
    ) -> int:
        serial = document["serial"] + 1
        document["serial"] = serial
        generation = serial if secrets.tokens is not None else 0
        plain: dict[str, Any] = {
            "tokens": None if secrets.tokens is None else secrets.tokens.to_dict()
        }
        if secrets.client_secret is not None:
            plain["client_secret"] = secrets.client_secret
        if secrets.private_key is not None:
            plain["private_key"] = secrets.private_key
        now = time.time()
        saved = secrets.tokens is not None
        logged_in_at = _stamp(record, "logged_in_at")
        refreshed_at = _stamp(record, "refreshed_at")
        if saved and login:
            logged_in_at, refreshed_at = now, None
        elif saved:
            refreshed_at = now
        entry: dict[str, Any] = {
            "generation": generation,
            "updated_at": now if saved else _updated_at(record),
            "logged_in_at": logged_in_at,
            "refreshed_at": refreshed_at,
            "meta": dict(meta),
            "summary": None if secrets.tokens is None else _summary(secrets.tokens),
        }
        if self._sealer is not None:
            salt = Sealer.salt_of(record.get("sealed")) if record is not None else None
            entry["sealed"] = self._sealer.seal(
                json.dumps(plain).encode(), context=self._context, salt=salt
            )
        else:
            entry["secrets"] = plain
        document["profiles"][self.profile] = entry
        return generation


def _watch_file(
    store: weakref.ref[FileStore],
    path: Path,
    interval: float,
    on_change: Callable[[], None],
    stop: threading.Event,
) -> None:
    """Call ``on_change`` whenever the file is replaced (every save renames a new file in),
    until the store is closed or gone."""
    last = _identity(path)
    while not stop.wait(interval) and store() is not None:
        current = _identity(path)
        if current != last:
            last = current
            on_change()


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None  # missing or unreadable: the next load says why
    return (status.st_ino, status.st_size, status.st_mtime_ns)


class _Unchanged(Exception):
    """Raised inside FileStore._writing to leave the file untouched."""


def _empty_document() -> dict[str, Any]:
    return {"format": FORMAT, "serial": starting_generation(), "profiles": {}}


def _copy(document: Mapping[str, Any]) -> dict[str, Any]:
    # Records are replaced whole, never edited in place, so a shallow copy of the profile map
    # keeps the cached document untouched.
    return {**document, "profiles": dict(document["profiles"])}


def _dump(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def _summary(tokens: TokenSet) -> dict[str, Any]:
    return {
        "token_type": tokens.token_type,
        "expires_at": tokens.expires_at,
        "obtained_at": tokens.obtained_at,
        "scope": tokens.scope,
        "has_refresh_token": tokens.refresh_token is not None,
    }


def _updated_at(record: Mapping[str, Any] | None) -> float | None:
    return _stamp(record, "updated_at")


def _stamp(record: Mapping[str, Any] | None, name: str) -> float | None:
    if record is None:
        return None
    return _number_or_none(record.get(name))


def _described_meta(meta: Mapping[str, Any], described: _Description) -> dict[str, Any]:
    """``meta`` with the refresher's settings replaced by ``described``'s (the rest kept:
    the account, how the login went)."""
    kept = {name: value for name, value in meta.items() if name not in SETTING_NAMES}
    return {**kept, **described.settings}


def _number_or_none(value: object) -> float | None:
    return float(value) if _is_number(value) else None


def _is_number(value: object) -> TypeGuard[int | float]:
    """A finite number that a float can hold (an integer of 400 digits is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _info(name: str, record: Mapping[str, Any]) -> ProfileInfo:
    summary = record.get("summary") or {}
    return ProfileInfo(
        name=name,
        meta=dict(record["meta"]),
        has_tokens=record["generation"] > 0,
        encrypted="sealed" in record,
        updated_at=_updated_at(record),
        expires_at=_number_or_none(summary.get("expires_at")),
        obtained_at=_number_or_none(summary.get("obtained_at")),
        scope=summary.get("scope") if isinstance(summary.get("scope"), str) else None,
        has_refresh_token=bool(summary.get("has_refresh_token")),
        logged_in_at=_stamp(record, "logged_in_at")
        or _number_or_none(
            record["meta"].get("logged_in_at")  # written by logins before the record had it
        ),
        refreshed_at=_stamp(record, "refreshed_at"),
    )


def _parse(path: Path, data: bytes) -> dict[str, Any]:
    """The document in ``data``, checked; a StoreError naming ``path`` says what is wrong."""
    where = f"token store {path}"
    if not data.strip():
        raise StoreError(f"{where} is empty (truncated?); {_FIX}")
    document = parse_json(data, where, _FIX)
    if not isinstance(document, dict) or "format" not in document:
        raise StoreError(f"{path} is not a freshtoken token store (no 'format' field); {_FOREIGN}")
    format_ = document["format"]
    match = _FORMAT_RE.fullmatch(format_) if isinstance(format_, str) else None
    if match is None:
        raise StoreError(
            f"{path} is not a freshtoken token store (its format is not freshtoken's); {_FOREIGN}"
        )
    if int(match.group(1)) > 1:
        raise StoreError(
            f"{where} has format {format_}, newer than this freshtoken understands "
            f"({FORMAT}): upgrade freshtoken"
        )
    if int(match.group(1)) < 1:
        raise StoreError(f"{where} has unknown format {format_!r}")
    if too_deep(document):
        raise corrupt(where, "its JSON is nested too deeply", _FIX)
    serial = document.get("serial")
    profiles = document.get("profiles")
    if not (_is_int(serial) and serial >= 0) or not isinstance(profiles, dict):
        raise corrupt(where, "bad 'serial' or 'profiles'", _FIX)
    for name, record in profiles.items():
        if not _PROFILE_RE.fullmatch(name):
            raise corrupt(where, "a profile has an invalid name", _FIX)
        problem = _record_problem(record, serial)
        if problem is not None:
            raise corrupt(where, f"profile {name!r} {problem}", _FIX)
        if "secrets" in record:  # sealed ones are checked when opened, with the key
            _parse_secrets(record["secrets"], f"{where}, profile {name!r}")
    return document


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _record_problem(record: object, serial: int) -> str | None:
    if not isinstance(record, dict):
        return "is not an object"
    generation = record.get("generation")
    if not (_is_int(generation) and 0 <= generation <= serial):
        return "has a bad generation"
    if not isinstance(record.get("meta"), dict):
        return "has no meta object"
    for stamp in ("updated_at", "logged_in_at", "refreshed_at"):
        value = record.get(stamp)
        if value is not None and not _is_number(value):
            return f"has a bad {stamp}"
    summary = record.get("summary")
    if summary is not None and _summary_problem(summary):
        return "has a bad summary"
    sealed, plain = record.get("sealed"), record.get("secrets")
    if (sealed is None) == (plain is None):
        return "needs exactly one of 'secrets' and 'sealed'"
    if sealed is not None and (not isinstance(sealed, dict) or shape_problem(sealed)):
        return "has a bad sealed record"
    if plain is not None and not isinstance(plain, dict):
        return "has a bad secrets record"
    return None


def _summary_problem(summary: object) -> bool:
    if not isinstance(summary, dict):
        return True
    for name in ("expires_at", "obtained_at"):
        value = summary.get(name)
        if value is not None and not _is_number(value):
            return True
    for name in ("scope", "token_type"):
        value = summary.get(name)
        if value is not None and not isinstance(value, str):
            return True
    return not isinstance(summary.get("has_refresh_token", False), bool)


def _parse_secrets(value: object, where: str) -> _Secrets:
    if not isinstance(value, dict):
        raise corrupt(where, "the secrets are not an object", _FIX)
    tokens_data = value.get("tokens")
    client_secret = value.get("client_secret")
    private_key = value.get("private_key")
    for name, secret in (("client_secret", client_secret), ("private_key", private_key)):
        if secret is not None and not isinstance(secret, str):
            raise corrupt(where, f"{name} is not a string", _FIX)
    tokens = None if tokens_data is None else token_set(tokens_data, where, _FIX)
    return _Secrets(tokens, client_secret, private_key)
