"""Snakemake job: the base model from the Hugging Face Hub, via the client's cache (see xtflow.hub)."""

from pathlib import Path

from xtflow import hub
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    model = hub.parse_source(snakemake.params.path, snakemake.params.revision)
    hub.fetch(model, Path(snakemake.output.model), write=lambda line: print(line, flush=True))


run_job(snakemake, job)
