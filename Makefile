# xtflow: `make demo` sets up a fresh machine and runs the workflow on the embedded default;
# `make test` sets up (if needed) and runs the test suite.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.xtflow-installed
PYTEST_ARGS ?=

.PHONY: setup demo test test-gpu rulegraph clean

setup: $(STAMP)

$(STAMP): envs/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r envs/requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: setup
	$(BIN)/snakemake --cores 1 results/final_model

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# On a machine with a CUDA GPU.
test-gpu: setup
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

clean:
	rm -rf results resources/base_model logs benchmarks .snakemake
