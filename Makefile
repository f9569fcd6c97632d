# xtflow: `make demo` sets up a fresh machine and runs the workflow on the embedded default;
# `make test` sets up (if needed) and runs the test suite.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.xtflow-installed
PYTEST_ARGS ?= --durations=15

.PHONY: setup system-deps demo lint test test-gpu rulegraph chat web clean

# Debian packages the tests need: graphviz (rule graph), chromium (web demo test),
# fonts-wqy-zenhei (Chinese text in the browser's screenshots), SLURM with accounting
# (tests/test_slurm.py brings up a one-node cluster), git-lfs (the git route of `snakemake push`;
# tests/test_publish.py pushes to a local repository with LFS).
SYSTEM_DEPS := graphviz chromium fonts-wqy-zenhei slurmctld slurmd slurm-client slurmdbd munge mariadb-server git-lfs

setup: $(STAMP)

system-deps:
	@missing=$$(for p in $(SYSTEM_DEPS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages: $$missing (install them: sudo apt-get install $$missing)" >&2; exit 1; \
	  fi; \
	fi

# The same install steps as the workflow's conda environment (workflow/envs/xtflow.post-deploy.sh),
# then xtflow itself (editable) for `python -m xtflow.chat` and `python -m xtflow.web`.
$(STAMP): workflow/envs/requirements.txt workflow/envs/requirements.in workflow/envs/xtflow.post-deploy.sh pyproject.toml
	$(PYTHON) -m venv $(VENV)
	PATH="$(CURDIR)/$(BIN):$$PATH" XTFLOW_WORKFLOW="$(CURDIR)/workflow" bash workflow/envs/xtflow.post-deploy.sh
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

demo: setup
	$(BIN)/snakemake --cores 1 results/final_model

# The quality gate, seconds: ruff, ruff format, snakefmt and Snakemake's own linter.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow
	cd .test && ../$(BIN)/snakemake --lint --quiet -s ../Snakefile

test: setup system-deps lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Talk to the result (see README "Talk to the result").
chat: setup
	$(BIN)/python -m xtflow.chat

web: setup
	$(BIN)/python -m xtflow.web

# On a machine with a CUDA GPU.
test-gpu: setup
	$(BIN)/python -m pytest -m gpu $(PYTEST_ARGS)

clean:
	rm -rf results resources/base_model resources/llava logs benchmarks .snakemake

# The README's picture of the workflow, generated from the real workflow (tests check it is current).
rulegraph: setup
	$(BIN)/snakemake --rulegraph --quiet all > docs/rulegraph.dot
	dot -Tsvg docs/rulegraph.dot > docs/rulegraph.svg
