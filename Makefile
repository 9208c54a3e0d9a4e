# Two commands: `make run` (default experiment) and `make test` (every test, the slow ones
# included: what CI runs). `make test-fast` leaves out the tests marked slow, for daily work.
# All create .venv when missing and reinstall only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test test-fast bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch/torchvision first and pinned, so the resolver never pulls an unwanted build.
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sealab-train experiment=quickstart $(ARGS)

# --durations: the slowest tests are listed, so a suite that grows past its budget shows why.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10 $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m sealab.bench --out bench/results.json $(ARGS)

# On a machine with a CUDA device: the tests marked gpu, then the GPU bench (bench/gpu.json).
# The bench runs even when a test fails, so one command says everything; it fails if either did.
gpu-check: $(STAMP)
	$(BIN)/python -m pytest -q -rs -p no:cacheprovider -m gpu tests/gpu; tests=$$?; \
	$(BIN)/python -m sealab.bench --device cuda --out bench/gpu.json $(ARGS); bench=$$?; \
	test $$tests -eq 0 && test $$bench -eq 0

clean:
	rm -rf $(VENV) outputs .pytest_cache

# Mutation testing of the numeric and bookkeeping core (configured in pyproject.toml's
# [tool.mutmut]); writes docs/mutants.md and fails on a survivor neither killed nor explained.
.PHONY: mutants
mutants: $(STAMP)
	nice $(BIN)/python tools/mutants.py --out docs/mutants.md
