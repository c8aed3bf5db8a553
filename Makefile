# Coalition. `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export LOYALTY_DATABASE_URL ?= sqlite:///var/coalition.db
export LOYALTY_KEYS_DIR ?= var/keys
export LOYALTY_OPERATOR_PUBLIC_KEYS ?= operator-demo=var/keys/operator-demo.pub.pem
PG_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.DEFAULT_GOAL := help
.PHONY: help install run demo test test-sqlite lint typecheck proto proto-check bench clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP) ## Create the virtualenv with pinned dependencies

run: $(STAMP) ## Migrate ./var/coalition.db, seed a demo network and serve on 127.0.0.1:50051
	mkdir -p var
	$(BIN)/coalition migrate
	$(BIN)/coalition seed-demo
	$(BIN)/coalition serve

demo: $(STAMP) ## Play a customer journey against the server `make run` started
	$(BIN)/coalition demo

test: $(STAMP) ## Run the whole suite on SQLite and PostgreSQL
	$(BIN)/pytest -q

lint: $(STAMP) node_modules/.bin/buf ## ruff, import contracts, buf lint and the generated-code check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	node_modules/.bin/buf lint
	$(MAKE) proto-check

typecheck: $(STAMP) ## mypy --strict on our packages
	$(BIN)/mypy

node_modules/.bin/buf: package.json
	npm install --no-audit --no-fund --silent
	touch $@

proto: $(STAMP) ## Regenerate Python code and .pyi stubs from proto/
	$(BIN)/python -m tools.protogen proto

proto-check: $(STAMP) ## Fail if committed generated code differs from what the protos generate
	$(BIN)/python -m tools.protogen --check proto

bench: $(STAMP) ## Benchmark earn and hold+capture over gRPC on PostgreSQL (prints figures)
	$(BIN)/python -m bench.checkout --database-url $(PG_URL)

clean: ## Remove the virtualenv and local data
	rm -rf $(VENV) var node_modules
