# Two commands for a fresh machine (each creates .venv and installs first if needed):
#   make demo   - train the demo method on its built-in data, leaving an offline W&B run under outputs/wandb/
#   make test   - run the whole test suite
# CPU-only machines get torch's CPU build by installing torch first (TORCH_SPEC); on a GPU machine install torch
# your usual way into .venv first, or run `make setup TORCH_SPEC=torch`.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
BIN := $(VENV)/bin
DEMO_CONFIG ?= configs/polarization/digits_ensemble.yaml

.PHONY: setup demo test test-fast clean-outputs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/python -m framework fit --config $(DEMO_CONFIG)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

clean-outputs:
	rm -rf outputs
