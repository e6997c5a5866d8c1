"""The wire pieces of resource logins, stepped by hand: RFC 9728 metadata, RFC 7591
registration answers, RFC 8707 canonical resources, scope choice and step-up."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from freshtoken import LoginFailed
from freshtoken._oauth.discovery import ServerMetadata
from freshtoken._oauth.registration import (
    ClientRegistration,
    registration_flow,
    registration_from,
)
from freshtoken._oauth.resources import (
    LARGEST_METADATA,
    ResourceChallenge,
    ResourceMetadata,
    canonical_resource,
    choose_scope,
    resource_metadata_flow,
    resource_metadata_urls,
    step_up_scope,
)

API = "https://API.example.com:443/mcp/"
DOCUMENT = {
    "resource": "https://api.example.com/mcp",
    "authorization_servers": ["https://login.example.com"],
    "scopes_supported": ["tools:read", "tools:call"],
}


def _answer(request: httpx.Request, status: int, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, request=request)


def _run(flow: Any, answers: list[tuple[int, Any]]) -> tuple[Any, list[str]]:
    """Drive ``flow`` with ``answers`` in order; returns its result and the URLs asked."""
    asked: list[str] = []
    request = next(flow)
    for status, body in answers:
        asked.append(str(request.url))
        try:
            request = flow.send(_answer(request, status, body))
        except StopIteration as done:
            return done.value, asked
    raise AssertionError(f"the flow wanted more answers after {asked}")


def test_canonical_resource_is_lower_case_without_default_port_slash_query_fragment() -> None:
    """RFC 8707 section 2 and the MCP canonical server URI."""
    assert canonical_resource(API) == "https://api.example.com/mcp"
    assert canonical_resource("http://127.0.0.1:8080/a/b?x=1#f") == "http://127.0.0.1:8080/a/b"
    assert canonical_resource("https://example.com/") == "https://example.com"
    with pytest.raises(ValueError, match="not an absolute"):
        canonical_resource("/relative")


def test_well_known_urls_are_path_aware_then_the_origin() -> None:
    """RFC 9728 section 3.1: the path goes after the well-known part."""
    assert resource_metadata_urls(API) == [
        "https://api.example.com/.well-known/oauth-protected-resource/mcp",
        "https://api.example.com/.well-known/oauth-protected-resource",
    ]


def test_the_challenge_url_is_tried_first() -> None:
    """A 401's resource_metadata is where the metadata is looked for first."""
    flow = resource_metadata_flow(API, metadata_url="https://api.example.com/prm")
    metadata, asked = _run(flow, [(200, DOCUMENT)])
    assert asked == ["https://api.example.com/prm"]
    assert metadata.authorization_server == "https://login.example.com"
    assert metadata.scopes_supported == ("tools:read", "tools:call")


def test_a_missing_document_falls_back_to_the_next_url() -> None:
    metadata, asked = _run(resource_metadata_flow(API), [(404, {}), (200, DOCUMENT)])
    assert asked[1] == "https://api.example.com/.well-known/oauth-protected-resource"
    assert metadata.resource == "https://api.example.com/mcp"


def test_the_resources_own_challenge_names_the_metadata_last() -> None:
    """Nothing at the well-known URLs: a request without a token gets the 401 that says."""
    flow = resource_metadata_flow(API)
    request = _request(next(flow))
    for _ in range(2):
        request = _request(flow.send(_answer(request, 404, {})))
    assert str(request.url) == "https://api.example.com/mcp/"  # the URL as given
    assert "Authorization" not in request.headers
    challenge = 'Bearer resource_metadata="https://api.example.com/meta/mcp"'
    request = _request(
        flow.send(httpx.Response(401, headers={"WWW-Authenticate": challenge}, request=request))
    )
    assert str(request.url) == "https://api.example.com/meta/mcp"
    with pytest.raises(StopIteration) as done:
        flow.send(_answer(request, 200, DOCUMENT))
    assert done.value.value.resource == "https://api.example.com/mcp"


def _request(step: object) -> httpx.Request:
    assert isinstance(step, httpx.Request)
    return step


def test_metadata_for_another_resource_is_refused() -> None:
    """RFC 9728 section 3.3: the resource must be the URL asked for (or a path prefix)."""
    other = {**DOCUMENT, "resource": "https://evil.example.com/mcp"}
    with pytest.raises(LoginFailed) as refused:
        _run(resource_metadata_flow(API), [(200, other), (200, other), (401, {})])
    assert refused.value.error == "resource_mismatch"
    assert "evil.example.com" in str(refused.value)


