"""Snakemake job: the LLaVA evaluation as a report page (see xtflow.report)."""

from pathlib import Path

from xtflow.report import llava_evaluation_page
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    i = snakemake.input
    llava_evaluation_page(Path(i.summary), Path(i.replies), Path(snakemake.output.html))


run_job(snakemake, job)
