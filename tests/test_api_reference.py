"""The API reference reads as documentation: docstrings use mkdocstrings cross-references,
never raw Sphinx roles (tools/sphinx_roles_to_crossrefs.py rewrites them, and its ``--check``
keeps them out)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "sphinx_roles_to_crossrefs.py"

SAMPLE = '''\
"""Module doc: see :mod:`freshtoken.refreshers` and :class:`~freshtoken.TokenManager`.

Demands::

    FRESH   tokens to send now

::

    AuthError
    └── LoginFailed
"""

X = ":class:`NotADocstring`"


class A:
    """A :class:`MemoryStore`, :meth:`close`, :func:`!hidden`, :class:`the store <MemoryStore>`,
    :meth:`~freshtoken.server.ReferenceServer.advance`, :class:`~redis.lock.Lock`, :py:func:`f`
    and :mod:`freshtoken._http`: one paragraph that the rewrite makes longer than a line.

    - a list item that names :class:`~freshtoken.TokenManager` and :class:`~freshtoken.MemoryStore`
      and goes on.
    """

    attr = 1
    """An attribute docstring with :attr:`attr`."""

    def f(self, x: int) -> None:
        """Do it.

        :param x: a field line that mentions :class:`~freshtoken.TokenManager` and :class:`Foo`
            and goes on, with :exc:`ValueError`.
        """
'''

CONVERTED = '''\
"""Module doc: see [`freshtoken.refreshers`][] and [`TokenManager`][freshtoken.TokenManager].

Demands:

    FRESH   tokens to send now

    AuthError
    └── LoginFailed
"""

X = ":class:`NotADocstring`"


class A:
    """A [`MemoryStore`][], [`close()`][close], `hidden()`, [the store][MemoryStore],
    [`advance()`][freshtoken.server.ReferenceServer.advance], `Lock`, [`f()`][f]
    and `freshtoken._http`: one paragraph that the rewrite makes longer than a line.

    - a list item that names [`TokenManager`][freshtoken.TokenManager] and
      [`MemoryStore`][freshtoken.MemoryStore] and goes on.
    """

    attr = 1
    """An attribute docstring with [`attr`][]."""

    def f(self, x: int) -> None:
        """Do it.

        :param x: a field line that mentions [`TokenManager`][freshtoken.TokenManager] and [`Foo`][]
            and goes on, with [`ValueError`][].
        """
'''


def run_tool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(TOOL), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_tool_rewrites_roles_in_docstrings_only(tmp_path: Path) -> None:
    """Each kind of role becomes a cross-reference (or plain code where no page documents the
    target); code strings stay; long lines carry words to the next line of their paragraph;
    a second run changes nothing."""
    module = tmp_path / "sample.py"
    module.write_text(SAMPLE, encoding="utf-8")
    check = run_tool("--check", module)
    assert check.returncode == 1
    assert "18 Sphinx role(s) left" in check.stdout
    assert f"{module}:17: :class:`MemoryStore`" in check.stdout
    assert f"{module}:3: ::" in check.stdout

    assert run_tool(module).returncode == 0
    assert module.read_text(encoding="utf-8") == CONVERTED
    assert all(len(line) <= 100 for line in CONVERTED.splitlines())

    assert run_tool(module).returncode == 0
    assert module.read_text(encoding="utf-8") == CONVERTED
    assert run_tool("--check", module).returncode == 0


def test_no_sphinx_role_is_left_in_a_docstring() -> None:
    """mkdocstrings would show ``:class:`X``` as text: run the tool (see its docstring)."""
    result = run_tool("--check", ROOT / "src")
    assert result.returncode == 0, result.stdout
