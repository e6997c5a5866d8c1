"""Token stores. The durable ones import their optional dependencies lazily."""

from ._base import (
    BlockingTokenStore,
    GenerationConflict,
    MemoryStore,
    StoredTokens,
    TokenStore,
)

__all__ = [
    "BlockingTokenStore",
    "GenerationConflict",
    "MemoryStore",
    "StoredTokens",
    "TokenStore",
]
