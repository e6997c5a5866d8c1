"""``freshtoken exec``: the token in the child's environment, its exit status and signals
passed on, and a token file kept current across a refresh."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from profile_fixture import LoggedIn, log_in

import freshtoken
from freshtoken import system_clock
from freshtoken.cli.exec import SECRET_VARIABLES
from freshtoken.profiles import open_manager
from freshtoken.stores import FileStore
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


# Every secret freshtoken reads from the environment, with values found nowhere else.
SECRETS = {
    "FRESHTOKEN_ENCRYPTION_KEY": base64.urlsafe_b64encode(b"k" * 32).decode(),
    "FRESHTOKEN_CLIENT_SECRET": "client-secret-from-the-environment",
    "FRESHTOKEN_PASSWORD": "password-from-the-environment",
}


def exec_env(profile: LoggedIn, *options: str) -> tuple[dict[str, str], str]:
    """The child's environment under ``exec OPTIONS -- python PRINT_ENV``, with SECRETS set
    for exec, and everything it printed."""
    result = subprocess.run(
        [sys.executable, "-m", "freshtoken.cli", "exec", *options, "--",
         sys.executable, "-c", PRINT_ENV],
        env={**profile.env, **SECRETS, "UNRELATED": "kept"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    environment: dict[str, str] = json.loads(result.stdout)
    return environment, result.stdout + result.stderr


@pytest.mark.parametrize("refresh_file", [False, True], ids=["execvp", "supervised"])
def test_freshtokens_own_secrets_do_not_reach_the_child(
    logged_in: LoggedIn, tmp_path: Path, refresh_file: bool
) -> None:
    """$FRESHTOKEN_ENCRYPTION_KEY (it opens the refresh token in any copy of the store), the
    client secret and the password are removed from the child's environment, whether exec
    becomes the command or supervises it; the rest of the environment is passed on."""
    options = ["--refresh-file", str(tmp_path / "token")] if refresh_file else []
    environment, output = exec_env(logged_in, *options)
    assert environment["FRESHTOKEN_ACCESS_TOKEN"] == logged_in.tokens().access_token
    assert environment["UNRELATED"] == "kept"
    assert environment["FRESHTOKEN_STORE"] == str(logged_in.store)
    for name, value in SECRETS.items():
        assert name not in environment
        assert value not in output


def test_every_secret_variable_freshtoken_reads_is_one_exec_removes() -> None:
    """Any FRESHTOKEN_ variable of the package named like a secret (KEY, SECRET, PASSWORD)
    is in exec's list, and the test's SECRETS cover that list: a new one cannot be forgotten."""
    package = Path(freshtoken.__file__).parent
    named = {
        name
        for source in package.rglob("*.py")
        for name in re.findall(r'"(FRESHTOKEN_[A-Z_]+)"', source.read_text())
        if re.search(r"KEY|SECRET|PASSWORD", name)
    }
    assert named == set(SECRET_VARIABLES) == set(SECRETS)


def test_keep_secret_env_passes_them_on(logged_in: LoggedIn) -> None:
    """--keep-secret-env: the child gets them, for a command that runs freshtoken itself."""
    environment, _ = exec_env(logged_in, "--keep-secret-env")
    assert {name: environment.get(name) for name in SECRETS} == SECRETS


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
    removes the file when the child ends; one refresh at the server per expiry (two when a
    busy machine took so long to start exec that the login's token was due already)."""
    server = oauth_server_factory(clock=system_clock, access_ttl=3.0)
    profile = log_in(server, tmp_path / "tokens.json", monkeypatch)
    server.reset_stats()
    login_token = profile.tokens().access_token
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
    assert stats["refreshes"] == (1 if seen["first"] == login_token else 2)
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


def test_a_symlink_given_as_refresh_file_is_refused_and_left_alone(
    logged_in: LoggedIn, tmp_path: Path
) -> None:
    """--refresh-file naming a symbolic link (to a file, or dangling): exit 1 in one line,
    before any command runs; the link and what it points to are as they were."""
    target = tmp_path / "precious"
    target.write_text("precious")
    link = tmp_path / "token"
    link.symlink_to(target)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for path in (link, dangling):
        result = logged_in.run("exec", "--refresh-file", str(path), "--", "true")
        assert result.returncode == 1
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert "symbolic link" in result.stderr
        assert path.is_symlink()
    assert target.read_text() == "precious"
    assert not (tmp_path / "nowhere").exists()
    assert logged_in.tokens().access_token not in result.stderr


