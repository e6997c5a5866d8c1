"""Session stores: the memory store's cap, eviction order and lifetimes; the Redis store's TTL
(idle, bounded by the absolute end), sealing of claims and tokens, and refusal of tampered
records; tokens of an ended session cannot be saved back by a late refresh."""

from __future__ import annotations

import time
import uuid

import anyio
import pytest
from redis_fixture import RedisServer

from freshtoken import GenerationConflict, TokenSet
from freshtoken.bff import MemorySessionStore, RedisSessionStore, derive_key
from freshtoken.bff._sessions import handle_of, new_session_id, valid_session_id

KEY = derive_key("a session test passphrase, long")
IDLE, ABSOLUTE = 600.0, 3600.0


def tokens(n: int) -> TokenSet:
    return TokenSet(
        access_token=f"access-SECRET-{n}",
        refresh_token=f"refresh-SECRET-{n}",
        expires_at=time.time() + 300,
    )


def handle() -> str:
    return handle_of(new_session_id())


def test_session_ids_are_random_and_checked_before_any_lookup() -> None:
    """43 base64url characters from 32 random bytes; anything else is not looked up."""
    made = {new_session_id() for _ in range(100)}
    assert len(made) == 100
    assert all(valid_session_id(made_id) for made_id in made)
    for forged in ("", "short", "x" * 44, "=" * 43, "a b" + "c" * 40):
        assert not valid_session_id(forged)
    assert handle_of("A" * 43) != "A" * 43  # stores see a hash, never the cookie


@pytest.mark.anyio
async def test_a_full_memory_store_evicts_the_least_recently_used() -> None:
    """At the cap, a new session pushes out the idlest; a session in use survives."""
    store = MemorySessionStore(max_sessions=3)
    first, second, third, fourth = handle(), handle(), handle(), handle()
    for made in (first, second, third):
        await store.create(made, {}, now=0, idle=IDLE, absolute=ABSOLUTE)
    assert await store.get(first, now=1, idle=IDLE) is not None  # first is in use again
    await store.create(fourth, {}, now=2, idle=IDLE, absolute=ABSOLUTE)
    assert len(store) == 3
    assert store.evictions == 1
    assert await store.get(second, now=3, idle=IDLE) is None  # the idlest went
    for kept in (first, third, fourth):
        assert await store.get(kept, now=3, idle=IDLE) is not None


@pytest.mark.anyio
async def test_memory_sessions_end_when_idle_or_at_their_absolute_end() -> None:
    """Use keeps a session alive up to its absolute end, not past it; idleness ends it early."""
    store = MemorySessionStore()
    busy, idle = handle(), handle()
    for made in (busy, idle):
        await store.create(made, {"sub": "u"}, now=0, idle=IDLE, absolute=ABSOLUTE)
    for now in range(500, 3600, 500):
        assert await store.get(busy, now=now, idle=IDLE) is not None
    assert await store.get(idle, now=3000, idle=IDLE) is None
    assert await store.get(busy, now=3600, idle=IDLE) is None


@pytest.mark.anyio
async def test_a_late_refresh_cannot_bring_back_an_ended_sessions_tokens() -> None:
    """Tokens saved after the session ended (logout, eviction) are refused, not stored."""
    store = MemorySessionStore()
    made = handle()
    await store.create(made, {}, now=0, idle=IDLE, absolute=ABSOLUTE)
    tokens_of = store.token_store(made)
    saved = tokens_of.save(tokens(1), expected_generation=None)
    await store.delete(made)
    with pytest.raises(GenerationConflict):
        tokens_of.save(tokens(2), expected_generation=saved.generation)
    assert tokens_of.load() is None


@pytest.fixture
def redis_sessions(shared_redis_server: RedisServer) -> RedisSessionStore:
    store = RedisSessionStore.from_url(
        shared_redis_server.url, prefix=f"freshtoken:sessions:{uuid.uuid4().hex}:"
    )
    store.use_key(KEY)
    return store


