"""Run XTuner training and publish a stable handle to its final checkpoint.

The work directory (results/train/work_dir) is not a declared Snakemake output, so
Snakemake never deletes checkpoints (an interrupted training resumes from them); the
declared output is the handle
`results/train/final_checkpoint.pth`: hard links to the newest `iter_N.pth` (a file,
or a directory with DeepSpeed), so later stages never guess `iter_N` names.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtflow.errors import XtflowError
from xtflow.progress import mmengine_iteration
from xtflow.xtuner_tools import run_tool


@dataclass(frozen=True)
class TrainPlan:
    """How many iterations a training will run, as mmengine will count them."""

    records: int
    samples: int
    packed: bool
    iters_per_epoch: int
    max_epochs: int
    warmup_iters: int
    max_length: int = 0
    truncated: int = 0  # unpacked samples XTuner cut at max_length (their answers lose their ends)

    @property
    def total_iters(self) -> int:
        return self.iters_per_epoch * self.max_epochs


def plan_training(config: Path, gpus: int) -> TrainPlan:
    """Build the training set exactly as XTuner will (packing included) and count iterations."""
    from xtflow.xtuner_tools import apply_cpu_shim

    apply_cpu_shim()
    from mmengine.config import Config
    from xtuner.registry import BUILDER

    cfg = Config.fromfile(str(config))
    try:
        dataset = BUILDER.build(cfg.train_dataloader.dataset)
        samples = len(dataset)
    except ValueError as e:
        if "Column 'length' doesn't exist" in str(e):  # XTuner's way of saying: nothing left after filtering
            dataset, samples = None, 0
        else:
            raise XtflowError(f"XTuner could not build the training set from {cfg.data_path}: {e}") from None
    packed = bool(cfg.train_dataloader.dataset.get("pack_to_max_length", False))
    max_length = int(cfg.train_dataloader.dataset.get("max_length", 0))
    # a LLaVA dataset keeps its tokenized text beside the images
    lengths = getattr(dataset, "text_data", dataset)["length"] if samples and not packed else []
    per_step = cfg.train_dataloader.batch_size * gpus
    iters = math.ceil(samples / per_step)
    max_epochs = int(cfg.train_cfg.max_epochs)
    # mmengine converts the epoch-based warmup `end` with int(end * epoch_length).
    warmup = int(cfg.warmup_ratio * max_epochs * iters) if "warmup_ratio" in cfg else 0
    records = len(json.loads(Path(cfg.data_path).read_text(encoding="utf-8")))
    truncated = sum(n >= max_length for n in lengths) if max_length else 0
    return TrainPlan(records, samples, packed, iters, max_epochs, warmup, max_length, truncated)


def check_plan(plan: TrainPlan, warmup_ratio: float, section: str = "xtuner") -> None:
    """Refuse a training XTuner would crash on or silently ruin (the tiny-dataset warmup trap).
    `section` is where the config keys live (`xtuner`, or `llava` for the LLaVA stages)."""
    if plan.samples == 0:
        raise XtflowError(
            "training set: 0 samples left after XTuner's processing: every record's prompt fills "
            f"{section}.max_length, leaving no answer tokens to learn (raise max_length or shorten the records)"
        )
    if warmup_ratio > 0 and plan.warmup_iters < 2:
        need = 2 / (plan.max_epochs * plan.iters_per_epoch)
        raise XtflowError(
            f"config key '{section}.warmup_ratio': {warmup_ratio} x {plan.max_epochs} epoch(s) x "
            f"{plan.iters_per_epoch} iterations/epoch ({plan.samples} samples) gives {plan.warmup_iters} warmup "
            f"iteration(s); XTuner needs at least 2 (with 0 it crashes, with 1 the learning rate stays near 0). "
            f"Set warmup_ratio >= {math.ceil(need * 1000) / 1000} or 0, or add data"
        )


def last_checkpoint(work_dir: Path) -> Path:
    """The checkpoint mmengine recorded as newest in `work_dir/last_checkpoint`, in `work_dir` itself:
    mmengine records its absolute path, which in a copied or moved run directory is the original's."""
    marker = work_dir / "last_checkpoint"
    if not marker.is_file():
        raise XtflowError(f"{work_dir}: training finished without a checkpoint (no last_checkpoint file)")
    ckpt = work_dir.absolute() / Path(marker.read_text(encoding="utf-8").strip()).name
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


FINGERPRINT = "xtflow_fingerprint.json"
ITER = re.compile(r"^iter_(\d+)\.pth$")


def fingerprint(
    config: Path, data: Path, model: Path, deepspeed: str | None, gpus: int, extra: Sequence[Path] = ()
) -> str:
    """What a checkpoint depends on: config text, dataset bytes, base model files, launch shape, and
    `extra` inputs (files: their bytes; directories: as the model's)."""
    h = hashlib.sha256()
    for path in (config, data):
        h.update(path.read_bytes())
    _digest_dir(h, model)
    h.update(json.dumps({"deepspeed": deepspeed, "gpus": gpus}).encode())
    for path in extra:
        h.update(f"\0{path.name}\0".encode())
        if path.is_dir():
            _digest_dir(h, path)
        else:
            h.update(path.read_bytes())
    return h.hexdigest()


