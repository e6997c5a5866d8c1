"""Reading what a store holds, however hostile: every failure is a StoreError.

A store's contents may have been damaged, truncated, written by another program or by an
attacker: JSON nested thousands deep (``RecursionError``), numbers with thousands of digits
(``ValueError`` past Python's digit limit, ``OverflowError`` when made a float), any type in
any field. Each becomes a [`StoreError`][freshtoken.StoreError] that names the store (``where``) and
says what to do (``fix``); none quotes the content, which holds tokens.
"""

from __future__ import annotations

import json
from typing import Any

from .._core.tokens import TokenResponseError, TokenSet
from ..errors import StoreError

__all__ = ["MAX_DEPTH", "corrupt", "parse_json", "too_deep", "token_set"]

# Far deeper than anything freshtoken writes (a file store document is four levels deep), and
# shallow enough that reprs, dumps and the CLI never recurse into trouble.
MAX_DEPTH = 32


def corrupt(where: str, problem: str, fix: str) -> StoreError:
    return StoreError(f"{where} is corrupt: {problem}; {fix}")


def parse_json(text: str | bytes, where: str, fix: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise corrupt(where, "its JSON is nested too deeply", fix) from None
    except ValueError:
        # JSONDecodeError, UnicodeDecodeError, an integer over Python's digit limit; their
        # messages may quote the content, so none is shown.
        raise StoreError(
            f"{where} is not valid JSON (corrupt, truncated, or written by another program); {fix}"
        ) from None


def too_deep(value: object, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and objects nest deeper than ``limit`` (counted without recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def token_set(data: object, where: str, fix: str) -> TokenSet:
    """The stored token set in ``data``; StoreError saying what is wrong with it."""
    if not isinstance(data, dict):
        raise corrupt(where, "the token set is not an object", fix)
    try:
        return TokenSet.from_dict(data)
    except TokenResponseError as error:  # its messages name fields, never their values
        raise corrupt(where, str(error), fix) from None
    except OverflowError:
        raise corrupt(where, "a number in the token set is too large", fix) from None
    except (TypeError, ValueError):
        raise corrupt(where, "a token set field is missing or has the wrong type", fix) from None
