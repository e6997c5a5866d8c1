"""Another process of a fleet: opens the shared store with ``dpop="ES256"`` (whatever key is
stored), calls the API, refreshes, calls again; prints the statuses and the key's thumbprint.

Usage: dpop_worker.py file|redis LOCATION REDIS_KEY PASSPHRASE SERVER_URL
"""

from __future__ import annotations

import sys

import httpx

import freshtoken
import freshtoken.httpx


def main(kind: str, location: str, redis_key: str, passphrase: str, server: str) -> None:
    store: freshtoken.TokenStore
    if kind == "file":
        store = freshtoken.FileStore(location, encryption_key=passphrase)
    else:
        store = freshtoken.RedisStore(location, key=redis_key)
    refresher = freshtoken.OAuth2Refresher(f"{server}/oauth/token", client_id="demo-public")
    manager = freshtoken.TokenManager(refresher, store, dpop="ES256")
    with httpx.Client(auth=freshtoken.httpx.TokenAuth(manager)) as client:
        print(client.get(f"{server}/api/me").status_code)
        key = manager.get_tokens().dpop_key
        print(None if key is None else key.thumbprint)
        manager.refresh()
        print(client.get(f"{server}/api/me").status_code)
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:6])
