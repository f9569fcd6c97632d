"""Snakemake job: write a LLaVA stage's XTuner config (see xtflow.llava_config)."""

from pathlib import Path

from xtflow.llava_config import LlavaStageSettings, write_llava_config
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    p = snakemake.params
    write_llava_config(p.base_config, LlavaStageSettings(**p.settings), Path(snakemake.output.config))
    print(f"xtflow: wrote {snakemake.output.config} from XTuner's {p.base_config}")


run_job(snakemake, job)
