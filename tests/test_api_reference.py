"""The API reference reads as documentation: docstrings use mkdocstrings cross-references,
never raw Sphinx roles (tools/sphinx_roles_to_crossrefs.py rewrites them, and its ``--check``
keeps them out); the built site, looked at in a real Chromium (Debian's, driven by Selenium),
shows signatures, links that land, and code that fits the page."""

from __future__ import annotations

import fcntl
import http.server
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

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
    and :mod:`freshtoken._oauth.http`: one paragraph that the rewrite makes longer than a line.

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
    and `freshtoken._oauth.http`: one paragraph that the rewrite makes longer than a line.

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


# -- the built site, in Chromium ------------------------------------------------------------

ROLE_TEXT = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):")
DESKTOP = (1280, 900)
PHONE = (420, 900)


def mkdocs_build(config: Path, site_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # see the Makefile's docs target
    command = ["build", "--strict", "-f", str(config), "--site-dir", str(site_dir)]
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", *command],
        cwd=config.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The documentation site, built as `make docs` builds it (strict), once per test run.

    The build takes half a minute; under pytest-xdist the first worker to need it builds it
    in the run's shared temporary directory, under a lock, and the others wait and reuse it.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent  # the run's, shared by its workers
    site_dir = shared / "docs-site"
    with (shared / "docs-site.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (site_dir / "built").exists():
            shutil.rmtree(site_dir, ignore_errors=True)
            result = mkdocs_build(ROOT / "mkdocs.yml", site_dir)
            assert result.returncode == 0, result.stderr
            (site_dir / "built").touch()
    return site_dir


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The site over HTTP on loopback."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(site), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def anchors_of(site: Path, path: str) -> set[str]:
    """The ids in the page at ``path`` (a URL path of the site)."""
    page = site / unquote(path).lstrip("/")
    if page.is_dir() or not page.suffix:
        page = page / "index.html"
    return set(re.findall(r'\sid="([^"]+)"', page.read_text(encoding="utf-8")))


OVERFLOW_JS = """
const content = document.querySelector('article.md-content__inner').getBoundingClientRect();
const view = document.documentElement;
return {
  page_scrolls: view.scrollWidth > view.clientWidth,
  viewport: view.clientWidth,
  content: [content.left, content.right],
  blocks: [...document.querySelectorAll('article pre')].map(pre => {
    const r = pre.getBoundingClientRect();
    return [r.left, r.right, pre.textContent.slice(0, 40)];
  }),
};
"""


@pytest.mark.slow
def test_the_token_manager_reference_reads_well(
    chromium: Any, served: str, site: Path, tmp_path: Path
) -> None:
    """The TokenManager page in Chromium: no raw Sphinx role, the constructor's keyword
    arguments in its signature, every cross-reference on an anchor that exists, no code block
    wider than the content area (desktop) or the screen (phone). Screenshots: tmp_path."""
    from selenium.webdriver.common.by import By

    chromium.set_window_size(*DESKTOP)
    chromium.get(f"{served}/reference/manager/")
    assert "TokenManager" in chromium.title
    text = chromium.find_element(By.TAG_NAME, "article").text
    assert not ROLE_TEXT.search(text), ROLE_TEXT.search(text)
    assert "][" not in text  # a cross-reference autorefs did not turn into a link

    signature = chromium.find_element(
        By.XPATH,
        "//*[@id='freshtoken.TokenManager']/following::div[contains(@class, 'doc-signature')][1]",
    )
    shown = " ".join(signature.text.split())
    for parameter in (
        "refresher: Refresher",
        "store: TokenStore | None = None",
        "*,",
        "policy: RefreshPolicy | None = None",
        "retry: RetryPolicy | None = None",
        "on_refresh: Hook | None = None",
        "observer: RefreshObserver | None = None",
    ):
        assert parameter in shown, shown
    code = signature.find_element(By.TAG_NAME, "code")
    assert code.get_property("scrollWidth") <= code.get_property("clientWidth")

    links = chromium.execute_script(
        "return [...document.querySelectorAll('article a.autorefs')]"
        ".map(a => [a.textContent, a.href])"
    )
    titles = {title for title, _ in links}
    # From the class docstring (prose) and from the signature (types).
    assert {"freshtoken.refreshers", "MemoryStore", "DPoPKey", "TokenStore"} <= titles
    for title, href in links:
        url = urlsplit(href)
        assert url.netloc == urlsplit(served).netloc, (title, href)
        assert url.fragment in anchors_of(site, url.path), (title, href)

    chromium.save_screenshot(str(tmp_path / "manager-desktop.png"))
    layout = chromium.execute_script(OVERFLOW_JS)
    assert not layout["page_scrolls"]
    left, right = layout["content"]
    for block_left, block_right, start in layout["blocks"]:
        assert block_left >= left - 1, start
        assert block_right <= right + 1, start

    chromium.set_window_size(*PHONE)
    chromium.get(f"{served}/reference/manager/")
    chromium.save_screenshot(str(tmp_path / "manager-phone.png"))
    layout = chromium.execute_script(OVERFLOW_JS)
    assert not layout["page_scrolls"]
    for block_left, block_right, start in layout["blocks"]:
        assert block_left >= 0, start
        assert block_right <= layout["viewport"], start


def test_the_site_is_searchable(site: Path) -> None:
    """The search index is built and knows the API reference."""
    index = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    locations = {doc["location"] for doc in index["docs"]}
    assert "reference/manager/#freshtoken.TokenManager" in locations


PUBLIC_MODULES = [
    "freshtoken",
    "freshtoken.providers",
    "freshtoken.refreshers",
    "freshtoken.stores",
    "freshtoken.errors",
    "freshtoken.httpx",
    "freshtoken.httpx2",
    "freshtoken.mcp",
    "freshtoken.requests",
    "freshtoken.aiohttp",
    "freshtoken.otel",
    "freshtoken.bff",
    "freshtoken.agent",
    "freshtoken.server",
    "freshtoken.testing",
]


def resolved(path: str) -> object:
    """The object at a dotted ``path`` (module, then attributes), or None."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        with warnings.catch_warnings():
            # The reference still documents the deprecated names (until 0.2.0): looking
            # them up is not a use of them.
            warnings.simplefilter("ignore", DeprecationWarning)
            for part in parts[cut:]:
                obj = getattr(obj, part, None)
        return obj
    return None


def test_every_public_name_is_in_the_reference(site: Path) -> None:
    """Each name in a public module's ``__all__`` has an entry in the API reference, under
    that name or another public one (a re-export): a new one goes on a docs/reference/ page."""
    inventory = (site / "objects.inv").read_bytes()
    body = zlib.decompress(inventory.split(b"\n", 4)[4]).decode()
    documented = {line.split(" ", 1)[0] for line in body.splitlines()}
    shown = {id(resolved(path)) for path in documented if path.startswith("freshtoken")}
    shown.discard(id(None))
    missing = [
        f"{name}.{member}"
        for name in PUBLIC_MODULES
        for member in importlib.import_module(name).__all__
        if f"{name}.{member}" not in documented
        and id(getattr(importlib.import_module(name), member)) not in shown
    ]
    assert not missing


def test_an_unresolved_cross_reference_fails_the_strict_build(tmp_path: Path) -> None:
    """mkdocs build --strict stops on a cross-reference to nothing, and names it."""
    # The project's settings, on a one-page site of its own (mkdocs.yml ends with the nav).
    settings, nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8").split("\nnav:\n")
    assert "plugins:" not in nav
    config_path = tmp_path / "mkdocs.yml"
    config_path.write_text(settings, encoding="utf-8")
    for shared in ("src", "tools"):
        (tmp_path / shared).symlink_to(ROOT / shared)
    shutil.copytree(ROOT / "docs" / "stylesheets", tmp_path / "docs" / "stylesheets")
    (tmp_path / "docs" / "index.md").write_text(
        "# Page\n\n::: freshtoken.ManagerStats\n\n"
        "See [the manager][freshtoken.ManagerStats] and [nothing][freshtoken.Nothing].\n",
        encoding="utf-8",
    )
    result = mkdocs_build(config_path, tmp_path / "site")
    assert result.returncode == 1
    unresolved = re.findall(r"Could not find cross-reference target '([^']+)'", result.stderr)
    assert unresolved == ["freshtoken.Nothing"], result.stderr
