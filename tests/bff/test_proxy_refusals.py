"""What the proxy refuses to send upstream, over real HTTP, with the request line exactly as an
attacker would write it: dot segments hidden behind ``;`` path parameters (which Tomcat, Spring
and Jetty read as ``..``), route prefixes spelt with percent-encodings, and the methods that
echo the request (TRACE) or open a tunnel (CONNECT). A recording upstream proves that nothing
of a refused call arrived, and that allowed neighbours arrive exactly as sent."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .bff_support import Deployment, DeploymentFactory
from .recording_upstream import RecordingUpstream, send_raw, upstream_url


class Api:
    """A BFF whose route /api/ goes to the recording upstream's /v1/, and a session of it."""

    def __init__(self, deployment: Deployment, upstream: RecordingUpstream) -> None:
        self.deployment = deployment
        self.upstream = upstream
        self.session = deployment.login()

    def send(self, target: str, **options: Any) -> httpx.Response:
        return send_raw(self.deployment, target, self.session, **options)

    def refused(self, target: str, status: int, error: str, **options: Any) -> bool:
        """Whether ``target`` is answered ``status`` with ``error``, and nothing reached the
        API."""
        response = self.send(target, **options)
        return (
            response.status_code == status
            and response.json() == {"error": error}
            and self.upstream.paths() == []
        )


@pytest.fixture
def api(deploy: DeploymentFactory, upstream: RecordingUpstream) -> Api:
    return Api(deploy(routes={"/api/": f"{upstream_url(upstream)}/v1/"}), upstream)


DOT_SEGMENTS_WITH_PARAMETERS = [
    "/api/..;/admin",
    "/api/x/..;/..;/admin",
    "/api/.;/..;/admin",
    "/api/%2e%2e;/admin",
    "/api/%2E%2e%3b/admin",
    "/api/%2e%2E%3B/admin",
    "/api/..;jsessionid=abc/admin",
    "/api/..;a=1;b=2/admin",
    "/api/.%2e;/admin",
    "/api/%2e.;x/admin",
    "/api/..%3Bx/admin",
    "/api/;/..;/admin",
    "/api/items/..;",
    "/api/items/.;",
    "/api/..;/",
    "/api/...;/admin",
    "/api/...",
    "/api/..%20;/admin",
    "/api/%252e%252e%253b/admin",
    "/api/..;%2f/admin",
    "/api/..;%5c/admin",
    "/api/..;\\/admin",
    "/api/..%00;/admin",
    "/api/%u002e%u002e;/admin",
    "/api/%c0%ae%c0%ae;/admin",
    "/api/%e0%80%ae%e0%80%ae/admin",
]


@pytest.mark.parametrize("target", DOT_SEGMENTS_WITH_PARAMETERS)
def test_a_dot_segment_behind_path_parameters_is_refused(api: Api, target: str) -> None:
    """A segment that is ``.`` or ``..`` once its ``;`` parameters are removed, literal or
    percent-encoded (once or twice): 400 invalid_path, and nothing reaches the API."""
    assert api.refused(target, 400, "invalid_path"), target


@pytest.mark.parametrize(
    "rest",
    [
        "items;v=1",
        "items;v=1/3",
        "a..b/c",
        ".well-known/openid-configuration",
        "x;../y",
        "compare/main...feature",
        "items%3Bv=2",
        "a//b",
    ],
)
def test_path_parameters_and_dots_inside_names_pass_as_sent(api: Api, rest: str) -> None:
    """Matrix parameters on ordinary segments, dots inside a name, an empty segment: not dot
    segments, so they reach the API byte for byte."""
    assert api.send(f"/api/{rest}").status_code == 200, rest
    assert api.upstream.paths() == [f"/v1/{rest}"]


@pytest.mark.parametrize(
    "target", ["/%61pi/items", "/%61%70%69/items", "/ap%69/items", "/api%2Fitems", "/api%2fitems"]
)
def test_a_route_prefix_spelt_with_percent_encodings_is_refused(api: Api, target: str) -> None:
    """The route matches the decoded path, but the raw path does not begin with the prefix as
    written: refused (400 invalid_path) rather than cut at the wrong place (``/%61pi/items``
    used to reach the API as ``/v1/i/items``)."""
    assert api.refused(target, 400, "invalid_path"), target


