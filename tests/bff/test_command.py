"""``freshtoken bff --config``: a config file that cannot run is refused at start with one
line naming the key and the fix; secrets may come from the environment."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from freshtoken.bff import BFF, RedisSessionStore
from freshtoken.bff._command import ConfigError, build, load_config
from freshtoken.cli import main

BASE: dict[str, Any] = {
    "issuer": "https://idp.example.com",
    "client_id": "spa",
    "secret_key": "a long enough passphrase for tests",
    "routes": {"/api/": "https://api.example.com/"},
}


def write(tmp_path: Path, document: dict[str, Any], name: str = "bff.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def test_a_toml_config_with_secrets_from_the_environment_builds_a_bff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TOML, secrets named by *_env keys, Redis sessions: a BFF with those settings."""
    monkeypatch.setenv("SPA_SECRET", "client-SECRET")
    monkeypatch.setenv("SPA_KEY", "a long enough passphrase for tests")
    path = tmp_path / "bff.toml"
    path.write_text(
        'issuer = "https://idp.example.com"\n'
        'client_id = "spa"\n'
        'client_secret_env = "SPA_SECRET"\n'
        'secret_key_env = "SPA_KEY"\n'
        "idle_timeout = 600\n"
        '[routes]\n"/api/" = "https://api.example.com/"\n'
        '[sessions]\nkind = "redis"\nurl = "redis://127.0.0.1:1/0"\nprefix = "app:"\n'
    )
    app = build(load_config(path), workers=2)
    assert isinstance(app, BFF)
    assert app.client_secret == "client-SECRET"
    assert app.idle_timeout == 600
    assert isinstance(app.sessions, RedisSessionStore)
    assert app.sessions.prefix == "app:"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"client_id": None}, "client_id is required"),
        ({"issuer": None}, "issuer is required"),
        ({"secret_key": None, "secret_key_env": "NOT_SET_ANYWHERE"}, "which is not set"),
        ({"routes": ["/api/"]}, r"\[routes\] must be a table"),
        ({"sessions": {"kind": "memcached"}}, "kind is memory or redis"),
        ({"sessions": {"kind": "redis"}}, "needs a url"),
        ({"colour": "blue"}, "unknown or misspelt setting"),
        ({"routes": {"api": "https://api.example.com/"}}, "starts and ends with '/'"),
        ({"routes": {"/api/": "http://api.example.com/"}}, "plain HTTP"),
        ({"secret_key": "short"}, "32 random bytes, or a passphrase"),
        ({"previous_keys": "one key, not a list"}, "previous_keys must be a list"),
        ({"previous_keys": [""]}, "previous_keys must be a list of non-empty strings"),
        ({"previous_keys_env": "OLD_KEY"}, "previous_keys_env must be a list"),
        ({"previous_keys_env": ["NOT_SET_ANYWHERE"]}, r"\$NOT_SET_ANYWHERE, which is not set"),
        ({"previous_keys": ["short"]}, "32 random bytes, or a passphrase"),
        ({"max_calls_per_session": 0}, "max_calls_per_session must be a whole number"),
        ({"max_calls_per_session": "many"}, "max_calls_per_session must be a whole number"),
        ({"max_calls_per_session": 2.5}, "max_calls_per_session must be a whole number"),
    ],
)
def test_a_bad_config_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], message: str
) -> None:
    """Exit status 2 and a message naming the key; no traceback."""
    document = {**BASE, **change}
    document = {key: value for key, value in document.items() if value is not None}
    assert main(["bff", "--config", str(write(tmp_path, document))]) == 2
    error = capsys.readouterr().err
    assert error.startswith("freshtoken bff: ")
    assert len(error.strip().splitlines()) == 1
    assert re.search(message, error), error


def test_memory_sessions_with_several_workers_are_refused(tmp_path: Path) -> None:
    """Sessions in memory are per process: workers = 2 needs Redis."""
    with pytest.raises(ConfigError, match='use kind = "redis"'):
        build(load_config(write(tmp_path, BASE)), workers=2)


def test_an_unreadable_or_malformed_file_is_refused(tmp_path: Path) -> None:
    """A missing file and a broken one each say what is wrong with them."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("issuer = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(broken)


def test_previous_keys_and_the_call_bound_come_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """previous_keys (as written) and previous_keys_env (each variable one key) make one list,
    read from the environment as the other secrets are; max_calls_per_session is set."""
    monkeypatch.setenv("OLD_KEY_1", "the first retired passphrase, long")
    monkeypatch.setenv("OLD_KEY_2", "the second retired passphrase, long")
    document = {
        **BASE,
        "previous_keys": ["a retired passphrase written in the file"],
        "previous_keys_env": ["OLD_KEY_1", "OLD_KEY_2"],
        "max_calls_per_session": 8,
    }
    app = build(load_config(write(tmp_path, document)))
    assert isinstance(app, BFF)
    assert len(app._sealer.previous) == 3
    assert app.calls.limit == 8
    assert "passphrase" not in repr(app._sealer)


def test_the_call_bound_defaults_to_32_and_no_previous_keys(tmp_path: Path) -> None:
    app = build(load_config(write(tmp_path, BASE)))
    assert app.calls.limit == 32
    assert app._sealer.previous == ()
