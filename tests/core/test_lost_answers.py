"""A refresh whose answer was lost: the server rotated, the client never heard.

The reference server's ``drop_after_processing`` fault processes the refresh (it retires the
refresh token presented and issues its successor) and then closes the connection without an
answer. The client is left holding a refresh token the server has already retired.

freshtoken's answer is to retry at once with the same refresh token (a lost answer skips the
backoff). Whether that retry succeeds is the *server's* policy, not the client's choice:

* with a reuse grace period (``reuse_grace``), the retired token is accepted again for a
  while and answers with the very successor the lost answer carried: the session goes on,
  and no reuse is detected;
* without one, presenting a retired token is indistinguishable from a stolen token being
  replayed: reuse detection revokes the whole family, and the only correct outcome for the
  client is :class:`~freshtoken.SessionExpired` (log in again). No client can do better: the
  successor existed only in the answer that was lost.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from freshtoken import (
    OAuth2Refresher,
    RefreshFailed,
    RetryPolicy,
    SessionExpired,
    TokenManager,
    TokenSet,
)
from freshtoken._runtime.host import host
from freshtoken.server import ReferenceServer
from freshtoken.testing import ServerFactory

FAST_RETRY = RetryPolicy(initial=0.001, maximum=0.01)


def logged_in(server: ReferenceServer, **options: Any) -> TokenManager:
    """A manager on the server's ManualClock, holding the tokens of a fresh login."""
    manager = TokenManager(
        OAuth2Refresher(server.token_url, client_id="demo", client_secret="demo-secret"),
        clock=server.clock,
        retry=options.pop("retry", FAST_RETRY),
        **options,
    )
    manager.set_tokens(TokenSet.from_response(server.login(), sent_at=server.clock()))
    return manager


def works(server: ReferenceServer, tokens: TokenSet) -> bool:
    headers = {"Authorization": f"Bearer {tokens.access_token}"}
    return httpx.get(f"{server.api_url}/me", headers=headers).status_code == 200


def assert_recovered_by_grace_replay(
    server: ReferenceServer, manager: TokenManager, before: TokenSet, after: TokenSet
) -> None:
    stats = server.stats()
    assert stats["rotations"] == 1  # the lost refresh, processed once
    assert stats["grace_replays"] == 1  # the prompt retry, answered with the same successor
    assert stats["reuse_detections"] == 0
    assert stats["family_revocations"] == 0
    assert stats["token_requests_by_grant"]["refresh_token"] == 2
    assert after.access_token != before.access_token
    assert after.refresh_token not in (None, before.refresh_token)
    assert works(server, after)
    counters = manager.stats.snapshot()
    assert counters["refresh_attempts"] == 2
    assert counters["refreshes"] == 1
    assert counters["session_expirations"] == 0
    # The refresh token kept is the live successor: the next rotation is an ordinary one.
    server.advance(server.config.reuse_grace + 1)
    refreshed = manager.refresh()
    assert works(server, refreshed)
    assert server.stats()["rotations"] == 2
    assert server.stats()["reuse_detections"] == 0


def test_expired_token_recovers_through_the_grace_replay(
    oauth_server_factory: ServerFactory,
) -> None:
    """Expired token, answer lost: the prompt retry with the same refresh token gets the
    successor the lost answer carried; the caller never sees the failure."""
    server = oauth_server_factory(reuse_grace=5)
    manager = logged_in(server)
    before = manager.get_tokens()
    server.advance(301)  # access_ttl is 300 s: the token has expired
    server.inject("drop_after_processing")
    after = manager.get_tokens()
    assert_recovered_by_grace_replay(server, manager, before, after)
    assert manager.stats.snapshot()["refresh_failures"] == 0


@pytest.mark.anyio
async def test_expired_token_recovers_through_the_grace_replay_async(
    oauth_server_factory: ServerFactory,
) -> None:
    server = oauth_server_factory(reuse_grace=5)
    manager = logged_in(server)
    before = await manager.aget_tokens()
    server.advance(301)
    server.inject("drop_after_processing")
    after = await manager.aget_tokens()
    assert_recovered_by_grace_replay(server, manager, before, after)


def test_stale_token_is_served_meanwhile_and_the_next_call_recovers(
    oauth_server_factory: ServerFactory,
) -> None:
    """Refresh due but the token still valid: the one background attempt loses its answer,
    callers keep the old (still valid) token, and the very next call starts a retry without a
    backoff that recovers through the grace replay."""
    server = oauth_server_factory(reuse_grace=5)
    manager = logged_in(server)
    before = manager.get_tokens()
    server.advance(290)  # 10 s left of 300: inside the refresh window, still valid
    server.inject("drop_after_processing")
    assert manager.get_tokens().access_token == before.access_token
    assert manager.wait_idle(10)  # the attempt runs in the background
    assert manager.stats.snapshot()["refresh_failures"] == 1
    assert manager.get_tokens().access_token == before.access_token  # starts the retry
    assert manager.wait_idle(10)
    after = manager.get_tokens()
    assert_recovered_by_grace_replay(server, manager, before, after)


