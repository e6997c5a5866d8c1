"""WWW-Authenticate parsing (RFC 9110 11.6.1 / RFC 6750 3) and which 401s ask for a refresh."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from freshtoken._core.challenges import Challenge, parse_challenges
from freshtoken._core.policy import wants_refresh


def parsed(header: str | list[str]) -> list[tuple[str, dict[str, str], str | None]]:
    return [(c.scheme, dict(c.params), c.token68) for c in parse_challenges(header)]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Bearer realm="api"', [("bearer", {"realm": "api"}, None)]),
        (
            'Bearer realm="a, error=insufficient_scope", error="invalid_token"',
            [("bearer", {"realm": "a, error=insufficient_scope", "error": "invalid_token"}, None)],
        ),
        (
            'DPoP algs="ES256 PS256", error="use_dpop_nonce", Bearer error="invalid_token"',
            [
                ("dpop", {"algs": "ES256 PS256", "error": "use_dpop_nonce"}, None),
                ("bearer", {"error": "invalid_token"}, None),
            ],
        ),
        (
            r'Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"',
            [
                ("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}, None),
                ("basic", {"realm": "simple"}, None),
            ],
        ),
        ("bEaReR ErRoR = invalid_token", [("bearer", {"error": "invalid_token"}, None)]),
        ("Basic YWxhZGRpbjpvcGVuc2VzYW1l==", [("basic", {}, "YWxhZGRpbjpvcGVuc2VzYW1l==")]),
        ("Negotiate, Bearer", [("negotiate", {}, None), ("bearer", {}, None)]),
        (r'Bearer realm="a\\", error="x"', [("bearer", {"realm": "a\\", "error": "x"}, None)]),
        ('Bearer error="first", error="second"', [("bearer", {"error": "first"}, None)]),
    ],
    ids=[
        "quoted",
        "comma-and-error-inside-quotes",
        "two-challenges",
        "rfc-9110-example",
        "case-and-spaces",
        "token68",
        "bare-schemes",
        "escaped-backslash",
        "first-of-a-repeated-param",
    ],
)
def test_challenges_are_parsed_per_rfc_9110(
    header: str, expected: list[tuple[str, dict[str, str], str | None]]
) -> None:
    """Quoted strings are data, commas separate challenges and params, names ignore case."""
    assert parsed(header) == expected


def test_each_header_line_is_read_on_its_own() -> None:
    """An unterminated quote on one line cannot swallow the challenge on the next."""
    lines = ['Bearer realm="x, y', 'Bearer error="insufficient_scope"']
    assert parsed(lines) == [
        ("bearer", {}, None),
        ("bearer", {"error": "insufficient_scope"}, None),
    ]
    # Joined into one value (as requests and httpx's .get() do), the second challenge is lost:
    assert parsed(", ".join(lines)) == [("bearer", {"realm": "x, y, Bearer error="}, None)]


@pytest.mark.parametrize(
    "header",
    ["", ",,, ,", "=", '"', "\\", 'Bearer"x"', "@@@", '"unterminated, Bearer error="x', "\x00\r\n"],
)
def test_garbage_yields_no_invented_challenge(header: str) -> None:
    """Nothing readable as a challenge is invented from garbage."""
    assert all(c.scheme.isascii() and c.scheme != "" for c in parse_challenges(header))
    assert not any(c.param("error") == "x" for c in parse_challenges(header))


def test_params_after_an_unreadable_element_go_nowhere() -> None:
    """Whose params follow garbage is unknown: they are not pinned on the challenge before."""
    assert parsed('Bearer realm="x", Broken"y", error="insufficient_scope"') == [
        ("bearer", {"realm": "x"}, None)
    ]


@given(st.one_of(st.text(), st.lists(st.text(), max_size=4), st.none()))
def test_any_text_parses_without_raising(header: str | list[str] | None) -> None:
    """Property: whatever a server sends, the parser answers (possibly nothing), never raises."""
    for challenge in parse_challenges(header):
        assert isinstance(challenge, Challenge)
        assert challenge.scheme == challenge.scheme.lower()
    assert wants_refresh(401, header) in (True, False)


_TOKEN_CHARS = "!#$%&'*+-.^_`|~abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
tokens = st.text(alphabet=_TOKEN_CHARS, min_size=1, max_size=12)
values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@given(
    st.lists(
        st.tuples(tokens, st.dictionaries(tokens, values, min_size=1, max_size=4)),
        min_size=1,
        max_size=4,
    )
)
def test_well_formed_challenges_round_trip(
    challenges: list[tuple[str, dict[str, str]]],
) -> None:
    """Property: challenges written per the RFC, any value quoted, read back as written."""
    header = ", ".join(
        scheme + " " + ", ".join(f"{name}={quote(value)}" for name, value in params.items())
        for scheme, params in challenges
    )
    expected = []
    for scheme, params in challenges:
        firsts: dict[str, str] = {}
        for name, value in params.items():
            firsts.setdefault(name.lower(), value)
        expected.append((scheme.lower(), firsts, None))
    assert parsed(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        'Bearer realm="api"',
        'Bearer error="invalid_token", error_description="expired"',
        "Bearer error=invalid_token",
        'Bearer realm="a, error=insufficient_scope", error="invalid_token"',
        'DPoP error="use_dpop_nonce", Bearer error="invalid_token"',
        'DPoP error="invalid_token"',  # not ours to judge, and no Bearer challenge: refresh
        'Basic realm="x"',
        ['DPoP error="use_dpop_nonce"', 'Bearer error="invalid_token"'],
        "garbage ((",
    ],
)
def test_these_401s_ask_for_a_refresh(header: str | list[str] | None) -> None:
    """No Bearer error, or invalid_token, is a rejected token; other schemes do not count."""
    assert wants_refresh(401, header)


@pytest.mark.parametrize(
    "header",
    [
        'Bearer error="insufficient_scope", realm="x"',
        'Bearer realm="x, error=invalid_token", error="insufficient_scope"',
        'Bearer error="invalid_request"',
        ['Bearer realm="x"', 'Bearer error="insufficient_scope"'],
        'Basic realm="x", Bearer error="insufficient_scope"',
    ],
)
def test_these_401s_do_not(header: str | list[str]) -> None:
    """A Bearer error other than invalid_token is the caller's answer, not a refresh."""
    assert not wants_refresh(401, header)
