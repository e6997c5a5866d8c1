"""``freshtoken token --format header|json|env|k8s-exec``: what each prints, and that tools
reading it (a POSIX shell, kubectl) take it as meant."""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import http.server
import json
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from certificates import self_signed
from profile_fixture import LoggedIn
from tools import require

from freshtoken import TokenSet
from freshtoken.cli.formats import render

# -- the ExecCredential v1 schema -----------------------------------------------------------
# Written from k8s.io/client-go/pkg/apis/clientauthentication/v1 (types.go): ExecCredential
# is TypeMeta (apiVersion, kind) + spec (ExecCredentialSpec, omitempty) + status
# (*ExecCredentialStatus): expirationTimestamp (*metav1.Time, RFC 3339, omitempty), token,
# clientCertificateData, clientKeyData (all omitempty strings). client-go requires a token or
# a certificate and key pair, both halves of the pair together.
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
EXEC_CREDENTIAL_V1: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "status"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "client.authentication.k8s.io/v1"},
        "kind": {"const": "ExecCredential"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"cluster": {"type": "object"}, "interactive": {"type": "boolean"}},
        },
        "status": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "expirationTimestamp": {"type": "string", "pattern": RFC3339},
                "token": {"type": "string", "minLength": 1},
                "clientCertificateData": {"type": "string"},
                "clientKeyData": {"type": "string"},
            },
            "anyOf": [
                {"required": ["token"]},
                {"required": ["clientCertificateData", "clientKeyData"]},
            ],
        },
    },
}


def schema_errors(value: Any, schema: Mapping[str, Any], where: str = "$") -> list[str]:
    """The JSON Schema keywords the schema above uses, checked; a list of violations."""
    errors: list[str] = []
    kinds = {"object": dict, "string": str, "boolean": bool}
    if "type" in schema and not isinstance(value, kinds[schema["type"]]):
        return [f"{where}: not a {schema['type']}"]
    if "const" in schema and value != schema["const"]:
        errors.append(f"{where}: {value!r} is not {schema['const']!r}")
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{where}: too short")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{where}: {value!r} does not match {schema['pattern']}")
    if isinstance(value, dict):
        errors += [
            f"{where}: {key} missing" for key in schema.get("required", ()) if key not in value
        ]
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            errors += [f"{where}: unexpected {key}" for key in value if key not in properties]
        for key, sub in properties.items():
            if key in value:
                errors += schema_errors(value[key], sub, f"{where}.{key}")
        if "anyOf" in schema and all(schema_errors(value, sub, where) for sub in schema["anyOf"]):
            errors.append(f"{where}: matches none of anyOf")
    return errors


def test_the_schema_check_rejects_what_kubectl_would() -> None:
    """The schema check itself catches a wrong version, a missing token and a bad timestamp."""
    good = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "t", "expirationTimestamp": "2030-01-01T00:00:00Z"},
    }
    assert schema_errors(good, EXEC_CREDENTIAL_V1) == []
    assert schema_errors({**good, "apiVersion": "v1"}, EXEC_CREDENTIAL_V1)
    assert schema_errors({**good, "status": {}}, EXEC_CREDENTIAL_V1)
    bad_time = {**good, "status": {"token": "t", "expirationTimestamp": "1893456000"}}
    assert schema_errors(bad_time, EXEC_CREDENTIAL_V1)


# -- the formats, as text -------------------------------------------------------------------

TOKENS = TokenSet(
    access_token="abc.def-ghi", expires_at=1_900_000_000.0, obtained_at=1_899_999_700.0,
    scope="read write",
)  # fmt: skip


def test_k8s_exec_output_is_a_valid_exec_credential_expiring_when_a_refresh_falls_due() -> None:
    """k8s-exec: ExecCredential v1; kubectl's cache ends at the refresh moment, in UTC."""
    text = render("k8s-exec", TOKENS, now=1_899_999_800.0, refresh_due_at=1_899_999_970.0)
    document = json.loads(text)
    assert schema_errors(document, EXEC_CREDENTIAL_V1) == []
    assert document["status"]["token"] == "abc.def-ghi"
    stamp = datetime.datetime.fromisoformat(
        document["status"]["expirationTimestamp"].replace("Z", "+00:00")
    )
    assert stamp.timestamp() == 1_899_999_970.0


