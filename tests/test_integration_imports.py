"""A missing optional library names the extra that installs it.

The libraries are installed in the test environment, so their absence is simulated: the
library's ``sys.modules`` entry is set to None (which makes ``import`` fail as if it were not
installed) and the integration module is imported afresh.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "library", "extra"),
    [
        ("freshtoken.requests", "requests", "requests"),
        ("freshtoken.aiohttp", "aiohttp", "aiohttp"),
        ("freshtoken.aiohttp", "yarl", "aiohttp"),
        ("freshtoken.httpx2", "httpx2", "httpx2"),
    ],
)
def test_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, library: str, extra: str
) -> None:
    """``import freshtoken.<integration>`` without its library says which pip install fixes it."""
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, library, None)
    with pytest.raises(ImportError) as caught:
        importlib.import_module(module)
    assert f"pip install 'freshtoken[{extra}]'" in str(caught.value)
    assert caught.value.name == library


@pytest.mark.parametrize(
    "module", ["freshtoken.requests", "freshtoken.aiohttp", "freshtoken.httpx2"]
)
def test_integrations_import_with_their_library(module: str) -> None:
    """With the library present the integration imports and exports its entry point
    (aiohttp's is a client middleware; its old name TokenAuth is deprecated)."""
    entry = "TokenMiddleware" if module == "freshtoken.aiohttp" else "TokenAuth"
    assert entry in importlib.import_module(module).__all__


def test_core_does_not_import_the_integrations() -> None:
    """``import freshtoken`` leaves requests and aiohttp unimported: they stay optional."""
    probe = "import sys, freshtoken; print(sorted({'requests', 'aiohttp'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
