"""AgentRefresher: any TokenManager draws access tokens from the agent, sync or async, and
never holds a refresh token."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from agent_fixture import FakeAgent, RunningAgent, http_answer
from profile_fixture import LoggedIn

from freshtoken import (
    AgentRefresher,
    RefreshFailed,
    SessionExpired,
    TokenManager,
)


def manager_on(
    running_agent: RunningAgent, logged_in: LoggedIn, profile: str = "default"
) -> TokenManager:
    refresher = AgentRefresher(profile, socket=running_agent.socket_path, autostart=False)
    return TokenManager(refresher, clock=logged_in.server.clock)


def agent_requests(running_agent: RunningAgent) -> int:
    counters = running_agent.get("/v1/status").json()["counters"]
    return int(counters["requests"]) - 1  # less this status request itself


def test_a_manager_caches_the_agents_token_and_comes_back_when_it_falls_due(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """First call asks the agent; calls while the token is fresh do not; past the refresh
    moment the manager asks again and the agent refreshes once. No refresh token here."""
    manager = manager_on(running_agent, logged_in)
    first = manager.get_tokens()
    assert first.access_token == logged_in.tokens().access_token
    assert first.refresh_token is None
    before = agent_requests(running_agent)
    for _ in range(10):
        assert manager.get_tokens() is first
    assert agent_requests(running_agent) == before + 1  # +1: the status request above
    logged_in.server.advance(301)
    second = manager.get_tokens()
    assert second.access_token != first.access_token
    assert logged_in.server.stats()["refreshes"] == 1
    assert second.access_token == logged_in.tokens().access_token


def test_a_rejected_token_is_refreshed_at_the_agent_once(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """The API said 401: handle_rejection makes the agent refresh; a second manager that
    reports the same old token gets the new one without another refresh."""
    one, two = manager_on(running_agent, logged_in), manager_on(running_agent, logged_in)
    old = one.get_tokens()
    assert two.get_tokens().access_token == old.access_token
    logged_in.server.advance(2)
    new = one.handle_rejection(old)
    assert new is not None
    assert new.access_token != old.access_token
    again = two.handle_rejection(two.get_tokens())
    assert again is not None
    assert again.access_token == new.access_token
    assert logged_in.server.stats()["refreshes"] == 1


@pytest.mark.anyio
async def test_the_async_side_draws_from_the_agent_too(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """aget_tokens on asyncio and trio: the agent's token, refreshed once past expiry."""
    manager = manager_on(running_agent, logged_in)
    first = await manager.aget_tokens()
    assert first.access_token == logged_in.tokens().access_token
    logged_in.server.advance(301)
    second = await manager.aget_tokens()
    assert second.access_token != first.access_token
    assert logged_in.server.stats()["refreshes"] == 1


def test_an_ended_session_or_unknown_profile_is_session_expired(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """The agent's 409 and 404 become SessionExpired, with the server's reason."""
    with pytest.raises(SessionExpired) as unknown:
        manager_on(running_agent, logged_in, "nobody").get_tokens()
    assert unknown.value.error == "unknown_profile"
    manager = manager_on(running_agent, logged_in)
    manager.get_tokens()
    logged_in.server.revoke("demo")
    logged_in.server.advance(301)
    with pytest.raises(SessionExpired) as ended:
        manager.get_tokens()
    assert ended.value.error == "invalid_grant"


def test_no_agent_without_autostart_is_a_transient_failure(tmp_path: Path) -> None:
    """Nothing listens and autostart is off: RefreshFailed agent_unavailable, saying how."""
    refresher = AgentRefresher(socket=tmp_path / "none.sock", autostart=False)
    with pytest.raises(RefreshFailed) as failure:
        refresher.refresh(None)
    assert failure.value.error == "agent_unavailable"
    assert "freshtoken agent start" in str(failure.value)


def test_a_deadline_in_the_past_is_honoured(running_agent: RunningAgent) -> None:
    """deadline= (a monotonic instant) already passed: RefreshFailed, no request made."""
    refresher = AgentRefresher(socket=running_agent.socket_path, autostart=False)
    with pytest.raises(RefreshFailed) as failure:
        refresher.refresh(None, deadline=time.monotonic() - 1)
    assert failure.value.error == "deadline_exceeded"
    assert running_agent.get("/v1/status").json()["counters"]["requests"] == 1


def test_a_deadline_bounds_a_slow_refresh(running_agent: RunningAgent, logged_in: LoggedIn) -> None:
    """A 1 s token endpoint and a 0.2 s deadline: the agent answers 504 in time, the client
    raises RefreshFailed; the refresh still lands for the next caller."""
    logged_in.server.set_latency(1.0)
    logged_in.server.advance(301)
    refresher = AgentRefresher(socket=running_agent.socket_path, autostart=False)
    started = time.monotonic()
    with pytest.raises(RefreshFailed) as failure:
        refresher.refresh(None, deadline=started + 0.2)
    assert time.monotonic() - started < 0.9
    assert failure.value.error == "refresh_pending"
    assert refresher.refresh(None).access_token == logged_in.tokens().access_token
    assert logged_in.server.stats()["refreshes"] == 1


def test_the_refresher_says_where_it_draws_from() -> None:
    """Its repr names the profile and socket; the constructor refuses bad values."""
    refresher = AgentRefresher("work", socket="/tmp/x.sock")
    assert repr(refresher) == "AgentRefresher(profile='work', socket='/tmp/x.sock')"
    assert refresher.can_acquire
    with pytest.raises(ValueError, match="timeout"):
        AgentRefresher(timeout=0)
    with pytest.raises(ValueError, match="longer than"):
        AgentRefresher(socket="/tmp/" + "x" * 200)


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("status", [200, 500])
def test_an_agent_answer_nested_too_deep_is_a_refresh_failure(agent_dir: Path, status: int) -> None:
    """JSON nested 100,000 deep from the socket (a success or an error answer): RefreshFailed,
    as for any malformed answer, not a RecursionError out of the manager."""
    agent = FakeAgent(agent_dir / "agent.sock", http_answer(status, DEEP))
    try:
        refresher = AgentRefresher(socket=agent_dir / "agent.sock", autostart=False)
        with pytest.raises(RefreshFailed) as failure:
            refresher.refresh(None)
    finally:
        agent.close()
    assert failure.value.status == status
    if status == 200:
        assert failure.value.error == "malformed_response"
        assert "nested too deeply" in str(failure.value)


def test_agent_status_on_a_malformed_answer_is_one_line(agent_dir: Path) -> None:
    """`freshtoken agent status` against an agent answering deep JSON: exit 1, one line."""
    agent = FakeAgent(agent_dir / "agent.sock", http_answer(200, DEEP))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "freshtoken.cli", "agent", "status", "--socket",
             str(agent_dir / "agent.sock")],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        agent.close()
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "nested too deeply" in result.stderr
