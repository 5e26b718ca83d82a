# scenerec: both README commands bootstrap .venv themselves on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := build/demo

.PHONY: demo test lint bench venv clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## demo: synthetic data -> validate -> split -> baselines table (the main job)
demo: $(STAMP)
	$(BIN)/scenerec data synth --out $(DEMO)/data
	$(BIN)/scenerec data validate $(DEMO)/data
	$(BIN)/scenerec data split $(DEMO)/data
	$(BIN)/scenerec baselines --data $(DEMO)/data --out $(DEMO)/metrics.json

## test: lint, then the whole test suite (unit + integration)
test: $(STAMP) lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## bench: the benchmarks (not part of the tests); results go to benchmarks/RESULTS.md by hand
bench: $(STAMP)
	$(BIN)/python benchmarks/eval_speed.py

clean:
	rm -rf build .pytest_cache .ruff_cache .mypy_cache
