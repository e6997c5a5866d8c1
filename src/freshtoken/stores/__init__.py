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

__all__ = [
    "BlockingTokenStore",
    "FileStore",
    "GenerationConflict",
    "KeyringStore",
    "MemoryStore",
    "StoredTokens",
    "TokenStore",
]
