"""A redirect chain that leaves the origin: no hop after the crossing carries the token, through
every integration (a real listener on another port starts the chain)."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from listener import Answer, Listener

from .conftest import Env

pytestmark = pytest.mark.not_bff(
    "a BFF sends the token only to its configured routes and follows no redirect: the "
    "browser names a route, never an origin (its path checks: tests/bff/test_proxy_refusals.py)"
)


def test_no_hop_after_leaving_the_origin_carries_the_token(env: Env) -> None:
    """Elsewhere -> the server -> the server again: the token went to the first hop only."""
    echo = env.url("/api/echo")
    back_and_within = env.url("/api/redirect?to=" + quote(echo, safe=""))
    with Listener(lambda _: Answer(302, [("Location", back_and_within)])) as elsewhere:
        status, body = env.driver().get(elsewhere.url + "/start")
    assert elsewhere.received[0].headers.get("authorization", "").startswith("Bearer ")
    assert status == 200
    assert body["path"] == "/api/echo"
    assert body["has_authorization"] is False
