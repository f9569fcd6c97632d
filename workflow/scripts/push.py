"""Snakemake job: upload the published folders to a model hub (see xtflow.push)."""

from pathlib import Path

from xtflow.push import push
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    i = snakemake.input
    result = push(dict(snakemake.params.settings), Path(i.model), Path(i.adapter), Path(snakemake.output.record))
    for entry in result["pushed"]:
        done = "would upload" if result["dry_run"] else "uploaded"
        print(f"xtflow: {done} {entry['folder']} -> {entry['repository']} ({len(entry['files'])} files)")


run_job(snakemake, job)
