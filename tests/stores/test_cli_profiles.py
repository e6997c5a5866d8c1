"""``freshtoken login | token | status | logout`` against the reference server."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from cli_fixture import CLI, Run

from freshtoken import TokenSet
from freshtoken.server import ReferenceServer
from freshtoken.stores import FileStore
from freshtoken.testing import ServerFactory


def login(cli: CLI, server: ReferenceServer, monkeypatch: pytest.MonkeyPatch, *extra: str) -> Run:
    monkeypatch.setenv("FRESHTOKEN_PASSWORD", "demo")
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", "demo-secret")
    return cli(
        "login", "--token-url", server.token_url, "--client-id", "demo", "--username", "demo",
        *extra,
    )  # fmt: skip


def api_status(server: ReferenceServer, access_token: str) -> int:
    response = httpx.get(
        f"{server.url}/api/me", headers={"Authorization": f"Bearer {access_token}"}
    )
    return response.status_code


def secrets_in(path: Path, profile: str = "default") -> list[str]:
    loaded = FileStore(path, profile=profile).load_profile()
    assert loaded is not None
    assert loaded.tokens is not None
    found = [loaded.tokens.access_token, "demo-secret"]
    if loaded.tokens.refresh_token:
        found.append(loaded.tokens.refresh_token)
    return found


def expire_stored(path: Path, profile: str = "default") -> None:
    store = FileStore(path, profile=profile)
    stored = store.load()
    assert stored is not None
    past = dataclasses.replace(stored.tokens, expires_at=1.0, obtained_at=0.0)
    store.save(past, expected_generation=stored.generation)


def test_login_then_token_prints_a_working_access_token(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A password login saves a profile; `token` prints its access token, nothing else."""
    result = login(cli, oauth_server, monkeypatch)
    assert result.code == 0, result.err
    assert "profile 'default' saved" in result.out
    token = cli("token")
    assert token.code == 0
    assert token.err == ""
    access = token.out.strip()
    assert token.out == access + "\n"
    assert api_status(oauth_server, access) == 200
    for secret in secrets_in(store_path):
        assert secret not in result.out + result.err
    assert oauth_server.stats()["refreshes"] == 0  # a fresh token is used as it is


def test_token_refreshes_an_expired_profile_once(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired profile is refreshed with the stored client secret, and saved."""
    login(cli, oauth_server, monkeypatch)
    monkeypatch.delenv("FRESHTOKEN_CLIENT_SECRET")  # it must come from the profile now
    expire_stored(store_path)
    oauth_server.expire_access_tokens()
    first = cli("token")
    second = cli("token")
    assert first.code == second.code == 0, first.err
    assert first.out == second.out
    assert api_status(oauth_server, first.out.strip()) == 200
    assert oauth_server.stats()["refreshes"] == 1


def test_concurrent_token_commands_refresh_once(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six `freshtoken token` processes on one expired profile: one refresh, one token."""
    login(cli, oauth_server, monkeypatch)
    expire_stored(store_path)
    oauth_server.expire_access_tokens()
    oauth_server.reset_stats()
    env = {**os.environ, "FRESHTOKEN_STORE": str(store_path)}
    env.pop("FRESHTOKEN_CLIENT_SECRET", None)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "freshtoken.cli", "token"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(6)
    ]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0] * 6, outputs
    tokens = {out for out, _ in outputs}
    assert len(tokens) == 1
    stats = oauth_server.stats()
    assert stats["refreshes"] == 1
    assert stats["reuse_detections"] == 0
    assert api_status(oauth_server, tokens.pop().strip()) == 200


