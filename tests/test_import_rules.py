"""The import rules of docs/architecture.md hold, and the checker that enforces them in CI
(tools/check_imports.py, run by ``make lint``) does see a break."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT / "tools" / "check_imports.py"


def _checker() -> Any:  # a script, not a package: loaded by path
    spec = importlib.util.spec_from_file_location("check_imports", CHECKER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "freshtoken" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_the_rules_hold_for_the_source_tree() -> None:
    """The checker passes on src/ as CI runs it."""
    result = subprocess.run(
        [sys.executable, str(CHECKER)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "import rules hold" in result.stdout


def test_a_core_module_reaching_up_is_a_break(tmp_path: Path) -> None:
    """_core importing the engine, even lazily inside a function, is reported with its line."""
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "_core/__init__.py": "",
            "_core/rules.py": "def f():\n    from .._engine import manager\n",
            "_engine/__init__.py": "",
            "_engine/manager.py": "",
        },
    )
    checker = _checker()
    checker.EXCEPTIONS = []
    problems = checker.check(src)
    assert any("_core/rules.py:2" in p and "_core may import only" in p for p in problems)


def test_a_cycle_and_a_cli_import_are_breaks(tmp_path: Path) -> None:
    """Two packages importing each other form a cycle; the agent may not import the CLI."""
    src = _tree(
        tmp_path,
        {
            "__init__.py": "",
            "agent/__init__.py": "from ..cli import main\nfrom ..bff import app\n",
            "bff/__init__.py": "from ..agent import x\n",
            "cli/__init__.py": "",
        },
    )
    checker = _checker()
    checker.EXCEPTIONS = []
    problems = checker.check(src)
    assert any("agent must not import cli" in p for p in problems)
    assert any(p == "import cycle between packages: agent <-> bff" for p in problems)


def test_an_exception_no_longer_needed_is_reported(tmp_path: Path) -> None:
    """A listed exception that matches no import fails the check, so the list only shrinks."""
    src = _tree(tmp_path, {"__init__.py": "", "_core/__init__.py": ""})
    checker = _checker()
    checker.EXCEPTIONS = [("freshtoken._core", "freshtoken.cli", "gone")]
    assert checker.check(src) == [
        "stale exception: freshtoken._core no longer imports freshtoken.cli; remove it"
    ]
