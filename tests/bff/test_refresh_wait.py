"""A proxied call waits for its session's refresh at most ``refresh_wait`` seconds: past it
the browser gets 503 temporarily_unavailable with Retry-After (never a 500, never a login
prompt), the refresh goes on, and the session is kept: its next call succeeds."""

from __future__ import annotations

import time

import pytest

from freshtoken import ManualClock
from freshtoken.bff._sessions import handle_of

from .bff_support import DeploymentFactory

WAIT = 0.5
LATENCY = 2.0  # the token endpoint's answers, in real seconds: four times the wait


def test_a_slow_refresh_is_a_prompt_503_and_the_session_lives_on(
    deploy: DeploymentFactory, clock: ManualClock
) -> None:
    """The token expired and the provider answers in 2 s: the call answers 503 with
    Retry-After: 1 after about refresh_wait; once the refresh lands the next call is a 200."""
    deployment = deploy(refresh_wait=WAIT)
    session = deployment.login()
    assert deployment.get("/api/me", session).status_code == 200
    deployment.server.set_latency(LATENCY)
    clock.advance(400)  # past the 300 s access token
    started = time.monotonic()
    response = deployment.get("/api/me", session)
    waited = time.monotonic() - started
    assert response.status_code == 503
    assert response.json() == {"error": "temporarily_unavailable"}
    assert response.headers["retry-after"] == "1"
    assert "set-cookie" not in response.headers  # the session is kept
    assert WAIT <= waited < LATENCY
    assert deployment.bff.manager(handle_of(session)).wait_idle(10)
    deployment.server.set_latency(0)
    assert deployment.get("/api/me", session).status_code == 200
    assert deployment.server.stats()["refreshes"] == 1


def test_a_rejected_token_whose_refresh_fails_is_a_503_not_the_apis_401(
    deploy: DeploymentFactory,
) -> None:
    """The API rejects the token and the provider is down: the browser is told to come back
    (503), not given the API's 401, which an app may take for "log in again"."""
    deployment = deploy(refresh_wait=WAIT)
    session = deployment.login()
    deployment.server.inject("status_503", 100)
    deployment.server.fail_api(1)
    response = deployment.get("/api/me", session)
    assert response.status_code == 503
    assert response.json() == {"error": "temporarily_unavailable"}
    assert response.headers["retry-after"] == "1"
    deployment.server.clear_faults()
    assert deployment.bff.manager(handle_of(session)).wait_idle(10)
    assert deployment.get("/api/me", session).status_code == 200


@pytest.mark.parametrize("wait", [0, -1.0, float("inf"), float("nan")])
def test_refresh_wait_is_a_positive_number_of_seconds(
    deploy: DeploymentFactory, wait: float
) -> None:
    with pytest.raises(ValueError, match="refresh_wait"):
        deploy(refresh_wait=wait)
