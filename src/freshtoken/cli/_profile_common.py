"""What the profile commands share with ``exec`` and ``git-credential``: the store flags, the
one-line errors (in terms of the CLI's flags), and a profile opened into a manager.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from .._core.tokens import TokenSet
from .._runtime.host import flights_in_progress
from ..errors import AuthError, RefreshFailed, SessionExpired
from ..profiles import open_manager
from ..stores.file import ENV_STORE, FileStore

if TYPE_CHECKING:
    from .._engine.manager import TokenManager

__all__ = [
    "ENV_CLIENT_SECRET",
    "ENV_PASSWORD",
    "ENV_PROFILE",
    "Failure",
    "HTTP_TIMEOUT",
    "LOCK_TIMEOUT",
    "add_store_arguments",
    "cancelled",
    "duration",
    "expiry_text",
    "guarded",
    "open_profile",
    "profile_store",
    "profile_tokens",
]

ENV_PROFILE = "FRESHTOKEN_PROFILE"
ENV_CLIENT_SECRET = "FRESHTOKEN_CLIENT_SECRET"
ENV_PASSWORD = "FRESHTOKEN_PASSWORD"
LOCK_TIMEOUT = 30.0
HTTP_TIMEOUT = 10.0

# Messages of the library name its keywords; the CLI user knows the flags.
_CLI_WORDS = (
    ("pass allow_insecure_http=True", "pass --allow-insecure-http"),
    ("allow_insecure_http=True", "--allow-insecure-http"),
    ("Pass encryption_key= or set $", "Set $"),
    ("pass encryption_key= or set $", "set $"),
    (
        "or drop_encryption=True to store it unencrypted",
        "or remove the profile first (`freshtoken logout --no-revoke`, with the key)",
    ),
    ("give FileStore another path", "pass another --store"),
    (
        "move it aside and log in again",
        "`freshtoken login --replace-corrupt` moves it aside and logs in again",
    ),
    ("private_key is not", "the --private-key file is not"),
    ("use a device or password login", "use --flow device or --flow password"),
    ("use a browser login", "use --flow browser"),
    ("use a device login", "use --flow device"),
)


class Failure(Exception):
    """A one-line reason to stop, printed as ``freshtoken: <reason>``."""


def add_store_arguments(parser: argparse.ArgumentParser, *, profile: bool = True) -> None:
    if profile:
        parser.add_argument(
            "--profile",
            default=os.environ.get(ENV_PROFILE) or "default",
            help=f"profile name (default: ${ENV_PROFILE} or 'default')",
        )
    parser.add_argument(
        "--store",
        metavar="PATH",
        default=None,
        help=f"token file (default: ${ENV_STORE} or ~/.config/freshtoken/tokens.json); "
        "set $FRESHTOKEN_ENCRYPTION_KEY to encrypt it",
    )


def guarded(command: Any, args: argparse.Namespace, prefix: str = "") -> int:
    try:
        code: int = command(args)
    except (Failure, AuthError, ValueError, OSError) as error:
        message = str(error)
        if not message.startswith(prefix):
            message = prefix + message
        _say_error(message)
        return 1
    except KeyboardInterrupt:
        _say_error(prefix + cancelled())
        return 130
    return code


def cancelled() -> str:
    """What Ctrl-C did. A refresh already sent goes on until its answer is saved (its rotated
    refresh token would be lost otherwise): the process ends then, or at a second Ctrl-C."""
    if flights_in_progress():
        return (
            "cancelled; finishing the refresh already sent so that its tokens are kept "
            "(Ctrl-C again abandons it)"
        )
    return "cancelled"


def _say_error(message: str) -> None:
    line = " ".join(message.split())  # one line, whatever the message held
    for words, flag in _CLI_WORDS:
        line = line.replace(words, flag)
    print(f"freshtoken: {line}", file=sys.stderr)


def profile_store(args: argparse.Namespace, profile: str = "default") -> FileStore:
    return FileStore(args.store, profile=getattr(args, "profile", profile))


def open_profile(store: FileStore) -> TokenManager:
    """A manager over ``store``'s profile and the refresher its settings describe."""
    profile = store.load_profile()
    if profile is None:
        raise Failure(f"no profile {store.profile!r} in {store.path}: run `freshtoken login`")
    manager = open_manager(store, lock_timeout=LOCK_TIMEOUT)
    if profile.tokens is None and not manager.refresher.can_acquire:
        raise Failure(
            f"profile {store.profile!r} has no tokens (the session ended): "
            "run `freshtoken login` again"
        )
    return manager


def profile_tokens(manager: TokenManager, store: FileStore) -> TokenSet:
    """Fresh tokens from ``manager``, its failures said the way the commands say them."""
    try:
        return manager.get_tokens()
    except SessionExpired as error:
        raise Failure(f"profile {store.profile!r}: {error}; run `freshtoken login` again") from None
    except RefreshFailed as error:
        raise Failure(f"profile {store.profile!r}: {error}") from None


def expiry_text(expires_at: float | None, now: float) -> str:
    if expires_at is None:
        return "expiry unknown"
    left = expires_at - now
    if left <= 0:
        return f"expired {duration(-left)} ago"
    return f"expires in {duration(left)}"


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size, sub_unit, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} {(seconds % size) // sub_size}{sub_unit}"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds}s"