def test_client_credentials_login_and_token(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --username the client credentials grant is used; `token` re-acquires."""
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", "demo-secret")
    result = cli(
        "login", "--token-url", oauth_server.token_url, "--client-id", "demo", "--profile", "svc"
    )
    assert result.code == 0, result.err
    assert "client demo" in result.out
    monkeypatch.delenv("FRESHTOKEN_CLIENT_SECRET")
    expire_stored(store_path, "svc")
    token = cli("token", "--profile", "svc")
    assert token.code == 0, token.err
    assert api_status(oauth_server, token.out.strip()) == 200
    assert oauth_server.stats()["token_requests_by_grant"]["client_credentials"] == 2


def test_password_from_stdin(
    cli: CLI, oauth_server: ReferenceServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--password-stdin reads one line, for scripts; a public client needs no secret."""
    monkeypatch.setattr(sys, "stdin", io.StringIO("demo\n"))
    result = cli(
        "login", "--token-url", oauth_server.token_url, "--client-id", "demo-public",
        "--username", "demo", "--password-stdin",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert cli("token").code == 0


def test_status_shows_profiles_without_secrets(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """status lists every profile's account, expiry, scope, login and refresh, no secret; a
    profile never refreshed says so."""
    login(cli, oauth_server, monkeypatch)
    login(cli, oauth_server, monkeypatch, "--profile", "work", "--scope", "read")
    result = cli("status")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[1].split() == [
        "PROFILE", "ACCOUNT", "ACCESS", "TOKEN", "SCOPE", "LOGGED", "IN", "REFRESHED", "STORE"
    ]  # fmt: skip
    assert lines[2].startswith("default  demo (demo)  expires in 4m")
    assert "read write" in lines[2]
    assert lines[2].split()[-3:] == ["ago", "never", "plain"]
    assert lines[3].startswith("work     demo (demo)  expires in 4m")
    for secret in secrets_in(store_path) + secrets_in(store_path, "work"):
        assert secret not in result.out
    as_json = json.loads(cli("status", "--json").out)
    assert [p["profile"] for p in as_json] == ["default", "work"]
    assert as_json[1]["scope"] == "read"
    assert 290 < as_json[0]["expires_in"] <= 300
    assert as_json[0]["refreshed_at"] is None
    assert as_json[0]["logged_in_at"] is not None
    expire_stored(store_path)
    assert cli("token").code == 0
    refreshed = json.loads(cli("status", "--json").out)[0]
    assert refreshed["refreshed_at"] is not None
    assert refreshed["logged_in_at"] == as_json[0]["logged_in_at"]


def test_status_of_an_empty_store(cli: CLI) -> None:
    """No file yet: status says so and succeeds."""
    result = cli("status")
    assert result.code == 0
    assert "no profiles" in result.out


def test_encrypted_profiles_via_the_environment(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With $FRESHTOKEN_ENCRYPTION_KEY the file holds no secret; status needs no key."""
    monkeypatch.setenv("FRESHTOKEN_ENCRYPTION_KEY", "a long passphrase")
    assert login(cli, oauth_server, monkeypatch).code == 0
    token = cli("token")
    assert token.code == 0
    raw = store_path.read_text()
    assert token.out.strip() not in raw
    assert "demo-secret" not in raw
    monkeypatch.delenv("FRESHTOKEN_ENCRYPTION_KEY")
    status = cli("status")
    assert "encrypted" in status.out
    failure = cli("token")
    assert failure.code == 1
    assert "is encrypted" in failure.err


def test_logout_revokes_at_the_server_and_removes_the_profile(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 7009 revocation through the advertised endpoint: the refresh token is dead."""
    login(cli, oauth_server, monkeypatch)
    login(cli, oauth_server, monkeypatch, "--profile", "keep")
    stored = FileStore(store_path).load()
    assert stored is not None
    refresh_token = stored.tokens.refresh_token
    assert refresh_token is not None
    result = cli("logout")
    assert result.code == 0, result.err
    assert "refresh token revoked" in result.out
    assert refresh_token not in result.out
    assert oauth_server.stats()["revocation_requests"] == 1
    with pytest.raises(httpx.HTTPStatusError) as refused:
        oauth_server.refresh(refresh_token)
    assert refused.value.response.status_code == 400
    assert refused.value.response.json()["error"] == "invalid_grant"
    assert sorted(FileStore(store_path).profiles()) == ["keep"]
    assert cli("token", "--profile", "keep").code == 0


def test_logout_without_revocation(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-revoke only deletes the profile here."""
    login(cli, oauth_server, monkeypatch)
    result = cli("logout", "--no-revoke")
    assert result.code == 0
    assert "--no-revoke" in result.out
    assert oauth_server.stats()["revocation_requests"] == 0
    assert FileStore(store_path).profiles() == {}


def one_line_error(result: Run) -> str:
    assert result.code == 1
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert result.err.startswith("freshtoken: ")
    return result.err


def test_errors_are_one_line_and_show_no_secret(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No profile, bad password, refused insecure URL, server down, session revoked."""
    assert "run `freshtoken login`" in one_line_error(cli("token"))
    assert "no profile 'default'" in one_line_error(cli("logout"))

    monkeypatch.setenv("FRESHTOKEN_PASSWORD", "wrong-password-SECRET")
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", "demo-secret")
    bad = cli(
        "login", "--token-url", oauth_server.token_url, "--client-id", "demo", "--username", "demo"
    )
    assert "invalid_grant" in one_line_error(bad)
    assert "SECRET" not in bad.err

    insecure = cli(
        "login", "--token-url", "http://auth.example.com/token", "--client-id", "demo",
        "--username", "demo",
    )  # fmt: skip
    assert "plain HTTP" in one_line_error(insecure)

    monkeypatch.delenv("FRESHTOKEN_CLIENT_SECRET")
    no_credentials = cli("login", "--token-url", oauth_server.token_url, "--client-id", "x")
    assert "needs --client-secret" in one_line_error(no_credentials)

    login(cli, oauth_server, monkeypatch)
    secrets = secrets_in(store_path)
    oauth_server.revoke("demo")
    expire_stored(store_path)
    expired = cli("token")
    assert "session expired" in one_line_error(expired)
    assert "log in" in expired.err
    assert not any(secret in expired.err for secret in secrets)
    assert cli("status").out.count("none: log in again") == 1


def test_server_down_is_one_clear_line(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh that cannot reach the server keeps the profile and says why."""
    login(cli, oauth_server, monkeypatch)
    expire_stored(store_path)
    oauth_server.stop()
    result = cli("token")
    assert "network_error" in one_line_error(result)
    assert FileStore(store_path).load() is not None
    assert "cannot reach" in one_line_error(cli("logout"))
    assert FileStore(store_path).load() is not None


def test_logout_of_a_token_url_profile_finds_an_issuer_with_a_path(
    cli: CLI, oauth_server_factory: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --token-url profile names no issuer: logout discovers the issuers the token URL can
    belong to and revokes at the one whose metadata names this very token endpoint."""
    server = oauth_server_factory(issuer_path="/realms/acme")
    assert login(cli, server, monkeypatch).code == 0
    result = cli("logout")
    assert result.code == 0, result.err
    assert f"refresh token revoked at {server.revoke_url}" in result.out
    assert server.stats()["revocation_requests"] == 1


def test_expired_token_set_is_not_printed_by_status(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An expired profile shows as expired with its age; the token is not printed."""
    login(cli, oauth_server, monkeypatch)
    expire_stored(store_path)
    result = cli("status")
    assert "expired" in result.out
    assert TokenSet.__name__ not in result.out


def test_no_lock_file_outlives_its_profile(
    cli: CLI, oauth_server: ReferenceServer, store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking up profiles that do not exist leaves no lock file; a refreshed profile's lock
    file goes with the profile at logout."""
    for name in ("nosuch", "typo", "other"):
        assert cli("token", "--profile", name).code == 1
    login(cli, oauth_server, monkeypatch)
    expire_stored(store_path)
    assert cli("token").code == 0  # a refresh: the profile's lock file exists now
    assert cli("logout").code == 0
    leftovers = sorted(p.name for p in store_path.parent.iterdir() if p.name.endswith(".lock"))
    assert leftovers == ["tokens.json.lock"]  # the file's write lock, shared by all profiles
