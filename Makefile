# `make test` and `make run` bootstrap everything they need on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint typecheck pytest bench run run-services reset-demo install-demo dispatch docs \
	services browsers clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

## The demo needs the core install and the `demo` extra (python-dotenv: the flask command reads
## ./.env; Flask-WTF: its pages' forms) only, no test or docs tooling; DEMO_EXTRAS=redis,postgres,s3
## adds backend clients, for TIERED_STATE_*_URL variables that point at servers.
DEMO_EXTRAS ?=
comma := ,
RUN_STAMP := $(VENV)/.installed-run$(if $(DEMO_EXTRAS),-$(subst $(comma),-,$(DEMO_EXTRAS)))
$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo$(if $(DEMO_EXTRAS),$(comma)$(DEMO_EXTRAS))]'
	touch $(RUN_STAMP)

install-demo: $(RUN_STAMP)

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
## and serves the Flask Credit System on http://127.0.0.1:$(PORT) (PORT=5001 for another port).
## TIERED_STATE_* variables (or a ./.env file) point it at Redis, PostgreSQL and S3; without
## them it runs on the embedded defaults. The banner names the backend of each tier. Every page
## and endpoint needs one of the tokens printed here (made at the first run, kept in
## ./instance/api_tokens.json).
PORT ?= 5000
DEMO := $(BIN)/flask --app example_app:create_app
run: $(RUN_STAMP)
	@$(DEMO) seed-demo
	@echo ""
	@$(DEMO) banner --port $(PORT)
	@echo ""
	$(DEMO) run --host 127.0.0.1 --port $(PORT)

## The demo on real servers: Redis and PostgreSQL as `make test` starts them (its own key prefix
## and database, credit_demo) and moto's standalone S3 server (bucket credit-demo) on MOTO_PORT,
## left running in the background between runs (`make reset-demo` stops it).
MOTO_PORT ?= 9100
SERVICES_ENV = TIERED_STATE_HOT_URL=redis://127.0.0.1:6379/0 TIERED_STATE_KEY_PREFIX=credit_demo: \
	TIERED_STATE_WARM_URL=postgresql+psycopg://postgres@127.0.0.1:5432/credit_demo \
	TIERED_STATE_COLD_URL='s3://credit-demo/states/?endpoint_url=http://127.0.0.1:$(MOTO_PORT)&region_name=us-east-1' \
	AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
SERVICES_STAMP := $(VENV)/.installed-run-demo-services
run-services:
	@$(MAKE) --no-print-directory install-demo DEMO_EXTRAS=demo-services
	@BIN=$(BIN) MOTO_PORT=$(MOTO_PORT) bash scripts/demo-services.sh start
	@$(SERVICES_ENV) $(MAKE) --no-print-directory run DEMO_EXTRAS=demo-services

## Deletes the demo's data, so that the next run seeds it afresh: in ./instance/ the SQLite file,
## the COLD directory, the backups and the tokens' file; after `make run-services` also the
## Redis keys under credit_demo: (SCAN + DEL, never a flush), the tiered_state_* tables of the
## credit_demo database, the bucket's objects, and stops moto's server.
reset-demo: $(RUN_STAMP)
	@$(DEMO) reset-demo --yes
	@if [ -f $(SERVICES_STAMP) ]; then \
	  BIN=$(BIN) MOTO_PORT=$(MOTO_PORT) bash scripts/demo-services.sh start && \
	  $(SERVICES_ENV) $(DEMO) reset-demo --yes && \
	  bash scripts/demo-services.sh stop; \
	fi

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
