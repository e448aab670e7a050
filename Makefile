# `make lab` and `make test` work on a fresh machine: they build .venv themselves.
# What gets installed is exactly uv.lock (`uv sync --locked`): an upstream release cannot change
# it, and a lock out of date with pyproject.toml stops the install with uv's error.
# `make upgrade` moves the lock forward on purpose (README, "Maintainers").
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= dev airflow redis
# uv itself is pinned and lives in its own small venv, so `uv sync` (which removes what the lock
# does not list) never uninstalls the tool that runs it.
UV_VERSION := 0.13.9
UV    := .tools/bin/uv
UV_ENV := UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=$(VENV)
SYNC  := $(UV_ENV) $(UV) sync --locked -q --python python3 $(addprefix --extra ,$(EXTRAS))
EXPORT := $(UV_ENV) $(UV) export --locked --no-hashes --no-emit-project --no-header \
	$(addprefix --extra ,$(EXTRAS)) -o requirements/lock.txt
KEY_PACKAGES := httpx genai-prices openai anthropic jupyterlab nbval apache-airflow redis
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lint lab test test-fast notebooks grade demo bench sysdeps install lock upgrade clean airflow

install: $(STAMP)

$(UV):
	python3 -m venv .tools
	.tools/bin/python -m pip install -q --disable-pip-version-check 'uv==$(UV_VERSION)'

$(STAMP): pyproject.toml uv.lock | $(UV)
	@$(SYNC) || { echo 'make install: uv.lock does not match pyproject.toml (or a locked package is missing): run `make lock`, then commit uv.lock and requirements/lock.txt' >&2; exit 1; }
	@$(PY) tools/versions.py $(KEY_PACKAGES)
	@touch $(STAMP)

# Re-resolve the lock after editing dependencies in pyproject.toml (same versions where possible).
lock: | $(UV)
	$(UV_ENV) $(UV) lock
	$(EXPORT)

# Move every package to its newest release allowed by pyproject.toml, then run every test.
upgrade: | $(UV)
	$(UV_ENV) $(UV) lock --upgrade
	$(EXPORT)
	$(MAKE) test

# Debian packages the browser and Redis tests need (chromium, redis-server); root only.
sysdeps:
	@missing=""; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "apt-get install$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "missing Debian packages:$$missing (browser/Redis tests will skip; run as root to install)"; fi; \
	fi

lab: $(STAMP)
	$(VENV)/bin/jupyter lab $(ROOT_FLAG) notebooks/

# lint first: seconds, and a type error is cheaper to read than the test it would break
test: $(STAMP) sysdeps lint
	$(PY) -m pytest

# ruff (rules in pyproject.toml) and mypy (strict on the core library)
lint: $(STAMP)
	$(VENV)/bin/ruff check llm_patterns tests benchmarks tools dags solutions
	$(VENV)/bin/mypy

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser and not airflow and not redis"

notebooks: $(STAMP)
	$(PY) tools/build_notebooks.py

grade: $(STAMP)
	$(PY) -m llm_patterns grade notebooks/

demo: $(STAMP)
	$(VENV)/bin/voila --no-browser --Voila.ip=127.0.0.1 --progressive_rendering=True notebooks/dashboard.ipynb

# The course's Airflow 3.3 on 127.0.0.1 (AIRFLOW_HOME=airflow-home/, the dags/ folder, pool
# llm_api, LocalExecutor); prints the URL and the admin password; Ctrl-C stops every component.
AIRFLOW_PORT ?= 8080
airflow: $(STAMP)
	$(PY) -m llm_patterns.integrations.airflow_standalone --home airflow-home --dags dags --port $(AIRFLOW_PORT)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .hypothesis test-artifacts
