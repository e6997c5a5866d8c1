"""AuthorizationRequest, stepped by hand (no I/O): the URL, the callback checks, the exchange."""

from __future__ import annotations

import base64
import hashlib
import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from freshtoken import AuthorizationRequest, ClientAuth, LoginFailed, ServerMetadata

METADATA = ServerMetadata(
    issuer="https://id.example",
    authorization_endpoint="https://id.example/authorize",
    token_endpoint="https://id.example/token",
    scopes_supported=("openid", "offline_access", "email"),
    authorization_response_iss_parameter_supported=True,
)


def start(**options: object) -> AuthorizationRequest:
    return AuthorizationRequest.start(
        METADATA,
        client_id="app",
        redirect_uri="http://127.0.0.1:8765/callback",
        **options,  # type: ignore[arg-type]
    )


def query_of(url: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}


def test_the_url_carries_pkce_state_nonce_and_scope() -> None:
    """S256 challenge of the remembered verifier, a fresh state, a nonce for openid."""
    request = start(params={"login_hint": "alice"})
    query = query_of(request.url)
    assert request.url.startswith("https://id.example/authorize?")
    digest = hashlib.sha256(request.code_verifier.encode()).digest()
    assert query["code_challenge"] == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert query["code_challenge_method"] == "S256"
    assert query["state"] == request.state
    assert query["nonce"] == request.nonce
    assert query["scope"] == "openid offline_access"
    assert query["login_hint"] == "alice"
    assert 43 <= len(request.code_verifier) <= 128
    other = start()
    assert (other.state, other.code_verifier, other.nonce) != (
        request.state,
        request.code_verifier,
        request.nonce,
    )


def test_no_nonce_without_openid() -> None:
    """A plain OAuth scope asks for no ID token, so no nonce."""
    request = start(scope="read")
    assert request.nonce is None
    assert "nonce" not in query_of(request.url)


def test_freshtoken_owns_the_security_parameters() -> None:
    """Extra params may not override state, PKCE or the redirect."""
    with pytest.raises(ValueError, match="state"):
        start(params={"state": "fixed"})


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        pytest.param({"code": "c", "state": None}, "state_mismatch", id="no-state"),
        pytest.param({"code": "c", "state": "other"}, "state_mismatch", id="other-state"),
        pytest.param({"code": "c", "iss": "https://evil.example"}, "issuer_mismatch", id="mix-up"),
        pytest.param({"code": "c", "iss": None}, "issuer_mismatch", id="iss-missing"),
        pytest.param({"error": "access_denied"}, "access_denied", id="denied"),
        pytest.param({}, "invalid_request", id="nothing"),
    ],
)
def test_callback_checks(answer: dict[str, str | None], error: str) -> None:
    """State first, then iss (RFC 9207), then the server's error, then the code."""
    request = start()
    params = {"state": request.state, "iss": "https://id.example", **answer}
    with pytest.raises(LoginFailed) as caught:
        request.code_from({k: v for k, v in params.items() if v is not None})
    assert caught.value.error == error


def test_callback_error_text_is_cleaned() -> None:
    """A server's error description from the URL is one printable line, bounded."""
    request = start()
    with pytest.raises(LoginFailed) as caught:
        request.code_from(
            {
                "state": request.state,
                "iss": "https://id.example",
                "error": "access_denied",
                "error_description": "no\r\nway\x00" + "x" * 500,
            }
        )
    assert "\n" not in str(caught.value)
    assert caught.value.description is not None
    assert len(caught.value.description) <= 200


def test_the_code_exchange_request() -> None:
    """grant_type, code, the same redirect URI and the verifier, with client authentication."""
    request = start()
    code = request.code_from({"state": request.state, "iss": "https://id.example", "code": "c0de"})
    sent = request.token_request(code, ClientAuth("app", "s3cret"))
    assert str(sent.url) == "https://id.example/token"
    form = {k: v[0] for k, v in parse_qs(sent.content.decode()).items()}
    assert form == {
        "grant_type": "authorization_code",
        "code": "c0de",
        "redirect_uri": "http://127.0.0.1:8765/callback",
        "code_verifier": request.code_verifier,
    }
    assert sent.headers["authorization"].startswith("Basic ")
    with pytest.raises(ValueError, match="another client_id"):
        request.token_request(code, ClientAuth("someone-else"))


def test_an_id_token_for_another_login_is_refused() -> None:
    """The exchange's answer must carry this login's nonce."""
    request = start()
    header = base64.urlsafe_b64encode(b'{"alg":"ES256"}').rstrip(b"=").decode()
    claims = {
        "iss": "https://id.example",
        "aud": "app",
        "exp": 4_000_000_000,
        "iat": 1,
        "nonce": "replayed",
    }
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    answer = httpx.Response(
        200,
        json={"access_token": "a", "token_type": "Bearer", "id_token": f"{header}.{body}.c2ln"},
        request=httpx.Request("POST", "https://id.example/token"),
    )
    with pytest.raises(LoginFailed, match="nonce"):
        request.tokens_from(answer, sent_at=1_000)


def test_openid_without_an_id_token_is_refused() -> None:
    """openid asked and granted, but no id_token: not an OpenID Connect answer."""
    request = start()
    answer = httpx.Response(
        200,
        json={"access_token": "a", "token_type": "Bearer", "scope": "openid"},
        request=httpx.Request("POST", "https://id.example/token"),
    )
    with pytest.raises(LoginFailed, match="no id_token"):
        request.tokens_from(answer, sent_at=1_000)


def test_saved_and_restored_between_requests() -> None:
    """to_dict/from_dict carry a request across a server's two halves; the repr hides secrets."""
    request = start()
    restored = AuthorizationRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert restored == request
    for secret in (request.state, request.code_verifier, request.nonce or ""):
        assert secret not in repr(request)
    with pytest.raises(ValueError, match="not a saved"):
        AuthorizationRequest.from_dict({"url": "x"})
    with pytest.raises(TypeError, match="wrong type"):
        AuthorizationRequest.from_dict({**request.to_dict(), "iss_required": "yes"})


def test_a_server_without_an_authorization_endpoint() -> None:
    """No authorization_endpoint: a clear LoginFailed naming the alternatives."""
    bare = ServerMetadata(issuer="https://id.example", token_endpoint="https://id.example/token")
    with pytest.raises(LoginFailed, match="device or password"):
        AuthorizationRequest.start(bare, client_id="app", redirect_uri="http://127.0.0.1/cb")
