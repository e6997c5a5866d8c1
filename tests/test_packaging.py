"""The package as a user gets it: a wheel built from this tree, installed in a fresh venv with
``pip install 'freshtoken[cli]'``, runs the command, the demo, and the README's quick start
as written against ``freshtoken serve`` from that venv (its dependencies come from the
package index, or pip's cache)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from docs_blocks import readme_quick_start

import freshtoken

SOURCE = Path(__file__).resolve().parent.parent


def run(*command: str | Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
    return subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
def test_a_wheel_installed_with_the_cli_extra_runs_the_command(tmp_path: Path) -> None:
    """Build the wheel offline, install ``freshtoken[cli]`` from it: the command, a short demo
    and the README's quick start (against the venv's own ``freshtoken serve``) all work."""
    wheels = tmp_path / "wheels"
    built = run(
        sys.executable,
        *("-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, SOURCE),
        cwd=tmp_path,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("freshtoken-*.whl")
    assert wheel.name.startswith(f"freshtoken-{freshtoken.__version__}-")

    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    python, command = venv / "bin" / "python", venv / "bin" / "freshtoken"
    requirement = f"freshtoken[cli] @ {wheel.as_uri()}"
    installed = run(python, "-m", "pip", "install", "-q", requirement, cwd=tmp_path, timeout=600)
    assert installed.returncode == 0, installed.stderr

    for help_command in ((command, "--help"), (python, "-m", "freshtoken", "--help")):
        shown = run(*help_command, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("usage: freshtoken")
        assert "serve" in shown.stdout

    # An extra not installed says which install fixes it.
    otel = run(python, "-c", "import freshtoken.otel", cwd=tmp_path)
    assert otel.returncode == 1
    assert "pip install 'freshtoken[otel]'" in otel.stderr

    demo = run(command, "demo", "--duration", "2", "--concurrency", "4", cwd=tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr

    server = subprocess.Popen(
        [str(command), "serve", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first_line = server.stdout.readline()
        assert " on " in first_line, first_line
        url = first_line.split(" on ")[1].strip()
        script = tmp_path / "quick_start.py"
        script.write_text(readme_quick_start().script_for(url))
        quick = run(python, script, cwd=tmp_path)
        assert quick.returncode == 0, quick.stderr
        assert quick.stdout.strip() == "calling the API as demo"
    finally:
        server.terminate()
        server.wait(10)
        if server.stdout is not None:
            server.stdout.close()
