"""Check freshtoken's import rules (docs/architecture.md draws them); run by ``make lint``.

Every ``import`` in ``src/freshtoken`` counts, wherever it stands: at the top of a module,
inside a function (a lazy import is still a dependency) or under ``TYPE_CHECKING`` (a type is
too). A package is a top-level name under ``freshtoken`` (``_core``, ``stores``, ``httpx``...).

Rules:

* ``LAYERS``: the packages a low layer may import; anything else is a break.
* ``FORBIDDEN``: imports that no module of a package may make, whatever else it may.
* Nothing but ``cli`` (and ``__main__``) imports ``cli``; nothing inside imports the root
  package ``freshtoken`` (import the module that defines the name).
* No cycle between packages.

``EXCEPTIONS`` lists the breaks that cannot be removed yet, each with its reason; an
exception that no longer matches any import is itself reported, so the list only shrinks.

Usage: ``python tools/check_imports.py [src/freshtoken]``; exit status 1 on any break.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

ROOT = "freshtoken"
# import nothing of freshtoken
LEAVES = {"errors", "_version", "_arguments", "_uvicorn", "_deprecation"}

# package -> the packages it may import (besides itself and LEAVES); "package.module" allows
# that one module only
LAYERS: dict[str, set[str]] = {
    "_core": set(),
    # The flight host and its connection pools: what the wire and the stores run on.
    "_runtime": set(),
    "_oauth": {"_core", "_runtime"},
    # stores._base: the TokenStore contract and MemoryStore
    "_engine": {"_core", "_runtime", "_oauth", "stores._base"},
    "_logins": {"_core", "_oauth"},
    "stores": {"_core", "_runtime"},
    "profiles": {"_core", "_oauth", "_engine", "_logins", "stores", "refreshers"},
    # The reference server checks the client's protocol with code of its own (PKCE, proofs,
    # answers), so that a bug on one side cannot pass on both; it shares only the clock.
    "server": {"_core.clock"},
}

# package -> packages no module in it may import
FORBIDDEN: dict[str, set[str]] = {
    "stores": {"_engine", "cli", "refreshers", "profiles"},
    "agent": {"cli"},
    "bff": {"cli"},
}

# (importing module, imported module, reason): breaks that are allowed for now. Each names the
# file that has to change first; those files are being edited in parallel this round.
EXCEPTIONS: list[tuple[str, str, str]] = [
    # `serve --personality` offers the provider presets' names as its choices (the answers
    # themselves are the server's own, in server/); a shared list of names, not shared code.
    ("freshtoken.server._command", "freshtoken.providers", "the presets' names for --personality"),
    # Deprecated until 0.2.0: FileStore.manager() and Profile.refresher_settings() forward to
    # freshtoken.profiles (and name the manager and RefresherSettings in their signatures).
    ("freshtoken.stores.file", "freshtoken.profiles", "deprecated shims, gone in 0.2.0"),
    ("freshtoken.stores.file", "freshtoken._engine.manager", "deprecated shim's return type"),
    ("freshtoken.stores.file", "freshtoken.refreshers._oauth2", "deprecated shim's return type"),
]


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(src: Path, dotted: str) -> bool:
    path = src.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path, src: Path) -> Iterator[tuple[str, int]]:
    """(imported freshtoken module, line) for every import in the file."""
    name = module_name(path, src)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not (target == ROOT or target.startswith(ROOT + ".")):
                continue
            # `from .. import providers` imports the submodule, not the package's namespace.
            submodules = [
                f"{target}.{alias.name}"
                for alias in node.names
                if _is_module(src, f"{target}.{alias.name}")
            ]
            if submodules and len(submodules) == len(node.names):
                for submodule in submodules:
                    yield submodule, node.lineno
            else:
                yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    yield alias.name, node.lineno


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _allowed(target: str, entries: set[str]) -> bool:
    return any(
        target == f"{ROOT}.{entry}" or target.startswith(f"{ROOT}.{entry}.") for entry in entries
    )


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def check(src: Path) -> list[str]:
    problems: list[str] = []
    used: set[tuple[str, str]] = set()
    allowed = {(a, b) for a, b, _ in EXCEPTIONS}
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted((src / ROOT).rglob("*.py")):
        importer = module_name(path, src)
        mine = package_of(importer)
        for target, line in imports(path, src):
            theirs = package_of(target)
            where = f"{path}:{line}: {importer} imports {target}"
            if (importer, target) in allowed:
                used.add((importer, target))
                continue
            # The root package re-exports everything: it is above every rule and every cycle.
            if mine and theirs and theirs != mine:
                graph[mine].add(theirs)
            if theirs == mine:
                continue
            if not theirs:
                if mine:
                    problems.append(f"{where}: import the defining module, not the root package")
                continue
            if mine in LEAVES:
                problems.append(f"{where}: {mine} imports nothing of freshtoken")
            elif mine in LAYERS and not _allowed(target, LAYERS[mine] | LEAVES):
                may = ", ".join(sorted(LAYERS[mine] | LEAVES))
                problems.append(f"{where}: {mine} may import only {may}")
            elif theirs in FORBIDDEN.get(mine, set()):
                problems.append(f"{where}: {mine} must not import {theirs}")
            elif theirs == "cli" and mine not in ("cli", "__main__"):
                problems.append(f"{where}: only the command line imports cli")
    for component in cycles(graph):
        problems.append(f"import cycle between packages: {' <-> '.join(component)}")
    for importer, target, _ in EXCEPTIONS:
        if (importer, target) not in used:
            problems.append(f"stale exception: {importer} no longer imports {target}; remove it")
    return problems


def main(argv: list[str]) -> int:
    src = Path(argv[1]).parent if len(argv) > 1 else Path("src")
    problems = check(src)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check_imports: {len(problems)} broken import rule(s)", file=sys.stderr)
        return 1
    print(f"check_imports: import rules hold ({len(EXCEPTIONS)} listed exceptions)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
