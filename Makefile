# Two commands do all the set-up on a fresh machine with Python >= 3.10 and make:
#   make demo   runs `freshtoken demo` on the embedded reference server
#   make test   runs the whole test suite
# Both create .venv and install the package with every extra the first time. The Redis tests
# start their own redis-server: `make test` installs Debian's package when it is missing and
# it can (root with apt-get); elsewhere it says so and those tests are skipped.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean redis

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all,dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/freshtoken demo $(ARGS)

test: $(BIN)/.installed redis
	$(BIN)/python -m pytest $(ARGS)

redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	        echo "make: installing redis-server (Debian package) for the Redis tests"; \
	        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server; \
	    else \
	        echo "make: no redis-server on PATH: the Redis tests will be skipped (see README)"; \
	    fi; \
	}

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(BIN)/.installed
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist
