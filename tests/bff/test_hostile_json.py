"""JSON from outside the BFF, nested deeper than Python recurses: a sealed-cookie lookalike
at the callback and a config file. Each is refused like any other malformed input."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from freshtoken.bff._command import ConfigError, load_config

from .bff_support import Deployment

DEEP = b"[" * 3_000 + b"]" * 3_000


def test_a_login_cookie_of_deeply_nested_json_is_login_expired(deployment: Deployment) -> None:
    """A callback whose login cookie decodes to JSON nested 3,000 deep (anyone can send
    one): 400 login_expired, as for any cookie this BFF did not seal, not a 500."""
    state = "forged"
    name = deployment.bff._cookies.login_name(state)
    value = base64.urlsafe_b64encode(DEEP).decode().rstrip("=")
    response = deployment.http.get(
        f"{deployment.bff.prefix}/callback?state={state}&code=x",
        headers={"Cookie": f"{name}={value}"},
    )
    assert response.status_code == 400
    assert response.json() == {"error": "login_expired"}


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_a_config_file_nested_too_deeply_is_a_config_error(tmp_path: Path, suffix: str) -> None:
    """`freshtoken bff --config` on a file nested 3,000 deep: ConfigError, not RecursionError."""
    path = tmp_path / f"bff{suffix}"
    path.write_bytes(DEEP if suffix == ".json" else b"a = " + DEEP)
    with pytest.raises(ConfigError, match="not valid"):
        load_config(path)
