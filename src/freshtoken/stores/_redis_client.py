"""Reaching Redis for [`RedisStore`][freshtoken.stores.redis.RedisStore] (and the BFF's Redis
sessions): redis-py imported on demand, its errors as [`StoreError`][freshtoken.StoreError],
and where a client points, said without credentials."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import StoreError

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

    SyncClient: TypeAlias = redis.Redis | redis.cluster.RedisCluster
    AsyncClient: TypeAlias = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

__all__ = [
    "describe_connection",
    "first_line",
    "hash_tagged",
    "import_redis",
    "pool_kwargs",
    "translated_errors",
    "twin",
]


def twin(module: Any, given: redis.asyncio.Redis) -> redis.asyncio.Redis:
    """A new redis.asyncio client with ``given``'s connection settings and pool of its own."""
    pool = given.connection_pool
    twin_pool = module.asyncio.ConnectionPool(
        connection_class=pool.connection_class,
        max_connections=pool.max_connections,
        **pool.connection_kwargs,
    )
    twin: redis.asyncio.Redis = module.asyncio.Redis(connection_pool=twin_pool)
    return twin


def import_redis() -> Any:
    try:
        import redis
        import redis.asyncio
        import redis.asyncio.cluster
        import redis.backoff
        import redis.cluster
        import redis.exceptions
        import redis.lock
        import redis.retry
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "RedisStore needs redis-py: pip install 'freshtoken[redis]'", name=exc.name
        ) from exc
    return redis


@contextlib.contextmanager
def translated_errors(errors: Any, what: str, where: str) -> Iterator[None]:
    """redis-py's errors as StoreErrors: ``what`` failed because Redis at ``where`` is
    unreachable or answered an error (its first line; never the URL, which may hold a
    password)."""
    try:
        yield
    except (errors.ConnectionError, errors.TimeoutError) as error:
        raise StoreError(
            f"{what}: Redis at {where} is unreachable ({type(error).__name__})"
        ) from error
    except errors.RedisError as error:
        raise StoreError(
            f"{what}: Redis at {where} answered {type(error).__name__}: {first_line(error)}"
        ) from error


def hash_tagged(key: str) -> str:
    """``key`` if it has a Redis Cluster hash tag (a non-empty ``{...}``), else ``{key}``."""
    start = key.find("{")
    if start != -1:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key
    return "{" + key + "}"


def pool_kwargs(client: SyncClient) -> dict[str, Any]:
    """The connection settings of a plain or Sentinel client; none for a cluster's."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    return kwargs if isinstance(kwargs, dict) else {}


def describe_connection(client: SyncClient) -> str:
    """Where Redis is, with no credentials: host:port, the socket path, the Sentinel service
    (whose master moves), or the cluster's first startup node."""
    if isinstance(client, import_redis().cluster.RedisCluster):
        nodes = sorted(client.nodes_manager.startup_nodes)
        return f"cluster:{nodes[0] if nodes else '?'}"
    service = getattr(getattr(client, "connection_pool", None), "service_name", None)
    if isinstance(service, str):
        return f"sentinel:{service}"
    kwargs = pool_kwargs(client)
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def first_line(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return text[:200]
