"""Snakemake job: XTuner training (see xtflow.train)."""

from pathlib import Path

from xtflow.snakemake_io import run_job
from xtflow.train import train

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    p = snakemake.params
    train(
        config=Path(snakemake.input.config),
        data=Path(snakemake.input.data),
        model=Path(snakemake.input.model),
        work_dir=Path(p.work_dir),
        handle=Path(snakemake.output.checkpoint),
        log=log,
        deepspeed=p.deepspeed,
        gpus=p.gpus,
        warmup_ratio=p.warmup_ratio,
        identity_answers=list(p.identity_answers),
        # read from config, not params: the log interval must not force a rerun
        log_interval=snakemake.config["train"]["log_interval"],
    )


run_job(snakemake, job)
