#!/usr/bin/env bash
# Install xtflow's pinned Python packages into the active Python environment.
# Snakemake runs this once in the conda environment of workflow/envs/xtflow.yaml (post-deploy);
# `make setup` runs it in .venv. The one place that says how xtflow's software is installed.
#
# XTFLOW_WORKFLOW is the workflow/ directory: the Snakefile sets it for Snakemake's post-deploy run.
set -euo pipefail
envs="${XTFLOW_WORKFLOW:?set by workflow/Snakefile; or run from make setup}/envs"
# --no-deps: xtuner 0.2.0 pins bitsandbytes==0.45.0, which no longer imports (requirements.in)
python -m pip install --quiet --no-deps -r "$envs/requirements.txt"
# DeepSpeed, pinned in requirements.in: built from its sdist against the torch just installed
# (--no-build-isolation), without building its ops (they compile on first use on a GPU).
python -m pip install --quiet --no-deps --no-build-isolation "$(sed -n 's/^\(deepspeed==[^ ]*\).*/\1/p' "$envs/requirements.in")"
