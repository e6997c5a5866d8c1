"""One process of a provider fleet: ``python provider_worker.py '<json config>'``.

For each provider in the config it builds a TokenManager from the preset (pointed at the test
bed's emulation) over the shared store, prints ``ready``, waits for a line on stdin (the
test's barrier: no sleeps), then sends ``requests`` calls at once through the integration
(``httpx-async``: tasks; ``requests``: threads), and prints one JSON line of the statuses per
provider.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import requests

import freshtoken
import freshtoken.httpx
import freshtoken.requests
from freshtoken import providers


def store_for(config: dict[str, Any], name: str) -> freshtoken.TokenStore:
    if config["store"] == "file":
        return freshtoken.FileStore(f"{config['dir']}/{name}.json")
    return freshtoken.RedisStore(config["redis"], key=f"{config['key']}:{name}")


def manager_for(config: dict[str, Any], name: str, settings: dict[str, Any]) -> Any:
    refresher = freshtoken.OAuth2Refresher.from_issuer(
        providers.get(name, **settings), client_id="demo", client_secret="demo-secret"
    )
    return freshtoken.TokenManager(refresher, store_for(config, name))


async def tasks(manager: freshtoken.TokenManager, api: str, n: int) -> Counter[str]:
    statuses: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=n)
    auth = freshtoken.httpx.TokenAuth(manager)
    async with httpx.AsyncClient(auth=auth, limits=limits, timeout=30.0) as client:

        async def one() -> None:
            try:
                statuses[str((await client.get(api)).status_code)] += 1
            except (freshtoken.AuthError, httpx.HTTPError) as error:
                statuses[type(error).__name__] += 1

        await asyncio.gather(*(one() for _ in range(n)))
    return statuses


def threads(manager: freshtoken.TokenManager, api: str, n: int) -> Counter[str]:
    statuses: Counter[str] = Counter()
    auth = freshtoken.requests.TokenAuth(manager)

    def one(_: int) -> str:
        try:
            return str(requests.get(api, auth=auth, timeout=30).status_code)
        except (freshtoken.AuthError, requests.RequestException) as error:
            return type(error).__name__

    with ThreadPoolExecutor(max_workers=n) as pool:
        statuses.update(pool.map(one, range(n)))
    return statuses


def main() -> None:
    config = json.loads(sys.argv[1])
    managers = {
        name: manager_for(config, name, entry["settings"])
        for name, entry in config["providers"].items()
    }
    print("ready", flush=True)
    sys.stdin.readline()
    report = {}
    for name, manager in managers.items():
        api = config["providers"][name]["api"]
        if config["kind"] == "httpx-async":
            counted = asyncio.run(tasks(manager, api, config["requests"]))
        else:
            counted = threads(manager, api, config["requests"])
        report[name] = dict(counted)
        manager.close()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
