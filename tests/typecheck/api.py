"""Never run, only type-checked (mypy --strict): the public API's types stay honest.

Each line is how the README uses freshtoken; a signature change that breaks a user breaks this.
"""

from __future__ import annotations

import httpx

import freshtoken
from freshtoken.httpx import TokenAuth


async def readme_usage(token_url: str, api: str, answer: dict[str, object]) -> None:
    def expired(error: freshtoken.SessionExpired) -> None:
        print(error.error, error.description)

    manager = freshtoken.TokenManager(
        refresher=freshtoken.OAuth2Refresher(token_url, client_id="app", client_secret="s"),
        store=freshtoken.MemoryStore(),
        leeway=30.0,
        on_session_expired=expired,
        retry=freshtoken.RetryPolicy(attempts=5, initial=0.2),
    )
    manager.set_tokens(freshtoken.TokenSet.from_response(answer))
    with httpx.Client(base_url=api, auth=TokenAuth(manager, origins=[api])) as client:
        client.get("/me")
    async with httpx.AsyncClient(base_url=api, auth=TokenAuth(manager)) as async_client:
        await async_client.get("/me")
    counters: dict[str, int] = manager.stats.snapshot()
    tokens: freshtoken.TokenSet = await manager.aget_tokens()
    expires_at: float | None = tokens.expires_at
    print(counters, expires_at)


def other_refreshers(url: str) -> list[freshtoken.Refresher]:
    def mine(current: freshtoken.TokenSet | None) -> dict[str, object]:
        return {"access_token": "a", "expires_in": 60}

    return [
        freshtoken.JSONRefresher(url, request_field="refreshToken"),
        freshtoken.ClientCredentials(url, client_id="svc", client_secret="s", scope="read"),
        freshtoken.FunctionRefresher(mine),
    ]


def stores(path: str) -> list[freshtoken.TokenStore]:
    return [
        freshtoken.MemoryStore(),
        freshtoken.FileStore(path, profile="work"),
        freshtoken.KeyringStore("my-app", "alice"),
        freshtoken.RedisStore("redis://localhost:6379/0", key="freshtoken:billing"),
    ]
