"""Snakemake job: one LLaVA data split, checked or generated (see xtflow.llava_dataset)."""

from pathlib import Path

from xtflow.llava_dataset import write_split
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    p, split = snakemake.params, snakemake.wildcards.split
    n = write_split(Path(snakemake.output.split), p.user, split, dict(p.generated))
    print(f"xtflow: {split}: {n} {'checked' if p.user else 'generated'} records in {snakemake.output.split}")


run_job(snakemake, job)
