"""Every command against bad input: one ``freshtoken: ...`` line on stderr, the documented exit
status, never a traceback, never a secret.

The bad input: a server that is down, wrong credentials, corrupt and deeply nested token
files, hostile token endpoints (tests/listener.py), unknown flags, stdin that is not a
terminal, and Ctrl-C (SIGINT to a real child process).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from listener import Answer, Listener, Received, json_answer
from tools import refused_port

from freshtoken import TokenSet
from freshtoken.cli import EXIT_CODES, SUBCOMMANDS, _build_parser, main
from freshtoken.server import ReferenceServer
from freshtoken.stores import FileStore

SECRETS = ("demo-secret", "hunter2-password", "access-token-xyz", "refresh-token-xyz")
_CLEARED = (
    "FRESHTOKEN_ENCRYPTION_KEY",
    "FRESHTOKEN_PROFILE",
    "FRESHTOKEN_CLIENT_SECRET",
    "FRESHTOKEN_PASSWORD",
    "FRESHTOKEN_AGENT_SOCKET",
    "FRESHTOKEN_GIT_CONFIG",
    "BROWSER",
)


@dataclasses.dataclass
class Outcome:
    code: int
    out: str
    err: str

    def one_line_failure(self, code: int = 1) -> None:
        """The failure the CLI promises: this exit status, one `freshtoken: ` line, nothing
        secret, no traceback."""
        assert self.code == code, (self.code, self.err)
        assert self.err.count("\n") == 1, self.err
        assert self.err.startswith("freshtoken: "), self.err
        assert "Traceback" not in self.err + self.out
        for secret in SECRETS:
            assert secret not in self.err + self.out


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A token store of the test's own, and an environment with no freshtoken settings."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    store = tmp_path / "tokens.json"
    monkeypatch.setenv("FRESHTOKEN_STORE", str(store))
    monkeypatch.setenv("FRESHTOKEN_GIT_CONFIG", str(tmp_path / "git-credential.ini"))
    monkeypatch.setenv("FRESHTOKEN_AGENT_SOCKET", str(tmp_path / "agent.sock"))
    (tmp_path / "git-credential.ini").write_text("[https://git.example.com]\nprofile = default\n")
    return store


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], home: Path) -> Callable[..., Outcome]:
    def invoke(*argv: str) -> Outcome:
        code = main(list(argv))
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return invoke


def child(
    *argv: str, env: dict[str, str], stdin: int | None = subprocess.DEVNULL, timeout: float = 60
) -> Outcome:
    """``freshtoken ARGV`` in a child process whose stdin is not a terminal."""
    result = subprocess.run(
        [sys.executable, "-m", "freshtoken.cli", *argv],
        stdin=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Outcome(result.returncode, result.stdout, result.stderr)


def free_port() -> int:
    """A port free now, for a server of this test to take (released: a race, but brief)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def save_profile(store: Path, token_url: str, *, expired: bool = True) -> None:
    """A profile of client demo at ``token_url`` whose access token has expired."""
    tokens = TokenSet(
        access_token="access-token-xyz",
        refresh_token="refresh-token-xyz",
        expires_at=1.0 if expired else time.time() + 3600,
        obtained_at=0.0,
    )
    meta = {"refresher": "oauth2", "token_url": token_url, "client_id": "demo"}
    meta["auth_method"] = "client_secret_basic"
    FileStore(store).save_profile(tokens, meta=meta, client_secret="demo-secret")


# -- usage -----------------------------------------------------------------------------------


def test_bare_freshtoken_prints_help_and_succeeds(run: Callable[..., Outcome]) -> None:
    """`freshtoken` alone prints the help, plain text, with every command and exit status."""
    result = run()
    assert result.code == 0
    assert result.err == ""
    for name in SUBCOMMANDS:
        assert name in result.out
    for code in EXIT_CODES:
        assert f"  {code} " in result.out
    assert "``" not in result.out  # no reStructuredText markup


def test_version(run: Callable[..., Outcome]) -> None:
    """--version prints the version and succeeds."""
    with pytest.raises(SystemExit) as exited:
        run("--version")
    assert exited.value.code == 0


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_every_flag_of_every_command_has_help(command: str) -> None:
    """No flag or argument is left without a help text."""
    parser = _build_parser(command)
    chooser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub = chooser.choices[command]
    for action in sub._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("command", list(SUBCOMMANDS))
def test_an_unknown_flag_is_one_line_and_exit_2(run: Callable[..., Outcome], command: str) -> None:
    """Every command refuses an unknown flag in one line (usage errors exit 2)."""
    result = run(command, "--no-such-flag")
    result.one_line_failure(2)
    assert f"freshtoken {command} --help" in result.err


@pytest.mark.parametrize(
    "argv",
    [
        ["login", "--client-id", "x"],  # neither --issuer nor --token-url
        ["login", "--issuer", "https://id.example.com", "--client-id", "x", "--flow", "magic"],
        ["token", "--format", "yaml"],
        ["serve", "--port", "http"],
        ["demo", "--duration", "0"],
        ["agent", "dance"],
        ["git-credential", "fetch"],
        ["no-such-command"],
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    run: Callable[..., Outcome], argv: list[str]
) -> None:
    """Invalid values and missing arguments: one line, exit 2."""
    run(*argv).one_line_failure(2)


# -- no profile, corrupt and hostile token files ---------------------------------------------

PROFILE_COMMANDS = [
    ["token"],
    ["logout"],
    ["exec", "--", "true"],
]

CORRUPT_FILES = {
    "not-json": b"{this is not json",
    "empty": b"",
    "deeply-nested": b"[" * 100_000 + b"]" * 100_000,
    "deeply-nested-profile": (
        b'{"format": "freshtoken/1", "serial": 1, "profiles": {"default": '
        + b'{"a":' * 50_000
        + b"1"
        + b"}" * 50_000
        + b"}}"
    ),
    "foreign": b'{"hello": "world"}',
    "huge-number": b'{"format": "freshtoken/1", "serial": 1' + b"0" * 5000 + b', "profiles": {}}',
    "not-utf8": b'{"format": "\xff\xfe"}',
}


@pytest.mark.parametrize("argv", PROFILE_COMMANDS)
def test_no_profile(run: Callable[..., Outcome], argv: list[str]) -> None:
    """A command on a profile that does not exist says so in one line."""
    result = run(*argv)
    result.one_line_failure()
    assert "freshtoken login" in result.err or "no profile" in result.err


@pytest.mark.parametrize("content", list(CORRUPT_FILES), ids=list(CORRUPT_FILES))
@pytest.mark.parametrize(
    "argv",
    [
        *PROFILE_COMMANDS,
        ["status"],
        ["login", "--token-url", "http://127.0.0.1:1/token", "--client-id", "demo"],
        ["git-credential", "get"],
    ],
)
def test_a_corrupt_token_file(
    run: Callable[..., Outcome],
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    content: str,
) -> None:
    """A token file that is corrupt, nested 100,000 deep or not ours: one line naming it,
    and the file is left as it was."""
    home.write_bytes(CORRUPT_FILES[content])
    home.chmod(0o600)
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", "demo-secret")
    monkeypatch.setattr(sys, "stdin", _Stdin("protocol=https\nhost=git.example.com\n\n"))
    result = run(*argv)
    result.one_line_failure()
    assert str(home) in result.err
    assert home.read_bytes() == CORRUPT_FILES[content]


class _Stdin:
    """Just enough of sys.stdin for git-credential (it reads stdin.buffer)."""

    def __init__(self, text: str) -> None:
        import io

        self.buffer = io.BytesIO(text.encode())

    def isatty(self) -> bool:
        return False

    def readline(self) -> str:
        return self.buffer.readline().decode()


def test_a_token_file_others_may_read(run: Callable[..., Outcome], home: Path) -> None:
    """A token file readable by others is refused, in one line that says how to fix it."""
    save_profile(home, "http://127.0.0.1:1/token", expired=False)
    home.chmod(0o644)
    result = run("token")
    result.one_line_failure()
    assert "chmod 600" in result.err


# -- servers that are down, refuse, or answer with garbage -----------------------------------


@pytest.mark.parametrize("argv", [["token"], ["logout"], ["exec", "--", "true"]])
def test_the_server_is_down(run: Callable[..., Outcome], home: Path, argv: list[str]) -> None:
    """An expired profile whose server is down: one line, exit 1, the profile kept."""
    with refused_port() as port:
        save_profile(home, f"http://127.0.0.1:{port}/oauth/token")
        result = run(*argv)
    result.one_line_failure()
    assert FileStore(home).load_profile() is not None


@pytest.mark.parametrize("server", ["--issuer", "--token-url"])
def test_login_to_a_server_that_is_down(
    run: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch, server: str
) -> None:
    """Logging in to nothing: one line that names what could not be reached."""
    monkeypatch.setenv("FRESHTOKEN_PASSWORD", "hunter2-password")
    with refused_port() as port:
        url = f"http://127.0.0.1:{port}"
        result = run("login", server, url, "--client-id", "demo-public", "--username", "demo")
    result.one_line_failure()
    assert "127.0.0.1" in result.err


@pytest.mark.parametrize(
    ("secret", "password"),
    [("demo-secret", "hunter2-password"), ("wrong-secret", "demo")],
    ids=["wrong-password", "wrong-client-secret"],
)
def test_wrong_credentials(
    run: Callable[..., Outcome],
    oauth_server: ReferenceServer,
    monkeypatch: pytest.MonkeyPatch,
    secret: str,
    password: str,
) -> None:
    """A refused password or client secret: one line, the server's error, no secret."""
    monkeypatch.setenv("FRESHTOKEN_PASSWORD", password)
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", secret)
    result = run(
        "login", "--token-url", oauth_server.token_url, "--client-id", "demo",
        "--username", "demo",
    )  # fmt: skip
    result.one_line_failure()
    assert "invalid_" in result.err
    assert secret not in result.err


def test_a_revoked_session(
    run: Callable[..., Outcome], oauth_server: ReferenceServer, home: Path
) -> None:
    """`token` on a profile whose session the server revoked: log in again, one line."""
    tokens = oauth_server.login()
    save_profile(home, oauth_server.token_url)
    store = FileStore(home)
    stored = store.load()
    assert stored is not None
    expired = dataclasses.replace(stored.tokens, refresh_token=tokens["refresh_token"])
    store.save(expired, expected_generation=stored.generation)
    oauth_server.revoke("demo")
    result = run("token")
    result.one_line_failure()
    assert "freshtoken login" in result.err


HOSTILE_ANSWERS = {
    "html": Answer(502, (("Content-Type", "text/html"),), b"<html>Bad gateway</html>"),
    "not-json": Answer(200, (("Content-Type", "application/json"),), b"{nope"),
    "nested": Answer(200, (("Content-Type", "application/json"),), b"[" * 50_000),
    "echoes-what-it-got": Answer(),  # see respond(): the request, body and Authorization
    "wrong-type": json_answer({"access_token": "a", "token_type": "mac", "expires_in": 60}),
    "huge-expiry": json_answer({"access_token": "a", "token_type": "Bearer", "expires_in": 1e400}),
    "control-characters": json_answer({"access_token": "a\nb", "token_type": "Bearer"}),
}


@pytest.fixture(params=list(HOSTILE_ANSWERS))
def hostile(request: pytest.FixtureRequest) -> Iterator[Listener]:
    answer = HOSTILE_ANSWERS[request.param]

    def respond(received: Received) -> Answer:
        if request.param == "echoes-what-it-got":
            said = f"{received.body.decode()} {received.headers.get('authorization')}"
            return json_answer({"error": "invalid_grant", "error_description": said}, 400)
        return answer

    with Listener(respond) as listener:
        yield listener


def test_token_against_a_hostile_token_endpoint(
    run: Callable[..., Outcome], home: Path, hostile: Listener
) -> None:
    """Whatever the token endpoint answers, `token` fails in one line and keeps the profile."""
    save_profile(home, f"{hostile.url}/token")
    result = run("token")
    result.one_line_failure()


def test_login_against_a_hostile_token_endpoint(
    run: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch, hostile: Listener
) -> None:
    """Whatever the token endpoint answers a login, one line."""
    monkeypatch.setenv("FRESHTOKEN_PASSWORD", "hunter2-password")
    monkeypatch.setenv("FRESHTOKEN_CLIENT_SECRET", "demo-secret")
    result = run(
        "login", "--token-url", f"{hostile.url}/token", "--client-id", "demo",
        "--username", "demo",
    )  # fmt: skip
    result.one_line_failure()


def test_a_hostile_discovery_document(run: Callable[..., Outcome], hostile: Listener) -> None:
    """A discovery document that is garbage: one line."""
    result = run("login", "--issuer", hostile.url, "--client-id", "demo-public", "--flow", "device")
    result.one_line_failure()


# -- flags that contradict each other, stdin that is not a terminal --------------------------


def test_auth_method_without_a_secret_fails_before_asking_anything(
    oauth_server: ReferenceServer, home: Path
) -> None:
    """--auth-method client_secret_basic without a secret fails at once, naming the flags,
    without reading a password (stdin stays open: a prompt would hang the child)."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env["FRESHTOKEN_STORE"] = str(home)
    process = subprocess.Popen(
        [sys.executable, "-m", "freshtoken.cli", "login", "--token-url", oauth_server.token_url,
         "--client-id", "demo", "--username", "demo", "--auth-method", "client_secret_basic"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=30)  # closes stdin only after the child ended
    finally:
        process.kill()
    result = Outcome(process.returncode, out, err)
    result.one_line_failure()
    assert "--client-secret" in err
    assert oauth_server.stats()["token_requests"] == 0


def test_a_password_login_with_stdin_not_a_terminal(
    oauth_server: ReferenceServer, home: Path
) -> None:
    """`login --username` with no terminal to prompt on: one line naming --password-stdin."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env["FRESHTOKEN_STORE"] = str(home)
    result = child(
        "login", "--token-url", oauth_server.token_url, "--client-id", "demo-public",
        "--username", "demo", env=env,
    )  # fmt: skip
    result.one_line_failure()
    assert "--password-stdin" in result.err


def test_library_log_lines_only_with_verbose(run: Callable[..., Outcome], home: Path) -> None:
    """A failing refresh logs warnings; without -v stderr has only the one line, with -v
    the log lines come first."""
    hostile = Listener(lambda received: HOSTILE_ANSWERS["html"])
    save_profile(home, f"{hostile.url}/token")
    loud = run("token", "-v")  # first: in this process, the failure is remembered after it
    quiet = run("token")
    quiet.one_line_failure()
    assert loud.code == 1
    lines = loud.err.splitlines()
    assert len(lines) > 1
    assert lines[-1] == quiet.err.strip()
    assert all("Traceback" not in line for line in lines)
    hostile.close()


# -- Ctrl-C ----------------------------------------------------------------------------------


class Child:
    """``freshtoken ARGV`` in a child process, its stderr read as it comes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "freshtoken.cli", *argv],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env,
        )  # fmt: skip
        self.err: list[str] = []
        self.said = threading.Event()
        self._new_line = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._new_line:
                self.err.append(line)
                self._new_line.notify_all()
            self.said.set()

    def says(self, text: str, timeout: float) -> bool:
        """Wait until a line of stderr holds ``text`` (not merely any line: a second Ctrl-C
        must come after the first was handled, or the two signals may merge into one)."""
        with self._new_line:
            return self._new_line.wait_for(lambda: any(text in line for line in self.err), timeout)

    def interrupt_when(self, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not ready():
            assert self.process.poll() is None, "".join(self.err)
            assert time.monotonic() < deadline, "the command never got going"
            time.sleep(0.02)
        self.process.send_signal(signal.SIGINT)

    def outcome(self, timeout: float = 30) -> Outcome:
        try:
            self.process.wait(timeout)  # not communicate(): the reader thread has stderr
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s; it said: {self.err}") from None
        finally:
            self.process.kill()
        self._reader.join(5)
        assert self.process.stdout is not None
        out = self.process.stdout.read()
        self.process.stdout.close()
        return Outcome(self.process.returncode, out, "".join(self.err))


def interrupted(argv: list[str], env: dict[str, str], ready: Callable[[], bool]) -> Outcome:
    """Start ``freshtoken ARGV``, send SIGINT once ``ready()``, and collect what it said."""
    running = Child(argv, env)
    running.interrupt_when(ready)
    return running.outcome()


@pytest.fixture
def child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env["FRESHTOKEN_STORE"] = str(home)
    return env


def test_ctrl_c_during_a_device_login(
    oauth_server: ReferenceServer, child_env: dict[str, str]
) -> None:
    """Ctrl-C while a device login waits for approval: one line, exit 130."""
    requests_before = oauth_server.stats()["token_requests"]
    result = interrupted(
        ["login", "--issuer", oauth_server.issuer, "--client-id", "demo-public", "--flow",
         "device"],
        child_env,
        ready=lambda: oauth_server.stats()["token_requests"] > requests_before,
    )  # fmt: skip
    assert result.code == 130, result.err
    lines = result.err.splitlines()
    assert lines[-1].startswith("freshtoken: ")
    assert "Traceback" not in result.err
    assert lines[-1] == "freshtoken: login failed: cancelled"


@pytest.mark.parametrize("again", [False, True], ids=["once", "twice"])
@pytest.mark.parametrize("argv", [["token"], ["exec", "--", "true"]])
def test_ctrl_c_while_the_token_endpoint_is_slow(
    home: Path, child_env: dict[str, str], argv: list[str], again: bool
) -> None:
    """Ctrl-C while a refresh waits for a slow token endpoint: one line at once, saying that
    the refresh already sent is finished (its tokens kept), then exit 130; a second Ctrl-C
    abandons it and exits 130 at once."""
    asked = threading.Event()
    release = threading.Event()

    def slow(received: Received) -> Answer:
        asked.set()
        release.wait(20)
        return json_answer({"error": "invalid_grant"}, 400)

    with Listener(slow) as listener:
        save_profile(home, f"{listener.url}/token")
        running = Child(argv, child_env)
        try:
            running.interrupt_when(asked.is_set)
            assert running.says("Ctrl-C again abandons it", 10), "".join(running.err)
            if again:
                running.process.send_signal(signal.SIGINT)
            else:
                release.set()  # the refresh ends; then so does the process
            result = running.outcome(timeout=10)
        finally:
            release.set()
    result.one_line_failure(130)
    assert "Ctrl-C again abandons it" in result.err


def test_ctrl_c_stops_serve_cleanly(child_env: dict[str, str], tmp_path: Path) -> None:
    """serve stops on Ctrl-C, its documented way out: exit 0, nothing on stderr."""
    port = free_port()

    def listening() -> bool:  # served by uvicorn, whose Ctrl-C handling is then in place
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/me", timeout=1).status_code == 401
        except httpx.TransportError:
            return False

    result = interrupted(["serve", "--port", str(port)], child_env, ready=listening)
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    assert result.out.splitlines()[-1] == "freshtoken serve: stopped"


def test_serve_on_a_port_in_use(run: Callable[..., Outcome]) -> None:
    """A port already taken: one line, exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run("serve", "--port", str(taken.getsockname()[1]))
    result.one_line_failure()
    assert "cannot listen" in result.err


def test_serve_on_all_interfaces_names_a_usable_url(child_env: dict[str, str]) -> None:
    """--host 0.0.0.0 prints URLs with 127.0.0.1 and says it listens on all interfaces."""
    process = subprocess.Popen(
        [sys.executable, "-m", "freshtoken.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=child_env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        second = process.stdout.readline()
        third = process.stdout.readline()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert first.startswith("freshtoken reference server on http://127.0.0.1:")
    assert "listening on all interfaces (0.0.0.0:" in second
    assert "0.0.0.0" not in third
    assert "--issuer http://127.0.0.1:" in third
