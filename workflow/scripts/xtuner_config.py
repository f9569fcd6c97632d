"""Snakemake job: write the patched XTuner config (see xtflow.xtuner_config)."""

from pathlib import Path

from xtflow.base_model import check_lora_targets
from xtflow.snakemake_io import run_job
from xtflow.xtuner_config import settings_from_config, write_config

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    p = snakemake.params
    if isinstance(p.xtuner["lora"]["target_modules"], list):
        check_lora_targets(p.xtuner["lora"]["target_modules"], Path(snakemake.input.model))
    settings = settings_from_config(p.xtuner, model_path=Path(snakemake.input.model), data_path=Path(p.data))
    write_config(p.base_config, settings, Path(snakemake.output.config))
    print(f"xtflow: wrote {snakemake.output.config} from XTuner's {p.base_config}")


run_job(snakemake, job)
