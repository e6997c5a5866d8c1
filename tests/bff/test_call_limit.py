"""One session's calls upstream are bounded (``max_calls_per_session``): past the bound the
proxy answers 429 with Retry-After at once, so one session (a runaway loop, a hostile script)
cannot hold the connection pool every user shares, and another user's calls go on. The
upstream holds the slow calls until the test releases them: no sleeps."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from urllib.parse import urlsplit

from freshtoken.bff._app import MAX_CALLS_PER_SESSION

from .bff_support import CSRF, DeploymentFactory
from .recording_upstream import WAIT, RecordingUpstream, upstream_url

PROMPT = 2.0  # seconds: an answer that waited on nothing comes well within this


def test_a_session_past_its_bound_gets_429_and_others_are_served(
    deploy: DeploymentFactory, upstream: RecordingUpstream
) -> None:
    """Four slow calls fill a session's bound of four: its fifth is 429 with Retry-After,
    promptly and without reaching the API; another session's call answers promptly meanwhile.
    Once the slow calls end, the first session is served again."""
    deployment = deploy(routes={"/up/": f"{upstream_url(upstream)}/"}, max_calls_per_session=4)
    busy, other = deployment.login(), deployment.login("alice")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        slow = [
            pool.submit(
                deployment.http.post,
                "/up/slow/x",
                content=b"{}",
                headers={**CSRF, **deployment.cookie(busy)},
            )
            for _ in range(4)
        ]
        try:
            assert upstream.wait_held(4)
            started = time.monotonic()
            refused = deployment.get("/up/fast", busy)
            assert refused.status_code == 429
            assert refused.json() == {"error": "too_many_calls"}
            assert int(refused.headers["retry-after"]) >= 1
            served = deployment.get("/up/fast", other)
            assert served.status_code == 200
            assert time.monotonic() - started < PROMPT
            assert upstream.paths().count("/fast") == 1  # alice's; the refused one never went
        finally:
            upstream.release()
        assert [future.result().status_code for future in slow] == [200] * 4
    assert deployment.get("/up/fast", busy).status_code == 200


def test_a_call_that_fails_gives_its_slot_back(deploy: DeploymentFactory) -> None:
    """Slots are returned whatever the call's end: an unreachable API (502), a refused path
    (400), a missing CSRF header (403). With a bound of one, each of these in turn still
    leaves room for the next call."""
    deployment = deploy(routes={"/gone/": "http://127.0.0.1:9/"}, max_calls_per_session=1)
    session = deployment.login()
    for _ in range(3):
        assert deployment.get("/gone/x", session).status_code == 502
    assert deployment.get("/gone/..;/x", session).status_code == 400
    assert deployment.http.get("/gone/x", headers=deployment.cookie(session)).status_code == 403
    assert deployment.get("/gone/x", session).status_code == 502
    assert len(deployment.bff.calls) == 0  # nothing counted once nothing is in flight


def test_a_browser_that_goes_away_mid_call_gives_its_slot_back(
    deploy: DeploymentFactory, upstream: RecordingUpstream
) -> None:
    """A browser closes its connection while the API still holds its call: once the API
    answers, the slot is free again (bound of one: the next call is served)."""
    deployment = deploy(routes={"/up/": f"{upstream_url(upstream)}/"}, max_calls_per_session=1)
    session = deployment.login()
    calls = deployment.bff.calls
    left = threading.Event()
    leave = calls.leave

    def leave_and_tell(handle: str) -> None:
        leave(handle)
        left.set()

    calls.leave = leave_and_tell  # type: ignore[method-assign]
    host, port = urlsplit(deployment.url).hostname, urlsplit(deployment.url).port
    assert host is not None
    assert port is not None
    with socket.create_connection((host, port), timeout=WAIT) as browser:
        cookie = f"{deployment.bff.cookie_name}={session}"
        browser.sendall(
            f"GET /up/slow/y HTTP/1.1\r\nHost: {host}\r\nX-CSRF: 1\r\n"
            f"Cookie: {cookie}\r\n\r\n".encode()
        )
        assert upstream.wait_held(1)
    upstream.release()
    assert left.wait(WAIT)
    assert len(calls) == 0
    assert deployment.get("/up/fast", session).status_code == 200


def test_the_default_bound_is_32(deploy: DeploymentFactory) -> None:
    """An eighth of the upstream connections: far more than a page's fetches."""
    assert MAX_CALLS_PER_SESSION == 32
    assert deploy().bff.calls.limit == 32
