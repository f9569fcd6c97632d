"""Snakemake job: standard benchmarks through lm-evaluation-harness, if installed (see xtflow.harness)."""

from pathlib import Path

from xtflow.harness import HarnessSpec, run_harness
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    i = snakemake.input
    run_harness(Path(i.base), Path(i.final), HarnessSpec(**snakemake.params.harness), Path(snakemake.output.json))


run_job(snakemake, job)
