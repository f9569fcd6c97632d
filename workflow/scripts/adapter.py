"""Snakemake job: checkpoint -> Hugging Face adapter (see xtflow.export)."""

from pathlib import Path

from xtflow.export import export_adapter
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    p = snakemake.params
    i = snakemake.input
    export_adapter(Path(i.config), Path(i.checkpoint), Path(snakemake.output.adapter), p.fp32, p.max_shard_size, log)


run_job(snakemake, job)
