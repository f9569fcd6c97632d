"""Snakemake job: the fine-tuned LLaVA model with its adapters merged (see xtflow.export)."""

from pathlib import Path

from xtflow.export import merge_llava
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    i, p = snakemake.input, snakemake.params
    merge_llava(
        Path(i.llm), Path(i.visual_encoder), Path(i.export), Path(snakemake.output.merged), p.device, p.max_shard_size
    )


run_job(snakemake, job)
