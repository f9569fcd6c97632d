"""Snakemake job: teach the tiny default base model the general set (see xtflow.general_skill)."""

from pathlib import Path

from xtflow.general_skill import SkillSpec, teach
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    p = snakemake.params
    teach(Path(snakemake.input.model), Path(snakemake.output.model), SkillSpec(**p.skill), p.prompt_template)


run_job(snakemake, job)
