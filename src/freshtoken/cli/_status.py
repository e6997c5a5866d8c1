"""``freshtoken status``: every profile of a token file, as a table or JSON, without a secret."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from ..stores.file import FileStore, ProfileInfo
from ._profile_common import duration, expiry_text

__all__ = ["status"]


def status(args: argparse.Namespace) -> int:
    store = FileStore(args.store)
    profiles = store.profiles()
    now = time.time()
    if args.json:
        print(json.dumps([_status_record(info, now) for info in profiles.values()], indent=2))
        return 0
    if not profiles:
        print(f"no profiles in {store.path}: run `freshtoken login`")
        return 0
    headers = ("PROFILE", "ACCOUNT", "ACCESS TOKEN", "SCOPE", "LOGGED IN", "REFRESHED", "STORE")
    rows = [_status_row(info, now) for info in profiles.values()]
    if sys.stdout.isatty():
        _print_rich_table(headers, rows, title=str(store.path))
    else:
        print(f"token store: {store.path}")
        _print_plain_table(headers, rows)
    return 0


def _status_record(info: ProfileInfo, now: float) -> dict[str, Any]:
    meta = info.meta
    return {
        "profile": info.name,
        "issuer": meta.get("issuer"),
        "provider": meta.get("provider"),
        "token_url": meta.get("token_url"),
        "client_id": meta.get("client_id"),
        "username": meta.get("username"),
        "grant": meta.get("grant"),
        "logged_in": info.has_tokens,
        "expires_at": info.expires_at,
        "expires_in": None if info.expires_at is None else round(info.expires_at - now, 3),
        "scope": info.scope,
        "logged_in_at": info.logged_in_at,
        "refreshed_at": info.refreshed_at,
        "has_refresh_token": info.has_refresh_token,
        "encrypted": info.encrypted,
    }


def _status_row(info: ProfileInfo, now: float) -> tuple[str, ...]:
    meta = info.meta
    client = str(meta.get("client_id", "?"))
    username = meta.get("username")
    account = f"{username} ({client})" if username else f"client {client}"
    access = expiry_text(info.expires_at, now) if info.has_tokens else "none: log in again"
    notes = "encrypted" if info.encrypted else "plain"
    if info.has_tokens and not info.has_refresh_token and meta.get("grant") != "client_credentials":
        notes += ", no refresh token"
    return (
        info.name,
        account,
        access,
        info.scope or "-",
        _ago(info.logged_in_at, now, unknown="-"),
        _ago(info.refreshed_at, now, unknown="never"),
        notes,
    )


def _ago(moment: float | None, now: float, *, unknown: str) -> str:
    return unknown if moment is None else f"{duration(now - moment)} ago"


def _print_plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    for row in [headers, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _print_rich_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, title: str) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ModuleNotFoundError:
        print(f"token store: {title}")
        _print_plain_table(headers, rows)
        return
    table = Table(title=title)
    for header in headers:
        table.add_column(header, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    Console().print(table)
