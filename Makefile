# Pulse — `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-8s\033[0m %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml clients/python/pyproject.toml
	@test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]' -e clients/python
	@touch $@

install: $(INSTALLED) ## Create .venv and install Pulse with its dev tools

infra: ## Check PostgreSQL and RabbitMQ (install/start them on Debian as root)
	@scripts/ensure-infra.sh

test-tools: ## Chromium, ChromeDriver, promtool, kubectl, docker-compose for the browser, metrics, deploy tests (apt-get on Debian as root)
	@scripts/ensure-test-tools.sh

run: install infra ## Set up and start every service in the foreground (Ctrl-C stops them)
	@scripts/run.sh

test: install infra test-tools ## Run the test suite against the real PostgreSQL and RabbitMQ
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: install ## ruff (lint + format check), mypy, and import-linter (the library's layers; services apart)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-logo

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: install infra ## Email throughput vs the Celery no-op ceiling, latency targets, CPU per process; saves bench/results/
	$(PYTHON) -m bench.email_throughput $(BENCH_ARGS)

bench-realtime: install infra ## 10,000 WebSockets on one realtime process: memory per connection, burst latency; saves bench/results/realtime-latest.json
	$(PYTHON) -m bench.realtime $(BENCH_ARGS)

chaos: install infra ## Kill and restart every part under load; report loss and duplicates (needs root)
	$(PYTHON) -m bench.chaos $(CHAOS_ARGS)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .grimp_cache

.PHONY: help install infra test-tools run test lint format bench bench-realtime chaos clean