def _digest_dir(h: Any, root: Path, prefix: str = "") -> None:
    """Names and sizes of the files below `root` (links followed) and the bytes of its JSON files:
    cheap for model weights and image folders alike, and changed by any rebuild of them."""
    for entry in sorted(root.iterdir()):
        target = entry.resolve()
        h.update(f"{prefix}{entry.name}:{target.stat().st_size if target.is_file() else 'dir'}".encode())
        if entry.suffix == ".json" and target.is_file():
            h.update(target.read_bytes())
        elif target.is_dir():
            _digest_dir(h, target, f"{prefix}{entry.name}/")


def iteration_of(ckpt: Path) -> int:
    match = ITER.match(ckpt.name)
    if not match:
        raise XtflowError(f"{ckpt}: not an XTuner checkpoint name (iter_N.pth)")
    return int(match.group(1))


def check_checkpoint(ckpt: Path) -> None:
    """Open a checkpoint (a file, or a DeepSpeed directory) cheaply; name it if it is damaged."""
    import torch

    files = sorted(p for p in ckpt.rglob("*") if p.is_file()) if ckpt.is_dir() else [ckpt]
    if not files:
        raise XtflowError(f"checkpoint {ckpt} is empty; delete it to resume from an earlier one or start fresh")
    for f in files:
        if f.suffix not in (".pth", ".pt"):
            continue
        try:
            torch.load(f, map_location="cpu", mmap=True, weights_only=False)
        except Exception as e:  # torch raises many kinds on a damaged file
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise XtflowError(
                f"checkpoint {f} is damaged ({reason}); delete it to resume from an earlier one, "
                "or delete the work dir to start fresh"
            ) from None


def prepare_work_dir(work_dir: Path, fp: str, plan: TrainPlan, say: Callable[[str], None]) -> Path | None:
    """Decide between resuming and starting fresh; return the checkpoint to resume from, if any.

    Resumes only when the work dir was made for exactly this config, data and base model
    and its newest checkpoint is not the final one. Otherwise old checkpoints are moved
    aside to `<work_dir>.stale` (one generation kept), never silently reused.
    """
    marker = work_dir / FINGERPRINT
    if work_dir.exists():
        same = marker.is_file() and marker.read_text(encoding="utf-8").strip() == fp
        newest = last_checkpoint(work_dir) if (work_dir / "last_checkpoint").is_file() else None
        if same and newest is not None and iteration_of(newest) < plan.total_iters:
            check_checkpoint(newest)
            say(
                f"xtflow: resuming from {newest} (iteration {iteration_of(newest)} of {plan.total_iters}); "
                "config, data and base model unchanged"
            )
            return newest
        stale = work_dir.with_name(work_dir.name + ".stale")
        if stale.exists():
            shutil.rmtree(stale)
        if newest is not None or any(work_dir.glob("iter_*.pth")):
            why = "finished before" if same else "made with another config, dataset or base model"
            say(f"xtflow: not resuming: the checkpoints in {work_dir} were {why}; moved them to {stale}")
            work_dir.rename(stale)
        else:
            shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True)
    marker.write_text(fp + "\n", encoding="utf-8")
    return None


def single_process_rank_env() -> dict[str, str]:
    """The environment torchrun gives a one-process distributed run (rank 0 of 1, a free local port).

    DeepSpeed on one GPU is one process started without a launcher; without RANK and WORLD_SIZE,
    `deepspeed.initialize` looks for them through MPI and fails with `No module named 'mpi4py'`.
    """
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }


def train(
    config: Path,
    data: Path,
    model: Path,
    work_dir: Path,
    handle: Path,
    log: Path,
    deepspeed: str | None,
    gpus: int,
    warmup_ratio: float,
    log_interval: int = 10,
    extra_inputs: Sequence[Path] = (),
    section: str = "xtuner",
) -> None:
    """Check the plan, train (resuming an interrupted run of the same inputs), publish the final checkpoint.

    `extra_inputs` are further inputs of the training (a LLaVA run's visual encoder, images, projector),
    part of the fingerprint; `section` names the config section of the training's keys in messages."""
    plan = plan_training(config, gpus)
    check_plan(plan, warmup_ratio, section)

    def say(line: str) -> None:
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    say(
        f"xtflow: {plan.samples} samples, {plan.iters_per_epoch} iterations/epoch x {plan.max_epochs} epoch(s) "
        f"= {plan.total_iters} iterations, {plan.warmup_iters} warmup"
    )
    if not plan.packed and plan.samples < plan.records:
        say(
            f"xtflow: warning: XTuner dropped {plan.records - plan.samples} of {plan.records} records whose prompt "
            f"fills {section}.max_length (no answer tokens left to learn)"
        )
    if plan.truncated:
        say(
            f"xtflow: warning: {plan.truncated} of {plan.samples} samples reach {section}.max_length "
            f"({plan.max_length} tokens): XTuner cut their ends (answers included)"
        )
    fp = fingerprint(config, data, model, deepspeed, gpus, extra_inputs)
    resume = prepare_work_dir(work_dir, fp, plan, say)
    args = [str(config), "--work-dir", str(work_dir)]
    if resume is not None:
        args += ["--resume", str(resume)]
    if deepspeed:
        args += ["--deepspeed", deepspeed]
    # How the run reports, not what it learns: given here, not in the config file, so it reruns nothing.
    args += ["--cfg-options", f"default_hooks.logger.interval={log_interval}"]
    env = single_process_rank_env() if deepspeed and gpus == 1 else None
    run_tool("train", args, log, gpus=gpus, env=env, progress=mmengine_iteration)
    # (With packing, XTuner shuffles before packing: its sample count can differ by one from the plan's.)
    publish_checkpoint(last_checkpoint(work_dir), handle)
