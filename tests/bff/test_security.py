"""The BFF's pure checks: where a login or logout may return to (no open redirect, whatever
the trick), the session cookie's flags, and which proxied paths may go upstream."""

from __future__ import annotations

import pytest

from freshtoken.bff import BFF
from freshtoken.bff._security import (
    check_cookie_name,
    cookie_header,
    csrf_ok,
    expired_cookie_header,
    forwardable_path,
    safe_return_to,
)

ORIGIN = "https://app.example.com"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/", "/"),
        ("/orders?id=3#top", "/orders?id=3#top"),
        ("/a/b%20c", "/a/b%20c"),
        ("/@evil.example", "/@evil.example"),  # a path on our origin, not userinfo
        ("https://app.example.com/orders", "/orders"),
        ("https://APP.example.com", "/"),
    ],
)
def test_paths_and_own_origin_urls_are_accepted(given: str, expected: str) -> None:
    """Paths stay as given; an absolute URL of the app's own origin becomes its path."""
    assert safe_return_to(given, ORIGIN) == expected


@pytest.mark.parametrize(
    "given",
    [
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\\/evil.example",
        "https:evil.example",
        "https:/evil.example",
        "http://app.example.com/",  # another scheme is another origin
        "https://app.example.com:8443/",
        "https://evil.example/",
        "https://app.example.com@evil.example/",
        "https://user:pass@app.example.com/",
        "javascript:alert(1)",
        "data:text/html,hi",
        "evil.example",
        "/%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "/\t/evil.example",
        "/%09/evil.example",
        "/\r\nSet-Cookie: x=1",
        "/%0d%0aSet-Cookie:%20x=1",
        " /orders",
        "",
        "/" + "a" * 3000,
    ],
)
def test_every_open_redirect_trick_is_refused(given: str) -> None:
    """Other origins, protocol-relative, backslashes, bare schemes, userinfo, control
    characters and their percent-encodings: all refused."""
    assert safe_return_to(given, ORIGIN) is None


def test_the_session_cookie_has_every_flag() -> None:
    """__Host- cookie: Secure, HttpOnly, SameSite=Lax, Path=/, no Domain, a Max-Age."""
    bff = BFF(client_id="c", secret_key="s" * 32, token_url="https://idp.example/token")
    header = bff.session_cookie("A" * 43)
    parts = header.split("; ")
    assert parts[0] == "__Host-bff=" + "A" * 43
    assert set(parts[1:]) == {
        "Path=/",
        "HttpOnly",
        "SameSite=Lax",
        "Secure",
        f"Max-Age={7 * 24 * 3600}",
    }
    assert "domain" not in header.lower()


def test_cookie_settings_that_browsers_would_drop_are_refused() -> None:
    """A __Host- or __Secure- cookie without Secure, SameSite=None without Secure, a bad name."""
    with pytest.raises(ValueError, match="must be Secure"):
        check_cookie_name("__Host-bff", secure=False)
    with pytest.raises(ValueError, match="SameSite=None needs Secure"):
        cookie_header("bff", "x", max_age=1, same_site="none", secure=False)
    with pytest.raises(ValueError, match="not a valid cookie name"):
        check_cookie_name("bad name", secure=True)
    with pytest.raises(ValueError, match="cookie-octets"):
        cookie_header("bff", "a;b", max_age=1, same_site="lax", secure=True)


def test_strict_and_non_prefixed_cookies_when_configured() -> None:
    """SameSite=Strict and a plain name (secure_cookies=False for plain-http dev hosts)."""
    header = cookie_header("sid", "v", max_age=None, same_site="strict", secure=False)
    assert header == "sid=v; Path=/; HttpOnly; SameSite=Strict"
    assert expired_cookie_header("sid", same_site="lax", secure=True).endswith("Max-Age=0")


def test_csrf_needs_the_exact_header_and_no_cross_site_fetch() -> None:
    """The custom header with its value, and Sec-Fetch-Site other than cross-site."""
    assert csrf_ok({"x-csrf": "1"}, "x-csrf", "1")
    assert csrf_ok({"x-csrf": "1", "sec-fetch-site": "same-origin"}, "x-csrf", "1")
    assert not csrf_ok({}, "x-csrf", "1")
    assert not csrf_ok({"x-csrf": "true"}, "x-csrf", "1")
    assert not csrf_ok({"x-csrf": "1", "sec-fetch-site": "cross-site"}, "x-csrf", "1")


@pytest.mark.parametrize(
    ("rest", "allowed"),
    [
        ("items", True),
        ("items/3?x=1", True),
        ("a%20b", True),
        ("..", False),
        ("items/../../admin", False),
        ("%2e%2e/admin", False),
        ("%252e%252e/admin", False),
        ("items%2F..%2Fadmin", False),
        ("items%5cadmin", False),
        ("items\\admin", False),
        ("./items", False),
        ("items%00", False),
    ],
)
def test_only_paths_inside_the_route_are_forwarded(rest: str, allowed: bool) -> None:
    """Dot segments and encoded separators, however encoded, cannot climb out of a route."""
    assert forwardable_path(rest) is allowed
