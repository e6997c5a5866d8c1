"""The Python blocks of README.md and docs/ that the tests run or type-check.

A block is picked by an HTML comment on the line before its fence (invisible on GitHub and
in the built site):

* ``<!-- run -->``: a whole script, run as written in a child process against a reference
  server. It reaches the server at ``http://127.0.0.1:8400`` (``freshtoken serve``'s
  default), which :meth:`Block.script_for` points at the test's server: nothing else changes.
* ``<!-- run: pytest -->``: a test module, run with pytest (the ``oauth_server`` fixture
  comes from freshtoken's plugin).
* ``<!-- setup -->``: put before every later ``run`` block of the same page (a shared set-up
  shown once).
* ``<!-- typecheck -->``: needs a browser, a real provider or a Redis cluster: type-checked
  with mypy, not run.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ROOT", "SERVE_URL", "Block", "blocks", "documents", "readme_quick_start"]

ROOT = Path(__file__).resolve().parents[1]
SERVE_URL = "http://127.0.0.1:8400"
_MARKER = re.compile(r"<!--\s*(run|run: pytest|setup|typecheck)\s*-->")
_FENCE = re.compile(r"```python[^\n]*\n(.*?)\n```", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the fence, 1-based
    kind: str  # run | run: pytest | typecheck
    code: str  # with the page's set-up blocks before it

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def script_for(self, url: str) -> str:
        """The code, reaching the server at ``url`` instead of ``freshtoken serve``'s."""
        return self.code.replace(SERVE_URL, url)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> Iterator[Block]:
    text = path.read_text(encoding="utf-8")
    setup: list[str] = []
    for marker in _MARKER.finditer(text):
        fence = _FENCE.match(text, _skip_blank(text, marker.end()))
        if fence is None:
            raise ValueError(f"{path}:{_line(text, marker.start())}: a marker with no python block")
        kind, code = marker.group(1), fence.group(1)
        if kind == "setup":
            setup.append(code)
            continue
        shared = setup if kind.startswith("run") else []
        yield Block(path, _line(text, fence.start()), kind, "\n\n".join([*shared, code]) + "\n")


def readme_quick_start() -> Block:
    """The README's quick start: its first runnable block."""
    return next(block for block in blocks(ROOT / "README.md") if block.kind == "run")


def _skip_blank(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\n":
        position += 1
    return position


def _line(text: str, position: int) -> int:
    return text.count("\n", 0, position) + 1
