# Two commands do all the set-up on a fresh machine with Python >= 3.10 and make:
#   make demo   runs `freshtoken demo` on the embedded reference server
#   make test   runs the whole test suite
# Both create .venv and install the package with every extra the first time. Some tests drive
# real programs: redis-server (started by the tests themselves), git, curl, node, kubectl,
# systemd-socket-activate, Chromium. `make test` installs the Debian packages that are missing
# when it can (root with apt-get); elsewhere it says which, and those tests are skipped (CI
# sets FRESHTOKEN_REQUIRE_TOOLS=1 and FRESHTOKEN_REQUIRE_REDIS=1: then they fail instead).
# The suite runs in parallel (pytest-xdist, twice as many workers as cores): `make test
# WORKERS=0` runs it in one process.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# Twice the cores: many tests wait on servers, subprocesses and clocks, and overlap well.
WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 2) * 2 )))
# program -> the Debian package that brings it
TOOLS := redis-server:redis-server git:git curl:curl node:nodejs npm:npm \
	systemd-socket-activate:systemd chromium:chromium chromedriver:chromium-driver

.PHONY: demo test lint docs bench clean redis tools lock dist

# What CI and `make` install is pinned in constraints.txt (every package, extras and tools
# included), so a new release upstream cannot turn a clean clone red. `make lock` moves the pins
# to the newest releases on purpose: run it, then `make lint test`, then commit the new file.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint constraints.txt -e '.[all,dev,docs]'
	touch $@

lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install --quiet --upgrade pip
	build/lock-venv/bin/python -m pip install --quiet -e '.[all,dev,docs]'
	{ echo "# Pinned by 'make lock' on $$(date -u +%Y-%m-%d) with $$(build/lock-venv/bin/python -V):"; \
	  echo "# every package 'make' installs. Move the pins on purpose: make lock && make lint test."; \
	  build/lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^-e '; } > constraints.txt
	rm -rf build/lock-venv

demo: $(BIN)/.installed
	$(BIN)/freshtoken demo $(ARGS)

test: $(BIN)/.installed tools
	$(BIN)/python -m pytest -n $(WORKERS) --dist worksteal $(ARGS)

redis: tools

tools:
	@missing=""; for pair in $(TOOLS); do \
	    command -v "$${pair%%:*}" >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "make: installing Debian packages for the tests:$$missing"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else \
	        echo "make: missing$$missing: the tests that need them will be skipped"; \
	    fi; \
	fi

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python tools/check_imports.py

# The documentation site (docs/, mkdocs.yml), built strictly: a broken link, a cross-reference
# to nothing or a docstring mkdocstrings cannot read fails it. Its runnable code blocks are run
# by tests/test_docs.py; tests/test_api_reference.py builds it and looks at it in Chromium.
# NO_MKDOCS_2_WARNING=1: Material for MkDocs prints an end-of-life notice on every build (fixes
# until 2027-05-05; Zensical, its successor, reads this mkdocs.yml). We keep MkDocs 1.6 and
# Material 9, pinned below their next majors (pyproject.toml), while Zensical's support for
# mkdocstrings, which the API reference needs, is preliminary; move before May 2027.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

# The sdist and the wheel in dist/, built offline (hatchling, from the dev extra, without build
# isolation: nothing is downloaded). Then: pip install 'dist/freshtoken-VERSION-py3-none-any.whl[cli]'
dist: $(BIN)/.installed
	rm -rf dist
	$(BIN)/python -m hatchling build --directory dist

bench: $(BIN)/.installed
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist
