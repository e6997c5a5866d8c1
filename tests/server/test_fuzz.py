"""Whatever a client sends, the server answers below 500, and every error is JSON."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, urlencode

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from freshtoken.server import ReferenceServer

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,  # no .hypothesis directory in the tree
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Header values h11 lets through: visible ASCII, inner spaces and obs-text (no CR, LF, NUL).
header_bytes = st.binary(max_size=80).map(
    lambda raw: bytes(b for b in raw if b == 0x20 or 0x21 <= b <= 0x7E or b >= 0x80).strip()
)
text = st.text(max_size=40)
param_names = st.sampled_from(
    [
        "grant_type",
        "username",
        "password",
        "refresh_token",
        "client_id",
        "client_secret",
        "scope",
        "token",
        "code",
        "code_verifier",
        "redirect_uri",
        "device_code",
        "client_assertion",
        "client_assertion_type",
        "assertion",
        "subject_token",
        "subject_token_type",
        "actor_token",
        "actor_token_type",
        "requested_token_type",
        "audience",
        "resource",
    ]
) | st.text(max_size=10)
param_values = (
    st.sampled_from(["password", "refresh_token", "client_credentials", "demo", "demo-secret"])
    | st.sampled_from(["demo-public", "read", "read write", "admin", "alice", "", "openid"])
    | st.sampled_from(
        [
            "authorization_code",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "urn:ietf:params:oauth:grant-type:token-exchange",
            "urn:ietf:params:oauth:token-type:access_token",
            "urn:ietf:params:oauth:token-type:jwt",
            "freshtoken-api",
            "http://127.0.0.1:1/callback",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJkZW1vIn0.x",
            "a" * 43,
        ]
    )
    | text
)
authorize_names = st.sampled_from(
    [
        "response_type",
        "client_id",
        "redirect_uri",
        "state",
        "scope",
        "code_challenge",
        "code_challenge_method",
        "nonce",
        "prompt",
    ]
) | st.text(max_size=10)
authorize_values = (
    st.sampled_from(["code", "token", "demo", "demo-public", "S256", "plain", "none", "openid"])
    | st.sampled_from(
        [
            "http://127.0.0.1:1/callback",
            "http://[::1]:99999/callback",
            "http://localhost/callback?x=1",
            "https://evil.example/",
            "a" * 43,
        ]
    )
    | text
)
form_names = st.sampled_from(
    ["request_id", "action", "username", "password", "user_code"]
) | st.text(max_size=10)
form_values = st.sampled_from(["approve", "deny", "demo", "", "BCDF-GHJK"]) | text
forms = st.lists(st.tuples(param_names, param_values), max_size=8).map(urlencode)
raw_bodies = st.binary(max_size=300)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(
    st.sampled_from(["username", "password", "refresh_token", "scope", "name"]) | text,
    json_values | st.sampled_from(["demo", "alice"]),
    max_size=5,
)
content_types = (
    st.sampled_from(
        [
            None,
            b"application/x-www-form-urlencoded",
            b"application/x-www-form-urlencoded; charset=latin-1",
            b"application/json",
            b"text/plain",
            b"multipart/form-data; boundary=x",
        ]
    )
    | header_bytes
)


def basic_of(raw: bytes) -> bytes:
    return b"Basic " + base64.b64encode(raw)


authorizations = st.one_of(
    st.none(),
    header_bytes,
    st.just(basic_of(b"demo:demo-secret")),
    st.binary(max_size=40).map(basic_of),
    st.builds(lambda t: b"Bearer " + t, header_bytes),
)


def assert_sane(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.headers.get("content-type", "").startswith("text/html"):
        assert response.text.startswith("<!DOCTYPE html>")
    elif response.status_code >= 400:
        body = response.json()
        assert isinstance(body["error"], str)
        assert isinstance(body["error_description"], str)
    elif response.headers.get("content-type") == "application/json":
        response.json()


def send(
    http: httpx.Client,
    method: str,
    url: str,
    *,
    body: bytes,
    content_type: bytes | None,
    authorization: bytes | None,
) -> httpx.Response:
    headers: dict[bytes, bytes] = {}
    if content_type is not None:
        headers[b"Content-Type"] = content_type
    if authorization is not None:
        headers[b"Authorization"] = authorization.strip()
    return http.request(method, url, content=body, headers=headers)


@FUZZ
@given(
    endpoint=st.sampled_from(["/oauth/token", "/oauth/revoke", "/oauth/device_authorization"]),
    body=forms.map(str.encode) | raw_bodies,
    content_type=content_types,
    authorization=authorizations,
)
def test_fuzz_token_endpoints(
    oauth_server: ReferenceServer,
    http: httpx.Client,
    *,
    endpoint: str,
    body: bytes,
    content_type: bytes | None,
    authorization: bytes | None,
) -> None:
    response = send(
        http,
        "POST",
        oauth_server.url + endpoint,
        body=body,
        content_type=content_type,
        authorization=authorization,
    )
    assert_sane(response)


@FUZZ
@given(
    query=st.lists(st.tuples(authorize_names, authorize_values), max_size=9),
    valid_start=st.booleans(),
)
def test_fuzz_authorize_requests(
    oauth_server: ReferenceServer,
    http: httpx.Client,
    *,
    query: list[tuple[str, str]],
    valid_start: bool,
) -> None:
    """Any authorization request gets a page or a redirect, never a 500."""
    if valid_start:
        query = [
            ("response_type", "code"),
            ("client_id", "demo-public"),
            ("redirect_uri", "http://127.0.0.1:1/callback"),
            *query,
        ]
    response = http.get(f"{oauth_server.url}/oauth/authorize?{urlencode(query)}")
    assert_sane(response)
    if response.status_code == 303:
        assert response.headers["location"].startswith("http://127.0.0.1:1/callback")


@FUZZ
@given(
    endpoint=st.sampled_from(["/oauth/authorize", "/device"]),
    fields=st.lists(st.tuples(form_names, form_values), max_size=6),
    raw=raw_bodies,
    use_raw=st.booleans(),
    content_type=content_types,
    with_live_request=st.booleans(),
)
def test_fuzz_login_forms(
    oauth_server: ReferenceServer,
    http: httpx.Client,
    *,
    endpoint: str,
    fields: list[tuple[str, str]],
    raw: bytes,
    use_raw: bool,
    content_type: bytes | None,
    with_live_request: bool,
) -> None:
    """Whatever a browser (or not a browser) posts to a login form, the answer is below 500."""
    if with_live_request and not use_raw:
        fields = [("request_id", _pending_request(oauth_server, http)), *fields]
    body = raw if use_raw else urlencode(fields).encode()
    response = send(
        http,
        "POST",
        oauth_server.url + endpoint,
        body=body,
        content_type=content_type,
        authorization=None,
    )
    assert_sane(response)


def _pending_request(server: ReferenceServer, http: httpx.Client) -> str:
    """A live login form's request id."""
    page = http.get(
        f"{server.authorize_url}?"
        + urlencode(
            {
                "response_type": "code",
                "client_id": "demo",
                "redirect_uri": "http://127.0.0.1:1/callback",
            }
        )
    )
    marker = 'name="request_id" value="'
    start = page.text.index(marker) + len(marker)
    return page.text[start : page.text.index('"', start)]


