# Everything a new user needs: `make run` (try it locally) and `make test` (the whole suite).
# Targets install what is missing themselves; re-running them is cheap.

SHELL := /bin/bash
PYTHON ?= $(shell for p in python3 python3.12 python3.11; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	  && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
BENCH_VENV := bench/.venv
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Playwright drives Debian's chromium (system-deps): never download a browser of its own.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

RUNTIME_REQS := requirements.txt lambda_api/requirements.txt media_node/requirements.txt pyproject.toml \
	setup.py media_node/_audiokernel.c
# What `make check` (and so `make test`) lints and type-checks: every package we ship, the CDK app included.
TYPED := call_state media_node lambda_api infra all_in_one.py place_call.py

.PHONY: run call test check bench setup lint system-deps build-deps upgrade-drill clean help
help:
	@echo "make run    - start the all-in-one server on HOST:PORT (default 127.0.0.1:8080), SQLite store, reads .env"
	@echo "             then open http://127.0.0.1:8080/console (the API key: cat data/api_key)"
	@echo "make call TO=+1... - place a phone call through the running server's API (reads .env)"
	@echo "make test   - install what is missing, then run every test"
	@echo "make bench  - run the benchmarks and print a table (QUICK=1 for a short run)"
	@echo "make setup  - developer tools incl. the AWS CDK CLI (then: npx cdk deploy)"
	@echo "make check  - ruff check, ruff format --check, mypy --strict (make test runs it first)"
	@echo "make upgrade-drill - blue/green upgrade under live calls, then a SIGKILL (N=20 M=10 K=5), real nginx"

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "Python 3.11+ is required (python3.11 or python3.12 on PATH)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime-installed: $(BIN)/python $(RUNTIME_REQS) | build-deps
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	@touch $@

$(VENV)/.dev-installed: $(VENV)/.runtime-installed requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	@touch $@

node_modules/.installed: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is required (Node 20+): apt-get install nodejs npm"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Shell: install the Debian packages named in $$missing when root (CI, a fresh VM), else say they are missing.
APT_MISSING = if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "!!! could not install$$missing: $(1)"; \
	  else echo "!!! missing$$missing (not root): $(1)"; fi; \
	fi

# A C compiler and the Python headers, for the audio kernel (media_node/_audiokernel.c) that `pip install -e .`
# builds; without them the media node runs its numpy fallback (same output, more CPU).
build-deps:
	@missing=""; \
	command -v cc >/dev/null || command -v gcc >/dev/null || missing="$$missing build-essential"; \
	if [ -n "$(PYTHON)" ] && ! $(PYTHON) -c 'import os, sys, sysconfig; \
	  sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then \
	  missing="$$missing $$($(PYTHON) -c 'import sys; print(f"python3.{sys.version_info.minor}-dev")')"; fi; \
	$(call APT_MISSING,the audio kernel falls back to numpy)

# Debian packages the tests use: Java 17 (DynamoDB Local), nginx (nginx -t, the upgrade drill), shellcheck,
# systemd-analyze, curl, rsync and flock (install.sh, switch-colour.sh), chromium (the web console in a real
# headless browser, driven by Playwright), and the C build tools (a test requires the compiled audio kernel in CI).
# Installed when running as root (CI, a fresh VM); otherwise the tests that need them say so loudly.
system-deps: build-deps
	@missing=""; \
	command -v java >/dev/null || missing="$$missing openjdk-17-jre-headless"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx-light"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v rsync >/dev/null || missing="$$missing rsync"; \
	command -v flock >/dev/null || missing="$$missing util-linux"; \
	$(call APT_MISSING,the tests that need them will report it)

# The upgrade and kill drills on this machine (no AWS): real nginx, two colours, loopback Twilio and Gemini.
upgrade-drill: $(VENV)/.dev-installed system-deps
	$(BIN)/python -m tests.drills.upgrade_drill --calls $(or $(N),20) --new-calls $(or $(M),10) --kill-calls $(or $(K),5)

run: $(VENV)/.runtime-installed
	@test -f .env || echo "No .env found: starting with defaults (copy .env.example to .env to add credentials)."
	$(BIN)/python -m all_in_one

# Place a phone call through the API of the server `make run` started (API_URL=https://... for another one).
# PROMPT, GREETING and API_URL reach the script through the environment (make exports command-line variables).
call: $(VENV)/.runtime-installed
	@test -n "$(TO)" || { echo "usage: make call TO=+15551234567 [PROMPT='...'] [GREETING='...']"; exit 2; }
	@$(BIN)/python place_call.py --to "$(TO)"

test: $(VENV)/.dev-installed node_modules/.installed system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict $(TYPED)
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

setup: $(VENV)/.dev-installed node_modules/.installed
	@echo "Ready. Deploy to AWS with: npx cdk deploy (see README, 'Deploy to AWS')."

check: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict $(TYPED)

lint: check

$(BENCH_VENV)/.installed: $(BIN)/python $(RUNTIME_REQS) bench/requirements-bench.txt | build-deps
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install -q -r requirements.txt -r bench/requirements-bench.txt
	$(BENCH_VENV)/bin/pip install -q --no-deps -e .
	@touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m bench.run $(if $(QUICK),--quick,)

clean:
	rm -rf $(VENV) $(BENCH_VENV) node_modules cdk.out .pytest_cache .mypy_cache .ruff_cache
