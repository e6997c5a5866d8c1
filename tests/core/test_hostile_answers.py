"""Hostile and odd token endpoint answers, served by a real listener over TCP: each becomes
RefreshFailed or SessionExpired with a message that says what was wrong and quotes no token."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jwt
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from listener import Answer, Listener, json_answer

import freshtoken.requests
from freshtoken import (
    DPoPKey,
    JSONRefresher,
    ManualClock,
    MemoryStore,
    OAuth2Refresher,
    RefreshFailed,
    SessionExpired,
    TokenManager,
    TokenResponseError,
    TokenSet,
)
from freshtoken.httpx import TokenAuth

ACCESS = "access-secret-1"
REFRESH = "refresh-secret-2"
NEW_ACCESS = "new-access-secret-3"
CURRENT = TokenSet(ACCESS, refresh_token=REFRESH)


def answered(
    answer: Answer, refresher: type[OAuth2Refresher | JSONRefresher] = OAuth2Refresher
) -> TokenSet | RefreshFailed | SessionExpired:
    """Refresh CURRENT at a listener that gives ``answer``: the new tokens or the error."""
    with Listener(lambda _: answer) as endpoint:
        if refresher is JSONRefresher:
            made: OAuth2Refresher | JSONRefresher = JSONRefresher(endpoint.url + "/refresh")
        else:
            made = OAuth2Refresher(endpoint.url + "/token", client_id="app")
        try:
            return made.refresh(CURRENT, ManualClock())
        except (RefreshFailed, SessionExpired) as error:
            return error
        finally:
            made.close()


def failure(answer: Answer, code: str = "malformed_response", **options: Any) -> RefreshFailed:
    outcome = answered(answer, **options)
    assert isinstance(outcome, RefreshFailed), outcome
    assert outcome.error == code
    for secret in (ACCESS, REFRESH, NEW_ACCESS):
        assert secret not in f"{outcome} {outcome!r} {outcome.description}"
    return outcome


def expired_session(
    endpoint: Listener, store: MemoryStore | None = None, **options: Any
) -> TokenManager:
    """A manager for ``endpoint`` whose access token has expired: a request refreshes first."""
    refresher = OAuth2Refresher(endpoint.url + "/token", client_id="app")
    retry = freshtoken.RetryPolicy(attempts=1)
    manager = TokenManager(refresher, store or MemoryStore(), retry=retry, **options)
    manager.set_tokens(TokenSet(ACCESS, refresh_token=REFRESH, expires_at=0.0))
    return manager


def tokens(**fields: Any) -> Answer:
    return json_answer({"access_token": NEW_ACCESS, "expires_in": 60, **fields})


def raw(body: bytes, status: int = 200) -> Answer:
    return Answer(status, (("Content-Type", "application/json"),), body)


# -- token types ------------------------------------------------------------------------------


@pytest.mark.parametrize("token_type", ["mac", "DPoP", "N_A", "x" * 500])
def test_a_token_type_other_than_bearer_is_a_clear_error(token_type: str) -> None:
    """freshtoken sends Bearer tokens: any other type is refused, naming it."""
    error = failure(tokens(token_type=token_type), "unsupported_token_type")
    assert f"{token_type[:40]!r}" in str(error).replace("...", "")
    assert "Bearer" in str(error)
    assert error.status == 200


def test_a_mac_token_never_goes_out_as_a_header() -> None:
    """The caller's request fails before it is sent; no API sees 'Authorization: mac ...'."""
    with (
        Listener(lambda _: tokens(token_type="mac")) as endpoint,
        Listener(lambda _: json_answer({})) as api,
    ):
        manager = expired_session(endpoint)
        with (
            httpx.Client(auth=TokenAuth(manager)) as client,
            pytest.raises(RefreshFailed) as caught,
        ):
            client.get(api.url + "/me")
    assert caught.value.error == "unsupported_token_type"
    assert api.received == []


@pytest.mark.parametrize("token_type", ["Bearer", "bearer", "BEARER", None, "absent"])
def test_bearer_in_any_case_or_missing_is_bearer(token_type: str | None) -> None:
    """token_type compares without case, and a missing (or null) one means Bearer."""
    fields = {} if token_type == "absent" else {"token_type": token_type}
    new = answered(tokens(**fields))
    assert isinstance(new, TokenSet)
    assert new.authorization == f"Bearer {NEW_ACCESS}"


def test_dpop_tokens_are_accepted_only_with_their_key() -> None:
    """A DPoP answer is refused unless DPoP is accepted, and then only with the key it is
    bound to."""
    data = {"access_token": "a", "token_type": "dpop"}
    with pytest.raises(TokenResponseError) as caught:
        TokenSet.from_response(data)
    assert caught.value.error == "unsupported_token_type"
    with pytest.raises(TokenResponseError, match="needs the DPoP key"):
        TokenSet.from_response(data, token_types=("Bearer", "DPoP"))
    key = DPoPKey.generate()
    accepted = TokenSet.from_response(data, token_types=("Bearer", "DPoP"), dpop_key=key)
    assert accepted.token_type == "DPoP"
    assert accepted.dpop_key == key


