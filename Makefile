# scenerec: both README commands bootstrap .venv themselves on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench venv clean

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## demo: synthetic data -> the Kubeflow pipeline on kfp.local -> the predictor -> ranked answers (the main job)
## (make demo DEMO_ARGS=--keep-serving: the predictor stays up for its explorer page until Ctrl-C)
demo: $(STAMP)
	$(BIN)/python -m pipelines.demo $(DEMO_ARGS)

## test: lint, then the whole test suite (unit + integration)
test: $(STAMP) lint
	scripts/ensure_redis.sh || echo "no redis-server: its tests skip, and fail under CI=true"; \
	scripts/ensure_promtool.sh || echo "no promtool: the alert tests skip, and fail under CI=true"; \
	scripts/ensure_chromium.sh || echo "no chromium: the explorer page's browser tests skip, and fail under CI=true"; \
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

## bench: the benchmarks (not part of the tests); results go to benchmarks/RESULTS.md by hand
bench: $(STAMP)
	$(BIN)/python benchmarks/eval_speed.py
	$(BIN)/python benchmarks/quality.py
	$(BIN)/python benchmarks/feature_store.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/faults.py

clean:
	rm -rf build .pytest_cache .ruff_cache .mypy_cache
