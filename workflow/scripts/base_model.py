"""Snakemake job: link the local base model, or build the tiny default (see xtflow.base_model)."""

from pathlib import Path

from xtflow.base_model import link_model
from xtflow.snakemake_io import run_job
from xtflow.tiny_model import TinyModelSpec, build_tiny_model

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    out = Path(snakemake.output.model)
    if snakemake.params.path:
        link_model(Path(snakemake.params.path), out)
        print(f"xtflow: linked {snakemake.params.path} as {out}")
    else:
        build_tiny_model(TinyModelSpec(**snakemake.params.tiny), out)
        print(f"xtflow: built the tiny default model in {out}")


run_job(snakemake, job)
