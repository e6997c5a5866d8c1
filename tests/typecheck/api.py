"""Never run, only type-checked (mypy --strict): the public API's types stay honest.

Each line is how the README and the docs use freshtoken; a signature change that breaks a user
breaks this.
"""

from __future__ import annotations

import httpx

import freshtoken
import freshtoken.profiles
from freshtoken.httpx import TokenAuth


async def readme_usage(token_url: str, api: str, answer: dict[str, object]) -> None:
    def expired(error: freshtoken.SessionExpired) -> None:
        print(error.error, error.description)

    manager = freshtoken.TokenManager(
        refresher=freshtoken.OAuth2Refresher(token_url, client_id="app", client_secret="s"),
        store=freshtoken.MemoryStore(),
        policy=freshtoken.RefreshPolicy(leeway=30.0),
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


async def readme_logins(issuer: str, api: str, pem: str) -> None:
    refresher = freshtoken.OAuth2Refresher.from_issuer(issuer, client_id="my-app")
    manager = freshtoken.TokenManager(
        refresher,
        store=freshtoken.FileStore(),
        on_session_expired=lambda error: print("please log in again"),
    )
    if manager.store.load() is None:
        manager.login(refresher.browser_login)
    manager.login(refresher.device_login, scope="openid")
    await manager.alogin(refresher.abrowser_login, timeout=60)
    manager.set_tokens(await refresher.abrowser_login(timeout=60))
    metadata: freshtoken.ServerMetadata = freshtoken.discover(issuer)
    tokens = freshtoken.browser_login(issuer, client_id="my-app")
    tokens = await freshtoken.abrowser_login(metadata, client_id="my-app", open_browser=print)
    tokens = freshtoken.device_login(issuer, client_id="my-tv-app")
    tokens = freshtoken.client_credentials_login(issuer=issuer, client_id="robot", private_key=pem)
    claims: dict[str, object] = freshtoken.verify_id_token(
        tokens.id_token or "", issuer=issuer, client_id="my-app"
    )
    print(claims, tokens.id_claims())
    request = freshtoken.AuthorizationRequest.start(
        await freshtoken.adiscover(issuer), client_id="bff", redirect_uri=f"{api}/callback"
    )
    code = request.code_from({"state": request.state, "code": "c"})
    tokens = await request.aexchange(code, freshtoken.ClientAuth("bff", "secret"))
    try:
        freshtoken.password_login(issuer=issuer, username="a", password="b", client_id="c")
    except freshtoken.LoginFailed as failed:
        print(failed.error, failed.description, failed.status)


def readme_dpop(token_url: str, store: freshtoken.TokenStore) -> None:
    key = freshtoken.DPoPKey.generate("ES256")
    tokens = freshtoken.password_login(
        token_url, username="alice", password="p", client_id="cli", dpop=key
    )
    refresher = freshtoken.OAuth2Refresher(token_url, client_id="cli")
    manager = freshtoken.TokenManager(refresher, store, dpop=key)
    manager.set_tokens(tokens)
    fleet = freshtoken.TokenManager(refresher, store, dpop="EdDSA")
    print(fleet.get_tokens().dpop_key, freshtoken.DPoPKey.from_jwk(key.private_jwk()))


def profiles(path: str, token_url: str) -> freshtoken.TokenManager:
    refresher = freshtoken.OAuth2Refresher(token_url, client_id="app", client_secret="s")
    described: freshtoken.refreshers.RefresherSettings = refresher.describe()
    rebuilt: freshtoken.OAuth2Refresher | freshtoken.ClientCredentials = described.rebuild()
    print(rebuilt, dict(described.settings))
    store = freshtoken.FileStore(path, profile="work")
    profile = store.load_profile()
    if profile is not None:
        print(freshtoken.profiles.settings_of(profile), store.profiles()["work"].refreshed_at)
    return freshtoken.profiles.open_manager(
        store, policy=freshtoken.RefreshPolicy(leeway=60.0), on_refresh=print
    )
