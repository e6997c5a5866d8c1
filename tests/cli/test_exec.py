"""``freshtoken exec``: the token in the child's environment, its exit status and signals
passed on, and a token file kept current across a refresh."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from profile_fixture import LoggedIn, log_in

from freshtoken import system_clock
from freshtoken.testing import ServerFactory

PRINT_ENV = "import json, os; print(json.dumps(dict(os.environ)))"


def test_the_child_gets_the_token_and_its_exit_status_is_passed_on(logged_in: LoggedIn) -> None:
    """The access token is in $FRESHTOKEN_ACCESS_TOKEN; the child's exit status is exec's."""
    code = "import os, sys; print(os.environ['FRESHTOKEN_ACCESS_TOKEN']); sys.exit(42)"
    result = logged_in.run("exec", "--", sys.executable, "-c", code)
    assert result.returncode == 42, result.stderr
    assert result.stdout.strip() == logged_in.tokens().access_token


def test_the_variable_name_is_configurable_and_no_refresh_token_reaches_the_child(
    logged_in: LoggedIn,
) -> None:
    """--env NAME carries the token; the refresh token and client secret appear nowhere."""
    result = logged_in.run("exec", "--env", "API_TOKEN", "--", sys.executable, "-c", PRINT_ENV)
    assert result.returncode == 0, result.stderr
    environment = json.loads(result.stdout)
    tokens = logged_in.tokens()
    assert environment["API_TOKEN"] == tokens.access_token
    assert "FRESHTOKEN_ACCESS_TOKEN" not in environment
    assert tokens.refresh_token is not None
    assert tokens.refresh_token not in result.stdout
    assert "demo-secret" not in result.stdout


def test_an_expired_token_is_refreshed_before_the_child_starts(logged_in: LoggedIn) -> None:
    """exec refreshes a due token first: the child gets one the API accepts."""
    logged_in.expire()
    code = "import os; print(os.environ['FRESHTOKEN_ACCESS_TOKEN'])"
    result = logged_in.run("exec", "--", sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert logged_in.api_status(result.stdout.strip()) == 200
    assert logged_in.server.stats()["refreshes"] == 1


@pytest.mark.parametrize("refresh_file", [False, True])
def test_a_missing_command_exits_127_with_one_line(
    logged_in: LoggedIn, refresh_file: bool, tmp_path: Path
) -> None:
    """A command that does not exist: 127, as a shell says, and one line on stderr."""
    options = ["--refresh-file", str(tmp_path / "token")] if refresh_file else []
    result = logged_in.run("exec", *options, "--", "no-such-command-anywhere")
    assert result.returncode == 127
    assert result.stderr.strip() == "freshtoken: command not found: no-such-command-anywhere"
    assert not (tmp_path / "token").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["exec"], "exec needs a command"),
        (["exec", "--env", "1BAD", "--", "true"], "not a valid environment variable"),
        (["exec", "--signal-on-refresh", "HUP", "--", "true"], "needs --refresh-file"),
        (["exec", "--refresh-file", "f", "--signal-on-refresh", "NOPE", "--", "true"], "NOPE"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    logged_in: LoggedIn, argv: list[str], message: str
) -> None:
    """Each misuse exits 1 with one line that says what is wrong."""
    result = logged_in.run(*argv)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1


# The child waits for exec's refresh signal, bounded, then reads the file again.
WAIT_FOR_REFRESH = """
import json, os, pathlib, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
path = pathlib.Path(os.environ["FRESHTOKEN_TOKEN_FILE"])
first = path.read_text()
mode = path.stat().st_mode & 0o777
if signal.sigtimedwait({signal.SIGUSR1}, 30) is None:
    sys.exit(3)
second = path.read_text()
print(json.dumps({"env": os.environ["FRESHTOKEN_ACCESS_TOKEN"], "first": first,
                  "second": second, "mode": mode}))
sys.exit(7)
"""


def test_the_refresh_file_is_kept_current_across_a_refresh(
    oauth_server_factory: ServerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 s tokens: exec refreshes when due, replaces the 0600 file, signals the child, and
    removes the file when the child ends; one refresh at the server."""
    server = oauth_server_factory(clock=system_clock, access_ttl=3.0)
    profile = log_in(server, tmp_path / "tokens.json", monkeypatch)
    server.reset_stats()
    token_file = tmp_path / "run" / "token"
    result = profile.run(
        "exec", "--refresh-file", str(token_file), "--signal-on-refresh", "USR1",
        "--", sys.executable, "-c", WAIT_FOR_REFRESH,
    )  # fmt: skip
    assert result.returncode == 7, result.stderr
    seen = json.loads(result.stdout)
    assert seen["first"] == seen["env"]
    assert seen["second"] != seen["first"]
    assert seen["second"] == profile.tokens().access_token
    assert seen["mode"] == 0o600
    assert profile.api_status(seen["second"]) == 200
    assert not token_file.exists()
    stats = server.stats()
    assert stats["refreshes"] == 1
    assert stats["reuse_detections"] == 0


TRAP_TERM = """
import signal, sys
signal.signal(signal.SIGTERM, lambda *_: sys.exit(21))
print("ready", flush=True)
signal.pause()
"""


def test_signals_sent_to_exec_reach_the_child(logged_in: LoggedIn, tmp_path: Path) -> None:
    """SIGTERM to exec (a supervisor stopping it) is forwarded; the child's status returns."""
    process = subprocess.Popen(
        [
            sys.executable, "-m", "freshtoken.cli", "exec",
            "--refresh-file", str(tmp_path / "token"), "--", sys.executable, "-c", TRAP_TERM,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=logged_in.env,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 21
    process.stdout.close()


def test_a_child_killed_by_a_signal_takes_exec_down_the_same_way(
    logged_in: LoggedIn, tmp_path: Path
) -> None:
    """A child that dies of SIGKILL: exec dies of SIGKILL too, and the file is gone."""
    code = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"
    token_file = tmp_path / "token"
    result = logged_in.run(
        "exec", "--refresh-file", str(token_file), "--", sys.executable, "-c", code
    )
    assert result.returncode == -signal.SIGKILL
    assert not token_file.exists()
