# Two commands: `make run` (default experiment) and `make test` (every test, the slow ones
# included: what CI runs). `make test-fast` leaves out the tests marked slow, for daily work.
# All create .venv when missing and reinstall only when pyproject.toml changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: run test test-fast bench clean

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

clean:
	rm -rf $(VENV) outputs .pytest_cache

# Mutation testing of the numeric and bookkeeping core (configured in pyproject.toml's
# [tool.mutmut]); writes docs/mutants.md and fails on a survivor neither killed nor explained.
.PHONY: mutants
mutants: $(STAMP)
	nice $(BIN)/python tools/mutants.py --out docs/mutants.md
