# Developer and CI entry points. Every target bootstraps the tools it needs first
# (scripts/bootstrap: .venv from constraints.txt, buf from package-lock.json), so a fresh
# clone needs only python3 >= 3.11 and make to serve, and npm too for the checks:
#
#   make run     serve on $AUTHSVC_HOST:$AUTHSVC_PORT
#   make test    every check CI runs (.ci/run), in order; fails if any fails
#   make help    all targets

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

BIN := .venv/bin
BUF := node_modules/.bin/buf

# `make test` runs these targets in this order and reports every one that failed.
CHECKS := ruff-check ruff-format-check mypy lint-imports check-generated lint-proto pytest \
	pytest-pgbouncer pytest-citus bench-smoke node-client session-page
LINTS := ruff-check ruff-format-check mypy lint-imports lint-proto

.PHONY: help bootstrap bootstrap-python run test bench lint fmt generate check-generated lint-proto lock dist clean \
	mutation ruff-check ruff-format-check mypy lint-imports pytest pytest-pgbouncer pytest-citus \
	bench-smoke node-client session-page example-session-page

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

bootstrap: ## Install or update .venv and node_modules if their inputs changed
	@scripts/bootstrap

# Only .venv: serving needs neither npm nor buf.
bootstrap-python:
	@scripts/bootstrap python

run: bootstrap-python ## Run the service (.venv/bin/authsvc serve)
	exec $(BIN)/authsvc serve

