"""When refreshing fails: for good (session expired) or for a while (transient faults)."""

from __future__ import annotations

import pytest

import freshtoken
from freshtoken.server import FaultKind

from .conftest import FAST_RETRY, Env
from .drivers import Outcome

TRANSIENT: list[FaultKind] = ["status_503", "status_429", "malformed_json", "drop_connection"]

pytestmark = [pytest.mark.every_store, pytest.mark.dpop]


def _errors(outcomes: list[Outcome]) -> list[BaseException]:
    return [outcome for outcome in outcomes if isinstance(outcome, BaseException)]


def test_revoked_session_expires_once_for_every_caller(env: Env) -> None:
    """Session revoked: the hook runs once, the store is emptied, every caller gets
    SessionExpired (with the server's error code)."""
    client = env.driver()
    assert env.server.revoke("demo") == 1
    n = 8
    outcomes = client.storm(env.url("/api/me"), n)
    errors = _errors(outcomes)
    assert len(errors) == n, outcomes
    assert all(isinstance(error, freshtoken.SessionExpired) for error in errors)
    if env.kind != "bff":  # the BFF tells the browser login_required, not the provider's why
        assert any(getattr(error, "error", None) == "invalid_grant" for error in errors)
    assert len(env.expired) == 1
    assert isinstance(env.expired[0], freshtoken.SessionExpired)
    assert env.manager.store.load() is None
    with pytest.raises(freshtoken.SessionExpired):
        client.get(env.url("/api/me"))
    assert len(env.expired) == 1
    assert env.stats()["refreshes"] == 0


def test_session_expiry_on_an_expired_token(env: Env) -> None:
    """The refresh happens before sending (token expired): same outcome, no 401 needed."""
    env.server.revoke("demo")
    env.server.advance(301)
    with pytest.raises(freshtoken.SessionExpired) as caught:
        env.driver().get(env.url("/api/me"))
    if env.kind != "bff":  # the BFF tells the browser login_required, not the provider's why
        assert caught.value.error == "invalid_grant"
    assert len(env.expired) == 1
    assert env.manager.store.load() is None


@pytest.mark.parametrize("fault", TRANSIENT)
def test_transient_failures_back_off_then_succeed(env: Env, fault: FaultKind) -> None:
    """Token endpoint failures fewer than the attempts: backoff, then success."""
    env.server.inject(fault, FAST_RETRY.attempts - 1, retry_after=0)
    env.server.advance(301)
    status, _ = env.driver().get(env.url("/api/me"))
    assert status == 200
    assert env.stats()["refreshes"] == 1
    assert env.stats()["faults_served"] == FAST_RETRY.attempts - 1
    assert env.manager.stats.snapshot()["refresh_attempts"] == FAST_RETRY.attempts


def test_more_failures_than_attempts_raise_refresh_failed(env: Env) -> None:
    """Failures beyond the attempts: RefreshFailed, tokens kept; a later request recovers."""
    client = env.driver()
    before = env.manager.store.load()
    assert before is not None
    env.server.inject("status_503", FAST_RETRY.attempts)
    env.server.advance(301)
    with pytest.raises(freshtoken.RefreshFailed) as caught:
        client.get(env.url("/api/me"))
    if env.kind != "bff":  # the BFF answers 503 whatever the token endpoint said
        assert caught.value.status == 503
    after = env.manager.store.load()
    assert after is not None
    assert after.tokens.refresh_token == before.tokens.refresh_token
    assert env.expired == []
    env.server.advance(FAST_RETRY.maximum * 10)  # past the failure throttle
    assert client.get(env.url("/api/me"))[0] == 200
    assert env.stats()["refreshes"] == 1


def test_failures_while_the_old_token_works_keep_it_in_use(env: Env) -> None:
    """A failed refresh inside the window does not fail the request: the old token still works."""
    env.server.inject("status_500", FAST_RETRY.attempts)
    env.server.advance(290)
    client = env.driver()
    assert client.get(env.url("/api/me"))[0] == 200
    assert env.manager.wait_idle(10)
    assert env.stats()["refreshes"] == 0
    assert env.manager.stats.snapshot()["refresh_failures"] >= 1


def test_an_api_that_rejects_every_token_gets_the_401_back_not_a_refresh_per_request(
    env: Env,
) -> None:
    """Every token rejected (a wrong audience, say): the first request refreshes once and
    retries once; then fresh tokens are known to be rejected too, and the 401 goes back to
    the caller untouched while the rejection backoff runs. The first request's second 401 is
    a rejection of the current token, so the manager decides it too: passed back, like the
    eleven after it."""
    client = env.driver()
    env.server.fail_api(10_000)
    statuses = [client.get(env.url("/api/me"))[0] for _ in range(12)]
    assert statuses == [401] * 12
    assert env.stats()["refreshes"] == 1
    assert env.manager.stats.snapshot()["passed_rejections"] == 12
    env.server.clear_faults()
    assert client.get(env.url("/api/me"))[0] == 200  # the tokens themselves were fine
