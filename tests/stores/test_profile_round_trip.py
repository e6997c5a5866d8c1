"""Profiles both ways: saved from Python, used by ``freshtoken token | status | logout``;
made by ``freshtoken login``, used from Python in one line (``open_manager(FileStore(...))``)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

import freshtoken
import freshtoken.profiles
from freshtoken import ClientCredentials, OAuth2Refresher, TokenManager
from freshtoken._logins.flows import password_login  # deprecated in the public API
from freshtoken.cli import main
from freshtoken.httpx import TokenAuth
from freshtoken.profiles import open_manager
from freshtoken.refreshers import RefresherSettings
from freshtoken.server import Client, ReferenceServer
from freshtoken.stores import FileStore
from freshtoken.testing import ServerFactory

KEY = "correct horse battery staple"


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "tokens.json"
    monkeypatch.setenv("FRESHTOKEN_STORE", str(path))
    for name in ("FRESHTOKEN_ENCRYPTION_KEY", "FRESHTOKEN_PROFILE", "FRESHTOKEN_CLIENT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("FRESHTOKEN_PASSWORD", raising=False)
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expire(path: Path, profile: str = "default") -> None:
    """The stored access token has expired (the server's refresh token still works)."""
    store = FileStore(path, profile=profile, watch_interval=None)
    stored = store.load()
    assert stored is not None
    past = dataclasses.replace(stored.tokens, expires_at=1.0, obtained_at=0.0)
    store.save(past, expected_generation=stored.generation)


def api_status(server: ReferenceServer, token: str) -> int:
    return httpx.get(
        f"{server.api_url}/me", headers={"Authorization": f"Bearer {token}"}
    ).status_code


def test_a_profile_saved_from_python_is_refreshed_and_revoked_by_the_cli(
    oauth_server: ReferenceServer, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A confidential client's profile saved through a manager: `token` refreshes it with the
    stored secret, `status` shows it, `logout` revokes it at the server."""
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    manager = TokenManager(refresher, FileStore(store_path, watch_interval=None))
    manager.set_tokens(
        password_login(
            oauth_server.token_url,
            username="demo",
            password="demo",
            client_id="demo",
            client_secret="demo-secret",
        )
    )
    document = json.loads(store_path.read_text())
    meta = document["profiles"]["default"]["meta"]
    assert meta["token_url"] == oauth_server.token_url
    assert meta["client_id"] == "demo"
    assert meta["auth_method"] == "client_secret_basic"
    assert "demo-secret" not in json.dumps(meta)
    assert document["profiles"]["default"]["secrets"]["client_secret"] == "demo-secret"

    del manager  # the commands below run in this process: no manager here may remember
    expire(store_path)
    code, out, err = cli(capsys, "token")
    assert (code, err) == (0, "")
    assert api_status(oauth_server, out.strip()) == 200
    assert oauth_server.stats()["refreshes"] == 1

    code, out, err = cli(capsys, "status", "--json")
    assert code == 0
    (record,) = json.loads(out)
    assert record["client_id"] == "demo"
    assert record["refreshed_at"] is not None

    code, out, err = cli(capsys, "logout")
    assert (code, err) == (0, ""), err
    assert "refresh token revoked" in out
    assert oauth_server.stats()["revocation_requests"] == 1


def test_a_from_issuer_profile_records_its_issuer_and_logout_finds_revocation(
    oauth_server: ReferenceServer, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A public client made with from_issuer: the issuer goes with the profile, so `logout`
    discovers the revocation endpoint; the refresh uses the public client id."""
    refresher = OAuth2Refresher.from_issuer(oauth_server.issuer, client_id="demo-public")
    manager = TokenManager(refresher, FileStore(store_path, profile="work", watch_interval=None))
    manager.login(refresher.password_login, username="alice", password="alice")
    profile = FileStore(store_path, profile="work").load_profile()
    assert profile is not None
    assert profile.meta["issuer"] == oauth_server.issuer
    assert profile.meta["auth_method"] == "none"
    assert profile.client_secret is None

    del manager
    expire(store_path, "work")
    code, out, err = cli(capsys, "token", "--profile", "work")
    assert (code, err) == (0, "")
    assert api_status(oauth_server, out.strip()) == 200

    code, out, err = cli(capsys, "logout", "--profile", "work")
    assert (code, err) == (0, ""), err
    assert f"revoked at {oauth_server.revoke_url}" in out


def test_an_encrypted_profile_keeps_the_client_secret_sealed(
    oauth_server: ReferenceServer,
    store_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an encryption key the client secret is sealed with the tokens; the settings stay
    readable for `status`, and `token` opens the secret with the key."""
    refresher = ClientCredentials(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    manager = TokenManager(refresher, FileStore(store_path, encryption_key=KEY))
    first = manager.get_tokens()  # acquired, nothing to log in with
    text = store_path.read_text()
    assert "demo-secret" not in text
    assert first.access_token not in text
    assert json.loads(text)["profiles"]["default"]["meta"]["refresher"] == "client_credentials"

    code, out, _ = cli(capsys, "status")
    assert code == 0
    assert "encrypted" in out

    manager.clear()
    monkeypatch.setenv("FRESHTOKEN_ENCRYPTION_KEY", KEY)
    code, out, err = cli(capsys, "token")
    assert (code, err) == (0, "")
    assert api_status(oauth_server, out.strip()) == 200
    assert oauth_server.stats()["token_requests_by_grant"]["client_credentials"] == 2


def test_a_private_key_goes_with_the_secrets_not_the_settings(
    oauth_server_factory: ServerFactory, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A private_key_jwt client saved from Python: the key is kept with the tokens, never in
    the readable settings, and `token` signs with it."""
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    client = Client("signer", None, frozenset({"client_credentials"}), public_key=public.decode())
    server = oauth_server_factory(clients=(client,), clock=time.time)
    refresher = ClientCredentials(server.token_url, client_id="signer", private_key=private)
    TokenManager(refresher, FileStore(store_path)).get_tokens()
    record = json.loads(store_path.read_text())["profiles"]["default"]
    assert "PRIVATE KEY" in record["secrets"]["private_key"]
    assert "PRIVATE KEY" not in json.dumps(record["meta"])
    assert record["meta"]["auth_method"] == "private_key_jwt"

    FileStore(store_path).clear()
    code, out, err = cli(capsys, "token")
    assert (code, err) == (0, "")
    assert api_status(server, out.strip()) == 200


def test_a_cli_login_is_a_manager_in_one_line(
    oauth_server: ReferenceServer,
    store_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`freshtoken login` then open_manager(FileStore()): the Python side refreshes with the
    profile's client, and the login's account survives its saves."""
    monkeypatch.setenv("FRESHTOKEN_PASSWORD", "demo")
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", "demo-secret")
    code, _, err = cli(
        capsys, "login", "--issuer", oauth_server.issuer, "--client-id", "demo",
        "--username", "demo",
    )  # fmt: skip
    assert code == 0, err
    monkeypatch.delenv("FRESHTOKEN_CLIENT_SECRET")
    expire(store_path)

    manager = open_manager(FileStore())
    assert isinstance(manager.refresher, OAuth2Refresher)
    with httpx.Client(auth=TokenAuth(manager, origins=[oauth_server.url])) as client:
        assert client.get(f"{oauth_server.api_url}/me").status_code == 200
    assert oauth_server.stats()["refreshes"] == 1
    profile = FileStore().load_profile()
    assert profile is not None
    assert profile.meta["username"] == "demo"
    assert profile.meta["issuer"] == oauth_server.issuer
    assert profile.client_secret == "demo-secret"


def test_a_key_file_profile_keeps_naming_its_file(
    oauth_server_factory: ServerFactory, store_path: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A `login --private-key FILE` profile used from Python still names the file after a
    save, rather than copying the key into the store."""
    private = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    client = Client("signer", None, frozenset({"client_credentials"}), public_key=public.decode())
    server = oauth_server_factory(clients=(client,), clock=time.time)
    code, _, err = cli(
        capsys, "login", "--token-url", server.token_url, "--client-id", "signer",
        "--private-key", str(key_file),
    )  # fmt: skip
    assert code == 0, err
    manager = open_manager(FileStore())
    manager.refresh()
    record = json.loads(store_path.read_text())["profiles"]["default"]
    assert record["meta"]["private_key_file"] == str(key_file)
    assert "private_key" not in record["secrets"]


def test_a_profile_that_cannot_be_rebuilt_is_one_clear_line(
    store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tokens saved through a refresher that cannot describe itself: `token` says what to do
    in one line; open_manager() raises a StoreError."""

    def refresh(current: Any) -> dict[str, Any]:
        return {"access_token": "new", "expires_in": 60}

    manager = TokenManager(freshtoken.FunctionRefresher(refresh), FileStore(store_path))
    manager.set_tokens(freshtoken.TokenSet.from_response({"access_token": "a", "expires_in": 1}))
    expire(store_path)
    code, out, err = cli(capsys, "token")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("freshtoken: ")
    assert "freshtoken login" in err
    with pytest.raises(freshtoken.StoreError, match="cannot be refreshed"):
        open_manager(FileStore(store_path))


def test_settings_rebuild_the_same_refresher_and_say_no_secret() -> None:
    """describe() then rebuild() gives the same client; the description's repr hides its
    secrets."""
    refresher = OAuth2Refresher(
        "https://id.example.com/token",
        client_id="app",
        client_secret="s3cr3t-value",
        auth_method="client_secret_post",
        scope="read",
        extra_params={"audience": "api"},
    )
    described = refresher.describe()
    assert "s3cr3t-value" not in repr(described)
    assert "s3cr3t-value" not in json.dumps(dict(described.settings))
    rebuilt = described.rebuild()
    assert rebuilt.describe().settings == described.settings
    assert rebuilt.client.client_secret == "s3cr3t-value"
    with pytest.raises(ValueError, match="token_url"):
        RefresherSettings({"client_id": "app"}).rebuild()


def test_a_dpop_bound_profile_is_refreshed_by_the_cli_with_its_key(
    oauth_server: ReferenceServer, store_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tokens bound to a DPoP key, saved from Python: `token` refreshes them with the key
    stored beside them, and the new tokens are bound to the same key."""
    key = freshtoken.DPoPKey.generate("ES256")
    refresher = OAuth2Refresher(
        oauth_server.token_url, client_id="demo", client_secret="demo-secret"
    )
    manager = TokenManager(refresher, FileStore(store_path, watch_interval=None), dpop=key)
    manager.set_tokens(
        password_login(
            oauth_server.token_url, username="demo", password="demo", client_id="demo",
            client_secret="demo-secret", dpop=key,
        )
    )  # fmt: skip
    del manager
    expire(store_path)
    code, out, err = cli(capsys, "token")
    assert (code, err) == (0, "")
    assert oauth_server.stats()["refreshes"] == 1
    stored = FileStore(store_path).load()
    assert stored is not None
    assert stored.tokens.dpop_key is not None
    assert stored.tokens.dpop_key.thumbprint == key.thumbprint
    assert out.strip() == stored.tokens.access_token


def test_the_old_spellings_still_work_and_warn(
    oauth_server: ReferenceServer, store_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """FileStore.manager() and Profile.refresher_settings() (before freshtoken.profiles) give
    what the new functions give, with a DeprecationWarning naming the replacement."""
    monkeypatch.setenv("FRESHTOKEN_PASSWORD", "demo")
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", "demo-secret")
    code, _, err = cli(
        capsys, "login", "--issuer", oauth_server.issuer, "--client-id", "demo",
        "--username", "demo",
    )  # fmt: skip
    assert code == 0, err
    store = FileStore()
    with pytest.warns(DeprecationWarning, match=r"freshtoken\.profiles\.open_manager"):
        manager = store.manager()
    assert manager.get_tokens().access_token == open_manager(store).get_tokens().access_token
    profile = store.load_profile()
    assert profile is not None
    with pytest.warns(DeprecationWarning, match=r"freshtoken\.profiles\.settings_of"):
        described = profile.refresher_settings()
    assert described.settings == freshtoken.profiles.settings_of(profile).settings