def test_the_retry_after_a_lost_answer_skips_the_backoff(
    oauth_server_factory: ServerFactory,
) -> None:
    """However long the configured backoff, a lost answer is retried at once: the grace
    period of real servers is short (seconds), so waiting out a backoff would miss it."""
    server = oauth_server_factory(reuse_grace=5)
    manager = logged_in(server, retry=RetryPolicy(initial=30.0, maximum=60.0))
    server.advance(301)
    server.inject("drop_after_processing")
    started = time.monotonic()
    manager.get_tokens()
    assert time.monotonic() - started < 10.0  # the backoff would have been >= 15 s
    assert server.stats()["grace_replays"] == 1


def test_without_grace_the_server_revokes_the_session(
    oauth_server_factory: ServerFactory,
) -> None:
    """reuse_grace=0: the retry presents a token the server retired moments ago. To the
    server that is a replay of a used token, so reuse detection revokes the family and the
    client's only correct outcome is SessionExpired. This is the server's policy at work,
    not a client bug: the successor existed only in the answer that was lost."""
    server = oauth_server_factory(reuse_grace=0)
    expired: list[SessionExpired] = []
    manager = logged_in(server, on_session_expired=expired.append)
    before = manager.get_tokens()
    server.advance(301)
    server.inject("drop_after_processing")
    with pytest.raises(SessionExpired) as raised:
        manager.get_tokens()
    assert raised.value.error == "invalid_grant"
    assert "reuse" in (raised.value.description or "")
    assert before.access_token not in str(raised.value)
    assert before.refresh_token is not None
    assert before.refresh_token not in str(raised.value)
    stats = server.stats()
    assert stats["rotations"] == 1
    assert stats["reuse_detections"] == 1
    assert stats["family_revocations"] == 1
    assert stats["grace_replays"] == 0
    assert len(expired) == 1
    assert manager.store.load() is None  # the dead session's tokens are gone
    assert manager.stats.snapshot()["refresh_attempts"] == 2  # one lost, one refused


def hanging(server: ReferenceServer, seconds: float) -> TokenManager:
    """A session whose attempts give up after 0.3 s, on a token endpoint that processes
    every request ``seconds`` after it arrives (a provider or a proxy that hangs, then
    catches up). The refresher's own read timeout is longer: the connection stays open."""
    manager = TokenManager(
        OAuth2Refresher(
            server.token_url, client_id="demo", client_secret="demo-secret", timeout=30.0
        ),
        clock=server.clock,
        retry=RetryPolicy(attempts=3, initial=0.001, maximum=0.01, jitter=0.0, timeout=0.3),
    )
    manager.set_tokens(TokenSet.from_response(server.login(), sent_at=server.clock()))
    server.advance(301)
    server.reset_stats()
    server.set_latency(seconds)
    return manager


def test_a_hanging_token_endpoint_is_not_sent_the_same_refresh_token_twice(
    oauth_server_factory: ServerFactory,
) -> None:
    """Without a reuse grace interval: the attempts give up on the request, but it stays in
    the air and the retries wait for it instead of presenting the refresh token again. When
    the server answers (after every attempt gave up), its tokens are saved: one token
    request, one rotation, no reuse detected, and the session goes on."""
    server = oauth_server_factory(reuse_grace=0)
    manager = hanging(server, 1.5)
    with pytest.raises(RefreshFailed) as raised:
        manager.get_tokens()
    assert raised.value.error == "timeout"
    assert host().wait_idle(30.0)  # the request in the air, then the flight that saves it
    stats = server.stats()
    assert stats["token_requests_by_grant"]["refresh_token"] == 1
    assert stats["rotations"] == 1
    assert stats["reuse_detections"] == 0
    server.set_latency(0)
    tokens = manager.get_tokens()  # saved by the late answer's flight: no new request
    assert works(server, tokens)
    assert server.stats()["token_requests_by_grant"]["refresh_token"] == 1
    assert manager.stats.snapshot()["refreshes"] == 1
    assert works(server, manager.refresh())  # its refresh token is the live one
    assert server.stats()["reuse_detections"] == 0


@pytest.mark.anyio
async def test_a_retry_that_waits_for_the_request_in_the_air_takes_its_answer(
    oauth_server_factory: ServerFactory,
) -> None:
    """The answer comes while a flight still waits for it (the caller's second call, after
    the first gave up): that flight takes the tokens; still one token request."""
    server = oauth_server_factory(reuse_grace=0)
    manager = hanging(server, 1.5)
    with pytest.raises(RefreshFailed):
        await manager.aget_tokens()  # three attempts of 0.3 s: the request is still in the air
    manager.retry = RetryPolicy(attempts=1, timeout=20.0)
    tokens = await manager.aget_tokens()
    assert works(server, tokens)
    stats = server.stats()
    assert stats["token_requests_by_grant"]["refresh_token"] == 1
    assert stats["reuse_detections"] == 0
