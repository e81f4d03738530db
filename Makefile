# One Makefile that CI (.ci/run), the README and the Dockerfile all call.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
# Real servers the tests start on loopback (never mocked).
SYSTEM_PACKAGES := redis-server nginx-light postgresql wrk openssl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help install system-deps models run test lint format bench clean

help:
	@echo "make run | test | install | lint | bench | clean"

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

models: install ## train v1 and v2 unless their artifacts exist
	@if [ -f models/v1/manifest.json ] && [ -f models/v2/manifest.json ]; then \
	  echo "models present in models/"; else $(BIN)/housing-api train; fi

run: install models
	$(BIN)/housing-api serve --host 127.0.0.1 --port 8000

test: install system-deps lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install system-deps
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache .hypothesis
