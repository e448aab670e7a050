# `make lab` and `make test` work on a fresh machine: they build .venv themselves.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= dev,airflow,redis
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: lab test test-fast notebooks grade demo bench sysdeps install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv
	$(VENV)/bin/uv pip install --python $(PY) -q -e '.[$(EXTRAS)]'
	@touch $(STAMP)

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

test: $(STAMP) sysdeps
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not browser and not airflow and not redis"

notebooks: $(STAMP)
	$(PY) tools/build_notebooks.py

grade: $(STAMP)
	$(PY) -m llm_patterns grade notebooks/

demo: $(STAMP)
	$(VENV)/bin/voila --no-browser --Voila.ip=127.0.0.1 --progressive_rendering=True notebooks/dashboard.ipynb

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts
