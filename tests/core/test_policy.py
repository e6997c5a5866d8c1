"""The sans-I/O decisions: freshness windows, rejections, token endpoint answers, backoff."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freshtoken import (
    Freshness,
    InsecureTransportError,
    RefreshFailed,
    RefreshPolicy,
    RetryPolicy,
    SessionExpired,
    TokenSet,
)
from freshtoken._core.policy import (
    check_transport,
    interpret_token_response,
    origin_of,
    parse_retry_after,
    wants_refresh,
)


def tokens(lifetime: float, obtained_at: float = 0.0, refresh_in: float | None = None) -> TokenSet:
    return TokenSet(
        "a",
        expires_at=obtained_at + lifetime,
        obtained_at=obtained_at,
        refresh_at=None if refresh_in is None else obtained_at + refresh_in,
    )


def test_long_lived_tokens_refresh_leeway_seconds_before_expiry() -> None:
    policy = RefreshPolicy(leeway=30, window_fraction=0.25)
    t = tokens(3600)
    assert policy.freshness(t, 3569) is Freshness.FRESH
    assert policy.freshness(t, 3570) is Freshness.STALE
    assert policy.freshness(t, 3600) is Freshness.EXPIRED


def test_short_lived_tokens_use_a_fraction_of_their_lifetime() -> None:
    """A 60 s token with 30 s leeway and fraction 0.25 refreshes at 45 s, not on every request."""
    policy = RefreshPolicy(leeway=30, window_fraction=0.25)
    t = tokens(60)
    assert policy.refresh_due_at(t) == 45
    assert policy.freshness(t, 44.9) is Freshness.FRESH


def test_server_refresh_in_hint_is_honoured() -> None:
    policy = RefreshPolicy(leeway=30)
    assert policy.refresh_due_at(tokens(3600, refresh_in=600)) == 600


def test_unknown_expiry_is_always_fresh() -> None:
    assert RefreshPolicy().freshness(TokenSet("a"), 1e12) is Freshness.FRESH


@given(
    lifetime=st.floats(min_value=0.001, max_value=1e7),
    leeway=st.floats(min_value=0, max_value=1e5),
    fraction=st.floats(min_value=0, max_value=0.99),
)
def test_refresh_window_never_exceeds_leeway_nor_the_fraction(
    lifetime: float, leeway: float, fraction: float
) -> None:
    """Property: the refresh falls due within the token's life, bounded by both knobs."""
    due = RefreshPolicy(leeway=leeway, window_fraction=fraction).refresh_due_at(tokens(lifetime))
    assert due is not None
    window = lifetime - due
    assert 0 <= window <= leeway + 1e-9
    assert window <= fraction * lifetime + 1e-6 * lifetime


@pytest.mark.parametrize(
    ("status", "challenge", "expected"),
    [
        (401, None, True),
        (401, 'Bearer realm="api"', True),
        (401, 'Bearer realm="api", error="invalid_token", error_description="expired"', True),
        (401, "Bearer error=invalid_token", True),
        (401, 'Bearer error="invalid_request"', False),
        (403, 'Bearer error="insufficient_scope", scope="admin"', False),
        (403, None, False),
        (200, None, False),
        (500, None, False),
    ],
)
def test_which_responses_ask_for_a_refresh(
    status: int, challenge: str | None, expected: bool
) -> None:
    assert wants_refresh(status, challenge) is expected


def test_refresh_statuses_are_configurable() -> None:
    assert wants_refresh(419, None, statuses={401, 419})
    assert not wants_refresh(401, None, statuses={419})


def body(document: object) -> bytes:
    return json.dumps(document).encode()


@pytest.mark.parametrize("error", ["invalid_grant", "invalid_client", "unauthorized_client"])
def test_permanent_token_endpoint_errors_end_the_session(error: str) -> None:
    with pytest.raises(SessionExpired) as caught:
        interpret_token_response(400, body({"error": error, "error_description": "nope"}))
    assert caught.value.error == error
    assert caught.value.description == "nope"
    assert caught.value.status == 400


def test_a_bare_401_from_an_in_house_refresh_endpoint_ends_the_session() -> None:
    with pytest.raises(SessionExpired):
        interpret_token_response(401, b"")


@pytest.mark.parametrize(
    ("status", "payload", "code"),
    [
        (500, body({"error": "server_error"}), "server_error"),
        (503, b"<html>down</html>", "server_error"),
        (429, body({"error": "slow_down"}), "slow_down"),
        (200, b'{"access_token": "a"', "malformed_response"),
        (200, b"[]", "malformed_response"),
        (408, b"", "http_error"),
        (400, body({"error": "temporarily_unavailable"}), "temporarily_unavailable"),
    ],
)
def test_transient_token_endpoint_answers_keep_the_session(
    status: int, payload: bytes, code: str
) -> None:
    with pytest.raises(RefreshFailed) as caught:
        interpret_token_response(status, payload, retry_after=3.0)
    assert caught.value.error == code


def test_error_descriptions_are_bounded() -> None:
    with pytest.raises(SessionExpired) as caught:
        interpret_token_response(
            400, body({"error": "invalid_grant", "error_description": "x" * 5000})
        )
    assert len(str(caught.value)) < 400


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryPolicy(attempts=5, initial=1, multiplier=2, maximum=5, jitter=0.5)
    rng = random.Random(7)
    delays = [policy.delay(n, rng=rng) for n in range(1, 7)]
    assert all(0.5 <= d <= 1 for d in delays[:1])
    assert all(d <= 5 for d in delays)
    assert delays[-1] >= 2.5  # capped at 5, jitter keeps at least half


def test_backoff_honours_retry_after_and_retries_lost_answers_at_once() -> None:
    policy = RetryPolicy(initial=0.1)
    assert policy.delay(1, RefreshFailed("slow_down", retry_after=7.0)) >= 7.0
    assert policy.delay(1, RefreshFailed("network_error", answer_lost=True)) == 0.0
    assert policy.delay(2, RefreshFailed("network_error", answer_lost=True)) > 0.0


def test_retry_after_parses_seconds_and_dates() -> None:
    assert parse_retry_after("120", now=0) == 120
    assert parse_retry_after("Thu, 01 Jan 1970 00:02:00 GMT", now=60) == 60
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


def test_origins_make_default_ports_explicit() -> None:
    assert origin_of("https://API.example.com/x") == origin_of("https://api.example.com:443/y")
    assert origin_of("http://example.com") != origin_of("https://example.com")
    with pytest.raises(ValueError, match="absolute"):
        origin_of("/relative")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://example.com", True),
        ("http://127.0.0.1:8000", True),
        ("http://localhost", True),
        ("http://[::1]:80", True),
        ("http://example.com", False),
        ("http://10.0.0.1", False),
    ],
)
def test_plain_http_is_refused_except_to_loopback(url: str, allowed: bool) -> None:
    origin = origin_of(url)
    if allowed:
        check_transport(origin, allow_insecure_http=False, what="a token")
    else:
        with pytest.raises(InsecureTransportError, match="plain HTTP"):
            check_transport(origin, allow_insecure_http=False, what="a token")
        check_transport(origin, allow_insecure_http=True, what="a token")
