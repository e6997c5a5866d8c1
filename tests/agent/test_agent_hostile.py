"""What a client can do to the agent: be another user, be slow, send too much, hold every
connection, or die mid-request. The agent refuses or drops that client and serves the next."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from agent_fixture import RunningAgent
from profile_fixture import LoggedIn

from freshtoken.agent import AgentLimits

TOKEN_REQUEST = b"GET /v1/token HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n"

NOBODY = 65534


def _request(socket_path: Path) -> str:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    try:
        conn.connect(str(socket_path))
    except OSError as error:
        return type(error).__name__
    with contextlib.suppress(BrokenPipeError):  # refused before it wrote: read the 403 anyway
        conn.sendall(b"GET /v1/token HTTP/1.1\r\nhost: agent\r\n\r\n")
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := conn.recv(65536):
            data += chunk
    return data.decode("latin-1") or "nothing"


def as_nobody(socket_path: Path) -> str:
    """A forked child setuid()s to nobody, then connects and sends a token request: what
    came back, or the name of the error connect() raised."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a second user for real, no exec needed
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            answer = _request(socket_path)
        except BaseException as error:  # noqa: BLE001 - reported to the parent
            answer = f"child failed: {error!r}"
        os.write(write_end, answer.encode("latin-1", "replace"))
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        output = pipe.read().decode("latin-1")
    os.waitpid(pid, 0)
    return output


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="only root can start a child process as another uid (nobody)"
)


@needs_root
def test_another_user_cannot_even_connect_through_the_private_directory(
    running_agent: RunningAgent,
) -> None:
    """Socket 0600 in a 0700 directory: uid nobody gets EACCES at connect()."""
    directory = running_agent.socket_path.parent
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert os.stat(running_agent.socket_path).st_mode & 0o777 == 0o600
    assert as_nobody(running_agent.socket_path).strip() == "PermissionError"


@needs_root
def test_another_user_is_refused_by_peer_credentials_when_permissions_were_loosened(
    running_agent: RunningAgent, logged_in: LoggedIn
) -> None:
    """Directory and socket opened to everyone by hand: SO_PEERCRED still refuses uid
    nobody with a 403, and not a byte of a token leaves the agent."""
    os.chmod(running_agent.socket_path.parent, 0o755)
    os.chmod(running_agent.socket_path, 0o666)
    answer = as_nobody(running_agent.socket_path)
    assert answer.startswith("HTTP/1.1 403 Forbidden\r\n")
    tokens = logged_in.tokens()
    assert tokens.access_token not in answer
    assert tokens.refresh_token is not None
    assert tokens.refresh_token not in answer
    status = running_agent.get("/v1/status").json()
    assert status["counters"]["refused_peers"] == 1
    assert status["counters"]["tokens_served"] == 0
    assert running_agent.get("/v1/token").status_code == 200  # its owner is still served


@pytest.fixture
def agent_limits() -> AgentLimits:
    return AgentLimits(request_timeout=0.3, idle_timeout=0.6, max_connections=4)


def test_a_slow_client_is_cut_off_without_delaying_others(running_agent: RunningAgent) -> None:
    """Half a request and then silence: a 408 after request_timeout, while another client
    is served meanwhile."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow:
        slow.settimeout(10)
        slow.connect(str(running_agent.socket_path))
        slow.sendall(b"GET /v1/token HTTP/1.1\r\nhost: ag")
        assert running_agent.get("/v1/health").status_code == 200
        answer = b""
        while chunk := slow.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert running_agent.get("/v1/status").json()["counters"]["timeouts"] == 1


def test_an_idle_connection_is_closed_quietly(running_agent: RunningAgent) -> None:
    """A connection that never sends a byte is closed after idle_timeout, with no answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.settimeout(10)
        idle.connect(str(running_agent.socket_path))
        assert idle.recv(65536) == b""


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /v1/token HTTP/1.1\r\nhost: a\r\nx-pad: " + b"x" * 20_000 + b"\r\n\r\n", b"431"),
        (b"POST /v1/stop HTTP/1.1\r\nhost: a\r\ncontent-length: 1000000\r\n\r\n", b"413"),
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"GET /v1/token HTTP/1.1\r\n\r\n", b"400"),  # HTTP/1.1 without Host
    ],
)
def test_oversized_and_malformed_requests_are_refused(
    running_agent: RunningAgent, request_bytes: bytes, status: bytes
) -> None:
    """Heads over 8 KiB, bodies over 1 KiB, and non-HTTP are refused and the connection
    closed; the agent keeps serving."""
    answer = running_agent.exchange(request_bytes)
    assert answer.startswith(b"HTTP/1.1 " + status)
    assert running_agent.get("/v1/health").status_code == 200


def answer_or_reset(running_agent: RunningAgent) -> bytes:
    """The answer to a token request; b"" when the agent closed (or reset) unanswered."""
    try:
        return running_agent.exchange(TOKEN_REQUEST)
    except (ConnectionResetError, BrokenPipeError):
        return b""


def test_connections_beyond_the_limit_are_closed_at_once(running_agent: RunningAgent) -> None:
    """With every slot held by idle clients a new connection is closed unanswered; once they
    go, requests are served again."""
    held = []
    for _ in range(4):
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(running_agent.socket_path))
        held.append(conn)
    try:
        assert answer_or_reset(running_agent) == b""
    finally:
        for conn in held:
            conn.close()
    deadline = time.monotonic() + 10
    while True:  # the held connections' handlers end as the agent notices the close
        response = answer_or_reset(running_agent)
        if response:
            break
        assert time.monotonic() < deadline
    assert response.startswith(b"HTTP/1.1 200 ")
    assert running_agent.get("/v1/status").json()["counters"]["refused_busy"] >= 1


# Sends a token request and waits for the answer, which the test never lets arrive.
KILLED_CLIENT = textwrap.dedent(
    """
    import socket, sys
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sys.argv[1])
    conn.sendall(sys.argv[2].encode("latin-1"))
    print("sent", flush=True)
    conn.recv(1)
    """
)


@pytest.mark.parametrize(
    "request_text",
    [
        "GET /v1/token HTTP/1.1\r\nhost: agent\r\n\r\n",  # killed while the refresh runs
        "GET /v1/token HTTP/1.1\r\nhost: ag",  # killed halfway through its request
    ],
)
def test_a_client_killed_mid_request_costs_nothing(
    running_agent: RunningAgent, logged_in: LoggedIn, request_text: str
) -> None:
    """SIGKILL a client mid-request (during a slow refresh, or mid-headers): the agent lives
    on, the refresh lands and is saved, and the next client gets its token: one refresh."""
    logged_in.server.set_latency(0.3)
    logged_in.server.advance(301)
    client = subprocess.Popen(
        [sys.executable, "-c", KILLED_CLIENT, str(running_agent.socket_path), request_text],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "sent"
    client.send_signal(signal.SIGKILL)
    client.wait(timeout=10)
    client.stdout.close()
    response = running_agent.get("/v1/token", wait="10")
    assert response.status_code == 200
    assert response.json()["access_token"] == logged_in.tokens().access_token
    stats = logged_in.server.stats()
    assert stats["refreshes"] == 1
    assert stats["reuse_detections"] == 0
