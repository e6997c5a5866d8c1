"""Plain configuration against each provider's emulation, and the same with its preset.

"Plain" is what a user writes without a preset: ``OAuth2Refresher(token_url, client_id=...,
client_secret=...)`` with the token endpoint of the provider's documentation, and tokens from
a login. Each run: a login, then ROUNDS expiries; at each, CALLS requests at once through
httpx (tasks on asyncio). The plain set-up's tokens come from a password grant (JSON), the
preset's from a browser login through the preset. Printed per provider and set-up: calls
that failed (not 200, or an exception), refreshes the server counted, grants it revoked, and
whether the session ended.

    python benchmarks/bench_providers.py
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

import freshtoken
import freshtoken.httpx
from freshtoken import ManualClock, providers
from freshtoken.server import ReferenceServer, ServerConfig

ROUNDS = 5
CALLS = 50


def preset_for(name: str, url: str) -> freshtoken.Provider:
    special = {
        "okta": lambda: providers.okta("x", authorization_server="default", base_url=url),
        "auth0": lambda: providers.auth0("x", base_url=url),
        "keycloak": lambda: providers.keycloak(url, "demo"),
        "hydra": lambda: providers.hydra("https://hydra.example", base_url=url),
    }
    return special.get(name, lambda: providers.get(name, base_url=url))()


async def calls(manager: freshtoken.TokenManager, api: str) -> int:
    failed = 0
    async with httpx.AsyncClient(auth=freshtoken.httpx.TokenAuth(manager)) as client:

        async def one() -> None:
            nonlocal failed
            try:
                if (await client.get(api)).status_code != 200:
                    failed += 1
            except (freshtoken.AuthError, httpx.HTTPError):
                failed += 1

        await asyncio.gather(*(one() for _ in range(CALLS)))
    return failed


def run(name: str, *, preset: bool) -> dict[str, Any]:
    clock = ManualClock()
    with ReferenceServer(ServerConfig(admin=True).as_provider(name), clock=clock) as server:
        provider = preset_for(name, server.url)
        metadata = provider.metadata()
        token_url = metadata.token_endpoint or ""
        if preset:
            refresher = freshtoken.OAuth2Refresher.from_issuer(
                provider, client_id="demo", client_secret="demo-secret"
            )
        else:
            refresher = freshtoken.OAuth2Refresher(
                token_url, client_id="demo", client_secret="demo-secret"
            )
        expired: list[BaseException] = []
        manager = freshtoken.TokenManager(
            refresher,
            clock=clock,
            retry=freshtoken.RetryPolicy(attempts=3, initial=0.001, maximum=0.01),
            on_session_expired=expired.append,
        )
        if preset:
            login = refresher.browser_login(open_browser=server.browser(), clock=clock)
        else:  # a password grant's answer stands for the login a user made some other way
            login = freshtoken.TokenSet.from_response(server.login(), sent_at=clock())
        manager.set_tokens(login)
        failed = 0
        for _ in range(ROUNDS):
            clock.advance(server.config.access_ttl + 1)
            failed += asyncio.run(calls(manager, f"{server.api_url}/me"))
        stats = server.stats()
        return {
            "failed": failed,
            "refreshes": stats["refreshes"],
            "revoked": stats["family_revocations"],
            "ended": len(expired),
        }


def main() -> None:
    print(f"{ROUNDS} expiries x {CALLS} concurrent calls (httpx on asyncio), per provider")
    columns = ("failed", "refreshes", "revoked", "ended")
    print(f"{'provider':<11} {'set-up':<7} " + " ".join(f"{c:>9}" for c in columns))
    for name in providers.NAMES:
        for preset in (False, True):
            result = run(name, preset=preset)
            shown = " ".join(f"{result[c]:>9}" for c in columns)
            print(f"{name:<11} {'preset' if preset else 'plain':<7} {shown}")


if __name__ == "__main__":
    main()
