# The two commands of the README: `make start` and `make test`.
# Both set up .venv from scratch when it is missing or pyproject.toml changed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: start demo test bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

# configurable-http-proxy, JupyterHub's proxy, comes from npm.
node_modules/.installed: package.json package-lock.json
	npm ci --silent --no-audit --no-fund
	touch $@

# The platform on its embedded default (SQLite, local storage, local job pool):
# hub, proxy and service on 127.0.0.1; prints where and how to log in.
start: $(VENV)/.installed node_modules/.installed
	$(PY) -m hub.embedded

# The engine alone, behind its CLI: train on a generated sample, print the leaderboard.
demo: $(VENV)/.installed
	mkdir -p demo
	$(PY) -m automl.datasets demo/churn.csv
	$(VENV)/bin/automl train demo/churn.csv --target churned --time-budget 30 --out demo/churn.automl
	$(VENV)/bin/automl info demo/churn.automl

test: $(VENV)/.installed node_modules/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	bash benchmarks/setup_anchors.sh
	$(PY) benchmarks/run_engine_benchmark.py --budget 60
