"""``freshtoken demo`` piped (not a terminal), as in CI logs or ``| tee``: every line is
stamped one way (seconds since the start, as the live table on a terminal), and the output is
whole lines: no frame of a live table run into the log lines or the summary."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from freshtoken.cli.demo import elapsed

BOX = set("┏┓┗┛┃━┡┩┠┨╇┳┻│─└┘├┤┼┬┴╭╮╰╯")
STAMP = re.compile(r"t = +\d+\.\d s")
OTHER_TIME_FORMATS = re.compile(r"\d\d:\d\d:\d\d|\d\d/\d\d/\d\d")


@pytest.mark.slow
def test_piped_demo_output_is_whole_lines_with_one_timestamp_format() -> None:
    """One stamp format, one table (the summary, after every log line, each of its lines
    whole), then the verdict."""
    done = subprocess.run(
        [sys.executable, "-m", "freshtoken.cli", "demo", "--duration", "2", "--concurrency", "4",
         "--ttl", "1"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert not OTHER_TIME_FORMATS.search(done.stdout), done.stdout
    logged = [line for line in lines if re.search(r" (INFO|WARNING|ERROR) ", line)]
    assert any("injected:" in line for line in logged)
    assert all(STAMP.match(line) for line in logged), logged
    # The summary is the one table: its title, then only table lines, then the verdict.
    assert sum("┏" in line for line in lines) == 1, done.stdout
    top = next(index for index, line in enumerate(lines) if "┏" in line)
    assert lines[top - 1].strip() == "freshtoken demo"
    table = lines[top:-1]
    assert table[-1].startswith("└")
    assert table[-1].endswith("┘")
    for line in table:  # every line of it whole: it starts and ends with the box
        assert line[0] in BOX, line
        assert line.rstrip()[-1] in BOX, line
    assert lines[-1] == "OK: no request failed, no refresh token was reused."
    assert all(not set(line) & BOX for line in lines[: top - 1])


def test_the_stamp() -> None:
    """Seconds since the start, one decimal, aligned."""
    assert elapsed(3.25) == "t =   3.2 s"
    assert elapsed(125.0) == "t = 125.0 s"
    assert elapsed(-0.01) == "t =   0.0 s"
