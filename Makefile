# `make test` and `make run` bootstrap everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest bench run dispatch docs services browsers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

## The demo needs the core install only (no test or docs tooling); DEMO_EXTRAS=redis,postgres,s3
## adds backend clients, for TIERED_STATE_*_URL variables that point at servers.
DEMO_EXTRAS ?=
comma := ,
RUN_STAMP := $(VENV)/.installed-run$(if $(DEMO_EXTRAS),-$(subst $(comma),-,$(DEMO_EXTRAS)))
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.$(if $(DEMO_EXTRAS),[$(DEMO_EXTRAS)])'
	touch $(RUN_STAMP)

install: $(STAMP)

services:
	bash scripts/ensure-services.sh

## Headless Chromium for the dashboard's browser tests (Debian's package; never `playwright install`).
browsers:
	bash scripts/ensure-chromium.sh

lint: $(STAMP)
	$(BIN)/ruff check flask_tiered_state tests bench example_app
	$(BIN)/ruff format --check flask_tiered_state tests bench example_app
	$(BIN)/pre-commit validate-config .pre-commit-config.yaml

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) services browsers
	TIERED_STATE_REQUIRE_SERVICES=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

## Everything: lint, types, the whole suite against the real servers.
test: lint typecheck pytest

## The demo: bootstraps .venv, seeds the demo data (idempotent: a second run adds nothing)
## and serves the Flask Credit System on http://127.0.0.1:5000. TIERED_STATE_* variables
## point it at Redis, PostgreSQL and S3; without them it runs on the embedded defaults.
## Every page and endpoint needs one of the tokens printed here (made at the first run,
## kept in ./instance/api_tokens.json).
DEMO := $(BIN)/flask --app example_app:create_app
run: $(RUN_STAMP)
	$(DEMO) seed-demo
	@echo ""
	@echo "  Flask Credit System   http://127.0.0.1:5000/"
	@echo "  State dashboard       http://127.0.0.1:5000/dashboard/"
	@echo "  REST API (OpenAPI)    http://127.0.0.1:5000/api/state/openapi.json"
	@echo "  Data (embedded mode)  ./instance/tiered_state/   Stop with Ctrl+C."
	@$(DEMO) api-tokens
	@echo ""
	$(DEMO) run --host 127.0.0.1 --port 5000

## The demo's dispatcher, beside `make run` (in a second terminal): delivers the asynchronous
## callbacks (receipts, notices, subscription timers) and applies due timers (trials and
## paid periods end). Ctrl+C (or SIGTERM) stops it after the pass under way.
dispatch: $(RUN_STAMP)
	$(DEMO) state dispatch

## wrk (Debian's package) loads the http benchmark's servers; without it, a Python generator does.
bench: $(STAMP) services
	bash scripts/ensure-wrk.sh
	$(BIN)/python -m bench

## The Sphinx documentation (docs/_build/html); any warning fails the build.
docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis docs/_build
