"""freshtoken.providers: each preset is accepted wherever an issuer is, and carries its quirks
to the refreshers, logins, the CLI's profiles and the BFF."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import anyio
import pytest
from cli_fixture import CLI

import freshtoken
from freshtoken import Provider, Quirks, providers
from freshtoken._logins import flows  # the free logins, deprecated in the public API
from freshtoken.bff import BFF
from freshtoken.bff._command import ConfigError, load_config
from freshtoken.profiles import settings_of
from freshtoken.stores import FileStore

from .conftest import BedFactory, preset_for

PLAYER = Path(__file__).parent.parent / "logins" / "browser_player.py"


def test_every_preset_by_name_with_base_url() -> None:
    """get(name, base_url=...) for configuration files; the same keyword points every preset
    elsewhere."""
    for name in providers.NAMES:
        settings = {"keycloak": {"realm": "r"}, "hydra": {"issuer": "https://h"}}.get(name, {})
        if name in ("okta", "auth0"):
            settings = {"domain": "example.com"}
        preset = providers.get(name, base_url="https://elsewhere.example", **settings)
        assert isinstance(preset, Provider)
        assert preset.issuer.startswith("https://elsewhere.example")
        assert preset.name == name
        assert providers.get(name, **preset.settings) == preset  # what profiles store


def test_the_documented_hosts() -> None:
    assert providers.google().issuer == "https://accounts.google.com"
    assert providers.microsoft("organizations").issuer == (
        "https://login.microsoftonline.com/organizations/v2.0"
    )
    us = providers.microsoft("contoso.onmicrosoft.us", base_url="https://login.microsoftonline.us")
    assert us.issuer == "https://login.microsoftonline.us/contoso.onmicrosoft.us/v2.0"
    github = providers.github()
    assert not github.discovery
    assert github.endpoints["token_endpoint"] == "https://github.com/login/oauth/access_token"
    assert providers.gitlab("gitlab.example.org").issuer == "https://gitlab.example.org"
    assert providers.okta("x.okta.com", authorization_server="default").issuer == (
        "https://x.okta.com/oauth2/default"
    )
    assert providers.auth0(
        "x.eu.auth0.com", audience="https://api"
    ).quirks.authorization_params == {"audience": "https://api"}
    assert providers.keycloak("https://kc", "demo").issuer == "https://kc/realms/demo"
    assert providers.salesforce("test").issuer == "https://test.salesforce.com"
    assert providers.salesforce().quirks.default_lifetime == 7200
    assert providers.slack().endpoints["token_endpoint"] == "https://slack.com/api/oauth.v2.access"
    assert providers.notion().auth_methods == ("client_secret_basic",)
    assert providers.hydra("https://auth.example").issuer == "https://auth.example"


def test_unknown_presets_and_settings_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="one of auth0, github"):
        providers.get("facebook")
    with pytest.raises(ValueError, match="provider keycloak"):
        providers.get("keycloak", tenant="x")


def test_quirks_settings_round_trip() -> None:
    quirks = Quirks(reused_refresh_token="refused", default_lifetime=60, keep_alive=True)
    assert Quirks.from_settings(quirks.to_settings()) == quirks
    assert Quirks().to_settings() == {}
    with pytest.raises(ValueError, match="unknown quirks"):
        Quirks.from_settings({"rotation": "yes"})
    assert hash(quirks) == hash(Quirks.from_settings(quirks.to_settings()))
    assert len({providers.google(), providers.google(), providers.auth0("x", audience="a")}) == 2
    with pytest.raises(ValueError, match="reused_refresh_token is one of"):
        Quirks(reused_refresh_token="maybe")  # type: ignore[arg-type]


def test_a_preset_goes_wherever_an_issuer_goes(bed: BedFactory) -> None:
    """discover, from_issuer, browser_login and TokenManager.login take the preset; the
    refresher has its quirks and describes them, so a rebuilt one has them too."""
    github = bed("github")
    metadata = freshtoken.discover(github.provider)
    assert metadata.provider == "github"
    assert metadata.token_endpoint == f"{github.server.url}/login/oauth/access_token"
    refresher = github.refresher()
    assert refresher.quirks.reused_refresh_token == "refused"
    manager = freshtoken.TokenManager(refresher, clock=github.server.clock)
    tokens = manager.login(
        flows.browser_login,
        github.provider,
        client_id="demo",
        client_secret="demo-secret",
        open_browser=github.server.browser(),
        clock=github.server.clock,
    )
    assert tokens.refresh_token
    described = refresher.describe()
    assert described.settings["provider"] == "github"
    rebuilt = described.rebuild()
    assert isinstance(rebuilt, freshtoken.OAuth2Refresher)
    assert (rebuilt.quirks, rebuilt.provider) == (refresher.quirks, "github")


def test_the_async_side_takes_a_preset_too(bed: BedFactory) -> None:
    google = bed("google")

    async def main() -> freshtoken.TokenSet:
        metadata = await freshtoken.adiscover(google.provider)
        assert metadata.quirks == google.provider.quirks
        return await flows.abrowser_login(
            google.provider,
            client_id="demo",
            client_secret="demo-secret",
            open_browser=google.server.browser(),
            clock=google.server.clock,
        )

    assert anyio.run(main).refresh_token


def test_google_logins_ask_for_offline_access_and_consent() -> None:
    from freshtoken._logins.authorization import AuthorizationRequest
    from freshtoken._oauth.discovery import ServerMetadata

    metadata = ServerMetadata(
        "https://accounts.google.com",
        authorization_endpoint="https://accounts.google.com/o/oauth2/v2/auth",
        token_endpoint="https://oauth2.googleapis.com/token",
        quirks=providers.google().quirks,
    )
    request = AuthorizationRequest.start(
        metadata, client_id="c", redirect_uri="http://127.0.0.1/callback"
    )
    assert "access_type=offline" in request.url
    assert "prompt=consent" in request.url


def test_cli_login_with_a_provider_and_the_profile_remembers_it(
    cli: CLI, bed: BedFactory, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """freshtoken login --provider microsoft: the profile keeps the preset, so its refreshes
    carry the scope Entra demands, and status names the provider."""
    entra = bed("microsoft")
    command = [sys.executable, str(PLAYER)]
    monkeypatch.setenv("BROWSER", " ".join(shlex.quote(part) for part in command) + " %s")
    result = cli(
        "login",
        "--provider",
        "microsoft",
        "--provider-option",
        f"base_url={entra.server.url}",
        "--client-id",
        "demo",
        "--client-secret",
        "demo-secret",
        "--flow",
        "browser",
        "--scope",
        "openid read",
    )
    assert result.code == 0, result.err
    profile = FileStore(store_path).load_profile()
    assert profile is not None
    assert profile.meta["provider"] == "microsoft"
    refresher = settings_of(profile).rebuild()
    assert isinstance(refresher, freshtoken.OAuth2Refresher)
    assert refresher.quirks.refresh_sends_scope
    assert profile.tokens is not None
    assert refresher.refresh(profile.tokens, entra.server.clock).refresh_token
    assert entra.server.stats()["token_errors"] == 0
    status = cli("status", "--json")
    assert '"provider": "microsoft"' in status.out, status.err


def test_cli_refuses_a_provider_option_without_a_provider(cli: CLI) -> None:
    result = cli("login", "--issuer", "https://x", "--client-id", "c", "--provider-option", "a=b")
    assert result.code == 1
    assert "--provider-option is for a --provider preset" in result.err


def test_bff_takes_a_provider(bed: BedFactory) -> None:
    """BFF(provider=...) and a config's provider = "github" / [provider] table."""
    github = bed("github")
    bff = BFF(
        provider=preset_for("github", github.server),
        client_id="demo",
        client_secret="demo-secret",
        secret_key="a passphrase of sixteen or more",
        allow_insecure_http=True,
    )
    anyio.run(bff.ready)
    assert isinstance(bff.refresher, freshtoken.OAuth2Refresher)
    assert bff.refresher.quirks.reused_refresh_token == "refused"
    assert bff.metadata is not None
    assert bff.metadata.provider == "github"
    with pytest.raises(ValueError, match="not both"):
        BFF(issuer="https://x", provider="github", client_id="c", secret_key="k" * 32)


def test_bff_config_names_a_provider(tmp_path: Path) -> None:
    path = tmp_path / "bff.toml"
    path.write_text(
        'client_id = "c"\nsecret_key = "a passphrase of sixteen or more"\n'
        '[provider]\nname = "keycloak"\nbase_url = "https://kc"\nrealm = "demo"\n'
    )
    provider = load_config(path)["provider"]
    assert provider == providers.keycloak("https://kc", "demo")
    path.write_text('client_id = "c"\nsecret_key = "x"\nprovider = "facebook"\n')
    with pytest.raises(ConfigError, match="no provider preset"):
        load_config(path)