# -- characters a token may hold ------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "kind"),
    [
        ({"access_token": "tok\x07en-secret"}, "access_token", "a control character"),
        ({"access_token": "tok\ten-secret"}, "access_token", "a control character"),
        ({"access_token": "tök-secret"}, "access_token", "a non-ASCII character"),
        ({"access_token": "tok en-secret"}, "access_token", "a space"),
        ({"refresh_token": "ref\x00resh-secret"}, "refresh_token", "a control character"),
        ({"refresh_token": "réfresh-secret"}, "refresh_token", "a non-ASCII character"),
        ({"refresh_token": "ref\x7fresh-secret"}, "refresh_token", "a control character"),
    ],
)
def test_tokens_outside_vschar_are_a_malformed_answer(
    fields: dict[str, str], field: str, kind: str
) -> None:
    """RFC 6749 VSCHAR (no space in an access token): the message says what, never the token."""
    error = failure(tokens(**fields))
    assert f"{field} holds {kind}" in str(error)
    assert fields[field] not in str(error)


def test_a_refresh_token_may_hold_a_space() -> None:
    """VSCHAR includes the space; only the access token, which goes in a header, may not."""
    new = answered(tokens(refresh_token="a refresh token"))
    assert isinstance(new, TokenSet)
    assert new.refresh_token == "a refresh token"


def test_requests_gets_a_clear_error_not_the_token_in_a_unicode_error() -> None:
    """A non-ASCII access token once raised UnicodeEncodeError quoting 'Bearer <token>'."""
    with (
        Listener(lambda _: tokens(access_token="tök-secret-value")) as endpoint,
        Listener(lambda _: json_answer({})) as api,
    ):
        manager = expired_session(endpoint)
        with pytest.raises(RefreshFailed) as caught:
            requests.get(api.url, auth=freshtoken.requests.TokenAuth(manager), timeout=10)
    assert caught.value.error == "malformed_response"
    assert "tök-secret-value" not in str(caught.value)
    assert api.received == []


@pytest.mark.parametrize(
    "fields",
    [
        {"access_token": "a\x00b"},
        {"access_token": "é"},
        {"access_token": "a", "refresh_token": "r\n"},
        {"access_token": "a", "token_type": "Bearer\r\nX-Evil: 1"},
        {"access_token": "a", "expires_at": 10**400},
        {"access_token": "a", "obtained_at": float("nan")},
        {"access_token": "a", "refresh_at": "soon"},
    ],
)
def test_hand_made_and_stored_token_sets_follow_the_same_rules(fields: dict[str, Any]) -> None:
    """TokenSet(...) and TokenSet.from_dict (stores) refuse what an answer may not hold."""
    with pytest.raises(TokenResponseError):
        TokenSet(**fields)
    with pytest.raises(TokenResponseError):
        TokenSet.from_dict(fields)


# -- a 2xx answer that is an error ------------------------------------------------------------


def test_a_200_with_an_error_field_is_that_error() -> None:
    """GitHub-style endpoints answer errors with 200: the error code is what counts."""
    body = {"error": "bad_verification_code", "error_description": "The code is wrong."}
    error = failure(json_answer(body), "bad_verification_code")
    assert error.description == "The code is wrong."
    assert error.status == 200


def test_a_200_with_a_permanent_error_ends_the_session() -> None:
    """invalid_grant with a 200 ends the session exactly as with a 400: tokens cleared."""
    expired: list[BaseException] = []
    answer = json_answer({"error": "invalid_grant", "error_description": "revoked"})
    with Listener(lambda _: answer) as endpoint:
        store = MemoryStore()
        manager = expired_session(endpoint, store, on_session_expired=expired.append)
        with pytest.raises(SessionExpired) as caught:
            manager.get_tokens()
    assert (caught.value.error, caught.value.status) == ("invalid_grant", 200)
    assert store.load() is None
    assert len(expired) == 1


def test_a_null_error_field_is_no_error() -> None:
    """In-house APIs often send "error": null alongside the tokens."""
    assert isinstance(answered(tokens(error=None)), TokenSet)


