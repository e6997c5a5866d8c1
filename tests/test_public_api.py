"""The public surface is deliberate: these names are documented entry points."""

from __future__ import annotations

import importlib
import re
import warnings
from types import ModuleType

import pytest

import freshtoken
import freshtoken.aiohttp
import freshtoken.bff
import freshtoken.errors
from freshtoken.server import ReferenceServer

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
    "adiscover",
    "ajson_login",
    "averify_id_token",
    "discover",
    "for_resource",
    "json_login",
    "system_clock",
    "verify_id_token",
}


def test_the_package_exports_exactly_the_documented_names() -> None:
    assert set(freshtoken.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(freshtoken, name) is not None


def test_errors_share_one_base() -> None:
    """Every error freshtoken raises on purpose is in errors.py, under AuthError, and drawn in
    its docstring's tree; the old locations give the same classes."""
    for name in freshtoken.errors.__all__:
        error = getattr(freshtoken.errors, name)
        assert issubclass(error, freshtoken.AuthError), name
        assert error.__module__ == "freshtoken.errors", name
        assert re.search(rf"(─ |^    ){name}\b", freshtoken.errors.__doc__ or "", re.M), name
    for name in ("LockTimeout", "GenerationConflict", "UnreadableSession"):
        assert issubclass(getattr(freshtoken.errors, name), freshtoken.StoreError)
    assert issubclass(freshtoken.TokenResponseError, ValueError)  # as before it joined the tree
    from freshtoken._core.tokens import TokenResponseError
    from freshtoken.bff import LoginRequired
    from freshtoken.stores import GenerationConflict

    assert TokenResponseError is freshtoken.errors.TokenResponseError
    assert LoginRequired is freshtoken.errors.LoginRequired
    assert GenerationConflict is freshtoken.errors.GenerationConflict


@pytest.mark.parametrize(
    ("module", "name", "replacement"),
    [
        (freshtoken, "browser_login", "manager.login(refresher.browser_login)"),
        (freshtoken, "abrowser_login", "manager.alogin(refresher.abrowser_login)"),
        (freshtoken, "device_login", "manager.login(refresher.device_login)"),
        (freshtoken, "adevice_login", "manager.alogin(refresher.adevice_login)"),
        (freshtoken, "password_login", "manager.login(refresher.password_login"),
        (freshtoken, "apassword_login", "manager.alogin(refresher.apassword_login"),
        (freshtoken, "client_credentials_login", "TokenManager(ClientCredentials(...))"),
        (freshtoken, "aclient_credentials_login", "TokenManager(ClientCredentials(...))"),
        (freshtoken, "print_prompt", "on_prompt"),
        (freshtoken.refreshers, "password_login", "manager.login(refresher.password_login"),
        (freshtoken.refreshers, "client_credentials_login", "TokenManager(ClientCredentials("),
        (freshtoken.refreshers, "json_login", "freshtoken.json_login"),
        (freshtoken.bff, "ServedApp", "internal"),
        (freshtoken.bff, "handle_of", "internal"),
        (freshtoken.bff, "new_session_id", "internal"),
        (freshtoken.aiohttp, "TokenAuth", "TokenMiddleware"),
        (freshtoken.aiohttp, "ClientCredentialsAuth", "ClientCredentialsMiddleware"),
    ],
)
def test_deprecated_names_still_work_and_say_what_replaces_them(
    module: ModuleType, name: str, replacement: str
) -> None:
    """A name taken out of the API is still there until 0.2.0, with a DeprecationWarning."""
    with pytest.warns(DeprecationWarning, match="0.2.0") as caught:
        value = getattr(module, name)
    assert replacement in str(caught[0].message)
    assert caught[0].filename == __file__  # the warning points at the line that used the name
    assert callable(value)
    assert name not in module.__all__


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = freshtoken.no_such_name


def test_the_refresh_policy_is_one_object_like_the_retry_policy(
    oauth_server: ReferenceServer,
) -> None:
    """TokenManager(policy=RefreshPolicy(...), retry=RetryPolicy(...)); the flat keywords
    give the same policy with a DeprecationWarning, and cannot be mixed with policy=."""
    refresher = freshtoken.OAuth2Refresher(oauth_server.token_url, client_id="demo")
    policy = freshtoken.RefreshPolicy(leeway=60.0, min_interval=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grouped = freshtoken.TokenManager(refresher, policy=policy)
    assert grouped.policy == policy
    with pytest.warns(DeprecationWarning, match=r"policy=RefreshPolicy\(leeway=\.\.\., "):
        flat = freshtoken.TokenManager(refresher, leeway=60.0, min_interval=2.0)
    assert flat.policy == policy
    with pytest.raises(TypeError, match="not both"):
        freshtoken.TokenManager(refresher, policy=policy, leeway=1.0)


def test_every_module_declares_its_public_names() -> None:
    for module in (
        "freshtoken.httpx",
        "freshtoken.httpx2",
        "freshtoken.mcp",
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
        "freshtoken.profiles",
        "freshtoken.bff",
    ):
        names = importlib.import_module(module).__all__
        assert names, module
        for name in names:
            assert hasattr(importlib.import_module(module), name), (module, name)
