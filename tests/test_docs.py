"""The README and the docs cannot drift from the code: their marked Python blocks run against
the reference server (or are type-checked where they need a browser or a real provider)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from docs_blocks import ROOT, SERVE_URL, Block, blocks, documents, readme_quick_start

from freshtoken.testing import ServerFactory

ALL = [block for path in documents() for block in blocks(path)]
RUN = [block for block in ALL if block.kind.startswith("run")]
TYPECHECK = [block for block in ALL if block.kind == "typecheck"]


def environment(tmp_path: Path) -> dict[str, str]:
    """A child's environment with its own token store and no freshtoken settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHTOKEN_")}
    env["FRESHTOKEN_STORE"] = str(tmp_path / "tokens.json")
    env["HOME"] = str(tmp_path)
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    return env


@pytest.mark.parametrize("block", RUN, ids=[block.name for block in RUN])
def test_a_runnable_block_runs(
    block: Block, oauth_server_factory: ServerFactory, tmp_path: Path
) -> None:
    """The block runs to the end, exit status 0, against a reference server."""
    server = oauth_server_factory(clock=time.time)
    script = tmp_path / ("test_block.py" if block.kind == "run: pytest" else "block.py")
    script.write_text(block.script_for(server.url), encoding="utf-8")
    command = [sys.executable, str(script)]
    if block.kind == "run: pytest":
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
    result = subprocess.run(
        command,
        cwd=tmp_path,
        env=environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{block.name}\n{result.stdout}\n{result.stderr}"


def test_the_readme_quick_start_is_runnable_as_written() -> None:
    """The README's quick start is a marked block that talks to `freshtoken serve`'s URL."""
    block = readme_quick_start()
    assert SERVE_URL in block.code
    assert "freshtoken serve" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_typecheck_blocks_type_check() -> None:
    """The blocks that cannot run here (a browser, a real provider) type-check with mypy."""
    from mypy import api

    # A fixed place: mypy's cache keeps a module's messages with the path it was read from.
    tmp_path = ROOT / ".mypy_cache" / "docs-blocks"
    shutil.rmtree(tmp_path, ignore_errors=True)
    tmp_path.mkdir(parents=True)
    files = []
    for number, block in enumerate(TYPECHECK):
        path = tmp_path / f"block_{number}.py"
        path.write_text(f"# {block.name}\n{block.code}", encoding="utf-8")
        files.append(str(path))
    assert files, "no typecheck block found"
    out, err, status = api.run(
        [
            *files,
            "--config-file=",  # not the project's strict settings: snippets are not annotated
            "--check-untyped-defs",
            "--no-error-summary",
            "--cache-dir",
            str(ROOT / ".mypy_cache" / "docs"),
            "--python-version",
            "3.10",
        ]
    )
    for number, block in enumerate(TYPECHECK):
        # block_N.py:LINE -> the document's own line (LINE 1 is the comment above the code)
        def where(found: re.Match[str], block: Block = block) -> str:
            line = block.line + int(found.group(1)) - 1
            return f"{block.path.relative_to(ROOT)}:{line}"

        out = re.sub(rf"\S*block_{number}\.py:(\d+)", where, out)
    assert status == 0, out + err
