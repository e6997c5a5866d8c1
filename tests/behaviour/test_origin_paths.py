"""``origins`` with a path: the token goes to that path and below it only, through every
integration, whatever spelling the path takes and wherever a redirect leads.

The requests go to the ``other_origin`` listener, which answers any path and says whether it
saw a token and which path arrived (after the HTTP library's own normalisation, if any).
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from .conftest import Env

pytestmark = pytest.mark.not_bff(
    "a BFF sends the token only to its configured routes and follows no redirect: the "
    "browser names a route, never an origin (its path checks: tests/bff/test_proxy_refusals.py)"
)


def test_a_path_prefix_takes_the_token_only_below_it(env: Env, other_origin: str) -> None:
    """/api and /api/x get it; /apix, /x and origins not listed do not."""
    client = env.driver(origins=[f"{other_origin}/api"])
    expected = {"/api": True, "/api/orders/1": True, "/apix": False, "/x": False}
    for path, carries in expected.items():
        status, body = client.get(other_origin + path)
        assert (status, body["has_authorization"]) == (200, carries), path
    assert client.get(env.url("/api/echo"))[1]["has_authorization"] is False


@pytest.mark.parametrize(
    "path",
    [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/.%2E/admin",
        "/api/..;/admin",
        "/api/..%2Fadmin",
        "/api%2F..%2Fadmin",
        "/api/%5C..%5Cadmin",
        "/api/%252e%252e/admin",
    ],
)
def test_dot_segments_and_encoded_separators_do_not_escape_the_prefix(
    env: Env, other_origin: str, path: str
) -> None:
    """Whether the library resolves the path before sending it or sends it as written, a
    path that a server could route outside /api goes out without the token."""
    status, body = env.driver(origins=[f"{other_origin}/api"]).get(other_origin + path)
    assert status == 200
    assert body["has_authorization"] is False, body["path"]


def test_a_redirect_within_the_prefix_keeps_the_token(env: Env, other_origin: str) -> None:
    """Sanity check of the next test: the redirect itself is followed with the token."""
    client = env.driver(origins=[f"{other_origin}/api"])
    target = quote(f"{other_origin}/api/target", safe="")
    status, body = client.get(f"{other_origin}/api/hop?to={target}")
    assert (status, body["path"], body["has_authorization"]) == (200, "/api/target", True)


def test_a_redirect_out_of_the_prefix_drops_the_token(
    env: Env, other_origin: str, request: pytest.FixtureRequest
) -> None:
    """Same origin, another path: requests and aiohttp copy the Authorization header to the
    hop themselves, and freshtoken removes it. httpx follows redirects without asking the
    auth, so a prefix cannot hold there (documented in freshtoken.httpx.TokenAuth)."""
    if env.kind.startswith("httpx"):
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="httpx keeps Authorization within an origin")
        )
    client = env.driver(origins=[f"{other_origin}/api"])
    target = quote(f"{other_origin}/public/target", safe="")
    status, body = client.get(f"{other_origin}/api/hop?to={target}")
    assert (status, body["path"]) == (200, "/public/target")
    assert body["has_authorization"] is False
    # The hop after leaving gets nothing either, even back inside the prefix.
    back = quote(f"{other_origin}/api/back", safe="")
    via = quote(f"{other_origin}/public/hop?to={back}", safe="")
    status, body = client.get(f"{other_origin}/api/hop?to={via}")
    assert (status, body["path"], body["has_authorization"]) == (200, "/api/back", False)


def test_a_rejection_below_the_prefix_refreshes_and_retries_once(
    env: Env, other_origin: str
) -> None:
    """The 401 handling works under a prefix: one refresh, one retry, then the 401."""
    status, body = env.driver(origins=[f"{other_origin}/api"]).get(f"{other_origin}/api/401")
    assert (status, body["has_authorization"]) == (401, True)
    assert env.stats()["refreshes"] == 1


def test_a_rejection_outside_the_prefix_is_not_ours(env: Env, other_origin: str) -> None:
    """No token went to /401 (outside /api): its 401 starts no refresh and no retry."""
    status, body = env.driver(origins=[f"{other_origin}/api"]).get(f"{other_origin}/401")
    assert (status, body["has_authorization"]) == (401, False)
    assert env.stats()["refreshes"] == 0
    assert env.manager.stats.snapshot()["retries"] == 0


def test_an_origins_entry_that_cannot_be_honoured_is_refused(env: Env, other_origin: str) -> None:
    """Never dropped silently: a query in an entry is a ValueError from every integration."""
    with pytest.raises(ValueError, match="query or fragment"):
        env.driver(origins=[f"{other_origin}/api?version=2"])
