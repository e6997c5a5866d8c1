"""``freshtoken git-credential``: git's credential protocol, spoken to real ``git credential``,
tokens only for the hosts the mapping names."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from profile_fixture import LoggedIn

from freshtoken.cli.git_credential import parse_attributes

MAPPING = """
# which hosts get which profile's token
[https://git.example.com]
profile = default

[https://code.example.org:8443/team/]
profile = default
username = x-token-auth   ; Bitbucket's name for it
"""


@pytest.fixture
def git_home(logged_in: LoggedIn, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "git-credential.ini").write_text(MAPPING)
    return home


def git_env(profile: LoggedIn, home: Path) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        **profile.env,
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "FRESHTOKEN_GIT_CONFIG": str(home.parent / "git-credential.ini"),
        "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
    }


def git_credential(
    profile: LoggedIn, home: Path, action: str, text: str, *config: str
) -> subprocess.CompletedProcess[str]:
    """``git credential ACTION`` with only freshtoken as helper (``!python -m ...``)."""
    helper = f"!{shlex.quote(sys.executable)} -m freshtoken.cli git-credential"
    options = ["-c", "credential.helper=", "-c", f"credential.helper={helper}"]
    for item in config:
        options += ["-c", item]
    return subprocess.run(
        ["git", *options, "credential", action],
        input=text,
        capture_output=True,
        text=True,
        env=git_env(profile, home),
        timeout=60,
        check=False,
    )


def attributes(text: str) -> dict[str, str]:
    return {key: values[-1] for key, values in parse_attributes(text.encode()).items() if values}


def test_git_credential_fill_gets_the_profile_token_for_a_mapped_host(
    logged_in: LoggedIn, git_home: Path
) -> None:
    """Real `git credential fill`: username oauth2 and the access token as password."""
    result = git_credential(
        logged_in, git_home, "fill", "protocol=https\nhost=git.example.com\npath=org/repo.git\n\n"
    )
    assert result.returncode == 0, result.stderr
    answer = attributes(result.stdout)
    assert answer["username"] == "oauth2"
    assert answer["password"] == logged_in.tokens().access_token
    assert logged_in.server.stats()["token_requests"] == 0


def test_the_documented_gitconfig_line_works(logged_in: LoggedIn, git_home: Path) -> None:
    """`[credential] helper = freshtoken` in ~/.gitconfig runs git-credential-freshtoken."""
    (git_home / ".gitconfig").write_text("[credential]\n\thelper = freshtoken\n")
    result = subprocess.run(
        ["git", "credential", "fill"],
        input="url=https://git.example.com/org/repo.git\n\n",
        capture_output=True,
        text=True,
        env=git_env(logged_in, git_home),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert attributes(result.stdout)["password"] == logged_in.tokens().access_token


def test_an_unmapped_host_gets_nothing(logged_in: LoggedIn, git_home: Path) -> None:
    """Another host: the helper stays silent, git falls back to its prompt (disabled here)."""
    for host in ("evil.example.com", "git.example.com.evil.net", "git.example.com:444"):
        result = git_credential(logged_in, git_home, "fill", f"protocol=https\nhost={host}\n\n")
        assert result.returncode != 0
        assert logged_in.tokens().access_token not in result.stdout + result.stderr
    plain = git_credential(logged_in, git_home, "fill", "protocol=http\nhost=git.example.com\n\n")
    assert plain.returncode != 0  # the mapping is for https only


def test_a_path_scoped_mapping_needs_the_path(logged_in: LoggedIn, git_home: Path) -> None:
    """[https://host:8443/team/] matches team/... only, with its own username; git sends
    the path with credential.useHttpPath."""
    request = "protocol=https\nhost=code.example.org:8443\npath=team/app.git\n\n"
    result = git_credential(logged_in, git_home, "fill", request, "credential.useHttpPath=true")
    assert result.returncode == 0, result.stderr
    assert attributes(result.stdout)["username"] == "x-token-auth"
    other = request.replace("team/", "other/")
    refused = git_credential(logged_in, git_home, "fill", other, "credential.useHttpPath=true")
    assert refused.returncode != 0
    no_path = git_credential(logged_in, git_home, "fill", request)
    assert no_path.returncode != 0


def helper(
    profile: LoggedIn, home: Path, action: str, text: str
) -> subprocess.CompletedProcess[str]:
    """The helper as git runs it: ``git-credential-freshtoken ACTION`` with the attributes."""
    return subprocess.run(
        [sys.executable, "-m", "freshtoken.cli", "git-credential", action],
        input=text,
        capture_output=True,
        text=True,
        env=git_env(profile, home),
        timeout=60,
        check=False,
    )


def test_get_answers_password_expiry_utc_and_never_echoes_a_refresh_token(
    logged_in: LoggedIn, git_home: Path
) -> None:
    """Git 2.41 fields: password_expiry_utc is when a refresh falls due; an
    oauth_refresh_token passed in is ignored and the profile's is never written."""
    result = helper(
        logged_in, git_home, "get",
        "protocol=https\nhost=git.example.com\noauth_refresh_token=from-another-helper\n"
        "wwwauth[]=Bearer realm=\"x\"\n\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = attributes(result.stdout)
    tokens = logged_in.tokens()
    assert tokens.expires_at is not None
    assert tokens.refresh_token is not None
    assert set(answer) == {"username", "password", "password_expiry_utc"}
    assert time.time() < int(answer["password_expiry_utc"]) <= tokens.expires_at
    assert tokens.refresh_token not in result.stdout
    assert "from-another-helper" not in result.stdout


def test_bearer_mapping_answers_authtype_to_a_git_that_can_take_it(
    logged_in: LoggedIn, git_home: Path
) -> None:
    """bearer = true and capability[]=authtype (Git 2.46): authtype=Bearer, credential=token;
    a git without the capability still gets username and password."""
    (git_home.parent / "git-credential.ini").write_text(
        "[https://git.example.com]\nprofile = default\nbearer = true\n"
    )
    capable = helper(
        logged_in,
        git_home,
        "get",
        "capability[]=authtype\nprotocol=https\nhost=git.example.com\n\n",
    )
    answer = attributes(capable.stdout)
    assert answer["authtype"] == "Bearer"
    assert answer["credential"] == logged_in.tokens().access_token
    assert "password" not in answer
    older = helper(logged_in, git_home, "get", "protocol=https\nhost=git.example.com\n\n")
    assert attributes(older.stdout)["password"] == logged_in.tokens().access_token


def test_an_expired_token_is_refreshed_once_for_git(logged_in: LoggedIn, git_home: Path) -> None:
    """get on an expired profile refreshes (once) and answers a working token."""
    logged_in.expire()
    result = git_credential(logged_in, git_home, "fill", "protocol=https\nhost=git.example.com\n\n")
    assert result.returncode == 0, result.stderr
    password = attributes(result.stdout)["password"]
    assert logged_in.api_status(password) == 200
    assert logged_in.server.stats()["refreshes"] == 1


def test_reject_of_our_token_refreshes_it_once_and_of_another_password_does_nothing(
    logged_in: LoggedIn, git_home: Path
) -> None:
    """`git credential reject` (the host said 401) with the current token: one refresh, so
    the next fill works; with a password that is not ours: nothing."""
    before = logged_in.tokens().access_token
    foreign = "protocol=https\nhost=git.example.com\nusername=oauth2\npassword=typed-by-hand\n\n"
    assert git_credential(logged_in, git_home, "reject", foreign).returncode == 0
    assert logged_in.server.stats()["refreshes"] == 0
    ours = foreign.replace("typed-by-hand", before)
    assert git_credential(logged_in, git_home, "reject", ours).returncode == 0
    assert git_credential(logged_in, git_home, "reject", ours).returncode == 0
    assert logged_in.server.stats()["refreshes"] == 1  # the second reject found it replaced
    after = logged_in.tokens().access_token
    assert after != before
    filled = git_credential(logged_in, git_home, "fill", "protocol=https\nhost=git.example.com\n\n")
    assert attributes(filled.stdout)["password"] == after


def test_approve_stores_nothing(logged_in: LoggedIn, git_home: Path) -> None:
    """`git credential approve` of a typed password: the profile is untouched."""
    store_before = logged_in.store.read_bytes()
    text = "protocol=https\nhost=git.example.com\nusername=me\npassword=typed\n\n"
    result = git_credential(logged_in, git_home, "approve", text)
    assert result.returncode == 0
    assert result.stdout == ""
    assert logged_in.store.read_bytes() == store_before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("protocol=https\nno equals sign\n\n", "key=value"),
        ("protocol=https\nhost=a\0b\n\n", "NUL"),
        ("x=" + "y" * 70_000 + "\n\n", "more than"),
    ],
)
def test_input_that_is_not_git_is_refused_in_one_line(
    logged_in: LoggedIn, git_home: Path, text: str, message: str
) -> None:
    """Malformed, NUL-carrying or oversized input: exit 1, one line naming the problem."""
    result = helper(logged_in, git_home, "get", text)
    assert result.returncode == 1
    assert message in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ("[http://git.example.com]\nprofile = default\n", "plain HTTP"),
        ("[https://git.example.com]\nusername = me\n", "profile = NAME"),
        ("[https://git.example.com]\nprofile = default\ncolour = red\n", "unknown setting"),
        ("[git.example.com]\nprofile = default\n", "names a URL"),
        ("[https://u:p@git.example.com]\nprofile = default\n", "scheme, a host"),
        ("not ini at all\n", "is not valid"),
    ],
)
def test_a_bad_mapping_file_is_a_clear_error(
    logged_in: LoggedIn, git_home: Path, mapping: str, message: str
) -> None:
    """Mistakes in git-credential.ini are named (file and section), not guessed around."""
    (git_home.parent / "git-credential.ini").write_text(mapping)
    result = helper(logged_in, git_home, "get", "protocol=https\nhost=git.example.com\n\n")
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
    assert "git-credential.ini" in result.stderr


