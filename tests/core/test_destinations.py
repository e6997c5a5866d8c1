"""Destinations: where a token may go, path prefixes included (every integration asks it).

A prefix holds on segment boundaries, and no spelling of a path (dot segments, escapes,
backslashes, Tomcat's ``;``) gets the token outside it: the property test decodes each path
the way the most lenient server would and checks that every path allowed stays below. The
same rules through each HTTP library, over real HTTP, are in tests/behaviour/test_origin_paths.py.
"""

from __future__ import annotations

import logging
import posixpath
import re
from urllib.parse import unquote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from freshtoken import InsecureTransportError
from freshtoken._core.policy import Destinations, normal_path

API = "https://api.example.com"


def allowed(origins: list[str] | None, url: str) -> bool:
    return Destinations(origins, allow_insecure_http=False).allows_url(url)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api", True),
        ("/api/", True),
        ("/api/orders/1", True),
        ("/api//double", True),
        ("/%61pi/orders", True),  # an escaped unreserved letter is the letter
        ("/api/x?next=/../../admin", True),  # the query is not the path
        ("/api/x#/../admin", True),
        ("/apix", False),
        ("/ap", False),
        ("/", False),
        ("", False),
        ("/API/orders", False),  # paths are case-sensitive; a server that is not gets nothing
        ("/other/api", False),
        ("//api/x", False),
    ],
)
def test_a_prefix_holds_on_segment_boundaries(path: str, expected: bool) -> None:
    assert allowed([f"{API}/api"], API + path) is expected
    assert allowed([f"{API}/api/"], API + path) is expected  # a trailing slash is the same


@pytest.mark.parametrize(
    "path",
    [
        "/api/../admin",
        "/api/./orders",
        "/api/%2e%2e/admin",
        "/api/%2E%2e/admin",
        "/api/.%2e/admin",
        "/api/..;/admin",
        "/api/..;jsessionid=x/admin",
        "/api/..%2fadmin",
        "/api%2f..%2fadmin",
        "/api/x%2Fy",
        "/api/%5c..%5cadmin",
        "/api/\\..\\admin",
        "/api/%252e%252e/admin",
        "/api/%00/x",
        "/api/..",
    ],
)
def test_paths_servers_could_read_two_ways_never_get_the_token(path: str) -> None:
    assert allowed([f"{API}/api"], API + path) is False
    destinations = Destinations([f"{API}/api"], allow_insecure_http=False)
    assert destinations.allows("https", "api.example.com", None, path) is False


def test_a_whole_origin_entry_ignores_paths_and_wins_over_prefixes() -> None:
    origins = [f"{API}/api", API, "https://other.example.com/v1"]
    assert allowed(origins, f"{API}/anything/../at/all")
    assert allowed(origins, "https://other.example.com/v1/x")
    assert not allowed(origins, "https://other.example.com/v2/x")
    assert not allowed(origins, "https://third.example.com/v1")


def test_several_prefixes_of_one_origin() -> None:
    origins = [f"{API}/v1", f"{API}/public/docs"]
    assert allowed(origins, f"{API}/v1/x")
    assert allowed(origins, f"{API}/public/docs")
    assert not allowed(origins, f"{API}/public")
    assert not allowed(origins, f"{API}/v2")


def test_the_origin_verdict_is_cached_the_path_verdict_is_not() -> None:
    """Repeated calls for one origin alternate correctly (the cache keys the origin only)."""
    destinations = Destinations([f"{API}/api"], allow_insecure_http=False)
    for _ in range(3):
        assert destinations.allows_url(f"{API}/api/x")
        assert not destinations.allows_url(f"{API}/admin")
        assert destinations.allows("https", "api.example.com", 443, "/api/y")
        assert not destinations.allows("https", "api.example.com", 443, "/apiz")


def test_has_paths_says_whether_integrations_must_read_the_path() -> None:
    assert Destinations([f"{API}/api"], allow_insecure_http=False).has_paths
    assert not Destinations([API, f"{API}/"], allow_insecure_http=False).has_paths
    assert not Destinations([f"{API}/api", API], allow_insecure_http=False).has_paths
    assert not Destinations(None, allow_insecure_http=False).has_paths


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (f"{API}/api?x=1", "query or fragment"),
        (f"{API}/api?", "query or fragment"),
        (f"{API}/api#top", "query or fragment"),
        ("https://user:pw@api.example.com/api", "credentials"),
        (f"{API}/api/../admin", "dot segment or an encoded separator"),
        (f"{API}/api%2Fv1", "dot segment or an encoded separator"),
        ("/api", "absolute"),
        ("ftp://api.example.com/api", "absolute"),
    ],
)
def test_an_entry_that_cannot_be_honoured_is_refused(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Destinations([entry], allow_insecure_http=False)


def test_one_url_instead_of_a_list_is_refused() -> None:
    with pytest.raises(TypeError, match=r"origins=\[\.\.\.\]"):
        Destinations(API, allow_insecure_http=False)


def test_plain_http_to_a_remote_prefix_is_refused() -> None:
    destinations = Destinations(["http://api.example.com/api"], allow_insecure_http=False)
    with pytest.raises(InsecureTransportError, match="plain HTTP"):
        destinations.allows_url("http://api.example.com/api/x")
    assert not destinations.allows_url("http://elsewhere.example.com/api/x")


def test_a_path_outside_the_prefixes_is_logged_once_per_origin(
    caplog: pytest.LogCaptureFixture,
) -> None:
    destinations = Destinations([f"{API}/api"], allow_insecure_http=False)
    with caplog.at_level(logging.WARNING, logger="freshtoken"):
        for _ in range(3):
            assert not destinations.allows_url(f"{API}/admin")
        assert destinations.allows_url(f"{API}/api/x")
    (record,) = [r for r in caplog.records if r.name == "freshtoken"]
    message = record.getMessage()
    assert "https://api.example.com:443 without a token" in message
    assert "not below the paths origins give for it (https://api.example.com:443/api)" in message


def test_repr_lists_the_entries() -> None:
    destinations = Destinations([f"{API}/api", "http://127.0.0.1:9"], allow_insecure_http=False)
    assert repr(destinations) == "['http://127.0.0.1:9', 'https://api.example.com:443/api']"
    assert repr(Destinations(None, allow_insecure_http=False)) == "None"


def test_normal_path_decodes_unreserved_escapes_only() -> None:
    assert normal_path("/%61%2D%7e/%3a") == "/a-~/%3A"
    assert normal_path("") == "/"


_PIECES = ["api", "apix", "a", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "\\", ";", "x"]
_PIECES += ["/", "//", "%25", "%61pi", "%2e%2e", "..;", "%3b"]


def _most_lenient_reading(path: str) -> str:
    """The path as a server that decodes everything twice, takes backslashes for slashes,
    cuts Tomcat's ``;`` parameters, merges slashes and then resolves dot segments routes it."""
    decoded = unquote(unquote(path)).replace("\\", "/")
    segments = [segment.split(";", 1)[0] for segment in decoded.split("/")]
    return posixpath.normpath(re.sub("/+", "/", "/".join(segments)))


@settings(max_examples=500)
@given(st.lists(st.sampled_from(_PIECES), max_size=8))
def test_no_spelling_of_a_path_escapes_the_prefix(pieces: list[str]) -> None:
    path = "/" + "".join(pieces)
    if allowed([f"{API}/api"], API + path):
        routed = _most_lenient_reading(path)
        assert routed == "/api" or routed.startswith("/api/"), path
