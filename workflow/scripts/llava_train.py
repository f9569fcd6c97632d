"""Snakemake job: train a LLaVA stage with XTuner (see xtflow.train; the projector check: xtflow.llava_projector)."""

from pathlib import Path

from xtflow.llava_dataset import IMAGES, RECORDS
from xtflow.llava_projector import check_pretrained_projector
from xtflow.snakemake_io import run_job
from xtflow.train import train

snakemake = snakemake  # noqa: F821 (injected by Snakemake)


def job(log: Path) -> None:
    i, p = snakemake.input, snakemake.params
    data, llm, encoder = Path(i.data), Path(i.llm), Path(i.visual_encoder)
    extra = [encoder, data / IMAGES]
    if snakemake.wildcards.stage == "finetune":
        tensors = check_pretrained_projector(Path(i.projector), llm, encoder, p.projector_source)
        print(f"xtflow: fine-tuning starts from the projector in {i.projector} ({tensors} tensors)")
        extra.append(Path(i.projector))
    train(
        config=Path(i.config),
        data=data / RECORDS,
        model=llm,
        work_dir=Path(p.work_dir),
        handle=Path(snakemake.output.checkpoint),
        log=log,
        deepspeed=None,
        gpus=1,
        warmup_ratio=p.warmup_ratio,
        # read from config, not params: the log interval must not force a rerun
        log_interval=snakemake.config["train"]["log_interval"],
        extra_inputs=extra,
        section="llava",
        lr_key=f"llava.{snakemake.wildcards.stage}.lr",
    )


run_job(snakemake, job)