def test_loopback_may_be_plain_http(logged_in: LoggedIn, git_home: Path) -> None:
    """http:// is accepted for a loopback host (a local forge in development)."""
    (git_home.parent / "git-credential.ini").write_text(
        "[http://127.0.0.1:3000]\nprofile = default\n"
    )
    result = helper(logged_in, git_home, "get", "protocol=http\nhost=127.0.0.1:3000\n\n")
    assert result.returncode == 0, result.stderr
    assert attributes(result.stdout)["password"] == logged_in.tokens().access_token


HOSTILE_MAPPING = """
[https://git.example.com]
profile = default

[https://code.example.org:8443/team/]
profile = default

[http://[::1]:8443]
profile = default

[https://bücher.example]
profile = default
"""

ANSWERED = {
    "plain": "protocol=https\nhost=git.example.com\n",
    "upper-case": "protocol=https\nhost=GIT.Example.COM\n",
    "default-port": "protocol=https\nhost=git.example.com:443\n",
    "port-leading-zero": "protocol=https\nhost=git.example.com:0443\n",
    "url": "url=https://git.example.com/org/repo.git\n",
    "url-with-user": "url=https://someone@git.example.com/org/repo.git\n",
    "url-upper-case-port": "url=https://GIT.EXAMPLE.COM:443/repo.git\n",
    "ipv6": "protocol=http\nhost=[::1]:8443\n",
    "ipv6-long-form": "protocol=http\nhost=[0:0:0:0:0:0:0:1]:8443\n",
    "unicode-as-mapped": "protocol=https\nhost=bücher.example\n",
    "path-scoped": "protocol=https\nhost=code.example.org:8443\npath=team/app.git\n",
    "host-after-url": "url=https://evil.example/\nhost=git.example.com\n",
}

NOT_ANSWERED = {
    "userinfo-in-host": "protocol=https\nhost=evil.example@git.example.com\n",
    "fragment-in-host": "protocol=https\nhost=evil.example#@git.example.com\n",
    "backslash-in-url": "url=https://evil.example\\@git.example.com/r.git\n",
    "backslash-other-way": "url=https://git.example.com\\@evil.example/r.git\n",
    "two-ats": "url=https://a@b@git.example.com/r.git\n",
    "encoded-at-host": "protocol=https\nhost=evil.example%40git.example.com\n",
    "encoded-at-url": "url=https://evil.example%40git.example.com/r.git\n",
    "trailing-dot": "protocol=https\nhost=git.example.com.\n",
    "empty-port": "protocol=https\nhost=git.example.com:\n",
    "port-too-large": "protocol=https\nhost=git.example.com:65979\n",
    "two-ports": "protocol=https\nhost=git.example.com:443:443\n",
    "space": "protocol=https\nhost=git.example.com \n",
    "plain-http": "protocol=http\nhost=git.example.com\n",
    "upper-case-protocol": "protocol=HTTPS\nhost=git.example.com\n",
    "a-label-of-unicode": "protocol=https\nhost=xn--bcher-kva.example\n",
    "unicode-upper-case": "protocol=https\nhost=BÜCHER.example\n",
    "fullwidth": "protocol=https\nhost=\uff47\uff49\uff54.example.com\n",  # what UTS 46 maps to git
    "ipv6-zone": "protocol=http\nhost=[::1%25lo]:8443\n",
    "ipv6-unbracketed": "protocol=http\nhost=::1\n",
    "dot-dot-path": "protocol=https\nhost=code.example.org:8443\npath=team/../other/app.git\n",
    "dot-path": "protocol=https\nhost=code.example.org:8443\npath=team/./app.git\n",
    "backslash-path": "protocol=https\nhost=code.example.org:8443\npath=team\\..\\other\n",
    "encoded-dot-dot": "url=https://code.example.org:8443/team/%2e%2e/other/app.git\n",
    "url-after-host": "host=git.example.com\nurl=https://evil.example/\n",
}


