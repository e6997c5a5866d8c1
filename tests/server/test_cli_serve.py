"""`serve`: flags, environment variables, and a real run stopped by Ctrl-C."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys

import httpx
import pytest

from freshtoken.server._command import config_from, configure_parser

SERVE = """
import argparse, sys
from freshtoken.server._command import configure_parser, run
parser = argparse.ArgumentParser(prog="freshtoken serve")
configure_parser(parser)
sys.exit(run(parser.parse_args(sys.argv[1:])))
"""


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="serve")
    configure_parser(parser)
    return parser.parse_args(argv)


def test_defaults_match_server_config() -> None:
    args = parse()
    assert (args.host, args.port) == ("127.0.0.1", 8400)
    config = config_from(args)
    assert (config.access_ttl, config.refresh_ttl, config.refresh_idle_ttl) == (300, 86400, 3600)
    assert config.rotation
    assert config.reuse_detection
    assert not config.admin


def test_flags() -> None:
    args = parse(
        "--access-ttl=5",
        "--no-rotation",
        "--no-reuse-detection",
        "--reuse-grace=2",
        "--clock-offset=-30",
        "--refresh-idle-ttl=0",
        "--admin",
    )
    config = config_from(args)
    assert config.access_ttl == 5
    assert not config.rotation
    assert not config.reuse_detection
    assert (config.reuse_grace, config.clock_offset) == (2, -30)
    assert config.refresh_idle_ttl is None
    assert config.admin


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """FRESHTOKEN_SERVER_<FLAG> sets a default; the command line still wins."""
    monkeypatch.setenv("FRESHTOKEN_SERVER_PORT", "9000")
    monkeypatch.setenv("FRESHTOKEN_SERVER_ADMIN", "yes")
    monkeypatch.setenv("FRESHTOKEN_SERVER_ROTATION", "off")
    monkeypatch.setenv("FRESHTOKEN_SERVER_ACCESS_TTL", "60")
    args = parse("--access-ttl=30")
    assert (args.port, args.admin, args.rotation, args.access_ttl) == (9000, True, False, 30)


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--port=http"], {}),
        (["--port=70000"], {}),
        (["--access-ttl=0"], {}),
        (["--reuse-grace=-1"], {}),
        (["--access-ttl=nan"], {}),
        ([], {"FRESHTOKEN_SERVER_PORT": "x"}),
        ([], {"FRESHTOKEN_SERVER_ADMIN": "maybe"}),
        ([], {"FRESHTOKEN_SERVER_REFRESH_TTL": "-5"}),
    ],
)
def test_bad_values_are_argparse_errors(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        parse(*argv)
    assert exited.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_serve_answers_and_stops_on_ctrl_c() -> None:
    """A real `serve` process prints its URL, answers, and exits 0 on SIGINT."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE, "--port=0", "--admin", "--access-ttl=60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        assert first_line.startswith("freshtoken reference server on http://127.0.0.1:")
        url = first_line.split(" on ")[1].strip()
        banner = ""
        for line in iter(process.stdout.readline, ""):  # up to the banner's last line or EOF
            banner += line
            if line.startswith("Ctrl-C"):
                break
        assert "demo / demo-secret" in banner
        assert f"{url}/oauth/authorize" in banner
        assert f"{url}/oauth/device_authorization" in banner
        assert f"{url}/.well-known/openid-configuration" in banner
        with httpx.Client(base_url=url, verify=False) as http:
            assert http.get("/.well-known/oauth-authorization-server").json()["issuer"] == url
            login = http.post("/auth/login", json={"username": "demo", "password": "demo"})
            assert login.json()["expires_in"] == 60
            assert http.get("/admin/stats").json()["logins"] == 1
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0
        assert "Traceback" not in (process.stderr.read() if process.stderr else "")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_serve_reports_a_busy_port() -> None:
    """A port already in use is a one-line error and exit status 1, not a traceback."""
    with subprocess.Popen(
        [sys.executable, "-c", SERVE, "--port=0"], stdout=subprocess.PIPE, text=True
    ) as first:
        assert first.stdout is not None
        url = first.stdout.readline().split(" on ")[1].strip()
        port = url.rsplit(":", 1)[1]
        second = subprocess.run(
            [sys.executable, "-c", SERVE, f"--port={port}"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        first.send_signal(signal.SIGINT)
        first.wait(timeout=15)
    assert second.returncode == 1
    assert "cannot listen" in second.stderr
