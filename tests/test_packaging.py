"""The package as a user gets it: the sdist and the wheel that ``make dist`` builds from this
tree (offline, with hatchling), the wheel installed in a fresh venv as the README says
(``pip install 'dist/freshtoken-....whl[cli]'``), running the command, the demo, the README's
quick start against ``freshtoken serve`` from that venv, and ``freshtoken bff --demo``'s page
in Chromium (the venv's dependencies come from the package index, or pip's cache). And the
README's install section, checked against pyproject.toml."""

from __future__ import annotations

import dataclasses
import email.message
import email.parser
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_fixture import WAIT, bff_demo, sign_in
from docs_blocks import readme_quick_start

import freshtoken

SOURCE = Path(__file__).resolve().parent.parent
DEMO_PAGE_FILES = ("freshtoken/bff/demo_page/index.html", "freshtoken/bff/demo_page/app.js")


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


@dataclasses.dataclass(frozen=True)
class Built:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """What `make dist` builds: the sdist and the wheel, offline (no build isolation)."""
    directory = tmp_path_factory.mktemp("dist")
    done = run(sys.executable, "-m", "hatchling", "build", "--directory", directory, cwd=SOURCE)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = directory.glob("freshtoken-*.whl")
    (sdist,) = directory.glob("freshtoken-*.tar.gz")
    assert wheel.name.startswith(f"freshtoken-{freshtoken.__version__}-")
    assert sdist.name == f"freshtoken-{freshtoken.__version__}.tar.gz"
    return Built(wheel, sdist)


def make_venv(wheel: Path, extras: str, where: Path) -> Path:
    """A fresh venv with ``wheel[extras]`` installed by pip, as the README says; its bin
    directory.

    The venv gets no pip of its own: this process's pip installs into it (``pip --python``),
    without byte-compiling. Same resolver, same wheels, a quarter of the time (4.5 s against
    19.5 s for the ``cli`` extra on this machine), which is most of what these tests wait for.
    """
    created = run(sys.executable, "-m", "venv", "--without-pip", where, cwd=where.parent)
    assert created.returncode == 0, created.stderr
    python = where / "bin" / "python"
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "-q",
        "--no-compile",
        f"{wheel}[{extras}]",
        cwd=where.parent,
    )
    assert installed.returncode == 0, installed.stderr
    return where / "bin"


def _headers(metadata: str) -> email.message.Message:
    return email.parser.HeaderParser().parsestr(metadata)


@pytest.mark.slow
def test_the_metadata_names_no_placeholder_address(built: Built) -> None:
    """No Home-page or Project-URL on the reserved .example domain, in the wheel or the sdist
    (the README, which is the long description, may show example.com in its code)."""
    with zipfile.ZipFile(built.wheel) as wheel:
        name = f"freshtoken-{freshtoken.__version__}.dist-info/METADATA"
        wheel_metadata = _headers(wheel.read(name).decode())
    with tarfile.open(built.sdist) as sdist:
        member = sdist.extractfile(f"freshtoken-{freshtoken.__version__}/PKG-INFO")
        assert member is not None
        sdist_metadata = _headers(member.read().decode())
    for metadata in (wheel_metadata, sdist_metadata):
        assert metadata["Name"] == "freshtoken"
        for field in ("Home-page", "Project-URL", "Download-URL"):
            for value in metadata.get_all(field) or []:
                assert ".example" not in value, (field, value)
        requirements = metadata.get_all("Requires-Dist") or []
        assert len(requirements) == len(set(requirements)), "a requirement listed twice"


@pytest.mark.slow
def test_the_sdist_and_the_wheel_hold_what_they_should(built: Built) -> None:
    """No Redis snapshot, virtualenv, node_modules or built SPA in the sdist; the wheel has
    the BFF demo's page and py.typed."""
    with tarfile.open(built.sdist) as sdist:
        names = sdist.getnames()
    assert f"freshtoken-{freshtoken.__version__}/pyproject.toml" in names
    for unwanted in ("dump.rdb", "/.venv/", "/node_modules/", "/examples/spa/dist/", ".pyc"):
        assert not any(unwanted in name or name.endswith(unwanted) for name in names), unwanted
    with zipfile.ZipFile(built.wheel) as wheel:
        wheel_names = wheel.namelist()
    for wanted in (*DEMO_PAGE_FILES, "freshtoken/py.typed"):
        assert wanted in wheel_names


