# The README's two commands: `make demo` (set up, then the local demo run) and
# `make test` (set up, then lint, types and the whole test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/fanout demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -n 2 -q

# Benchmarks (not part of the tests): dlt, a peer, lives in a venv of its own.
.venv-bench/.installed: requirements-bench.txt $(STAMP)
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/python -m pip install --quiet -r requirements-bench.txt
	touch .venv-bench/.installed

bench: $(STAMP) .venv-bench/.installed
	$(BIN)/python -m bench.throughput --size full --dlt-python .venv-bench/bin/python
	$(BIN)/python -m bench.ratelimit
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m bench.package
	$(BIN)/python -m bench.rss -- $(BIN)/fanout demo --size full --quiet
	$(BIN)/python -m bench.query

clean:
	rm -rf $(VENV) cdk.out fanout-data .pytest_cache .mypy_cache .ruff_cache
