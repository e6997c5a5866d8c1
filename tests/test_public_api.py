"""The public surface is deliberate: these names are documented entry points."""

from __future__ import annotations

import importlib

import freshtoken

PUBLIC = {
    "AgentRefresher",
    "AuthError",
    "AuthorizationRequest",
    "ClientAuth",
    "ClientCredentials",
    "Clock",
    "DPoPError",
    "DPoPKey",
    "DevicePrompt",
    "FileStore",
    "FlightObserver",
    "FlightOutcome",
    "FlightReport",
    "Freshness",
    "FunctionRefresher",
    "GenerationConflict",
    "InsecureTransportError",
    "JSONRefresher",
    "JWTBearer",
    "KeyringStore",
    "LockTimeout",
    "LoginFailed",
    "ManagerStats",
    "ManualClock",
    "MemoryStore",
    "OAuth2Refresher",
    "RedisStore",
    "RefreshFailed",
    "RefreshObserver",
    "RefreshPolicy",
    "Refresher",
    "ReplayError",
    "RetryPolicy",
    "Provider",
    "Quirks",
    "ServerMetadata",
    "SessionExpired",
    "StoreError",
    "StoredTokens",
    "TokenExchange",
    "TokenManager",
    "TokenResponseError",
    "TokenSet",
    "TokenStore",
    "Trigger",
    "abrowser_login",
    "aclient_credentials_login",
    "adevice_login",
    "adiscover",
    "ajson_login",
    "apassword_login",
    "averify_id_token",
    "browser_login",
    "client_credentials_login",
    "device_login",
    "discover",
    "for_resource",
    "json_login",
    "password_login",
    "print_prompt",
    "system_clock",
    "verify_id_token",
}


def test_the_package_exports_exactly_the_documented_names() -> None:
    assert set(freshtoken.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(freshtoken, name) is not None


def test_errors_share_one_base() -> None:
    for name in (
        "SessionExpired",
        "RefreshFailed",
        "StoreError",
        "LockTimeout",
        "ReplayError",
        "DPoPError",
        "LoginFailed",
    ):
        assert issubclass(getattr(freshtoken, name), freshtoken.AuthError)
    assert issubclass(freshtoken.LockTimeout, freshtoken.StoreError)


def test_every_module_declares_its_public_names() -> None:
    for module in (
        "freshtoken.httpx",
        "freshtoken.httpx2",
        "freshtoken.requests",
        "freshtoken.aiohttp",
        "freshtoken.agent",
        "freshtoken.refreshers",
        "freshtoken.errors",
        "freshtoken.stores",
        "freshtoken.stores.file",
        "freshtoken.stores.keyring",
        "freshtoken.stores.redis",
        "freshtoken.server",
        "freshtoken.testing",
        "freshtoken.otel",
    ):
        names = importlib.import_module(module).__all__
        assert names, module
        for name in names:
            assert hasattr(importlib.import_module(module), name), (module, name)