@pytest.mark.slow
def test_a_wheel_installed_with_the_cli_extra_runs_the_command(
    built: Built, tmp_path: Path
) -> None:
    """Install ``freshtoken[cli]`` from the wheel: the command, a short demo and the README's
    quick start (against the venv's own ``freshtoken serve``) all work."""
    bin_dir = make_venv(built.wheel, "cli", tmp_path / "venv")
    python, command = bin_dir / "python", bin_dir / "freshtoken"

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


@pytest.fixture
def wheel_demo(built: Built, tmp_path: Path) -> Iterator[str]:
    """``freshtoken bff --demo`` from a venv with only the ``bff`` extra, as the README's BFF
    section installs it; the URL its banner says to open. Ctrl-C stops it cleanly."""
    command = make_venv(built.wheel, "bff", tmp_path / "venv") / "freshtoken"
    with bff_demo([command], cwd=tmp_path) as demo:
        yield demo.url
    assert demo.code == 0, demo.err
    assert demo.err == ""


@pytest.mark.slow
def test_the_bff_demo_from_the_wheel_has_a_page_to_sign_in_on(
    wheel_demo: str, chromium: Any
) -> None:
    """The banner's URL serves a page (no Node.js, no checkout), and in Chromium it signs in
    through the reference server's login page, calls the API through the BFF and logs out."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    page = httpx.get(wheel_demo, timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")

    sign_in(chromium, wheel_demo)
    wait = WebDriverWait(chromium, WAIT)
    field = chromium.find_element(By.ID, "item-name")
    field.send_keys("from the wheel")
    field.submit()
    wait.until(shown.text_to_be_present_in_element((By.ID, "items"), "from the wheel"))
    assert chromium.find_element(By.ID, "error").text == ""
    chromium.find_element(By.ID, "logout").click()
    wait.until(shown.visibility_of_element_located((By.ID, "login")))


# -- the README's install section -------------------------------------------------------------


def _pyproject() -> dict[str, Any]:
    text = (SOURCE / "pyproject.toml").read_text()
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads(text)
    parser: Any = pytest.importorskip("tomli")  # tomllib's ancestor on Python 3.10
    return dict(parser.loads(text))


def _extras_table(page: Path) -> list[tuple[list[str], str]]:
    """The rows of the page's extras table: the extras each names, and what it says."""
    text = page.read_text()
    table = text[text.index("| extra | adds |") :].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        first, adds = line.strip("|").split("|", 1)
        rows.append((re.findall(r"`([a-z][a-z0-9]*)`", first), adds.strip()))
    return rows


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_the_extras_table_lists_every_extra_and_all_is_every_extra_above_it(page: str) -> None:
    """Each extra of pyproject.toml has a row; the `all` row says "every extra above", and
    `all` installs exactly those."""
    extras = _pyproject()["project"]["optional-dependencies"]
    rows = _extras_table(SOURCE / page)
    listed = [name for names, _ in rows for name in names]
    assert sorted(listed) == sorted(extras)
    position = next(index for index, (names, _) in enumerate(rows) if names == ["all"])
    assert rows[position][1] == "every extra above"
    above = {name for names, _ in rows[:position] for name in names}
    (requirement,) = extras["all"]
    installs = re.fullmatch(r"freshtoken\[([a-z0-9,]+)\]", requirement)
    assert installs is not None, requirement
    assert set(installs.group(1).split(",")) == above


def test_the_readme_stays_a_front_page() -> None:
    """Under 250 lines; its install section shows the clone, `make dist` and the index name,
    and the BFF section its own install line."""
    text = (SOURCE / "README.md").read_text()
    assert len(text.splitlines()) < 250
    install = text[text.index("## Install") : text.index("## Quick start")]
    for line in ("pip install '.[cli]'", "make dist", "pip install 'freshtoken[cli]'"):
        assert line in install
    bff = text[text.index("## Browser apps") :].split("\n## ", 1)[0]
    assert "pip install '.[bff]'" in bff
