# edgetwin: one entry point for set-up, demo, tests and benchmarks.
# `make test` and `make demo` work on a fresh machine: they create .venv and install into it.
# The install step is keyed on pyproject.toml, so llama-cpp-python (built from source, ~5 min)
# is not rebuilt on every run.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test check lint typecheck pytest demo plant bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

check: lint typecheck pytest

test: check

demo: install
	$(BIN)/edgetwin demo --config config/skid.toml

plant: install
	$(BIN)/edgetwin plant --config config/skid.toml --opcua-port 4840 --modbus-port 5020 --write-log plant-writes.jsonl

bench: install
	@for b in bench/*.py; do echo "== $$b"; PYTHONPATH=. $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
