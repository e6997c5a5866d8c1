"""``freshtoken login --resource URL`` and ``freshtoken token --resource URL``: log in to
whatever protects a URL and print its token, with nothing else configured
(see `freshtoken._resource_logins`).

The profile is the resource's own (`resource_profile()`: its host and a digest) unless
``--profile`` names one; the client registration is kept beside it in the same file.
``token`` never opens a browser: with no tokens it says to log in.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from .._resource_logins import for_resource, resource_profile
from ..errors import RefreshFailed, SessionExpired
from ..stores.file import FileStore
from .formats import render

__all__ = ["login", "token"]

CLIENT_NAME = "freshtoken CLI"


def _store(args: argparse.Namespace) -> FileStore:
    profile = args.profile if args.profile != "default" else resource_profile(args.resource)
    return FileStore(args.store, profile=profile)


def login(args: argparse.Namespace, open_browser: object) -> int:
    """Log in again, whatever is stored: a new grant replaces the old one."""
    store = _store(args)
    manager = for_resource(
        args.resource,
        client_name=CLIENT_NAME,
        scope=args.scope,
        store=store,
        client_id=args.client_id,
        client_secret=args.client_secret or os.environ.get("FRESHTOKEN_CLIENT_SECRET") or None,
        open_browser=open_browser,  # type: ignore[arg-type]
        login_timeout=args.timeout,
        allow_insecure_http=bool(args.allow_insecure_http),
    )
    try:
        refresher = manager.refresher
        tokens = refresher.login()  # type: ignore[attr-defined]
        manager.set_tokens(tokens)
    finally:
        manager.close()
    print(
        f"logged in to {refresher.resource}: profile {store.profile!r} saved in "  # type: ignore[attr-defined]
        f"{store.path} (scope {tokens.scope or 'unknown'})"
    )
    return 0


def token(args: argparse.Namespace) -> int:
    store = _store(args)
    manager = for_resource(args.resource, client_name=CLIENT_NAME, store=store, interactive=False)
    try:
        tokens = manager.get_tokens()
    except SessionExpired as error:
        raise SessionExpired(
            error.error,
            f"{error.description or 'the session ended'}; run `freshtoken login --resource "
            f"{args.resource}`",
        ) from None
    except RefreshFailed:
        raise
    finally:
        manager.close()
    sys.stdout.write(
        render(
            args.format,
            tokens,
            now=time.time(),
            refresh_due_at=manager.policy.refresh_due_at(tokens),
            exec_info=os.environ.get("KUBERNETES_EXEC_INFO"),
        )
    )
    return 0
