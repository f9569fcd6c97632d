"""Run XTuner training and publish a stable handle to its final checkpoint.

The work directory (results/train/work_dir) is not a declared Snakemake output, so
Snakemake never deletes checkpoints; the declared output is the handle
`results/train/final_checkpoint.pth`: hard links to the newest `iter_N.pth` (a file,
or a directory with DeepSpeed), so later stages never guess `iter_N` names.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from xtflow.errors import XtflowError
from xtflow.xtuner_compat import run_tool


@dataclass(frozen=True)
class TrainPlan:
    """How many iterations a training will run, as mmengine will count them."""

    samples: int
    iters_per_epoch: int
    max_epochs: int
    warmup_iters: int

    @property
    def total_iters(self) -> int:
        return self.iters_per_epoch * self.max_epochs


def plan_training(config: Path, gpus: int) -> TrainPlan:
    """Build the training set exactly as XTuner will (packing included) and count iterations."""
    from xtflow.xtuner_compat import apply_cpu_shim

    apply_cpu_shim()
    from mmengine.config import Config
    from xtuner.registry import BUILDER

    cfg = Config.fromfile(str(config))
    dataset = BUILDER.build(cfg.train_dataloader.dataset)
    samples = len(dataset)
    per_step = cfg.train_dataloader.batch_size * gpus
    iters = math.ceil(samples / per_step)
    max_epochs = int(cfg.train_cfg.max_epochs)
    # mmengine converts the epoch-based warmup `end` with int(end * epoch_length).
    warmup = int(cfg.warmup_ratio * max_epochs * iters) if "warmup_ratio" in cfg else 0
    return TrainPlan(samples, iters, max_epochs, warmup)


def check_plan(plan: TrainPlan, warmup_ratio: float) -> None:
    """Refuse a training XTuner would crash on or silently ruin (the tiny-dataset warmup trap)."""
    if plan.samples == 0:
        raise XtflowError("training set: 0 samples after XTuner's processing (all records too long or empty?)")
    if warmup_ratio > 0 and plan.warmup_iters < 2:
        need = 2 / (plan.max_epochs * plan.iters_per_epoch)
        raise XtflowError(
            f"config key 'xtuner.warmup_ratio': {warmup_ratio} x {plan.max_epochs} epoch(s) x "
            f"{plan.iters_per_epoch} iterations/epoch ({plan.samples} samples) gives {plan.warmup_iters} warmup "
            f"iteration(s); XTuner needs at least 2 (with 0 it crashes, with 1 the learning rate stays near 0). "
            f"Set warmup_ratio >= {math.ceil(need * 1000) / 1000} or 0, or add data"
        )


def last_checkpoint(work_dir: Path) -> Path:
    """The checkpoint mmengine recorded as newest in `work_dir/last_checkpoint`."""
    marker = work_dir / "last_checkpoint"
    if not marker.is_file():
        raise XtflowError(f"{work_dir}: training finished without a checkpoint (no last_checkpoint file)")
    ckpt = Path(marker.read_text(encoding="utf-8").strip())
    if not ckpt.is_absolute():
        ckpt = work_dir / ckpt.name
    if not ckpt.exists():
        raise XtflowError(f"{marker}: names {ckpt}, which does not exist")
    return ckpt


def publish_checkpoint(ckpt: Path, handle: Path) -> None:
    """Make `handle` a hard-linked copy of `ckpt` (file or directory), atomically."""
    tmp = handle.with_name(f".{handle.name}.tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    elif tmp.exists():
        tmp.unlink()

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if ckpt.is_dir():
        shutil.copytree(ckpt, tmp, copy_function=link)
    else:
        link(str(ckpt), str(tmp))
    if handle.is_dir() and not handle.is_symlink():
        shutil.rmtree(handle)
    os.replace(tmp, handle)


def train(
    config: Path, work_dir: Path, handle: Path, log: Path, deepspeed: str | None, gpus: int, warmup_ratio: float
) -> None:
    """Check the plan, train from scratch into `work_dir`, publish the final checkpoint as `handle`."""
    plan = plan_training(config, gpus)
    check_plan(plan, warmup_ratio)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(
            f"xtflow: {plan.samples} samples, {plan.iters_per_epoch} iterations/epoch x {plan.max_epochs} epoch(s) "
            f"= {plan.total_iters} iterations, {plan.warmup_iters} warmup\n"
        )
    if work_dir.exists():
        shutil.rmtree(work_dir)
    args = [str(config), "--work-dir", str(work_dir)]
    if deepspeed:
        args += ["--deepspeed", deepspeed]
    run_tool("train", args, log, gpus=gpus)
    publish_checkpoint(last_checkpoint(work_dir), handle)
