"""Rewrite Sphinx cross-reference roles in docstrings as mkdocstrings cross-references.

The API reference is built by mkdocstrings, which reads docstrings as Markdown: a Sphinx role
such as ``:class:`~freshtoken.TokenManager``` shows up as raw text. This script rewrites each
role into the autorefs syntax, which mkdocs.yml resolves with ``scoped_crossrefs`` (a bare name
is looked up the way Python would, from the docstring's own scope):

    :class:`MemoryStore`                -> [`MemoryStore`][]
    :class:`~freshtoken.TokenManager`   -> [`TokenManager`][freshtoken.TokenManager]
    :meth:`close`                       -> [`close()`][close]
    :class:`the manager <TokenManager>` -> [the manager][TokenManager]
    :class:`!Name`, :mod:`freshtoken._oauth.http`, :class:`~redis.lock.Lock` -> `Name`, ...

A target with a private part (``_http``, ``_dpop_flow``) or outside freshtoken (``redis...``)
becomes plain code: the reference documents neither, so a link could not resolve.

reST's literal-block marker goes too (``Metrics::`` becomes ``Metrics:``, a line that is only
``::`` is dropped): the indented block after it is a code block in Markdown as it is.

Only docstrings are touched (a string that stands alone as a statement: module, class and
function docstrings and attribute docstrings), never strings the code uses. A line that the
rewrite makes longer than the line length is re-wrapped with the rest of its paragraph.

    python tools/sphinx_roles_to_crossrefs.py            # rewrite src/ in place
    python tools/sphinx_roles_to_crossrefs.py --check    # exit 1 and list any role left
    python tools/sphinx_roles_to_crossrefs.py PATH...    # other files or folders

It is idempotent: run it again after merging branches that brought new roles.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINE_LENGTH = 100  # ruff's, in pyproject.toml

ROLE = re.compile(
    r":(?:py:)?(?P<role>class|func|meth|mod|attr|exc|data|obj|const|type)"
    r":`(?P<body>[^`]+)`"
)
EXPLICIT_TITLE = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$", re.DOTALL)
CALLABLE_ROLES = {"func", "meth"}
# A paragraph ends at a blank line or where a new block starts (a list item, a field).
QUOTES = ('"""', "'''")
BLOCK_START = re.compile(r"^\s*(?:[-*+] |\d+\. |:[a-z]|>>>|```|\.\. )")
FIELD = re.compile(r"^\s*:[a-z]")
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+\.) ")


def crossref(match: re.Match[str]) -> str:
    """The Markdown for one Sphinx role."""
    role, body = match["role"], match["body"].strip()
    explicit = EXPLICIT_TITLE.match(body)
    title: str | None = None
    if explicit:
        title, body = explicit["title"], explicit["target"].strip()
    unlinked = body.startswith("!")  # Sphinx: show, do not link
    short = body.lstrip("!").startswith("~")
    target = body.lstrip("!~.")
    if title is None:
        name = target.rsplit(".", 1)[-1] if short else target
        title = f"`{name}()`" if role in CALLABLE_ROLES else f"`{name}`"
    if unlinked or not linkable(target):
        return title if title.startswith("`") else f"`{title}`"
    return f"[{title}][]" if title == f"`{target}`" else f"[{title}][{target}]"


def linkable(target: str) -> bool:
    """Whether the reference documents ``target``: public, and freshtoken's or in scope."""
    parts = target.split(".")
    if any(part.startswith("_") for part in parts):
        return False
    # A dotted path from another package (redis.lock.Lock): no inventory is loaded for it.
    return not (len(parts) > 1 and parts[0].islower() and parts[0] != "freshtoken")


def docstring_spans(source: str) -> Iterator[tuple[int, int]]:
    """(first, last) 0-based line numbers of every string that stands alone as a statement."""
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and node.end_lineno is not None
        ):
            yield node.lineno - 1, node.end_lineno - 1


