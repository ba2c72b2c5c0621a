# clickstream-dagster: `make help` lists the targets.
SHELL := /bin/bash
VENV  ?= .venv
BIN   := $(VENV)/bin
PYTEST_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: setup
setup: ## Create .venv with every dependency and fetch the Kafka jars (idempotent)
	@scripts/setup.sh

.PHONY: demo
demo: setup ## The main job: start the stack and run the pipeline end to end, then print where to look
	@$(BIN)/clickstream demo

.PHONY: up
up: setup ## Start PostgreSQL, Kafka and Dagster (reuses .data/)
	@$(BIN)/clickstream up

.PHONY: down
down: ## Stop every process the stack started
	@$(BIN)/clickstream down

.PHONY: status
status: ## Show each component, its address and health
	@$(BIN)/clickstream status

.PHONY: lint
lint: setup ## ruff (lint + format check), mypy and the import contracts (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

.PHONY: test
test: setup ## Lint, type-check and run the whole test suite against real Kafka, PostgreSQL and Spark
	@scripts/test.sh $(PYTEST_ARGS)

.PHONY: bench
bench: setup ## Run the benchmarks in bench/ (see bench/README.md)
	@$(BIN)/python -m bench

.PHONY: clean
clean: down ## Stop the stack and delete its data (.data/)
	rm -rf .data
