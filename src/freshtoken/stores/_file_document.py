"""The token file's document: reading and checking it whole, since a file another program may
have written is hostile input, and the parts of a profile's record that hold no secret (stamps,
the token summary, the refresher's settings). `freshtoken.stores.file` writes it, under its locks.

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
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TypeGuard

from .._core.tokens import TokenSet
from ..errors import StoreError
from ._base import starting_generation
from ._documents import corrupt, parse_json, token_set, too_deep
from ._sealing import shape_problem

__all__ = [
    "FIX",
    "FORMAT",
    "PROFILE_RE",
    "SETTING_NAMES",
    "Description",
    "Secrets",
    "copy_document",
    "described_meta",
    "dump",
    "empty_document",
    "number_or_none",
    "parse_document",
    "parse_secrets",
    "record_entry",
    "stamp",
    "updated_at",
]

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


class Description(Protocol):
    """What a refresher's ``describe()`` returns (a RefresherSettings), as the store reads it."""

    @property
    def settings(self) -> Mapping[str, Any]: ...

    @property
    def client_secret(self) -> str | None: ...

    @property
    def private_key(self) -> str | None: ...


FORMAT = "freshtoken/1"
_FORMAT_RE = re.compile(r"freshtoken/([0-9]{1,9})")  # bounded: int() of 5000 digits raises
PROFILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
FIX = "move it aside and log in again"
_FOREIGN = "give FileStore another path, or move the file aside"


@dataclasses.dataclass(frozen=True, slots=True)
class Secrets:
    tokens: TokenSet | None
    client_secret: str | None
    private_key: str | None = None


def empty_document() -> dict[str, Any]:
    return {"format": FORMAT, "serial": starting_generation(), "profiles": {}}


def copy_document(document: Mapping[str, Any]) -> dict[str, Any]:
    # Records are replaced whole, never edited in place, so a shallow copy of the profile map
    # keeps the cached document untouched.
    return {**document, "profiles": dict(document["profiles"])}


def dump(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def _summary(tokens: TokenSet) -> dict[str, Any]:
    return {
        "token_type": tokens.token_type,
        "expires_at": tokens.expires_at,
        "obtained_at": tokens.obtained_at,
        "scope": tokens.scope,
        "has_refresh_token": tokens.refresh_token is not None,
    }


def record_entry(
    record: Mapping[str, Any] | None,
    meta: Mapping[str, Any],
    secrets: Secrets,
    generation: int,
    *,
    login: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A profile's new record, but for its secrets, and the secrets in plain: the caller puts
    them in as ``secrets`` or seals them as ``sealed``. ``record`` is the one it replaces."""
    plain: dict[str, Any] = {"tokens": None if secrets.tokens is None else secrets.tokens.to_dict()}
    if secrets.client_secret is not None:
        plain["client_secret"] = secrets.client_secret
    if secrets.private_key is not None:
        plain["private_key"] = secrets.private_key
    now = time.time()
    saved = secrets.tokens is not None
    logged_in_at = stamp(record, "logged_in_at")
    refreshed_at = stamp(record, "refreshed_at")
    if saved and login:
        logged_in_at, refreshed_at = now, None
    elif saved:
        refreshed_at = now
    entry: dict[str, Any] = {
        "generation": generation,
        "updated_at": now if saved else updated_at(record),
        "logged_in_at": logged_in_at,
        "refreshed_at": refreshed_at,
        "meta": dict(meta),
        "summary": None if secrets.tokens is None else _summary(secrets.tokens),
    }
    return entry, plain


def updated_at(record: Mapping[str, Any] | None) -> float | None:
    return stamp(record, "updated_at")


def stamp(record: Mapping[str, Any] | None, name: str) -> float | None:
    if record is None:
        return None
    return number_or_none(record.get(name))


def described_meta(meta: Mapping[str, Any], described: Description) -> dict[str, Any]:
    """``meta`` with the refresher's settings replaced by ``described``'s (the rest kept:
    the account, how the login went)."""
    kept = {name: value for name, value in meta.items() if name not in SETTING_NAMES}
    return {**kept, **described.settings}


def number_or_none(value: object) -> float | None:
    return float(value) if _is_number(value) else None


def _is_number(value: object) -> TypeGuard[int | float]:
    """A finite number that a float can hold (an integer of 400 digits is not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def parse_document(path: Path, data: bytes) -> dict[str, Any]:
    """The document in ``data``, checked; a StoreError naming ``path`` says what is wrong."""
    where = f"token store {path}"
    if not data.strip():
        raise StoreError(f"{where} is empty (truncated?); {FIX}")
    document = parse_json(data, where, FIX)
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
        raise corrupt(where, "its JSON is nested too deeply", FIX)
    serial = document.get("serial")
    profiles = document.get("profiles")
    if not (_is_int(serial) and serial >= 0) or not isinstance(profiles, dict):
        raise corrupt(where, "bad 'serial' or 'profiles'", FIX)
    for name, record in profiles.items():
        if not PROFILE_RE.fullmatch(name):
            raise corrupt(where, "a profile has an invalid name", FIX)
        problem = _record_problem(record, serial)
        if problem is not None:
            raise corrupt(where, f"profile {name!r} {problem}", FIX)
        if "secrets" in record:  # sealed ones are checked when opened, with the key
            parse_secrets(record["secrets"], f"{where}, profile {name!r}")
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


def parse_secrets(value: object, where: str) -> Secrets:
    if not isinstance(value, dict):
        raise corrupt(where, "the secrets are not an object", FIX)
    tokens_data = value.get("tokens")
    client_secret = value.get("client_secret")
    private_key = value.get("private_key")
    for name, secret in (("client_secret", client_secret), ("private_key", private_key)):
        if secret is not None and not isinstance(secret, str):
            raise corrupt(where, f"{name} is not a string", FIX)
    tokens = None if tokens_data is None else token_set(tokens_data, where, FIX)
    return Secrets(tokens, client_secret, private_key)
