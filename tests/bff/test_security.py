"""The BFF's pure checks: where a login or logout may return to (no open redirect, whatever
the trick), the session cookie's flags, and which proxied paths may go upstream."""

from __future__ import annotations

import pytest

from freshtoken.bff import BFF
from freshtoken.bff._proxy import Routes, raw_prefix_end
from freshtoken.bff._security import (
    check_cookie_name,
    cookie_header,
    csrf_ok,
    expired_cookie_header,
    forwardable_method,
    forwardable_path,
    safe_return_to,
    uri_encoded,
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
        ("/search?q=../x", "/search?q=../x"),  # dots in the query are not resolved
        ("/#/../x", "/#/../x"),  # nor in the fragment (a hash router's route)
        ("/a..b/.well-known/v1.2/x", "/a..b/.well-known/v1.2/x"),
        ("/商品", "/%E5%95%86%E5%93%81"),
        ("/%E5%95%86%E5%93%81", "/%E5%95%86%E5%93%81"),
        ("/€?q=€#€", "/%E2%82%AC?q=%E2%82%AC#%E2%82%AC"),
        ('/a"<b>{c}|^`', "/a%22%3Cb%3E%7Bc%7D%7C%5E%60"),
        ("/100%", "/100%25"),
        ("/%zz", "/%25zz"),
        ("https://app.example.com/é", "/%C3%A9"),
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
        "/app/..//evil.example/",
        "/a/%2e%2e//evil.example",
        "/a/%2E%2E//evil.example",
        "/a/.%2e//evil.example",
        "/a/%2e.//evil.example",
        "/a/%252e%252e//evil.example",
        "/a/..%2f/evil.example",
        "/a/..;//evil.example",
        "/.//evil.example",
        "/./",
        "/a/../b",
        "/a/..",
        "/..?next=/",
        "/a/...//evil.example",
        "https://app.example.com/a/..//evil.example",
        "/\ud800",
        "/" + "商" * 300,  # fits before encoding, not after (the login cookie holds it)
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


def test_what_goes_into_a_location_header_is_ascii() -> None:
    """Non-ASCII and the characters a URI may not hold are escaped, escapes are kept."""
    assert uri_encoded("/a b/é?x=%41&y=|#z") == "/a%20b/%C3%A9?x=%41&y=%7C#z"
    assert uri_encoded("https://idp.example/auth?x=1").isascii()


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
        ("items;v=1", True),
        ("x;..", True),  # ".." is a parameter here, the segment is "x"
        ("a..b", True),
        (".well-known/x", True),
        ("a//b", True),
        ("", True),
        ("..", False),
        ("items/../../admin", False),
        ("%2e%2e/admin", False),
        ("%252e%252e/admin", False),
        ("items%2F..%2Fadmin", False),
        ("items%5cadmin", False),
        ("items\\admin", False),
        ("./items", False),
        ("items%00", False),
        ("..;/admin", False),
        ("..;x=1/admin", False),
        (".;/admin", False),
        ("x/..;/..;", False),
        ("%2e%2e;/admin", False),
        ("%2E%2e%3b/admin", False),
        (".%2E%3B", False),
        ("...", False),
        ("..%20/admin", False),
        ("..%20;/admin", False),
        ("%u002e%u002e/admin", False),
        ("%c0%ae%c0%ae/admin", False),
        ("%C0%AE./admin", False),
        ("%e0%80%ae%e0%80%ae/admin", False),
        ("%f0%80%80%ae./admin", False),
        ("100%", False),
        ("a%2", False),
        ("caf%C3%A9/%E2%82%AC", True),  # well-formed UTF-8 escapes pass
        ("%E9t%E9", True),  # and Latin-1 ones: not every API speaks UTF-8
    ],
)
def test_only_paths_inside_the_route_are_forwarded(rest: str, allowed: bool) -> None:
    """Dot segments (once their ``;`` parameters and trailing spaces are removed) and encoded
    separators, however encoded, cannot climb out of a route."""
    assert forwardable_path(rest) is allowed


@pytest.mark.parametrize(
    ("raw", "prefix", "end"),
    [
        ("/api/items", "/api/", 5),
        ("/api/", "/api/", 5),
        ("/api", "/api/", None),
        ("/%61pi/items", "/api/", None),
        ("/api%2Fitems", "/api/", None),
        ("/API/items", "/api/", None),
        ("/donn%C3%A9es/x", "/données/", 14),
        ("/donn%c3%a9es/x", "/données/", 14),
        ("/données/x", "/données/", None),  # a raw path is ASCII: é cannot stand in it
        ("/donn%C3%A9", "/données/", None),
        ("/a%20b/x", "/a b/", 7),
        ("/a%25b/x", "/a%b/", 7),
    ],
)
def test_a_route_prefix_ends_where_a_browser_would_have_written_it(
    raw: str, prefix: str, end: int | None
) -> None:
    """Each character as itself, or as its UTF-8 escapes for those a browser must escape."""
    assert raw_prefix_end(raw, prefix) == end
    # The proxy's shortcut for prefixes written as they are gives the same URL, or the same
    # refusal, as the character-by-character reading.
    routes = Routes({prefix: "http://127.0.0.1:9/up/"}, allow_insecure_http=True)
    (route,) = routes.routes
    expected = None if end is None else "http://127.0.0.1:9/up/" + raw[end:]
    assert routes.target(route, raw, b"") == expected


@pytest.mark.parametrize(
    ("method", "headers", "query", "allowed"),
    [
        ("GET", [], b"", True),
        ("PROPFIND", [], b"", True),
        ("TRACE", [], b"", False),
        ("track", [], b"", False),
        ("CONNECT", [], b"", False),
        ("POST", [(b"X-HTTP-Method-Override", b"TRACE")], b"", False),
        ("POST", [(b"x-http-method", b" trace ")], b"", False),
        ("POST", [(b"X-Method-Override", b"PATCH, CONNECT")], b"", False),
        ("POST", [(b"X-HTTP-Method-Override", b"PATCH")], b"", True),
        ("POST", [(b"X-Other", b"TRACE")], b"", True),
        ("POST", [], b"_method=TRACE", False),
        ("POST", [], b"a=1&_method=track", False),
        ("POST", [], b"_method=DELETE", True),
        ("GET", [], b"q=TRACE", True),
    ],
)
def test_echoing_and_tunnelling_methods_are_never_forwarded(
    method: str, headers: list[tuple[bytes, bytes]], query: bytes, allowed: bool
) -> None:
    """TRACE, TRACK, CONNECT in any case, as the method or named by an override."""
    assert forwardable_method(method, headers, query) is allowed
