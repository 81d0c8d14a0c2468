# Developer and CI entry points. Only python3 (3.11+) and make are needed: the first target that
# needs the virtual environment creates it from pyproject.toml, and re-installs when that changes.
#
#   make test   ruff, import-linter contracts, then the whole pytest suite (slow tests included)
#   make up     a local cluster with demo backends (ollamaflow up --demo)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ollamaflow-installed
PYTEST_ARGS ?=
UP_ARGS ?= --demo

.PHONY: venv lint test test-fast up clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Every check runs even when an earlier one fails, so one run shows everything; the target fails
# when any of them did.
test: venv
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/lint-imports || status=1; \
	$(BIN)/pytest $(PYTEST_ARGS) || status=1; \
	exit $$status

test-fast: venv
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

up: venv
	$(BIN)/ollamaflow up $(UP_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache
