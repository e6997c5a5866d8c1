"""The agent as a process: start on demand, status, stop, one agent per socket, a killed
agent's stale socket, and systemd socket activation."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from profile_fixture import LoggedIn
from tools import require

from freshtoken import AgentRefresher
from freshtoken.agent._runtime import lock_holder


def agent(profile: LoggedIn, socket_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return profile.run("agent", *argv, "--socket", str(socket_path))


def status(profile: LoggedIn, socket_path: Path) -> dict[str, object]:
    result = agent(profile, socket_path, "status", "--json")
    document: dict[str, object] = json.loads(result.stdout)
    assert (result.returncode == 0) == document["running"]
    return document


@pytest.fixture
def socket_path(logged_in: LoggedIn, agent_dir: Path) -> object:
    path = agent_dir / "run" / "agent.sock"
    yield path
    agent(logged_in, path, "stop")  # whatever a test left running


def test_start_status_token_stop(logged_in: LoggedIn, socket_path: Path) -> None:
    """start returns once it serves (0600 socket in a 0700 directory); status reports it;
    it serves tokens; stop waits for its exit and removes the socket; status then exits 3."""
    started = agent(logged_in, socket_path, "start")
    assert started.returncode == 0, started.stderr
    assert "started" in started.stdout
    assert stat.S_IMODE(os.stat(socket_path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(socket_path).st_mode) == 0o600
    running = status(logged_in, socket_path)
    assert running["running"] is True
    token = AgentRefresher(socket=socket_path, autostart=False).refresh(None)
    assert token.access_token == logged_in.tokens().access_token
    stopped = agent(logged_in, socket_path, "stop")
    assert stopped.returncode == 0
    assert f"pid {running['pid']}" in stopped.stdout
    assert not socket_path.exists()
    assert lock_holder(socket_path) is None
    after = agent(logged_in, socket_path, "status")
    assert after.returncode == 3
    assert "no agent is running" in after.stdout


def test_a_second_agent_does_not_start(logged_in: LoggedIn, socket_path: Path) -> None:
    """While one agent serves: a foreground agent on the same socket exits 1 naming it;
    start says it is already running, with the same pid."""
    assert agent(logged_in, socket_path, "start").returncode == 0
    pid = status(logged_in, socket_path)["pid"]
    second = agent(logged_in, socket_path)
    assert second.returncode == 1
    assert f"an agent (pid {pid}) already serves" in second.stderr
    again = agent(logged_in, socket_path, "start")
    assert again.returncode == 0
    assert f"already running (pid {pid})" in again.stdout
    assert status(logged_in, socket_path)["pid"] == pid


def test_concurrent_starts_make_one_agent(logged_in: LoggedIn, socket_path: Path) -> None:
    """Four `agent start` at once: all succeed and all name the same single agent."""
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: agent(logged_in, socket_path, "start"), range(4)))
    assert [run.returncode for run in runs] == [0] * 4, [run.stderr for run in runs]
    pid = status(logged_in, socket_path)["pid"]
    assert all(f"(pid {pid})" in run.stdout for run in runs)
    assert sum("started" in run.stdout for run in runs) == 1


def test_a_killed_agents_stale_socket_is_handled(logged_in: LoggedIn, socket_path: Path) -> None:
    """kill -9 leaves the socket file: status says it is stale (exit 3), and the next start
    takes the path over and serves."""
    assert agent(logged_in, socket_path, "start").returncode == 0
    pid = status(logged_in, socket_path)["pid"]
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    while lock_holder(socket_path) is not None:  # released by the kernel with the process
        os.sched_yield()
    assert socket_path.exists()
    stale = agent(logged_in, socket_path, "status")
    assert stale.returncode == 3
    assert "stale socket" in stale.stdout
    restarted = agent(logged_in, socket_path, "start")
    assert restarted.returncode == 0, restarted.stderr
    assert status(logged_in, socket_path)["pid"] != pid
    assert AgentRefresher(socket=socket_path, autostart=False).refresh(None).access_token


def test_an_agent_is_started_on_demand(logged_in: LoggedIn, socket_path: Path) -> None:
    """AgentRefresher finds no agent: it starts one in the background and gets its token."""
    assert not socket_path.exists()
    refresher = AgentRefresher(socket=socket_path, store=logged_in.store)
    assert refresher.refresh(None).access_token == logged_in.tokens().access_token
    assert status(logged_in, socket_path)["running"] is True
    refresher.close()


def test_an_unsafe_directory_is_refused(logged_in: LoggedIn, agent_dir: Path) -> None:
    """A socket directory others may enter: the agent does not start, and says how to fix it."""
    open_dir = agent_dir / "open"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    result = agent(logged_in, open_dir / "agent.sock", "start")
    assert result.returncode == 1
    assert f"chmod 700 {open_dir}" in result.stderr


def test_systemd_socket_activation(logged_in: LoggedIn, agent_dir: Path) -> None:
    """systemd-socket-activate holds the socket and starts `agent --systemd` on the first
    connection; the agent serves it and exits after --idle-exit, leaving the socket to
    systemd."""
    require("systemd-socket-activate", "systemd")
    socket_path = agent_dir / "agent.sock"
    activator = subprocess.Popen(
        [
            "systemd-socket-activate", "-l", str(socket_path),
            "-E", f"FRESHTOKEN_STORE={logged_in.store}",  # it passes no environment by default
            sys.executable, "-m", "freshtoken.cli", "agent", "--systemd", "--idle-exit", "0.5",
        ],
        env=logged_in.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert activator.stdout is not None
        assert "Listening on" in activator.stdout.readline()
        token = AgentRefresher(socket=socket_path, autostart=False, timeout=30).refresh(None)
        assert token.access_token == logged_in.tokens().access_token
        assert activator.wait(timeout=30) == 0  # the agent exec'd in its place, then idled out
    finally:
        if activator.poll() is None:
            activator.kill()
            activator.wait()
        if activator.stdout is not None:
            output = activator.stdout.read()
            activator.stdout.close()
    assert "no request for" in output
    assert socket_path.exists()  # systemd's, not the agent's to remove
