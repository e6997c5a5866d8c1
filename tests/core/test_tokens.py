"""TokenSet: parsing token responses, expiry arithmetic, redaction."""

from __future__ import annotations

import time
from email.utils import formatdate

import jwt
import pytest

from freshtoken import TokenResponseError, TokenSet

SECRET_ACCESS = "access-secret-value"
SECRET_REFRESH = "refresh-secret-value"


def test_expiry_counts_from_the_time_the_request_was_sent() -> None:
    """expires_at is the sent time plus expires_in, not the time the answer was read."""
    tokens = TokenSet.from_response(
        {"access_token": "a", "expires_in": 60, "token_type": "bearer"}, sent_at=1000.0
    )
    assert tokens.expires_at == 1060.0
    assert tokens.obtained_at == 1000.0
    assert tokens.lifetime == 60.0
    assert tokens.authorization == "Bearer a"


def test_string_expires_in_is_accepted() -> None:
    """Some servers send expires_in as a string; it is still a number of seconds."""
    assert (
        TokenSet.from_response({"access_token": "a", "expires_in": "30"}, sent_at=0).expires_at
        == 30
    )


def test_jwt_exp_is_used_without_expires_in_and_corrected_for_server_skew() -> None:
    """Without expires_in the JWT exp is read, shifted by the skew the Date header shows."""
    server_now = 2_000_000_000
    token = jwt.encode({"exp": server_now + 300}, "k" * 32, algorithm="HS256")
    local_now = server_now - 120  # the client's clock is two minutes behind the server's
    tokens = TokenSet.from_response(
        {"access_token": token},
        sent_at=local_now,
        date_header=formatdate(server_now, usegmt=True),
    )
    assert tokens.expires_at == pytest.approx(local_now + 300)


def test_unknown_expiry_for_opaque_tokens_without_expires_in() -> None:
    """An opaque token with no expires_in has no known expiry: only a 401 can tell."""
    tokens = TokenSet.from_response({"access_token": "opaque"}, sent_at=5.0)
    assert tokens.expires_at is None
    assert not tokens.is_expired(1e12)


def test_refresh_token_and_scope_are_kept_when_the_answer_omits_them() -> None:
    """RFC 6749 section 6: no new refresh token means the old one stays valid."""
    previous = TokenSet("old", refresh_token="r1", scope="read write")
    tokens = TokenSet.from_response({"access_token": "new"}, sent_at=0, previous=previous)
    assert tokens.refresh_token == "r1"
    assert tokens.scope == "read write"
    rotated = TokenSet.from_response(
        {"access_token": "new", "refresh_token": "r2", "scope": "read"}, previous=previous
    )
    assert (rotated.refresh_token, rotated.scope) == ("r2", "read")


def test_refresh_in_hint_sets_refresh_at() -> None:
    tokens = TokenSet.from_response(
        {"access_token": "a", "expires_in": 100, "refresh_in": 40}, sent_at=10
    )
    assert tokens.refresh_at == 50


def test_default_sent_time_is_now() -> None:
    """from_response(json) alone, as in the README, still yields a usable expiry."""
    before = time.time()
    tokens = TokenSet.from_response({"access_token": "a", "expires_in": 60})
    assert tokens.expires_at is not None
    assert before + 60 <= tokens.expires_at <= time.time() + 60


@pytest.mark.parametrize(
    "document",
    [
        [],
        {},
        {"access_token": ""},
        {"access_token": 5},
        {"access_token": "a b"},
        {"access_token": "a\r\nX-Evil: 1"},
        {"access_token": "a", "expires_in": "soon"},
        {"access_token": "a", "expires_in": -1},
        {"access_token": "a", "expires_in": float("nan")},
        {"access_token": "a", "expires_in": True},
        {"access_token": "a", "refresh_token": 7},
        {"access_token": "a", "scope": ["read"]},
        {"access_token": "a", "token_type": ""},
    ],
)
def test_malformed_token_responses_are_rejected_with_a_reason(document: object) -> None:
    with pytest.raises(TokenResponseError) as caught:
        TokenSet.from_response(document, sent_at=0)  # type: ignore[arg-type]
    assert str(caught.value)


def test_repr_and_str_reveal_no_secret() -> None:
    tokens = TokenSet(SECRET_ACCESS, refresh_token=SECRET_REFRESH, expires_at=10.0, scope="read")
    for text in (repr(tokens), str(tokens), f"{tokens}", repr([tokens])):
        assert SECRET_ACCESS not in text
        assert SECRET_REFRESH not in text
    assert "has_refresh_token=True" in repr(tokens)


def test_dict_round_trip_and_validation() -> None:
    tokens = TokenSet("a", refresh_token="r", expires_at=1.5, obtained_at=0.5, scope="s")
    assert TokenSet.from_dict(tokens.to_dict()) == tokens
    with pytest.raises(TokenResponseError):
        TokenSet.from_dict({"access_token": "a", "surprise": 1})
    with pytest.raises(TokenResponseError):
        TokenSet.from_dict({"access_token": "a", "expires_at": "tomorrow"})
    with pytest.raises(TokenResponseError):
        TokenSet.from_dict({"access_token": "a", "expires_at": float("inf")})


def test_token_sets_are_immutable() -> None:
    tokens = TokenSet("a")
    with pytest.raises(AttributeError):
        tokens.access_token = "b"  # type: ignore[misc]
