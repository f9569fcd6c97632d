"""Snakemake job: the final model and the adapter as model hub repositories, with cards (see xtflow.publish)."""

from pathlib import Path

from xtflow.publish import PublishInputs, publish
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    i, o = snakemake.input, snakemake.output
    inputs = PublishInputs(
        final_model=Path(i.model),
        adapter=Path(i.adapter),
        base_model=Path(i.base),
        summary=Path(i.summary),
        replies=Path(i.replies),
        dataset=Path(i.dataset),
        loss_csv=Path(i.loss),
    )
    publish(inputs, dict(snakemake.params.settings), Path(o.model), Path(o.adapter))
    print(f"xtflow: published {o.model} and {o.adapter}")


run_job(snakemake, job)
