# The two commands of the README, and what they need. Nothing but Python 3.11+ and make.

# The first interpreter that runs and is 3.11+ (a pyenv shim may exist for one
# that is not installed: it fails quietly here).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null 2>&1 \
	&& $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 \
	&& { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
EXAMPLE ?= examples/helpdesk/helpdesk.py

.PHONY: run test lint install bench clean openapi

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "mailfleet needs Python 3.11 or newer on PATH"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml plugins/mailfleet-imap/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,postgres]' -e plugins/mailfleet-imap
	@touch $@

install: $(STAMP)

## Start the example fleet with embedded defaults (SQLite under .mailfleet/).
run: install
	$(BIN)/mailfleet run $(EXAMPLE)

## Lint, type-check, check the layers, and run the whole suite.
test: lint
	$(BIN)/pytest

## Write docs/openapi.json, the API's document as the server serves it.
openapi: install
	$(BIN)/python -m mailfleet.api.spec docs/openapi.json

lint: install
	$(BIN)/ruff check src tests bench examples plugins
	$(BIN)/ruff format --check src tests bench examples plugins
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mailfleet .pytest_cache .mypy_cache .ruff_cache
