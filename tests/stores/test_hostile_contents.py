"""Hostile store contents never escape as raw exceptions.

A token file, a keychain entry or a Redis hash may hold anything: JSON nested thousands deep
(``RecursionError`` in the parser), numbers of hundreds or thousands of digits (``OverflowError``
when made a float, ``ValueError`` past Python's digit limit), any type in any field. Every read
and write of such a store raises a StoreError that names the store and says what to do, quotes
no secret, and leaves the contents as they were.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from file_keyring import FileKeyring, file_keyring_selected
from file_operations import every_operation
from redis_fixture import RedisServer

from freshtoken import FunctionRefresher, StoreError, TokenManager, TokenSet
from freshtoken.stores import FileStore, KeyringStore, RedisStore

TOKENS = {
    "access_token": "access-SECRET",
    "token_type": "Bearer",
    "refresh_token": "refresh-SECRET",
    "expires_at": 4_000_000_000.0,
    "obtained_at": 3_999_999_700.0,
    "refresh_at": None,
    "scope": "read",
}
DEEP = "[" * 100_000 + "]" * 100_000  # past any recursion limit
HUNDREDS_OF_DIGITS = 10**400  # an int JSON parses, and no float can hold
THOUSANDS_OF_DIGITS = "9" * 5000  # past Python's int digit limit: json.loads refuses it


def new_tokens(n: int) -> TokenSet:
    return TokenSet(f"access-SECRET-new-{n}", refresh_token="refresh-SECRET-new")


def never(current: TokenSet | None) -> TokenSet:
    raise AssertionError("no refresh happens in these tests")


def check_refused(attempts: list[Callable[[], object]], where: str) -> None:
    for attempt in attempts:
        with pytest.raises(StoreError) as caught:
            attempt()
        message = str(caught.value)
        assert where in message
        assert "SECRET" not in message
        assert "9999999999" not in message  # the content is not quoted


# -- FileStore ------------------------------------------------------------------------------


def file_document() -> dict[str, Any]:
    return {
        "format": "freshtoken/1",
        "serial": 3,
        "profiles": {
            "default": {
                "generation": 3,
                "updated_at": 1.0,
                "meta": {"client_id": "demo"},
                "summary": {
                    "token_type": "Bearer",
                    "expires_at": 4_000_000_000.0,
                    "obtained_at": 3_999_999_700.0,
                    "scope": "read",
                    "has_refresh_token": True,
                },
                "secrets": {"tokens": dict(TOKENS), "client_secret": "client-SECRET"},
            }
        },
    }


def with_value(where: str, value: object) -> str:
    """The valid document with the value at dotted path ``where`` replaced (or removed)."""
    document = file_document()
    *parents, last = where.split(".")
    node = document
    for name in parents:
        node = node[name]
    if value is _REMOVED:
        del node[last]
    else:
        node[last] = value
    return json.dumps(document)


_REMOVED = object()
_RECORD = "profiles.default"
_TOKENS = "profiles.default.secrets.tokens"


def _nested(depth: int) -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = [value]
    return value


def _sealed_record() -> str:
    document = file_document()
    record = document["profiles"]["default"]
    del record["secrets"]
    record["sealed"] = {"alg": "A256GCM", "kdf": {"name": "scrypt", "n": HUNDREDS_OF_DIGITS}}
    return json.dumps(document)


def _bad_profile_name() -> str:
    document = file_document()
    document["profiles"]["evil\x1b[2J"] = copy.deepcopy(document["profiles"]["default"])
    return json.dumps(document)


FILE_CONTENTS: dict[str, str] = {
    "nested-past-the-recursion-limit": DEEP,
    "meta-nested-deeper-than-freshtoken-writes": with_value(f"{_RECORD}.meta", _nested(100)),
    "expiry-of-hundreds-of-digits": with_value(f"{_TOKENS}.expires_at", HUNDREDS_OF_DIGITS),
    "expiry-of-thousands-of-digits": with_value(f"{_TOKENS}.expires_at", 1).replace(
        '"expires_at": 1', f'"expires_at": {THOUSANDS_OF_DIGITS}'
    ),
    "infinite-expiry": with_value(f"{_TOKENS}.expires_at", float("inf")),
    "summary-expiry-of-hundreds-of-digits": with_value(
        f"{_RECORD}.summary.expires_at", HUNDREDS_OF_DIGITS
    ),
    "updated-at-of-hundreds-of-digits": with_value(f"{_RECORD}.updated_at", HUNDREDS_OF_DIGITS),
    "generation-of-hundreds-of-digits": with_value(f"{_RECORD}.generation", HUNDREDS_OF_DIGITS),
    "format-with-thousands-of-digits": with_value("format", "freshtoken/" + THOUSANDS_OF_DIGITS),
    "format-is-a-number": with_value("format", 1),
    "serial-is-a-string": with_value("serial", "3"),
    "serial-is-a-float": with_value("serial", 3.0),
    "profiles-is-a-list": with_value("profiles", []),
    "record-is-a-list": with_value(_RECORD, []),
    "generation-is-a-string": with_value(f"{_RECORD}.generation", "3"),
    "generation-is-a-bool": with_value(f"{_RECORD}.generation", True),
    "meta-is-a-list": with_value(f"{_RECORD}.meta", []),
    "summary-is-a-string": with_value(f"{_RECORD}.summary", "x"),
    "summary-expiry-is-a-string": with_value(f"{_RECORD}.summary.expires_at", "soon"),
    "summary-scope-is-a-number": with_value(f"{_RECORD}.summary.scope", 5),
    "summary-has-refresh-token-is-a-string": with_value(
        f"{_RECORD}.summary.has_refresh_token", "yes"
    ),
    "updated-at-is-a-string": with_value(f"{_RECORD}.updated_at", "yesterday"),
    "secrets-is-a-list": with_value(f"{_RECORD}.secrets", []),
    "tokens-is-a-list": with_value(_TOKENS, []),
    "tokens-is-a-string": with_value(_TOKENS, "access-SECRET"),
    "access-token-is-a-number": with_value(f"{_TOKENS}.access_token", 5),
    "access-token-is-missing": with_value(f"{_TOKENS}.access_token", _REMOVED),
    "access-token-is-nested": with_value(f"{_TOKENS}.access_token", _nested(20)),
    "expiry-is-a-string": with_value(f"{_TOKENS}.expires_at", "tomorrow"),
    "client-secret-is-a-number": with_value(f"{_RECORD}.secrets.client_secret", 5),
    "sealed-record-with-huge-numbers": _sealed_record(),
    "profile-name-with-escape-codes": _bad_profile_name(),
}


@pytest.mark.parametrize("kind", sorted(FILE_CONTENTS))
def test_a_hostile_token_file_is_a_store_error_and_stays_as_it_was(
    tmp_path: Path, kind: str
) -> None:
    """Every read and write of the file (and a manager on it) raises a StoreError naming the
    file; none overwrites it."""
    path = tmp_path / "tokens.json"
    path.write_text(FILE_CONTENTS[kind])
    path.chmod(0o600)
    before = path.read_bytes()
    store = FileStore(path, watch_interval=None)
    manager = TokenManager(FunctionRefresher(never), FileStore(path, watch_interval=None))
    check_refused([*every_operation(store, new_tokens(1)), manager.get_tokens], str(path))
    assert path.read_bytes() == before


def test_corrupt_token_files_say_what_to_do(tmp_path: Path) -> None:
    """A corrupt file's error ends with the way out: move it aside and log in again."""
    path = tmp_path / "tokens.json"
    for kind in ["nested-past-the-recursion-limit", "expiry-of-hundreds-of-digits"]:
        path.write_text(FILE_CONTENTS[kind])
        path.chmod(0o600)
        with pytest.raises(StoreError, match="move it aside and log in again"):
            FileStore(path).load()


def test_meta_nested_too_deeply_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """save_profile refuses meta nested deeper than a store document may be, with ValueError."""
    path = tmp_path / "tokens.json"
    with pytest.raises(ValueError, match="nests too deeply"):
        FileStore(path).save_profile(new_tokens(1), meta={"x": _nested(100)})
    assert not path.exists()


# -- KeyringStore ---------------------------------------------------------------------------

SERVICE, USER = "freshtoken-hostile", "demo"


def entry(**changes: object) -> str:
    document: dict[str, Any] = {"format": "freshtoken/1", "generation": 4, "tokens": dict(TOKENS)}
    tokens_changes = changes.pop("tokens_changes", {})
    assert isinstance(tokens_changes, dict)
    document.update(changes)
    document["tokens"] = changes.get("tokens", {**TOKENS, **tokens_changes})
    return json.dumps(document)


KEYRING_ENTRIES: dict[str, str] = {
    "nested-past-the-recursion-limit": DEEP,
    "expiry-of-hundreds-of-digits": entry(tokens_changes={"expires_at": HUNDREDS_OF_DIGITS}),
    "generation-of-thousands-of-digits": entry(generation=0).replace(
        '"generation": 0', f'"generation": {THOUSANDS_OF_DIGITS}'
    ),
    "format-with-thousands-of-digits": entry(format="freshtoken/" + THOUSANDS_OF_DIGITS),
    "format-is-a-number": entry(format=1),
    "generation-is-a-string": entry(generation="4"),
    "generation-is-a-float": entry(generation=4.0),
    "tokens-is-a-list": entry(tokens=[]),
    "tokens-is-a-string": entry(tokens="access-SECRET"),
    "tokens-is-missing": json.dumps({"format": "freshtoken/1", "generation": 4}),
    "access-token-is-a-number": entry(tokens_changes={"access_token": 5}),
    "access-token-is-nested": entry(tokens_changes={"access_token": _nested(50)}),
    "expiry-is-infinite": entry(tokens_changes={"expires_at": float("inf")}),
    "unknown-token-field": entry(tokens_changes={"extra": 1}),
}


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[FileKeyring]:
    """A file-backed keyring (this machine has no OS keychain), selected for the test."""
    with file_keyring_selected(tmp_path / "keychain.json") as chosen:
        yield chosen


@pytest.mark.parametrize("kind", sorted(KEYRING_ENTRIES))
def test_a_hostile_keychain_entry_is_a_store_error_and_stays_as_it_was(
    backend: FileKeyring, tmp_path: Path, kind: str
) -> None:
    """load, save and clear of a hostile entry raise a StoreError naming it; it is kept."""
    backend.set_password(SERVICE, USER, KEYRING_ENTRIES[kind])
    store = KeyringStore(SERVICE, USER, lock_path=tmp_path / "refresh.lock")
    check_refused(
        [
            store.load,
            lambda: store.save(new_tokens(1), expected_generation=None),
            lambda: store.save(new_tokens(1), expected_generation=0),
            store.clear,
            TokenManager(FunctionRefresher(never), store).get_tokens,
        ],
        f"keyring entry {SERVICE!r}/{USER!r}",
    )
    assert backend.get_password(SERVICE, USER) == KEYRING_ENTRIES[kind]


# -- RedisStore -----------------------------------------------------------------------------

REDIS_HASHES: dict[str, dict[Any, Any]] = {
    "nested-past-the-recursion-limit": {"generation": "4", "tokens": DEEP},
    "expiry-of-hundreds-of-digits": {
        "generation": "4",
        "tokens": json.dumps({**TOKENS, "expires_at": HUNDREDS_OF_DIGITS}),
    },
    "tokens-not-json": {"generation": "4", "tokens": '{"access_token": "access-SECRET'},
    "tokens-is-a-list": {"generation": "4", "tokens": "[]"},
    "tokens-is-null": {"generation": "4", "tokens": "null"},
    "access-token-is-a-number": {
        "generation": "4",
        "tokens": json.dumps({**TOKENS, "access_token": 5}),
    },
    "generation-is-garbage": {"generation": "garbage", "tokens": json.dumps(TOKENS)},
    "generation-of-hundreds-of-digits": {"generation": "9" * 400, "tokens": json.dumps(TOKENS)},
    "generation-in-hex": {"generation": "0x10", "tokens": json.dumps(TOKENS)},
}


@pytest.mark.redis
@pytest.mark.parametrize("kind", sorted(REDIS_HASHES))
def test_a_hostile_redis_hash_is_a_store_error(shared_redis_server: RedisServer, kind: str) -> None:
    """load and aload of a hostile hash raise a StoreError naming the store; so does a save
    over a generation freshtoken did not write, which leaves the hash alone."""
    key = f"freshtoken:hostile:{kind}"
    raw = shared_redis_server.client()
    raw.delete(key)
    raw.hset(key, mapping=REDIS_HASHES[kind])
    store = RedisStore(shared_redis_server.url, key)
    try:
        attempts: list[Callable[[], object]] = [
            store.load,
            TokenManager(FunctionRefresher(never), store).get_tokens,
        ]
        if kind.startswith("generation"):
            attempts.append(lambda: store.save(new_tokens(1), expected_generation=None))
        before = raw.hgetall(key)
        check_refused(attempts, "RedisStore(")
        assert raw.hgetall(key) == before
    finally:
        store.close()


@pytest.mark.redis
@pytest.mark.anyio
async def test_the_async_side_refuses_a_hostile_redis_hash_too(
    shared_redis_server: RedisServer,
) -> None:
    """aload of deeply nested JSON is the same StoreError (redis.asyncio, or a thread on trio)."""
    key = "freshtoken:hostile:async"
    raw = shared_redis_server.client()
    raw.delete(key)
    raw.hset(key, mapping=REDIS_HASHES["nested-past-the-recursion-limit"])
    store = RedisStore(shared_redis_server.url, key)
    try:
        with pytest.raises(StoreError, match="nested too deeply"):
            await store.aload()
    finally:
        await store.aclose()
