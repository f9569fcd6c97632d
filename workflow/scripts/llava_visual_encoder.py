"""Snakemake job: build the LLaVA target's tiny visual encoder (see xtflow.llava_encoder)."""

from pathlib import Path

from xtflow.llava_encoder import TinyClipSpec, build_tiny_clip
from xtflow.snakemake_io import run_job

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    tokens = build_tiny_clip(TinyClipSpec(**snakemake.params.tiny), Path(snakemake.output.encoder))
    print(f"xtflow: built the tiny visual encoder in {snakemake.output.encoder} ({tokens} image tokens per image)")


run_job(snakemake, job)
