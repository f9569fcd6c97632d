"""Snakemake job: build results/data/train.json (see xtflow.dataset)."""

from pathlib import Path

from xtflow.dataset import IdentitySpec, build_dataset
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    p = snakemake.params.spec
    spec = IdentitySpec(
        name=p["name"],
        maker=p["maker"],
        answers=dict(p["answers"]),
        questions=dict(p["questions"]),
        records=p["records"],
        seed=p["seed"],
    )
    n = build_dataset(
        spec, [Path(f) for f in snakemake.input.files], Path(snakemake.output.json), p["general"], p["conversations"]
    )
    print(f"xtflow: wrote {n} records to {snakemake.output.json}")


run_job(snakemake, job)