def test_k8s_exec_answers_the_version_kubectl_asks_for() -> None:
    """$KUBERNETES_EXEC_INFO naming v1beta1 gets v1beta1; an unknown version a clear error."""
    info = json.dumps(
        {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential"}
    )
    document = json.loads(render("k8s-exec", TOKENS, now=0.0, exec_info=info))
    assert document["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    with pytest.raises(ValueError, match="v1alpha1"):
        render("k8s-exec", TOKENS, now=0.0, exec_info=info.replace("v1beta1", "v1alpha1"))
    with pytest.raises(ValueError, match="not JSON"):
        render("k8s-exec", TOKENS, now=0.0, exec_info="{")


def test_k8s_exec_without_a_known_expiry_leaves_the_timestamp_out() -> None:
    """No expiry known: no expirationTimestamp (kubectl then keeps it until a 401)."""
    document = json.loads(render("k8s-exec", TokenSet("opaque"), now=0.0))
    assert schema_errors(document, EXEC_CREDENTIAL_V1) == []
    assert "expirationTimestamp" not in document["status"]


def test_header_and_json_formats() -> None:
    """header is one curl -H line; json carries the token, RFC 3339 expiry, expires_in, scope."""
    assert render("header", TOKENS, now=0.0) == "Authorization: Bearer abc.def-ghi\n"
    document = json.loads(render("json", TOKENS, now=1_899_999_800.0))
    assert document == {
        "access_token": "abc.def-ghi",
        "token_type": "Bearer",
        "expires_at": "2030-03-17T17:46:40Z",
        "expires_in": 200,
        "scope": "read write",
    }


@pytest.mark.parametrize(
    "hostile",
    ["it's", "$(touch PWNED)", "`touch PWNED`", "a;touch${IFS}PWNED", "\\'\"\t*?[~", "é€"],
)
def test_env_lines_survive_a_real_shell_whatever_the_token_holds(
    hostile: str, tmp_path: Path
) -> None:
    """env: `sh` sourcing the lines gets the exact bytes back and runs nothing."""
    visible = "".join(ch for ch in hostile if "!" <= ch <= "~")  # what a token may hold
    tokens = TokenSet(access_token="x" + visible, scope=hostile)
    script = tmp_path / "tokens.sh"
    script.write_text(render("env", tokens, now=0.0))
    probe = (
        f". {script}; printf '%s\\0%s\\0%s\\0%s' \"$FRESHTOKEN_ACCESS_TOKEN\" "
        '"$FRESHTOKEN_TOKEN_TYPE" "$FRESHTOKEN_SCOPE" "${FRESHTOKEN_EXPIRES_AT-unset}"'
    )
    result = subprocess.run(["sh", "-c", probe], cwd=tmp_path, capture_output=True, check=True)
    values = result.stdout.decode().split("\0")
    assert values == [tokens.access_token, "Bearer", hostile, "unset"]
    assert not (tmp_path / "PWNED").exists()


def test_env_unsets_what_the_token_lacks() -> None:
    """A missing expiry or scope is unset, so an earlier eval's value cannot linger."""
    text = render("env", TokenSet("t"), now=0.0)
    assert "unset FRESHTOKEN_EXPIRES_AT" in text
    assert "unset FRESHTOKEN_SCOPE" in text


# -- the command ----------------------------------------------------------------------------


@pytest.mark.parametrize("format_name", ["plain", "header", "json", "env", "k8s-exec"])
def test_a_fresh_cached_token_is_served_without_any_network_call(
    logged_in: LoggedIn, format_name: str
) -> None:
    """Every format serves the stored token as it is: the server sees no request at all."""
    result = logged_in.run("token", "--format", format_name)
    assert result.returncode == 0, result.stderr
    assert logged_in.tokens().access_token in result.stdout
    assert logged_in.server.stats()["token_requests"] == 0


def test_concurrent_k8s_exec_calls_on_an_expired_token_refresh_once(logged_in: LoggedIn) -> None:
    """Six kubectl-style calls at once on an expired token: one refresh, one token."""
    logged_in.expire()
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        runs = list(pool.map(lambda _: logged_in.run("token", "--format", "k8s-exec"), range(6)))
    assert [run.returncode for run in runs] == [0] * 6, [run.stderr for run in runs]
    tokens = {json.loads(run.stdout)["status"]["token"] for run in runs}
    assert len(tokens) == 1
    stats = logged_in.server.stats()
    assert stats["refreshes"] == 1
    assert stats["reuse_detections"] == 0
    assert logged_in.api_status(tokens.pop()) == 200


@pytest.mark.parametrize(
    ("exec_info", "message"),
    [
        ('{"apiVersion": "x/v9"}', "x/v9"),
        ("[" * 50_000 + "]" * 50_000, "nested too deeply"),
        ('{"apiVersion": ' * 5_000 + "1" + "}" * 5_000, "nested too deeply"),
        ('{"apiVersion": "', "not JSON"),
        ('{"spec": {"interactive": ' + "9" * 5_000 + "}}", "digits"),
        ("\udcff", "not UTF-8"),
    ],
    ids=["unknown-version", "deep-arrays", "deep-objects", "truncated", "huge-number", "bytes"],
)
def test_a_bad_exec_info_is_one_line_on_stderr(
    logged_in: LoggedIn, exec_info: str, message: str
) -> None:
    """Whatever $KUBERNETES_EXEC_INFO holds (a version freshtoken does not speak, JSON nested
    50,000 deep, a 5,000-digit number, bytes that are not UTF-8): exit 1, one line naming
    the variable, no token and no traceback."""
    env_run = subprocess.run(
        [sys.executable, "-m", "freshtoken.cli", "token", "--format", "k8s-exec"],
        env={**logged_in.env, "KUBERNETES_EXEC_INFO": exec_info},
        capture_output=True,
        text=True,
        check=False,
    )
    assert env_run.returncode == 1
    assert env_run.stdout == ""
    assert len(env_run.stderr.splitlines()) == 1, env_run.stderr
    assert "KUBERNETES_EXEC_INFO" in env_run.stderr or "x/v9" in env_run.stderr
    assert message in env_run.stderr
    assert "unexpected" not in env_run.stderr
    assert logged_in.tokens().access_token not in env_run.stderr


# -- kubectl, for real ------------------------------------------------------------------------


class TLSProxy:
    """An HTTPS endpoint standing in for a Kubernetes API server (kubectl sends credentials
    over TLS only): it passes each GET on to the reference server with the caller's
    Authorization header, and records what it was sent."""

    def __init__(self, upstream: str, directory: Path) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str]] = []
        self.ca_pem = self_signed(directory, "freshtoken-test-apiserver")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                header = self.headers.get("Authorization")
                proxy.requests.append((self.path, header or ""))
                forwarded = {"Authorization": header} if header else {}
                answer = httpx.get(proxy.upstream + self.path, headers=forwarded)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def requests_for(self, path: str) -> list[str]:
        """The Authorization headers of the requests for ``path``."""
        return [header for seen, header in self.requests if seen == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api_server(logged_in: LoggedIn, tmp_path: Path) -> Iterator[TLSProxy]:
    proxy = TLSProxy(logged_in.server.url, tmp_path)
    yield proxy
    proxy.close()


def kubeconfig(path: Path, proxy: TLSProxy, store: Path) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": proxy.url,
                    "certificate-authority-data": base64.b64encode(proxy.ca_pem).decode(),
                },
            }
        ],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "freshtoken"}}],
        "current-context": "test",
        "users": [
            {
                "name": "freshtoken",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": sys.executable,
                        "args": ["-m", "freshtoken.cli", "token", "--format", "k8s-exec"],
                        "env": [{"name": "FRESHTOKEN_STORE", "value": str(store)}],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
    }
    path.write_text(json.dumps(config))  # YAML is a superset of JSON
    return path


def test_kubectl_authenticates_through_freshtoken_and_a_second_call_needs_no_refresh(
    logged_in: LoggedIn, api_server: TLSProxy, tmp_path: Path
) -> None:
    """Real kubectl runs `freshtoken token --format k8s-exec` and sends the token; the
    second kubectl run gets the same token from the store with no network call."""
    require("kubectl")
    config = kubeconfig(tmp_path / "kubeconfig", api_server, logged_in.store)
    command = ["kubectl", "--kubeconfig", str(config), "get", "--raw", "/api/me"]
    env = {**logged_in.env, "HOME": str(tmp_path)}
    first = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["sub"] == "demo"
    second = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert second.returncode == 0, second.stderr
    token = logged_in.tokens().access_token
    # kubectl from the Google Cloud SDK asks /version first, to pick its own version.
    assert api_server.requests_for("/api/me") == [f"Bearer {token}"] * 2
    assert logged_in.server.stats()["token_requests"] == 0


def test_kubectl_gets_a_refreshed_token_when_the_stored_one_expired(
    logged_in: LoggedIn, api_server: TLSProxy, tmp_path: Path
) -> None:
    """An expired profile: kubectl's call refreshes once and authenticates with the new token."""
    require("kubectl")
    logged_in.expire()
    config = kubeconfig(tmp_path / "kubeconfig", api_server, logged_in.store)
    result = subprocess.run(
        ["kubectl", "--kubeconfig", str(config), "get", "--raw", "/api/me"],
        check=False,
        capture_output=True,
        text=True,
        env={**logged_in.env, "HOME": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert logged_in.server.stats()["refreshes"] == 1
    assert api_server.requests_for("/api/me") == [f"Bearer {logged_in.tokens().access_token}"]
