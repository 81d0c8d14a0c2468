# Developer and CI entry points. Only python3 (3.11+) and make are needed: the first target that
# needs the virtual environment creates it from pyproject.toml, and re-installs when that changes.
#
#   make test   ruff, import-linter contracts, then the whole pytest suite (slow tests included; as
#               root on Debian it first installs chromium for the browser tests when it is missing)
#   make up     a local cluster with demo backends (ollamaflow up --demo)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ollamaflow-installed
PYTEST_ARGS ?=
UP_ARGS ?= --demo

.PHONY: venv browser lint test test-fast test-unit up clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The browser tests (tests/console) drive the system's Chromium: Debian's package, installed here when
# /usr/bin/chromium is missing and this runs as root where apt-get exists (silent when it is there).
# Without it those tests skip, saying why; under CI (CI=true) they fail instead.
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser tests (tests/console)"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "warning: could not install chromium; the browser tests will skip (fail under CI)"; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Every check runs even when an earlier one fails, so one run shows everything; the target fails
# when any of them did.
test: venv browser
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/lint-imports || status=1; \
	$(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	exit $$status

test-fast: venv
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

up: venv
	$(BIN)/ollamaflow up $(UP_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache
