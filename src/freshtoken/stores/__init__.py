"""Token stores. The durable ones import their optional dependencies lazily."""

from ._base import (
    BlockingTokenStore,
    GenerationConflict,
    MemoryStore,
    StoredTokens,
    TokenStore,
)
from .file import FileStore
from .keyring import KeyringStore
from .redis import RedisStore

__all__ = [
    "BlockingTokenStore",
    "FileStore",
    "GenerationConflict",
    "KeyringStore",
    "MemoryStore",
    "RedisStore",
    "StoredTokens",
    "TokenStore",
]