@pytest.mark.parametrize("target", ["/API/items", "/ap%49/items", "/%2Fapi/items", "//api/items"])
def test_paths_that_are_not_a_route_are_not_proxied(api: Api, target: str) -> None:
    """Another case, an encoded letter that decodes to another case, a leading empty segment:
    no route matches, so no token goes anywhere (404 without a wrapped app)."""
    assert api.refused(target, 404, "not_found"), target


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/donn%C3%A9es/items", "/v1/items"),
        ("/donn%c3%a9es/items", "/v1/items"),  # hex digits in either case
        ("/donn%C3%A9es/caf%C3%A9", "/v1/caf%C3%A9"),
        ("/donn%C3%A9es/", "/v1/"),
    ],
)
def test_a_prefix_with_characters_that_must_be_encoded_is_cut_after_their_encoding(
    deploy: DeploymentFactory, upstream: RecordingUpstream, target: str, forwarded: str
) -> None:
    """A route prefix with non-ASCII characters matches the way a browser sends it (UTF-8,
    percent-encoded), and the rest of the raw path is cut exactly after it."""
    deployment = deploy(routes={"/données/": f"{upstream_url(upstream)}/v1/"})
    session = deployment.login()
    response = send_raw(deployment, target, session)
    assert response.status_code == 200, target
    assert upstream.paths() == [forwarded]


@pytest.mark.parametrize("method", ["TRACE", "TRACK", "CONNECT", "trace", "Trace"])
def test_echoing_and_tunnelling_methods_are_refused(api: Api, method: str) -> None:
    """TRACE (and IIS's TRACK) would have the API echo the request, Authorization included, back
    to the page; CONNECT asks for a tunnel. 405, nothing sent upstream, whatever the case."""
    assert api.refused("/api/x", 405, "method_not_allowed", method=method)
    allow = api.send("/api/x", method=method).headers["allow"]
    assert "GET" in allow
    assert "TRACE" not in allow


@pytest.mark.parametrize("header", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"])
@pytest.mark.parametrize("value", ["TRACE", "track", "CONNECT"])
def test_a_method_override_header_cannot_smuggle_trace(api: Api, header: str, value: str) -> None:
    """Frameworks that honour a method-override header would run a POST as TRACE: refused too."""
    override = {header: value}
    assert api.refused("/api/x", 405, "method_not_allowed", method="POST", headers=override)


@pytest.mark.parametrize("query", ["_method=TRACE", "a=1&_method=connect"])
def test_a_method_override_parameter_cannot_smuggle_trace(api: Api, query: str) -> None:
    """Nor the ``_method`` query parameter some frameworks read."""
    assert api.refused(f"/api/x?{query}", 405, "method_not_allowed", method="POST")


def test_ordinary_methods_and_overrides_still_pass(api: Api) -> None:
    """GET, PUT, PATCH, DELETE, OPTIONS, a WebDAV method, and an override to PATCH: forwarded."""
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"):
        assert api.send("/api/x", method=method).status_code == 200, method
    override = {"X-HTTP-Method-Override": "PATCH"}
    assert api.send("/api/x", method="POST", headers=override).status_code == 200
    assert [arrival.method for arrival in api.upstream.arrivals] == [
        "GET",
        "PUT",
        "PATCH",
        "DELETE",
        "OPTIONS",
        "PROPFIND",
        "POST",
    ]


def test_refusals_come_before_the_session_and_need_no_login(
    deploy: DeploymentFactory, upstream: RecordingUpstream
) -> None:
    """Without a cookie a refused path or method is still refused as such (the answer does not
    depend on who asks), and the store is never consulted for it."""
    deployment = deploy(routes={"/api/": f"{upstream_url(upstream)}/v1/"})
    assert send_raw(deployment, "/api/..;/admin", None).status_code == 400
    assert send_raw(deployment, "/api/x", None, method="TRACE").status_code == 405
    assert upstream.paths() == []