@pytest.mark.redis
def test_redis_sessions_live_as_long_as_the_idle_ttl_bounded_by_the_absolute_end(
    redis_sessions: RedisSessionStore, shared_redis_server: RedisServer
) -> None:
    """The hash's TTL is the idle lifetime, moved on each use, never past the absolute end;
    the deadlines are judged on the BFF's clock (an idle session ends even if Redis has not
    expired it yet)."""
    raw = shared_redis_server.client()
    made = handle()
    key = redis_sessions.redis_key(made)

    async def scenario() -> None:
        now = time.time()
        await redis_sessions.create(made, {"sub": "u"}, now=now, idle=IDLE, absolute=ABSOLUTE)
        assert IDLE * 1000 - 2000 < raw.pttl(key) <= IDLE * 1000
        for later in range(500, int(ABSOLUTE) - 100, 500):  # in use: the idle deadline moves
            assert await redis_sessions.get(made, now=now + later, idle=IDLE) is not None
        session = await redis_sessions.get(made, now=now + ABSOLUTE - 100, idle=IDLE)
        assert session is not None
        assert session.claims == {"sub": "u"}
        assert 0 < raw.pttl(key) <= 100_000  # only what is left of the absolute lifetime
        assert await redis_sessions.get(made, now=now + ABSOLUTE + 1, idle=IDLE) is None
        assert raw.exists(key) == 0
        idle = handle()
        await redis_sessions.create(idle, {}, now=now, idle=IDLE, absolute=ABSOLUTE)
        assert await redis_sessions.get(idle, now=now + IDLE + 1, idle=IDLE) is None
        await redis_sessions.aclose()

    anyio.run(scenario)


@pytest.mark.redis
def test_redis_holds_no_readable_claim_or_token(
    redis_sessions: RedisSessionStore, shared_redis_server: RedisServer
) -> None:
    """Claims and tokens are sealed with the BFF's key: nothing in Redis reads as either."""
    raw = shared_redis_server.client()
    made = handle()

    async def scenario() -> None:
        await redis_sessions.create(
            made, {"email": "SECRET@example.com"}, now=time.time(), idle=IDLE, absolute=ABSOLUTE
        )
        redis_sessions.token_store(made).save(tokens(1), expected_generation=None)
        await redis_sessions.aclose()

    anyio.run(scenario)
    stored = raw.hgetall(redis_sessions.redis_key(made))
    everything = b" ".join(bytes(k) + b"=" + bytes(v) for k, v in stored.items())  # type: ignore[arg-type]
    assert b"SECRET" not in everything
    assert {b"session", b"expires", b"generation", b"tokens"} <= set(stored)


@pytest.mark.redis
def test_a_tampered_redis_session_is_no_session_and_is_deleted(
    redis_sessions: RedisSessionStore,
    shared_redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session blob altered in Redis (or sealed for another session) does not open: it is
    no session (so the browser logs in again), it is deleted, and a warning says why."""
    raw = shared_redis_server.client()
    victim, forged = handle(), handle()

    async def scenario() -> None:
        now = time.time()
        await redis_sessions.create(victim, {"sub": "v"}, now=now, idle=IDLE, absolute=ABSOLUTE)
        await redis_sessions.create(forged, {"sub": "f"}, now=now, idle=IDLE, absolute=ABSOLUTE)
        blob = raw.hget(redis_sessions.redis_key(victim), "session")
        assert blob is not None
        raw.hset(redis_sessions.redis_key(forged), "session", blob)
        assert await redis_sessions.get(forged, now=now, idle=IDLE) is None
        assert raw.exists(redis_sessions.redis_key(forged)) == 0
        assert await redis_sessions.get(victim, now=now, idle=IDLE) is not None
        await redis_sessions.aclose()

    anyio.run(scenario)
    assert "wrong encryption key, or the record was altered" in caplog.text


@pytest.mark.redis
@pytest.mark.parametrize(
    "blob", [b"not json", b"[]", b'{"alg": "A256GCM"}', b'{"alg": "none", "kdf": "raw"}']
)
def test_a_redis_session_that_is_not_ours_is_no_session(
    redis_sessions: RedisSessionStore, shared_redis_server: RedisServer, blob: bytes
) -> None:
    """Garbage where the sealed session should be: no session, deleted, no exception."""
    raw = shared_redis_server.client()
    made = handle()

    async def scenario() -> None:
        now = time.time()
        await redis_sessions.create(made, {"sub": "u"}, now=now, idle=IDLE, absolute=ABSOLUTE)
        raw.hset(redis_sessions.redis_key(made), "session", blob)
        assert await redis_sessions.get(made, now=now, idle=IDLE) is None
        assert raw.exists(redis_sessions.redis_key(made)) == 0
        await redis_sessions.aclose()

    anyio.run(scenario)
