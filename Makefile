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
.PHONY: help install run demo test lint typecheck proto proto-check bench bench-checkout bench-settlement bench-cards clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

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

# One after the other even under make -j: two benchmarks sharing the machine would skew both.
bench: $(STAMP) ## Run both benchmarks below, one after the other (PostgreSQL; prints figures)
	$(MAKE) --no-print-directory bench-checkout
	$(MAKE) --no-print-directory bench-settlement

bench-checkout: $(STAMP) ## Benchmark earn and hold+capture over gRPC on PostgreSQL (PROCESSES=n server processes)
	$(BIN)/python -m bench.checkout --database-url $(PG_URL) --processes $(or $(PROCESSES),1)

bench-settlement: $(STAMP) ## Close a month of 1M ledger entries vs a plain SQL aggregation (PostgreSQL)
	$(BIN)/python -m bench.settlement --database-url $(PG_URL)

bench-cards: $(STAMP) ## Stream 100,000 card transactions over gRPC, then ingest as many from a file (PostgreSQL)
	$(BIN)/python -m bench.cards --database-url $(PG_URL)

# REPLICAS=n (default 3). A fresh PostgreSQL database unless LOYALTY_DATABASE_URL is given by you:
# the SQLite default this file exports cannot be shared by replicas, so it is not passed on.
.PHONY: cluster
cluster: $(STAMP) ## Replicas on PostgreSQL behind HAProxy, scraped by Prometheus, on loopback (no containers)
	$(BIN)/python -m deploy.cluster --replicas $(or $(REPLICAS),3) \
	  --database-url '$(if $(filter file,$(origin LOYALTY_DATABASE_URL)),,$(LOYALTY_DATABASE_URL))'

# The checks of deploy/ (tests/deploy) run HAProxy's, Prometheus' and Compose's own validators.
# Debian packages: haproxy, prometheus (for promtool) and docker-compose (validates compose.yaml
# offline, no engine needed). Only missing tools are installed, so a second run returns at once.
DEPLOY_TOOLS := haproxy:haproxy promtool:prometheus docker-compose:docker-compose
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.PHONY: deploy-tools
deploy-tools: ## Install haproxy, promtool and docker-compose with apt-get if missing (deploy/ checks)
	@missing=""; PATH="$$PATH:/usr/local/sbin:/usr/sbin:/sbin"; \
	for pair in $(DEPLOY_TOOLS); do command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

clean: ## Remove the virtualenv and local data
	rm -rf $(VENV) var node_modules