def test_a_directory_given_as_refresh_file_is_refused_and_left_alone(
    logged_in: LoggedIn, tmp_path: Path
) -> None:
    """--refresh-file naming a directory: exit 1 in one line, the directory untouched."""
    directory = tmp_path / "run"
    directory.mkdir()
    (directory / "keep").write_text("x")
    result = logged_in.run("exec", "--refresh-file", str(directory), "--", "true")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "is a directory" in result.stderr
    assert (directory / "keep").read_text() == "x"


PRINT_TOKEN_FILE = """
import os, pathlib
print(pathlib.Path(os.environ["FRESHTOKEN_TOKEN_FILE"]).read_text())
"""


def test_a_file_left_at_the_path_is_replaced_and_then_removed(
    logged_in: LoggedIn, tmp_path: Path
) -> None:
    """A regular file already at the path (left by an exec that was killed): replaced by the
    token file, which is removed when the command ends."""
    path = tmp_path / "token"
    path.write_text("stale token")
    path.chmod(0o600)
    result = logged_in.run(
        "exec", "--refresh-file", str(path), "--", sys.executable, "-c", PRINT_TOKEN_FILE
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == logged_in.tokens().access_token
    assert not path.exists()


# The command puts its own file, or a link, where exec's token file was.
REPLACE_TOKEN_FILE = """
import os, pathlib, sys
path = pathlib.Path(os.environ["FRESHTOKEN_TOKEN_FILE"])
other = path.with_name("other")
if sys.argv[1] == "file":
    other.write_text("the command's own file")
else:
    other.symlink_to(path.with_name("elsewhere"))
os.replace(other, path)
"""


@pytest.mark.parametrize("replacement", ["file", "symlink"])
def test_what_took_the_token_files_place_meanwhile_is_left_alone(
    logged_in: LoggedIn, tmp_path: Path, replacement: str
) -> None:
    """The command replaced the token file (with a file, or a link): exec removes only the
    file it wrote, so the replacement is still there when exec ends."""
    path = tmp_path / "token"
    result = logged_in.run(
        "exec", "--refresh-file", str(path), "--",
        sys.executable, "-c", REPLACE_TOKEN_FILE, replacement,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    if replacement == "file":
        assert path.read_text() == "the command's own file"
    else:
        assert path.is_symlink()


def wait_for_file(path: Path, content: str, deadline: float) -> float:
    """Seconds until ``path`` holds ``content`` (polled every 20 ms); fails at ``deadline``."""
    started = time.monotonic()
    while True:
        with contextlib.suppress(FileNotFoundError):
            if path.read_text() == content:
                return time.monotonic() - started
        assert time.monotonic() < started + deadline, f"{path} still stale after {deadline} s"
        time.sleep(0.02)


@pytest.mark.parametrize("refresher", ["another-process", "another-manager"])
def test_the_refresh_file_follows_a_refresh_made_elsewhere(
    logged_in: LoggedIn, tmp_path: Path, refresher: str
) -> None:
    """Another process (or another manager on the same token file) refreshes the profile
    while exec runs with 5-minute tokens: the file holds the new token promptly (exec's
    promise is a second; the deadline leaves room for a loaded machine, and is far below the
    minute that exec used to wait before it looked again). Nothing is refreshed twice."""
    token_file = tmp_path / "token"
    process = subprocess.Popen(
        [sys.executable, "-m", "freshtoken.cli", "exec", "--refresh-file", str(token_file),
         "--", sys.executable, "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=logged_in.env,
    )  # fmt: skip
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "ready"
        first = logged_in.tokens().access_token
        assert token_file.read_text() == first
        for _ in range(2):  # the second refresh finds exec's view already moved once
            if refresher == "another-process":
                logged_in.expire()  # the next `freshtoken token` must refresh
                result = logged_in.run("token")
                assert result.returncode == 0, result.stderr
                new = result.stdout.strip()
            else:
                store = FileStore(logged_in.store, profile="default")
                new = open_manager(store).refresh().access_token
            assert new == logged_in.tokens().access_token != first
            wait_for_file(token_file, new, deadline=5.0)
            first = new
    finally:
        process.stdin.close()
        assert process.wait(timeout=30) == 0
        process.stdout.close()
    assert not token_file.exists()
    assert logged_in.server.stats()["refreshes"] == 2