@pytest.mark.parametrize(
    ("text", "answered"),
    [pytest.param(text, True, id=name) for name, text in ANSWERED.items()]
    + [pytest.param(text, False, id=name) for name, text in NOT_ANSWERED.items()],
)
def test_only_a_host_every_parser_reads_as_mapped_gets_the_token(
    logged_in: LoggedIn, git_home: Path, text: str, answered: bool
) -> None:
    """A host a client would connect to as mapped (any ASCII case, the default port, an IPv6
    address in any form) gets the token; user info, fragments, encodings, backslashes, a
    trailing dot, odd ports, other spellings of a Unicode name, dot segments in a scoped path:
    nothing (exit 0, git asks the next helper)."""
    (git_home.parent / "git-credential.ini").write_text(HOSTILE_MAPPING)
    result = helper(logged_in, git_home, "get", text + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    token = logged_in.tokens().access_token
    if answered:
        assert attributes(result.stdout)["password"] == token
    else:
        assert result.stdout == ""


def test_real_git_passes_a_userinfo_shaped_host_on_and_gets_nothing(
    logged_in: LoggedIn, git_home: Path
) -> None:
    """`git credential fill` hands host=evil.example@git.example.com to the helper as it is:
    no token comes back, git falls back to its prompt (disabled here)."""
    text = "protocol=https\nhost=evil.example@git.example.com\n\n"
    result = git_credential(logged_in, git_home, "fill", text)
    assert result.returncode != 0
    assert logged_in.tokens().access_token not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("[https://git.example.com.]", "plain host"),
        ("[https://evil.example%40git.example.com]", "plain host"),
        ("[https://git.example.com:0]", "plain host"),
        ("[https://git.example.com/team/../other/]", ". or .. segments"),
    ],
)
def test_a_mapping_that_names_no_plain_host_is_refused(
    logged_in: LoggedIn, git_home: Path, section: str, message: str
) -> None:
    """A section whose host no client request could match as written: a clear error."""
    (git_home.parent / "git-credential.ini").write_text(f"{section}\nprofile = default\n")
    result = helper(logged_in, git_home, "get", "protocol=https\nhost=git.example.com\n\n")
    assert result.returncode == 1
    assert message in result.stderr, result.stderr