@FUZZ
@given(
    endpoint=st.sampled_from(["/auth/login", "/auth/refresh"]),
    body=json_objects.map(lambda o: json.dumps(o).encode()) | raw_bodies,
    content_type=content_types,
)
def test_fuzz_json_endpoints(
    oauth_server: ReferenceServer,
    http: httpx.Client,
    *,
    endpoint: str,
    body: bytes,
    content_type: bytes | None,
) -> None:
    response = send(
        http,
        "POST",
        oauth_server.url + endpoint,
        body=body,
        content_type=content_type,
        authorization=None,
    )
    assert_sane(response)


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]),
    path=st.sampled_from(
        ["/api/me", "/api/items", "/api/admin", "/api/echo", "/api/redirect", "/api/items/1"]
    )
    | st.sampled_from(["/oauth/userinfo", "/device", "/oauth/authorize"])
    | text.map(lambda t: "/api/items/" + quote(t, safe="")),
    query=st.lists(st.tuples(st.sampled_from(["to", "status", "x"]), text), max_size=3),
    body=json_objects.map(lambda o: json.dumps(o).encode()) | raw_bodies,
    content_type=content_types,
    token_kind=st.sampled_from(["valid", "mutated", "fuzzed", "none"]),
    fuzzed=authorizations,
    position=st.integers(min_value=0),
)
def test_fuzz_api(
    oauth_server: ReferenceServer,
    http: httpx.Client,
    *,
    method: str,
    path: str,
    query: list[tuple[str, str]],
    body: bytes,
    content_type: bytes | None,
    token_kind: str,
    fuzzed: bytes | None,
    position: int,
) -> None:
    token: str = _token(oauth_server)
    authorization: bytes | None = {
        "valid": f"Bearer {token}".encode(),
        "mutated": f"Bearer {_mutate(token, position)}".encode(),
        "fuzzed": fuzzed,
        "none": None,
    }[token_kind]
    url = httpx.URL(oauth_server.url + path).copy_with(query=urlencode(query).encode())
    response = send(
        http,
        method,
        str(url),
        body=body,
        content_type=content_type,
        authorization=authorization,
    )
    if method == "HEAD":
        assert response.status_code < 500
    else:
        assert_sane(response)


_tokens: dict[str, str] = {}


def _token(server: ReferenceServer) -> str:
    """One login per server, reused across examples."""
    if server.url not in _tokens:
        _tokens[server.url] = server.login("admin", "admin")["access_token"]
    return _tokens[server.url]


def _mutate(token: str, position: int) -> str:
    index = position % len(token)
    replacement = "A" if token[index] != "A" else "B"
    return token[:index] + replacement + token[index + 1 :]
