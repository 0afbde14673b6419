# serveops: `make demo` runs the whole flow locally; `make test` runs lint, types and tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit e2e bench schema clean

install: $(STAMP)

# Rebuilt only when the dependencies change: re-running make is cheap.
# pyproject.toml states ranges; constraints.txt the exact versions this project is tested with.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/serveops demo --num-cpus 2

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The quick tests: no cluster, under two minutes, on every core (pytest-xdist).
unit: $(STAMP)
	$(BIN)/pytest -m "not e2e" -p no:cacheprovider -n auto --dist loadgroup

e2e: $(STAMP)
	$(BIN)/pytest -m e2e

# The quick tests in parallel, then the end-to-end ones in one process (they share one Ray).
# The slowest e2e tests are listed at the end: the whole suite must stay well under 30 minutes.
test: lint typecheck $(STAMP)
	$(BIN)/pytest -m "not e2e" -p no:cacheprovider -n auto --dist loadgroup tests
	$(BIN)/pytest -m e2e --durations=12 tests

schema: $(STAMP)
	$(BIN)/serveops schema

bench: $(STAMP)
	$(BIN)/python bench/plan_1000.py
	$(BIN)/python bench/commit_to_serving.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