# -- answers that cannot be read ---------------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
HUNDREDS_OF_DIGITS = b"9" * 400
UNREADABLE = {
    "expires_in-400-digits": (
        b'{"access_token": "new-access-secret-3", "expires_in": ' + HUNDREDS_OF_DIGITS + b"}",
        "more than 100 digits",
    ),
    "refresh_in-5000-digits": (
        b'{"access_token": "new-access-secret-3", "refresh_in": ' + b"9" * 5000 + b"}",
        "more than 100 digits",
    ),
    "expires_in-1e400": (
        b'{"access_token": "new-access-secret-3", "expires_in": 1e400}',
        "expires_in is not a finite number",
    ),
    "expires_in-string-1e400": (
        b'{"access_token": "new-access-secret-3", "expires_in": "1e400"}',
        "expires_in is not a finite number",
    ),
    "expires_in-NaN": (
        b'{"access_token": "new-access-secret-3", "expires_in": NaN}',
        "expires_in is not a finite number",
    ),
    "expires_in-a-thousand-years": (
        b'{"access_token": "new-access-secret-3", "expires_in": 31536000000}',
        "expires_in is implausibly large",
    ),
    "deeply-nested": (DEEP, "nested too deeply"),
    "deeply-nested-field": (
        b'{"access_token": "new-access-secret-3", "x": ' + DEEP + b"}",
        "nested too deeply",
    ),
    "latin-1": ('{"access_token": "new-access-secret-3", "x": "é"}'.encode("latin-1"), "UTF-8"),
    "json-array": (b'["new-access-secret-3"]', "a JSON array, not an object"),
    "json-string": (b'"new-access-secret-3"', "a JSON string, not an object"),
    "json-number": (b"12", "a JSON number, not an object"),
    "json-null": (b"null", "a JSON null, not an object"),
    "truncated": (b'{"access_token": "new-access-secret-3"', "is not JSON"),
    "empty": (b"", "is empty"),
    "two-megabytes": (
        b'{"access_token": "new-access-secret-3", "pad": "' + b"x" * (2 << 20) + b'"}',
        "more than any token answer",
    ),
}


@pytest.mark.parametrize(("body", "says"), UNREADABLE.values(), ids=list(UNREADABLE.keys()))
def test_unreadable_answers_are_malformed_responses(body: bytes, says: str) -> None:
    """Overflowing numbers, deep nesting, other encodings, non-objects: a clear error each."""
    assert says in str(failure(raw(body)))


def test_a_json_refresher_unwraps_a_few_levels_not_a_thousand() -> None:
    """{"data": {"data": ...}} as deep as JSON allows: unwrapping stops, with our error."""
    depth = 900
    body = b'{"data": ' * depth + b'{"access_token": "x"}' + b"}" * depth
    assert "no access_token" in str(failure(raw(body), refresher=JSONRefresher))
    shallow = json_answer({"data": {"tokens": {"access_token": NEW_ACCESS}}})
    new = answered(shallow, refresher=JSONRefresher)
    assert isinstance(new, TokenSet)
    assert new.access_token == NEW_ACCESS


def test_a_jwt_exp_of_hundreds_of_digits_means_unknown_expiry() -> None:
    """An exp claim no clock can hold is ignored (only a 401 will tell), not an overflow."""
    token = jwt.encode({"exp": 10**400}, "k" * 32, algorithm="HS256")
    new = answered(json_answer({"access_token": token}))
    assert isinstance(new, TokenSet)
    assert new.expires_at is None


def test_a_retry_after_of_unicode_digits_is_ignored() -> None:
    """'²' is a digit to str.isdigit but no number to float: the 429 stays a clean failure."""
    answer = json_answer({"error": "slow_down"}, 429, [("Retry-After", "\u00b2")])
    error = failure(answer, "slow_down")
    assert error.retry_after is None


# -- a property: whatever the body, only our errors --------------------------------------------

huge_integers = st.integers(min_value=10**300, max_value=10**400) | st.integers(
    min_value=-(10**400), max_value=-(10**300)
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | huge_integers
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
field = st.one_of(json_values, st.text(max_size=30))
documents = st.fixed_dictionaries(
    {"access_token": st.just(NEW_ACCESS) | field},  # mostly valid, so later fields are read
    optional={
        name: field
        for name in (
            "token_type",
            "refresh_token",
            "expires_in",
            "refresh_in",
            "scope",
            "error",
            "error_description",
        )
    },
)


def encode(document: Any) -> bytes:
    return json.dumps(document).encode()  # NaN and Infinity included, as servers send them


@settings(max_examples=300, deadline=None)
@given(
    status=st.sampled_from([200, 201, 400, 401, 403, 429, 500, 503]),
    body=st.one_of(documents.map(encode), st.binary(max_size=200), json_values.map(encode)),
)
def test_no_body_escapes_as_a_raw_exception(status: int, body: bytes) -> None:
    """Property: parse_response (sans I/O: an in-memory httpx.Response) returns tokens or
    raises RefreshFailed / SessionExpired, whatever the status and body."""
    refresher = OAuth2Refresher("http://127.0.0.1:1/token", client_id="app")
    response = httpx.Response(status, content=body)
    outcome: TokenSet | RefreshFailed | SessionExpired
    try:
        outcome = refresher.parse_response(response, sent_at=0.0, current=CURRENT)
    except (RefreshFailed, SessionExpired) as error:
        outcome = error
    if isinstance(outcome, TokenSet):
        assert outcome.authorization.startswith("Bearer ")
    else:
        assert ACCESS not in str(outcome)
        assert REFRESH not in str(outcome)
