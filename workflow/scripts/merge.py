"""Snakemake job: base model + adapter -> results/final_model (see xtflow.export)."""

from pathlib import Path

from xtflow.export import merge_adapter
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    p = snakemake.params
    i = snakemake.input
    merge_adapter(Path(i.model), Path(i.adapter), Path(snakemake.output.model), p.device, p.max_shard_size)


run_job(snakemake, job)
