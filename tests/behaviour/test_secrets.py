"""No token in any log line, repr or exception message, whatever happened on the way."""

from __future__ import annotations

import logging

import pytest

import freshtoken

from .conftest import FAST_RETRY, Env


def test_secrets_never_reach_logs_reprs_or_errors(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """Refreshes, failures, a replay error and a session expiry leave no token behind."""
    caplog.set_level(logging.DEBUG, logger="freshtoken")
    client = env.driver()
    texts: list[str] = []

    env.server.fail_api(1)
    assert client.get(env.url("/api/me"))[0] == 200  # reactive refresh
    env.server.inject("status_503", 1)
    env.server.advance(301)
    assert client.get(env.url("/api/me"))[0] == 200  # transient failure, then refresh
    if env.kind != "bff":  # the BFF replays a small body (test_bodies says why)
        env.server.fail_api(1)
        with pytest.raises(freshtoken.ReplayError) as replay:
            client.post_stream(env.url("/api/echo"), [b"x"])
        texts += [str(replay.value), repr(replay.value)]
    env.server.inject("status_503", FAST_RETRY.attempts)
    env.server.advance(301)
    with pytest.raises(freshtoken.RefreshFailed) as failed:
        client.get(env.url("/api/me"))
    texts += [str(failed.value), repr(failed.value)]
    texts += [repr(env.manager), repr(client.auth), repr(env.manager.store.load())]
    texts += [repr(env.manager.stats), repr(env.manager.store)]
    env.server.revoke("demo")
    env.server.advance(301)
    with pytest.raises(freshtoken.SessionExpired) as expired:
        client.get(env.url("/api/me"))
    texts += [str(expired.value), repr(expired.value)]
    texts += [repr(error) for error in env.expired]

    secrets = env.secrets()
    assert len(secrets) >= 6  # the login's pair and two refreshes' pairs
    assert caplog.records, "expected freshtoken to log the refreshes and failures"
    haystack = "\n".join([caplog.text, *texts, *(r.getMessage() for r in caplog.records)])
    leaked = [secret[:8] + "..." for secret in secrets if secret in haystack]
    assert leaked == []