# Runs every check even after one fails, so one CI run shows all problems. Prints nothing
# after the last check on success, so its summary ("N passed, N failed") is the last line.
test: bootstrap ## Run all checks (lint, types, imports, generated code, protos, tests)
	@failed=(); \
	for check in $(CHECKS); do \
	  echo "==> $$check"; \
	  $(MAKE) -s $$check || failed+=("$$check"); \
	done; \
	if (( $${#failed[@]} )); then echo "FAILED: $${failed[*]}" >&2; exit 1; fi

# Pass options through BENCH_ARGS, e.g. make bench BENCH_ARGS="--duration 5 --runs 1";
# SMOKE=1 runs every scenario for about a second and fails on any error (what CI runs).
bench: bootstrap ## Benchmark every RPC against its bounds (python -m bench; see docs/performance.md)
	$(BIN)/python -m bench $(if $(SMOKE),--smoke) $(BENCH_ARGS)

# The harness cannot rot: every scenario and bound, briefly; any non-OK call fails it.
# Timing is printed, never asserted.
bench-smoke: bootstrap
	@$(BIN)/python -m bench --smoke --pgbouncer
	@$(BIN)/python -m bench.capacity --smoke
	@$(BIN)/python -m bench.citus --smoke

# Not part of `make test`: minutes, not seconds. MUTANTS="glob ..." runs only those mutants,
# e.g. MUTANTS='authsvc.domain.access_tokens.*'. docs/mutation.md has the last score.
mutation: bootstrap ## Mutation testing of the critical logic (mutmut; prints the kill rate)
	$(BIN)/python scripts/mutation.py $(MUTANTS)

lint: bootstrap ## Static checks only (ruff, mypy, import layers, buf)
	@failed=(); \
	for check in $(LINTS); do \
	  echo "==> $$check"; \
	  $(MAKE) -s $$check || failed+=("$$check"); \
	done; \
	if (( $${#failed[@]} )); then echo "FAILED: $${failed[*]}" >&2; exit 1; fi

fmt: bootstrap ## Apply ruff fixes and formatting, and buf format
	$(BIN)/ruff check --fix --quiet .
	$(BIN)/ruff format --quiet .
	$(BUF) format --write

ruff-check: bootstrap
	@$(BIN)/ruff check --output-format=concise .

ruff-format-check: bootstrap
	@$(BIN)/ruff format --check --output-format=concise .

mypy: bootstrap
	@$(BIN)/mypy

lint-imports: bootstrap
	@$(BIN)/lint-imports --no-cache --no-logo

# pytest exits 5 when it collects no tests; that is a failure here too, not a pass. The
# Citus tests run once, in pytest-citus, not here too.
CITUS_ONLY := tests/scale/test_citus_*.py
pytest: bootstrap
	@$(BIN)/pytest -q --ignore-glob='$(CITUS_ONLY)' || { rc=$$?; \
	  if (( rc == 5 )); then echo "pytest: no tests were collected" >&2; fi; exit $$rc; }

# The correctness tests, run again on other database topologies: refresh, concurrency and
# reuse (and retries of one rotation), revocation races, throttle parallelism, the sweeper,
# the revocation feed and its propagation, and three server processes on one database.
CORRECTNESS_TESTS := $(addprefix tests/integration/,test_refresh.py test_idempotent_refresh.py \
	test_revocation_races.py test_login_throttle.py test_sweeper.py test_revocation_log.py \
	test_watch_revocations.py test_revocation_propagation.py test_replicas.py)

# With the service behind a real PgBouncer in transaction pooling mode (bench/pgbouncer.py;
# docs/operations.md, Behind PgBouncer). About a minute and a half.
PGBOUNCER_TESTS := $(CORRECTNESS_TESTS)
pytest-pgbouncer: bootstrap
	@$(BIN)/pytest -q --through-pgbouncer $(PGBOUNCER_TESTS)

# On a Citus cluster, a coordinator and two workers (tests/scale/citus_cluster.py; Citus is
# built into .venv by scripts/install_citus): every test database is made on every node.
# Then the Citus tests proper: the harness, the router proof of every statement the hot RPCs
# send, webhooks refused, and a live rebalance (on a cluster of its own: it adds a worker).
# Three replicas on one database (test_replicas.py) pass on Citus too (`pytest --on-citus
# tests/integration/test_replicas.py`, about 40 s), left out here for the CI time budget.
CITUS_TESTS := $(filter-out %/test_replicas.py,$(CORRECTNESS_TESTS)) \
	$(sort $(wildcard $(CITUS_ONLY)))
pytest-citus: bootstrap
	@$(BIN)/pytest -q --on-citus $(CITUS_TESTS)

# The TypeScript client: tsc --noEmit (strict), then its node:test suite, which starts a live
# server from .venv. Quiet on success but for the closing "N passed, N failed" line.
node-client: bootstrap
	@cd clients/node && node_modules/.bin/tsc --noEmit
	@cd clients/node && npm test --silent

# The session page example (examples/session-page): builds it, then its browser tests drive
# Debian's Chromium against the real authsvc, PostgreSQL and BFF, one stack per test file.
session-page: bootstrap
	@cd examples/session-page && npm test --silent

# The session page example (examples/session-page/README.md): authsvc on a fresh embedded
# PostgreSQL, the BFF and the page, a demo account; prints the URL, Ctrl-C stops everything.
# Needs .venv and the node_modules (`scripts/bootstrap packages`), not the Debian tools.
example-session-page: ## Run the session page example on http://127.0.0.1:8080
	@scripts/bootstrap packages
	@cd examples/session-page && npm run build --silent && exec node build/dev/main.js

generate: bootstrap ## Regenerate authsvc/v1/ from protos/
	@scripts/generate_protos

check-generated: bootstrap ## Fail if authsvc/v1/ differs from what protos/ generates
	@scripts/check_generated

# buf breaking compares protos/ with the previous commit: on a clean checkout of main that
# is the change the last commit made; with uncommitted edits it also covers those.
lint-proto: bootstrap ## buf lint, buf format check, buf breaking against HEAD~1
	@$(BUF) lint
	@$(BUF) format --diff --exit-code
	@if [ "$$(git rev-parse --is-shallow-repository)" = true ] \
	    && ! git rev-parse -q --verify HEAD~1 >/dev/null; then \
	  git fetch -q --deepen=1 2>/dev/null || { \
	    echo "buf breaking: shallow clone without HEAD~1, and fetching it failed" >&2; exit 1; }; \
	fi
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then \
	  $(BUF) breaking --against '.git#ref=HEAD~1'; \
	else echo "buf breaking: HEAD is the first commit; nothing to compare with"; fi
	@echo "protos/ pass buf lint, buf format and buf breaking."

# The version in each artifact's name and metadata is authsvc/VERSION (see CHANGELOG.md).
dist: bootstrap ## Build the server's and Python client's wheel + sdist and the Node tarball into dist/
	@scripts/dist

lock: ## Re-resolve dependencies into constraints.txt (then run make test)
	@scripts/lock

clean: ## Remove .venv, node_modules, caches and build output (keeps .authsvc-data/)
	rm -rf .venv node_modules build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache mutants \
	  clients/node/node_modules clients/node/build clients/node/dist \
	  clients/python/build clients/python/src/*.egg-info \
	  examples/session-page/node_modules examples/session-page/build \
	  .import_linter_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