def test_a_path_prefix_resource_covers_the_url() -> None:
    metadata = ResourceMetadata.from_document(
        {**DOCUMENT, "resource": "https://api.example.com"}, url=API
    )
    assert metadata.resource == "https://api.example.com"
    with pytest.raises(LoginFailed):
        ResourceMetadata.from_document(
            {**DOCUMENT, "resource": "https://api.example.com/m"}, url=API
        )


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ({**DOCUMENT, "authorization_servers": []}, "no authorization_servers"),
        ({**DOCUMENT, "authorization_servers": ["http://login.example.com"]}, "plain HTTP"),
        ({**DOCUMENT, "scopes_supported": "a b"}, "not a list"),
        ({"authorization_servers": ["https://x"]}, "names no resource"),
    ],
)
def test_broken_metadata_is_a_clear_login_failure(document: dict[str, Any], words: str) -> None:
    with pytest.raises(LoginFailed, match=words):
        ResourceMetadata.from_document(document, url=API)


def test_oversized_and_non_json_answers_are_refused_with_what_was_tried() -> None:
    huge = b'{"resource": "' + b"x" * LARGEST_METADATA + b'"}'
    with pytest.raises(LoginFailed) as refused:
        _run(resource_metadata_flow(API), [(200, huge), (200, b"<html>"), (404, {})])
    message = str(refused.value)
    assert "over 65536 bytes" in message
    assert "is not a JSON object" in message


def test_challenge_parameters() -> None:
    challenge = ResourceChallenge.parse(
        [
            'Basic realm="x"',
            'Bearer error="insufficient_scope", scope="a b", resource_metadata="https://r/prm"',
        ]
    )
    assert challenge.insufficient_scope
    assert challenge.scope == "a b"
    assert challenge.resource_metadata == "https://r/prm"
    assert ResourceChallenge.parse(None) == ResourceChallenge()


def test_scope_is_the_challenges_else_every_listed_scope() -> None:
    metadata = ResourceMetadata.from_document(DOCUMENT, url=API)
    assert choose_scope("tools:call", metadata) == "tools:call"
    assert choose_scope(None, metadata) == "tools:read tools:call"
    assert choose_scope(None, None) is None


def test_step_up_asks_for_the_union_and_nothing_when_nothing_is_added() -> None:
    assert step_up_scope("read write", None, "admin read") == "read write admin"
    assert step_up_scope(None, "read", "admin") == "read admin"
    assert step_up_scope("read admin", None, "admin") is None
    assert step_up_scope("read", None, None) is None


SERVER = ServerMetadata.from_document(
    {
        "issuer": "https://login.example.com",
        "token_endpoint": "https://login.example.com/token",
        "registration_endpoint": "https://login.example.com/register",
    },
    issuer="https://login.example.com",
)


def test_registration_sends_a_native_public_client_and_reads_the_answer() -> None:
    flow = registration_flow(
        SERVER, client_name="my tool", redirect_uris=["http://127.0.0.1/callback"]
    )
    request = next(flow)
    assert isinstance(request, httpx.Request)
    sent = json.loads(request.content)
    assert sent["token_endpoint_auth_method"] == "none"
    assert sent["grant_types"] == ["authorization_code", "refresh_token"]
    assert sent["client_name"] == "my tool"
    with pytest.raises(StopIteration) as done:
        flow.send(_answer(request, 201, {"client_id": "c-1", "token_endpoint_auth_method": "none"}))
    registration: ClientRegistration = done.value.value
    assert registration.client_id == "c-1"
    assert registration.issuer == "https://login.example.com"
    assert ClientRegistration.from_dict(registration.to_dict()) == registration


def test_a_secret_is_kept_out_of_the_repr() -> None:
    answer = {
        "client_id": "c",
        "client_secret": "s3cr3t",
        "token_endpoint_auth_method": "client_secret_basic",
    }
    request = httpx.Request("POST", "https://login.example.com/register")
    registration = registration_from(
        _answer(request, 201, answer), issuer="https://login.example.com", asked_method="none"
    )
    assert registration.client_secret == "s3cr3t"
    assert "s3cr3t" not in repr(registration)


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, {"error": "invalid_redirect_uri", "error_description": "no"}, "invalid_redirect_uri"),
        (400, {"error": "invalid_client_metadata"}, "invalid_client_metadata"),
        (500, b"oops", "registration_failed"),
        (201, {"client_secret": "x"}, "registration_failed"),
        (
            201,
            {"client_id": "c", "token_endpoint_auth_method": "tls_client_auth"},
            "registration_failed",
        ),
        (
            201,
            {"client_id": "c", "token_endpoint_auth_method": "client_secret_post"},
            "registration_failed",
        ),
    ],
)
def test_registration_failures_are_login_failures(status: int, body: Any, error: str) -> None:
    request = httpx.Request("POST", "https://login.example.com/register")
    with pytest.raises(LoginFailed) as refused:
        registration_from(
            _answer(request, status, body), issuer="https://login.example.com", asked_method="none"
        )
    assert refused.value.error == error


def test_a_server_without_registration_says_to_pass_a_client_id() -> None:
    bare = ServerMetadata.from_document(
        {"issuer": "https://x.example.com"}, issuer="https://x.example.com"
    )
    with pytest.raises(LoginFailed, match="pass client_id="):
        next(registration_flow(bare, client_name="t", redirect_uris=["http://127.0.0.1/cb"]))
