# `make test` and `make run` bootstrap everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest bench run docs services clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

services:
	bash scripts/ensure-services.sh

lint: $(STAMP)
	$(BIN)/ruff check flask_tiered_state tests bench example_app
	$(BIN)/ruff format --check flask_tiered_state tests bench example_app

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) services
	TIERED_STATE_REQUIRE_SERVICES=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

## Everything: lint, types, the whole suite against the real servers.
test: lint typecheck pytest

bench: $(STAMP) services
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis docs/_build
