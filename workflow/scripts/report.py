"""Snakemake job: one piece of the report (see xtflow.report), chosen by the rule's name."""

from pathlib import Path

from xtflow import report
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    if snakemake.rule == "loss_curve":
        n = report.loss_curve(Path(p.work_dir), Path(o.png), Path(o.csv))
        print(f"xtflow: loss curve from {n} logged iterations")
    elif snakemake.rule == "evaluation_page":
        report.evaluation_page(Path(i.summary), Path(o.html))
    elif snakemake.rule == "replies_page":
        n = report.replies_page(Path(i.replies), Path(o.html))
        print(f"xtflow: replies page: the final model fails {n} probes (listed first)")
    elif snakemake.rule == "dataset_stats":
        stats = report.dataset_stats(Path(i.dataset), Path(i.model), Path(o.html), Path(o.png), Path(i.config))
        print("xtflow: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    elif snakemake.rule == "run_info":
        report.run_info(dict(p.config), Path(i.model), Path(o.html))
    else:
        raise ValueError(f"no report piece for rule {snakemake.rule}")


run_job(snakemake, job)
