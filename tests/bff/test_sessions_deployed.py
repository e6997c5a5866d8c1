"""RedisSessionStore on Redis as deployed: a 3-node Redis Cluster (a session's hash and its
refresh lock share a slot; sync and async cluster clients) and a Sentinel-managed master."""

from __future__ import annotations

import time
import uuid

import anyio
import pytest
from redis_fixture import RedisCluster, RedisSentinel

from freshtoken import TokenSet
from freshtoken.bff import RedisSessionStore, derive_key
from freshtoken.bff._sessions import handle_of, new_session_id

pytestmark = pytest.mark.redis

KEY = derive_key("a deployed-sessions test passphrase")


@pytest.fixture(params=["cluster", "sentinel"])
def deployed(request: pytest.FixtureRequest) -> RedisSessionStore:
    prefix = f"freshtoken:deployed:{uuid.uuid4().hex}:"
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        store = RedisSessionStore(
            cluster.client(), async_client=cluster.async_client(), prefix=prefix, owns_clients=True
        )
    else:
        sentinel: RedisSentinel = request.getfixturevalue("shared_redis_sentinel")
        store = RedisSessionStore(
            sentinel.master_client(),
            async_client=sentinel.async_master_client(),
            prefix=prefix,
            owns_clients=True,
        )
    store.use_key(KEY)
    return store


def test_a_session_lives_and_ends_on_a_deployed_redis(deployed: RedisSessionStore) -> None:
    """Create, read (sliding the TTL), save and load its tokens, lock, delete."""
    handle = handle_of(new_session_id())
    tokens = TokenSet(access_token="access-SECRET", refresh_token="refresh-SECRET")

    async def scenario() -> None:
        now = time.time()
        await deployed.create(handle, {"sub": "u"}, now=now, idle=600, absolute=3600)
        session = await deployed.get(handle, now=now + 1, idle=600)
        assert session is not None
        assert session.claims == {"sub": "u"}
        store = deployed.token_store(handle)
        saved = await store.asave(tokens, expected_generation=None)
        assert (await store.aload()) == saved
        async with store.alock(2.0):
            pass
        await deployed.delete(handle)
        assert await deployed.get(handle, now=now + 2, idle=600) is None
        assert await store.aload() is None
        await deployed.aclose()

    anyio.run(scenario)


def test_a_sessions_keys_share_one_cluster_slot(redis_cluster: RedisCluster) -> None:
    """The session hash (which holds the tokens) and its refresh lock hash to one slot."""
    client = redis_cluster.client()
    store = RedisSessionStore(client, prefix="freshtoken:slots:")
    store.use_key(KEY)
    handle = handle_of(new_session_id())
    tokens = store.token_store(handle)
    names = [store.redis_key(handle), tokens.redis_key, f"{tokens.redis_key}:lock"]
    assert len({client.keyslot(name) for name in names}) == 1  # type: ignore[no-untyped-call]
    assert tokens.redis_key == store.redis_key(handle)
    client.close()