def rewrap(lines: list[str], index: int) -> list[str]:
    """Carry the words past the line length on ``lines[index]`` over to the next line of its
    paragraph (a new line if it has none), and so on down while a line is too long: the
    fewest lines change, so the rewrite merges well with other edits."""
    lines = list(lines)
    while index < len(lines) and len(lines[index]) > LINE_LENGTH:
        line = lines[index]
        prefix = indentation(line)
        cut = line.rfind(" ", len(prefix) + 1, LINE_LENGTH + 1)
        if cut == -1:  # one word longer than the line: nothing to carry
            break
        # A field (``:param x: ...``) or a list item goes on one level deeper.
        hang = prefix + " " * 4 if FIELD.match(line) else prefix
        if item := LIST_ITEM.match(line):
            hang = " " * len(item.group())
        head, tail = line[:cut].rstrip(), line[cut + 1 :].strip()
        lines[index] = head
        following = lines[index + 1] if index + 1 < len(lines) else ""
        if (
            following.strip()
            and following.strip() not in QUOTES
            and not BLOCK_START.match(following)
            and indentation(following) == hang
        ):
            lines[index + 1] = f"{hang}{tail} {following.strip()}"
        else:
            lines.insert(index + 1, f"{hang}{tail}")
        index += 1
    return lines


def indentation(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def literal_markers(lines: list[str]) -> Iterator[int]:
    """Indexes of the lines that end in reST's ``::`` before an indented literal block (a
    blank line, then lines indented deeper): Markdown shows the block as code already."""
    for index in range(len(lines) - 2):
        line = lines[index]
        if (
            line.rstrip().endswith("::")
            and not lines[index + 1].strip()
            and lines[index + 2].strip()
            and len(indentation(lines[index + 2])) > len(indentation(line))
        ):
            yield index


def markdown_literals(lines: list[str]) -> list[str]:
    """``Text::`` becomes ``Text:``; a line that is only ``::`` goes, with its blank line."""
    new = list(lines)
    for index in sorted(literal_markers(lines), reverse=True):
        if new[index].strip() == "::":
            del new[index : index + 2]
        else:
            new[index] = new[index].rstrip()[:-1]
    return new


def convert_block(lines: list[str]) -> list[str]:
    """The lines of one docstring with every role rewritten and long lines re-wrapped."""
    lines = markdown_literals(lines)
    new = ROLE.sub(crossref, "\n".join(lines)).split("\n")
    if new == lines:
        return lines
    index = 0
    while index < len(new):
        if len(new[index]) > LINE_LENGTH:
            new = rewrap(new, index)
        index += 1
    return new


def convert_source(source: str) -> str:
    """The module's source with its docstrings rewritten."""
    lines = source.split("\n")
    # Last span first, so that a re-wrap (which may change the line count) moves nothing
    # still to do.
    for first, last in sorted(docstring_spans(source), reverse=True):
        lines[first : last + 1] = convert_block(lines[first : last + 1])
    return "\n".join(lines)


def leftover_roles(path: Path, source: str) -> Iterator[str]:
    """``path:line: role`` for every Sphinx role still in a docstring."""
    lines = source.split("\n")
    for first, last in sorted(docstring_spans(source)):
        for number in range(first, last + 1):
            for match in ROLE.finditer(lines[number]):
                yield f"{shown(path)}:{number + 1}: {match.group()}"
        for index in literal_markers(lines[first : last + 1]):
            yield f"{shown(path)}:{first + index + 1}: ::"


def shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def python_files(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        yield from sorted(path.rglob("*.py")) if path.is_dir() else [path]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[ROOT / "src"])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if any role is left"
    )
    args = parser.parse_args(argv)
    left: list[str] = []
    changed = 0
    for path in python_files(args.paths):
        source = path.read_text(encoding="utf-8")
        if args.check:
            left.extend(leftover_roles(path, source))
            continue
        new = convert_source(source)
        if new != source:
            path.write_text(new, encoding="utf-8")
            changed += 1
        left.extend(leftover_roles(path, new))
    for line in left:
        print(line)
    if args.check:
        if left:
            print(f"{len(left)} Sphinx role(s) left: run tools/sphinx_roles_to_crossrefs.py")
        return 1 if left else 0
    print(f"rewrote {changed} file(s)")
    return 1 if left else 0


if __name__ == "__main__":
    sys.exit(main())
